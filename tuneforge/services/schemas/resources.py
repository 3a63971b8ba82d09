"""OCI request and response bodies as pydantic models: camelCase on the wire, partial objects
accepted (the SDK leaves out None fields), None fields omitted in responses. An update body refuses a
field it does not take (`modelId` in UpdateEndpointDetails would otherwise answer 200 and change
nothing), naming it; other bodies ignore unknown fields."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    create_model,
    model_validator,
)
from pydantic.alias_generators import to_camel

from tuneforge.hyperparams import FIELD_TYPES, SNAKE_NAMES


def _storable(value: str) -> str:
    """No NUL and no lone surrogates (JSON allows "\\ud800"): neither PostgreSQL nor SQLite stores them."""
    if "\x00" in value:
        raise ValueError("NUL characters are not allowed")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (lone surrogate escapes are not allowed)") from None
    return value


def _storable_tree(value: Any) -> Any:
    if isinstance(value, str):
        _storable(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            _storable_tree(k)
            _storable_tree(v)
    elif isinstance(value, list):
        for v in value:
            _storable_tree(v)
    return value


# Every stored string is bounded and storable, so no input can make the database fail.
Name = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_storable)]
Text = Annotated[str, Field(max_length=4000), AfterValidator(_storable)]
# OCI's integer fields are 32-bit; a larger number is refused with the field's name.
Int32 = Annotated[StrictInt, Field(ge=-(2**31), le=2**31 - 1)]

# OCI's documented tag limits ("Tagging overview", Tag limits): at most 64 tags per resource,
# free-form and defined together; keys up to 100 characters, values up to 256; at most 5 KB of tag
# data per resource (counted here as the UTF-8 JSON of both maps).
MAX_TAGS = 64
MAX_TAG_BYTES = 5 * 1024
TagKey = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_storable)]
TagValue = Annotated[str, Field(max_length=256), AfterValidator(_storable)]
FreeformTags = dict[TagKey, TagValue]
DefinedTags = dict[TagKey, Annotated[dict[TagKey, Any], AfterValidator(_storable_tree)]]


def check_tags(freeform: dict | None, defined: dict | None) -> None:
    """OCI's per-resource tag limits (ValueError with the limit: pydantic reports it as a 400)."""
    count = len(freeform or {}) + sum(len(v) for v in (defined or {}).values())
    if count > MAX_TAGS:
        raise ValueError(f"{count} tags; a resource can have at most {MAX_TAGS} (free-form and defined together)")
    size = len(json.dumps([freeform or {}, defined or {}], ensure_ascii=False).encode())
    if size > MAX_TAG_BYTES:
        raise ValueError(f"{size:,} bytes of tags; a resource can have at most {MAX_TAG_BYTES:,}")


BucketName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,256}$")]  # OCI's rule for bucket names


class OciModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Tagged(OciModel):
    """A request that sets tags: OCI's limits apply to both maps together."""

    freeform_tags: FreeformTags | None = None
    defined_tags: DefinedTags | None = None

    @model_validator(mode="after")
    def _tag_limits(self):
        check_tags(self.freeform_tags, self.defined_tags)
        return self


# ---- requests -------------------------------------------------------------------------------


class ObjectStorageDataset(OciModel):
    dataset_type: Literal["OBJECT_STORAGE"] = "OBJECT_STORAGE"
    namespace_name: Name
    bucket_name: Name
    object_name: Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(_storable)]


