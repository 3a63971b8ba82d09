"""/20231130/models: HTTP <-> tuneforge.services.resources.models."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from tuneforge.api.deps import CallerDep, CompartmentId, IfMatch, Limit, Page, QueryStr, RetryToken, ServicesDep, SortOrder
from tuneforge.api.protocol import send_accepted, send_answer, send_page
from tuneforge.services.resources import models
from tuneforge.services.schemas.resources import (
    ChangeCompartmentDetails,
    CreateModelDetails,
    Model,
    ModelCollection,
    TrainingMetrics,
    UpdateModelDetails,
)

router = APIRouter(prefix="/20231130", tags=["models"])

Capability = Literal[
    "TEXT_GENERATION",
    "TEXT_SUMMARIZATION",
    "TEXT_EMBEDDINGS",
    "FINE_TUNE",
    "CHAT",
    "TEXT_RERANK",
    "TEXT_TO_IMAGE",
    "IMAGE_TEXT_TO_IMAGE",
    "IMAGE_TEXT_TO_TEXT",
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
ModelState = Literal["ACTIVE", "CREATING", "DELETING", "DELETED", "FAILED"]


@router.post("/models", response_model=Model, response_model_exclude_none=True)
def create_model(
    details: CreateModelDetails, caller: CallerDep, svc: ServicesDep, response: Response, retry_token: RetryToken = None
) -> Model:
    return send_answer(response, models.create_model(svc, caller, details, retry_token))


@router.get("/models/{modelId}", response_model=Model, response_model_exclude_none=True)
def get_model(modelId: str, caller: CallerDep, svc: ServicesDep, response: Response) -> Model:
    return send_answer(response, models.get_model(svc, caller, modelId))


@router.get("/models", response_model=ModelCollection, response_model_exclude_none=True)
def list_models(
    caller: CallerDep,
    svc: ServicesDep,
    response: Response,
    compartmentId: CompartmentId,
    vendor: QueryStr = None,
    capability: Annotated[list[Capability] | None, Query(max_length=len(Capability.__args__))] = None,
    lifecycleState: ModelState | None = None,
    displayName: QueryStr = None,
    id: QueryStr = None,
    limit: Limit = None,
    page: Page = None,
    sortOrder: SortOrder = None,
    sortBy: Literal["displayName", "lifecycleState", "timeCreated"] | None = None,
) -> ModelCollection:
    found = models.list_models(
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
    return ModelCollection(items=[models.summary(m) for m in send_page(response, found)])


@router.get("/models/{modelId}/metrics", response_model=TrainingMetrics, response_model_exclude_none=True)
def get_model_metrics(
    modelId: str,
    caller: CallerDep,
    svc: ServicesDep,
    since: Annotated[int, Query(ge=0, le=2**31)] = 0,
    limit: Annotated[int, Query(ge=1, le=10000)] = 10000,
) -> TrainingMetrics:
    """Native (not OCI), for the console: the curves and progress of a training run; poll with ?since=<next>."""
    return models.training_metrics(svc, caller, modelId, since, limit)


@router.put("/models/{modelId}", response_model=Model, response_model_exclude_none=True)
def update_model(
    modelId: str, details: UpdateModelDetails, caller: CallerDep, svc: ServicesDep, response: Response, if_match: IfMatch = None
) -> Model:
    return send_answer(response, models.update_model(svc, caller, modelId, details, if_match))


@router.post("/models/{modelId}/actions/changeCompartment", status_code=200, response_class=Response)
def change_model_compartment(
    modelId: str,
    details: ChangeCompartmentDetails,
    caller: CallerDep,
    svc: ServicesDep,
    if_match: IfMatch = None,
    retry_token: RetryToken = None,
) -> Response:
    models.change_compartment(svc, caller, modelId, details.compartment_id, if_match)
    return Response(status_code=200)


@router.delete("/models/{modelId}", status_code=202, response_class=Response)
def delete_model(modelId: str, caller: CallerDep, svc: ServicesDep, if_match: IfMatch = None) -> Response:
    """Cancels the training job if it runs (SIGTERM to its subprocess), then DELETED."""
    return send_accepted(models.delete_model(svc, caller, modelId, if_match))
