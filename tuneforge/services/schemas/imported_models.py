"""OCI's imported models and model discovery on the wire, as the `oci` SDK's model classes name them
(oci.generative_ai.models: CreateImportedModelDetails, HuggingFaceModel, ObjectStorageObject,
ImportedModel, ImportedModelSummary, UpdateImportedModelDetails, ModelDiscovery, Parameter,
Availability, ModelModalitySupport)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr

from tuneforge.services.schemas.resources import Name, OciModel, Tagged, Text, UpdateDetails

# ImportedModel.capabilities: OCI's enum for imported models (not the Model resource's).
ImportedCapability = Literal[
    "TEXT_TO_TEXT",
    "IMAGE_TEXT_TO_TEXT",
    "EMBEDDING",
    "RERANK",
    "TEXT_TO_IMAGE",
    "IMAGE_TEXT_TO_IMAGE",
    "IMAGE_TEXT_TO_VIDEO",
    "IMAGE_TO_IMAGE",
    "REALTIME",
    "AUDIO_TO_AUDIO",
    "AUDIO_TO_TEXT",
    "TEXT_TO_AUDIO",
    "TEXT_TO_VIDEO",
    "AUDIO_TEXT_TO_TEXT",
    "AUDIO_TRANSLATION",
    "VIDEO_TEXT_TO_TEXT",
]
ImportedModelState = Literal["ACTIVE", "CREATING", "UPDATING", "DELETING", "DELETED", "FAILED"]
Prefix = Annotated[str, Field(max_length=1024)]


class HuggingFaceModel(OciModel):
    source_type: Literal["HUGGING_FACE_MODEL"]
    model_id: Name
    # Accepted because the SDK sends it; never stored, echoed or logged (SecretStr hides it from reprs
    # and validation errors alike). Nothing here reaches the network, so it is never used either.
    access_token: SecretStr | None = None
    branch: Name | None = None
    commit: Name | None = None


class ObjectStorageObject(OciModel):
    source_type: Literal["OBJECT_STORAGE_OBJECT"]
    namespace_name: Name
    bucket_name: Name
    prefix_name: Prefix | None = None
    region: Name | None = None


DataSource = Annotated[HuggingFaceModel | ObjectStorageObject, Field(discriminator="source_type")]


class CreateImportedModelDetails(Tagged):
    compartment_id: Name
    data_source: DataSource
    display_name: Name | None = None
    description: Text | None = None
    vendor: Name | None = None
    version: Name | None = None
    capabilities: Annotated[list[ImportedCapability], Field(max_length=16)] | None = None


class UpdateImportedModelDetails(UpdateDetails):
    display_name: Name | None = None
    description: Text | None = None
    vendor: Name | None = None
    version: Name | None = None


class ImportedModelSummary(OciModel):
    id: str
    compartment_id: str
    capabilities: list[str]
    lifecycle_state: str
    time_created: str
    data_source: dict[str, Any]  # as sent, without the access token
    display_name: str | None = None
    description: str | None = None
    lifecycle_details: str | None = None
    vendor: str | None = None
    version: str | None = None
    time_updated: str | None = None
    freeform_tags: dict[str, str] | None = None
    defined_tags: dict[str, dict[str, Any]] | None = None
    system_tags: dict[str, dict[str, Any]] | None = None


class ImportedModel(ImportedModelSummary):
    pass


class ImportedModelCollection(OciModel):
    items: list[ImportedModelSummary]


# ---- model discovery ----------------------------------------------------------------------------


class Parameter(OciModel):
    name: str
    type: str | None = None  # INTEGER | FLOAT | STRING
    minimum: float | None = None
    maximum: float | None = None
    default_value: str | None = None
    description: str | None = None


class ModelModalitySupport(OciModel):
    input: Literal["AUDIO", "VIDEO", "TEXT", "IMAGE"]
    output: Literal["AUDIO", "VIDEO", "TEXT", "IMAGE"]


class Availability(OciModel):
    realm: str | None = None
    region: str | None = None
    serving_modes: list[str] | None = None
    time_deprecated: str | None = None
    time_on_demand_retired: str | None = None
    time_dedicated_retired: str | None = None
    supported_replacements: list[str] | None = None


class ModelDiscovery(OciModel):
    model_id: str
    vendor: str
    capabilities: list[str]
    api_capability: list[str] | None = None
    modality_support: list[ModelModalitySupport] | None = None
    model_access: Literal["HOSTED", "PROXY"] | None = None
    parameters: list[Parameter] | None = None
    availability: list[Availability] | None = None


class ModelDiscoveryCollection(OciModel):
    items: list[ModelDiscovery]