class _TrainingConfigBase(OciModel):
    """Range checks live in tuneforge.hyperparams (per base model); unknown fields are kept so
    that the resolver can name them in its error. Strict types: `true` is not a learning rate and
    3.5 is not an epoch count (pydantic's lax mode would turn them into 1.0 and 3)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")
    # DPO_TRAINING_CONFIG: preference tuning, a TuneForge extension (OCI has no DPO; docs/dpo.md).
    training_config_type: Literal[
        "TFEW_TRAINING_CONFIG", "VANILLA_TRAINING_CONFIG", "LORA_TRAINING_CONFIG", "DPO_TRAINING_CONFIG"
    ]


# One optional field per hyperparameter of the catalog (models.toml names them; nothing here does).
TrainingConfigIn = create_model(
    "TrainingConfigIn",
    __base__=_TrainingConfigBase,
    **{SNAKE_NAMES[name]: ((Int32 if kind is int else StrictFloat) | None, None) for name, kind in FIELD_TYPES.items()},
)


class FineTuneDetails(OciModel):
    training_dataset: ObjectStorageDataset
    dedicated_ai_cluster_id: Name
    training_config: TrainingConfigIn | None = None


class CreateModelDetails(Tagged):
    compartment_id: Name
    base_model_id: Name
    fine_tune_details: FineTuneDetails
    display_name: Name | None = None
    vendor: Name | None = None
    version: Name | None = None
    description: Text | None = None


class UpdateDetails(Tagged):
    """An update body: only its own fields (a field the resource cannot change is a 400 naming it)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class UpdateModelDetails(UpdateDetails):
    display_name: Name | None = None
    description: Text | None = None
    vendor: Name | None = None
    version: Name | None = None


class ChangeCompartmentDetails(OciModel):
    compartment_id: Name


ClusterType = Literal["HOSTING", "FINE_TUNING"]
UnitShape = Annotated[str, Field(pattern=r"^[A-Z0-9_]{1,64}$")]
UnitCount = Annotated[StrictInt, Field(ge=1, le=1000)]


class CreateDedicatedAiClusterDetails(Tagged):
    type: ClusterType
    compartment_id: Name
    unit_count: UnitCount
    unit_shape: UnitShape
    display_name: Name | None = None
    description: Text | None = None
    capacity_reservation_id: Name | None = None


class UpdateDedicatedAiClusterDetails(UpdateDetails):
    display_name: Name | None = None
    description: Text | None = None
    unit_count: UnitCount | None = None


class ContentModerationConfig(OciModel):
    is_enabled: StrictBool
    mode: Literal["INFORM", "BLOCK"] | None = None
    model_id: Name | None = None


