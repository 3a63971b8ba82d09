"""/20231130/workRequests: HTTP <-> tuneforge.services.resources.workrequests."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Response

from tuneforge.api.deps import CallerDep, CompartmentId, Limit, Page, QueryStr, ServicesDep, SortOrder
from tuneforge.api.protocol import send_answer, send_page
from tuneforge.services.resources import workrequests
from tuneforge.services.schemas.resources import (
    WorkRequest,
    WorkRequestErrorCollection,
    WorkRequestLogEntryCollection,
    WorkRequestSummaryCollection,
)

router = APIRouter(prefix="/20231130", tags=["workRequests"])
Status = Literal["ACCEPTED", "IN_PROGRESS", "WAITING", "FAILED", "SUCCEEDED", "CANCELING", "CANCELED"]


@router.get("/workRequests/{workRequestId}", response_model=WorkRequest, response_model_exclude_none=True)
def get_work_request(workRequestId: str, caller: CallerDep, svc: ServicesDep, response: Response) -> WorkRequest:
    wr = send_answer(response, workrequests.get_work_request(svc, caller, workRequestId))
    if wr.status in ("ACCEPTED", "IN_PROGRESS"):
        response.headers["retry-after"] = "1"
    return wr


@router.get("/workRequests", response_model=WorkRequestSummaryCollection, response_model_exclude_none=True)
def list_work_requests(
    caller: CallerDep,
    svc: ServicesDep,
    response: Response,
    compartmentId: CompartmentId,
    workRequestId: QueryStr = None,
    status: Status | None = None,
    resourceId: QueryStr = None,
    page: Page = None,
    limit: Limit = None,
    sortOrder: SortOrder = None,
    sortBy: Literal["timeAccepted"] | None = None,
) -> WorkRequestSummaryCollection:
    found = workrequests.list_work_requests(
        svc,
        caller,
        compartmentId,
        wr_id=workRequestId,
        status=status,
        resource_id=resourceId,
        page=page,
        limit=limit,
        sort_order=sortOrder,
    )
    return WorkRequestSummaryCollection(items=send_page(response, found))


@router.get("/workRequests/{workRequestId}/errors", response_model=WorkRequestErrorCollection, response_model_exclude_none=True)
def list_work_request_errors(
    workRequestId: str,
    caller: CallerDep,
    svc: ServicesDep,
    response: Response,
    page: Page = None,
    limit: Limit = None,
    sortBy: Literal["timestamp"] | None = None,
    sortOrder: SortOrder = None,
) -> WorkRequestErrorCollection:
    found = workrequests.list_errors(svc, caller, workRequestId, page=page, limit=limit, sort_order=sortOrder)
    return WorkRequestErrorCollection(items=send_page(response, found))


@router.get("/workRequests/{workRequestId}/logs", response_model=WorkRequestLogEntryCollection, response_model_exclude_none=True)
def list_work_request_logs(
    workRequestId: str,
    caller: CallerDep,
    svc: ServicesDep,
    response: Response,
    page: Page = None,
    limit: Limit = None,
    sortBy: Literal["timestamp"] | None = None,
    sortOrder: SortOrder = None,
) -> WorkRequestLogEntryCollection:
    found = workrequests.list_logs(svc, caller, workRequestId, page=page, limit=limit, sort_order=sortOrder)
    return WorkRequestLogEntryCollection(items=send_page(response, found))
