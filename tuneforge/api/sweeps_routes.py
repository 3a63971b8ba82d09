"""/20231130/sweeps (TuneForge's own resource; OCI has none): HTTP <-> tuneforge.services.resources.sweeps.

The SDK has no client for it; `GenerativeAiClient.base_client.call_api(...)` signs and sends these
requests like any other (docs/sweeps.md shows how), and the CREATE_SWEEP work request works with the
SDK's work request calls and waiters."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Response

from tuneforge.api.deps import CallerDep, CompartmentId, IfMatch, Limit, Page, QueryStr, RetryToken, ServicesDep, SortOrder
from tuneforge.api.protocol import send_accepted, send_answer, send_page
from tuneforge.services.resources import sweeps
from tuneforge.services.schemas.sweeps import (
    CreateSweepDetails,
    KeepBestDetails,
    KeepBestResult,
    Sweep,
    SweepCollection,
    SweepState,
)

router = APIRouter(prefix="/20231130", tags=["sweeps"])


@router.post("/sweeps", response_model=Sweep, response_model_exclude_none=True)
def create_sweep(
    details: CreateSweepDetails, caller: CallerDep, svc: ServicesDep, response: Response, retry_token: RetryToken = None
) -> Sweep:
    return send_answer(response, sweeps.create_sweep(svc, caller, details, retry_token))


@router.get("/sweeps/{sweepId}", response_model=Sweep, response_model_exclude_none=True)
def get_sweep(sweepId: str, caller: CallerDep, svc: ServicesDep, response: Response) -> Sweep:
    return send_answer(response, sweeps.get_sweep(svc, caller, sweepId))


@router.get("/sweeps", response_model=SweepCollection, response_model_exclude_none=True)
def list_sweeps(
    caller: CallerDep,
    svc: ServicesDep,
    response: Response,
    compartmentId: CompartmentId,
    lifecycleState: SweepState | None = None,
    displayName: QueryStr = None,
    id: QueryStr = None,
    limit: Limit = None,
    page: Page = None,
    sortOrder: SortOrder = None,
    sortBy: Literal["timeCreated", "displayName", "lifecycleState"] | None = None,
) -> SweepCollection:
    found = sweeps.list_sweeps(
        svc,
        caller,
        compartmentId,
        lifecycle_state=lifecycleState,
        display_name=displayName,
        sweep_id=id,
        page=page,
        limit=limit,
        sort_by=sortBy,
        sort_order=sortOrder,
    )
    return SweepCollection(items=send_page(response, found))


@router.post("/sweeps/{sweepId}/actions/cancel", status_code=202, response_class=Response)
def cancel_sweep(sweepId: str, caller: CallerDep, svc: ServicesDep, if_match: IfMatch = None) -> Response:
    """CANCELING: the trials in training are stopped, then CANCELED (the sweep's work request says when)."""
    return send_accepted(sweeps.cancel_sweep(svc, caller, sweepId, if_match))


@router.post("/sweeps/{sweepId}/actions/keepBest", response_model=KeepBestResult, response_model_exclude_none=True)
def keep_best(
    sweepId: str, details: KeepBestDetails, caller: CallerDep, svc: ServicesDep, if_match: IfMatch = None
) -> KeepBestResult:
    return sweeps.keep_best(svc, caller, sweepId, details, if_match)


@router.post("/sweeps/{sweepId}/actions/learningCurve", response_model=Sweep, response_model_exclude_none=True)
def request_learning_curve(
    sweepId: str, caller: CallerDep, svc: ServicesDep, response: Response, if_match: IfMatch = None
) -> Sweep:
    """ "Would more data help?" for a sweep that ran without it (IN_PROGRESS again until it is answered)."""
    return send_answer(response, sweeps.request_learning_curve(svc, caller, sweepId, if_match))
