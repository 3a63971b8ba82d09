"""/20231130/importedModels and /20231130/modelDiscovery: HTTP <-> tuneforge.services.resources.imported_models
and model_discovery."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from tuneforge.api.deps import CallerDep, CompartmentId, IfMatch, Limit, Page, QueryStr, RetryToken, ServicesDep, SortOrder
from tuneforge.api.models_routes import Capability
from tuneforge.api.protocol import send_accepted, send_answer, send_page
from tuneforge.services.resources import imported_models, model_discovery
from tuneforge.services.schemas.imported_models import (
    CreateImportedModelDetails,
    ImportedCapability,
    ImportedModel,
    ImportedModelCollection,
    ImportedModelState,
    ModelDiscoveryCollection,
    UpdateImportedModelDetails,
)
from tuneforge.services.schemas.resources import ChangeCompartmentDetails

router = APIRouter(prefix="/20231130", tags=["imported models"])
QueryList = Annotated[list[Annotated[str, Query(max_length=255)]] | None, Query(max_length=32)]


@router.post("/importedModels", response_model=ImportedModel, response_model_exclude_none=True)
def create_imported_model(
    details: CreateImportedModelDetails, caller: CallerDep, svc: ServicesDep, response: Response, retry_token: RetryToken = None
) -> ImportedModel:
    """CREATING at once; the import runs in the background (its work request: opc-work-request-id)."""
    return send_answer(response, imported_models.create_imported_model(svc, caller, details, retry_token))


@router.get("/importedModels/{importedModelId}", response_model=ImportedModel, response_model_exclude_none=True)
def get_imported_model(importedModelId: str, caller: CallerDep, svc: ServicesDep, response: Response) -> ImportedModel:
    return send_answer(response, imported_models.get_imported_model(svc, caller, importedModelId))


@router.get("/importedModels", response_model=ImportedModelCollection, response_model_exclude_none=True)
def list_imported_models(
    caller: CallerDep,
    svc: ServicesDep,
    response: Response,
    compartmentId: CompartmentId,
    vendor: QueryStr = None,
    capability: Annotated[list[ImportedCapability] | None, Query(max_length=len(ImportedCapability.__args__))] = None,
    lifecycleState: ImportedModelState | None = None,
    displayName: QueryStr = None,
    id: QueryStr = None,
    limit: Limit = None,
    page: Page = None,
    sortOrder: SortOrder = None,
    sortBy: Literal["displayName", "lifecycleState", "timeCreated"] | None = None,
) -> ImportedModelCollection:
    found = imported_models.list_imported_models(
        svc,
        caller,
        compartmentId,
        vendor=vendor,
        capability=capability,
        lifecycle_state=lifecycleState,
        display_name=displayName,
        model_id=id,
        page=page,
        limit=limit,
        sort_by=sortBy,
        sort_order=sortOrder,
    )
    return ImportedModelCollection(items=[imported_models.summary(m) for m in send_page(response, found)])


@router.put("/importedModels/{importedModelId}", response_model=ImportedModel, response_model_exclude_none=True)
def update_imported_model(
    importedModelId: str,
    details: UpdateImportedModelDetails,
    caller: CallerDep,
    svc: ServicesDep,
    response: Response,
    if_match: IfMatch = None,
) -> ImportedModel:
    return send_answer(response, imported_models.update_imported_model(svc, caller, importedModelId, details, if_match))


@router.post("/importedModels/{importedModelId}/actions/changeCompartment", status_code=200, response_class=Response)
def change_imported_model_compartment(
    importedModelId: str,
    details: ChangeCompartmentDetails,
    caller: CallerDep,
    svc: ServicesDep,
    if_match: IfMatch = None,
    retry_token: RetryToken = None,
) -> Response:
    imported_models.change_compartment(svc, caller, importedModelId, details.compartment_id, if_match)
    return Response(status_code=200)


@router.delete("/importedModels/{importedModelId}", status_code=202, response_class=Response)
def delete_imported_model(importedModelId: str, caller: CallerDep, svc: ServicesDep, if_match: IfMatch = None) -> Response:
    """409 while a fine-tuned model, an endpoint or a sweep uses it."""
    return send_accepted(imported_models.delete_imported_model(svc, caller, importedModelId, if_match))


@router.get("/modelDiscovery", response_model=ModelDiscoveryCollection, response_model_exclude_none=True)
def list_model_discovery(
    caller: CallerDep,
    svc: ServicesDep,
    response: Response,
    compartmentId: CompartmentId,
    realm: QueryList = None,
    region: QueryList = None,
    modelId: QueryStr = None,
    servingMode: Annotated[list[Literal["ON_DEMAND", "DEDICATED"]] | None, Query(max_length=2)] = None,
    apiCapability: QueryList = None,
    capability: Annotated[list[Capability] | None, Query(max_length=len(Capability.__args__))] = None,
    modelAccess: Annotated[list[Literal["HOSTED", "PROXY"]] | None, Query(max_length=2)] = None,
    isDeprecated: bool | None = None,
    isOnDemandRetired: bool | None = None,
    isDedicatedRetired: bool | None = None,
    limit: Limit = None,
    page: Page = None,
) -> ModelDiscoveryCollection:
    found = model_discovery.list_model_discovery(
        svc,
        caller,
        compartmentId,
        realm=realm,
        region=region,
        model_id=modelId,
        serving_mode=servingMode,
        api_capability=apiCapability,
        capability=capability,
        model_access=modelAccess,
        is_deprecated=isDeprecated,
        is_on_demand_retired=isOnDemandRetired,
        is_dedicated_retired=isDedicatedRetired,
        page=page,
        limit=limit,
    )
    return ModelDiscoveryCollection(items=send_page(response, found))