class GuardrailConfig(OciModel):
    """promptInjectionConfig / piiDetectionConfig: recorded as sent (TuneForge applies no guardrail models)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")
    mode: Literal["INFORM", "BLOCK"] | None = None


class CreateEndpointDetails(Tagged):
    compartment_id: Name
    model_id: Name
    dedicated_ai_cluster_id: Name
    display_name: Name | None = None
    description: Text | None = None
    generative_ai_private_endpoint_id: Name | None = None
    content_moderation_config: ContentModerationConfig | None = None
    prompt_injection_config: GuardrailConfig | None = None
    pii_detection_config: GuardrailConfig | None = None


class UpdateEndpointDetails(UpdateDetails):
    display_name: Name | None = None
    description: Text | None = None
    generative_ai_private_endpoint_id: Name | None = None
    content_moderation_config: ContentModerationConfig | None = None
    prompt_injection_config: GuardrailConfig | None = None
    pii_detection_config: GuardrailConfig | None = None


class CreateBucketDetails(OciModel):
    name: BucketName
    compartment_id: Name


# ---- responses ------------------------------------------------------------------------------


class ModelMetrics(OciModel):
    model_metrics_type: str
    final_accuracy: float | None = None
    final_loss: float | None = None


class ModelSummary(OciModel):
    id: str
    compartment_id: str
    capabilities: list[str]
    lifecycle_state: str
    lifecycle_details: str | None = None
    display_name: str | None = None
    vendor: str | None = None
    version: str | None = None
    description: str | None = None
    time_created: str
    base_model_id: str | None = None
    type: Literal["BASE", "CUSTOM"]
    fine_tune_details: dict[str, Any] | None = None
    model_metrics: ModelMetrics | None = None
    is_long_term_supported: bool | None = None
    time_deprecated: str | None = None
    freeform_tags: dict[str, str] | None = None
    defined_tags: dict[str, dict[str, Any]] | None = None
    system_tags: dict[str, dict[str, Any]] | None = None


class Model(ModelSummary):
    time_updated: str | None = None


class ModelCollection(OciModel):
    items: list[ModelSummary]


class HostingCapacity(OciModel):
    capacity_type: Literal["HOSTING_CAPACITY"] = "HOSTING_CAPACITY"
    total_endpoint_capacity: int
    used_endpoint_capacity: int


class DedicatedAiCluster(OciModel):
    id: str
    type: str
    compartment_id: str
    time_created: str
    lifecycle_state: str
    unit_count: int
    unit_shape: str
    display_name: str | None = None
    description: str | None = None
    time_updated: str | None = None
    lifecycle_details: str | None = None
    capacity_reservation_id: str | None = None
    capacity: HostingCapacity | None = None
    freeform_tags: dict[str, str] | None = None
    defined_tags: dict[str, dict[str, Any]] | None = None


class Endpoint(OciModel):
    id: str
    model_id: str
    compartment_id: str
    dedicated_ai_cluster_id: str
    time_created: str
    lifecycle_state: str
    display_name: str | None = None
    description: str | None = None
    generative_ai_private_endpoint_id: str | None = None
    time_updated: str | None = None
    lifecycle_details: str | None = None
    content_moderation_config: dict[str, Any] | None = None
    prompt_injection_config: dict[str, Any] | None = None
    pii_detection_config: dict[str, Any] | None = None
    freeform_tags: dict[str, str] | None = None
    defined_tags: dict[str, dict[str, Any]] | None = None
    system_tags: dict[str, dict[str, Any]] | None = None


class EndpointCollection(OciModel):
    items: list[Endpoint]


class DedicatedAiClusterCollection(OciModel):
    items: list[DedicatedAiCluster]


class WorkRequestResource(OciModel):
    entity_type: str
    action_type: str
    identifier: str
    entity_uri: str | None = None


class WorkRequest(OciModel):
    operation_type: str
    status: str
    id: str
    compartment_id: str
    resources: list[WorkRequestResource]
    percent_complete: float
    time_accepted: str
    time_started: str | None = None
    time_finished: str | None = None


class WorkRequestSummaryCollection(OciModel):
    items: list[WorkRequest]


class WorkRequestError(OciModel):
    code: str
    message: str
    timestamp: str


class WorkRequestErrorCollection(OciModel):
    items: list[WorkRequestError]


class WorkRequestLogEntry(OciModel):
    message: str
    timestamp: str


class WorkRequestLogEntryCollection(OciModel):
    items: list[WorkRequestLogEntry]


class TrainingMetrics(OciModel):
    """Native (not OCI): the curves and progress the console draws while a model trains."""

    model_id: str
    lifecycle_state: str
    progress: dict[str, Any] | None = None
    items: list[dict[str, Any]]
    next: int = Field(description="pass as ?since= to get only newer records")


class Bucket(OciModel):
    namespace: str
    name: str
    compartment_id: str
    created_by: str
    time_created: str
    etag: str


class ObjectSummary(OciModel):
    name: str
    size: int | None = None
    md5: str | None = None
    time_created: str | None = None
    time_modified: str | None = None
    etag: str | None = None
    storage_tier: str | None = None


class ListObjects(OciModel):
    objects: list[ObjectSummary]
    prefixes: list[str] | None = None
    next_start_with: str | None = None


class CreateMultipartUploadDetails(OciModel):
    object: Annotated[str, Field(min_length=1, max_length=1024)]
    content_type: Annotated[str, Field(max_length=255)] | None = None
    storage_tier: Literal["Standard", "InfrequentAccess", "Archive"] | None = None


class MultipartUpload(OciModel):
    namespace: str
    bucket: str
    object: str
    upload_id: str
    time_created: str
    storage_tier: str = "Standard"


class MultipartUploadPartSummary(OciModel):
    etag: str
    md5: str
    size: int
    part_number: int


class CommitMultipartUploadPartDetails(OciModel):
    part_num: Annotated[StrictInt, Field(ge=1, le=10000)]
    etag: Annotated[str, Field(min_length=1, max_length=128)]


class CommitMultipartUploadDetails(OciModel):
    parts_to_commit: Annotated[list[CommitMultipartUploadPartDetails], Field(min_length=1, max_length=10000)]
    parts_to_exclude: Annotated[list[Annotated[StrictInt, Field(ge=1, le=10000)]], Field(max_length=10000)] | None = None
