"""/20231130/workRequests: the status of asynchronous operations; percentComplete follows the
training job's progress.json, logs and errors are what the job reported."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Response
from sqlalchemy import select

from tuneforge.api.deps import CallerDep, CompartmentId, Limit, Page, QueryStr, SessionDep, SortOrder, owned
from tuneforge.api.protocol import etag, rfc3339, sql_page
from tuneforge.api.schemas import (
    WorkRequest, WorkRequestError, WorkRequestErrorCollection, WorkRequestLogEntry, WorkRequestLogEntryCollection,
    WorkRequestResource, WorkRequestSummaryCollection,
)  # fmt: skip
from tuneforge.store.tables import WorkRequestEntry, WorkRequestRow

router = APIRouter(prefix="/20231130", tags=["workRequests"])
Status = Literal["ACCEPTED", "IN_PROGRESS", "WAITING", "FAILED", "SUCCEEDED", "CANCELING", "CANCELED"]


def work_request_to_api(row: WorkRequestRow) -> WorkRequest:
    resource = WorkRequestResource(entity_type=row.entity_type, action_type=row.action_type, identifier=row.resource_id, entity_uri=row.entity_uri)
    return WorkRequest(
        operation_type=row.operation_type, status=row.status, id=row.id, compartment_id=row.compartment_id,
        resources=[resource], percent_complete=row.percent_complete, time_accepted=rfc3339(row.time_accepted),
        time_started=rfc3339(row.time_started), time_finished=rfc3339(row.time_finished),
    )  # fmt: skip


def _work_request(session, caller, wr_id: str) -> WorkRequestRow:
    return owned(session, caller, WorkRequestRow, wr_id, "work request")


@router.get("/workRequests/{workRequestId}", response_model=WorkRequest, response_model_exclude_none=True)
def get_work_request(workRequestId: str, caller: CallerDep, session: SessionDep, response: Response) -> WorkRequest:
    row = _work_request(session, caller, workRequestId)
    response.headers["etag"] = etag(row.id, row.revision)
    if row.status in ("ACCEPTED", "IN_PROGRESS"):
        response.headers["retry-after"] = "1"
    return work_request_to_api(row)


@router.get("/workRequests", response_model=WorkRequestSummaryCollection, response_model_exclude_none=True)
def list_work_requests(
    caller: CallerDep, session: SessionDep, response: Response,
    compartmentId: CompartmentId,
    workRequestId: QueryStr = None,
    status: Status | None = None,
    resourceId: QueryStr = None,
    page: Page = None,
    limit: Limit = None,
    sortOrder: SortOrder = None,
    sortBy: Literal["timeAccepted"] | None = None,
) -> WorkRequestSummaryCollection:  # fmt: skip
    stmt = select(WorkRequestRow).where(WorkRequestRow.tenancy_id == caller.tenancy_id, WorkRequestRow.compartment_id == compartmentId)
    for column, value in ((WorkRequestRow.id, workRequestId), (WorkRequestRow.status, status), (WorkRequestRow.resource_id, resourceId)):
        if value:
            stmt = stmt.where(column == value)
    column = WorkRequestRow.time_accepted
    stmt = stmt.order_by(column.asc() if sortOrder == "ASC" else column.desc(), WorkRequestRow.id)
    return WorkRequestSummaryCollection(items=[work_request_to_api(r) for r in sql_page(session, stmt, page, limit, response)])


def _entries(session, caller, wr_id: str, errors: bool, page, limit, sort_order, response: Response) -> list[WorkRequestEntry]:
    _work_request(session, caller, wr_id)
    order = WorkRequestEntry.id.desc() if sort_order == "DESC" else WorkRequestEntry.id.asc()
    stmt = select(WorkRequestEntry).where(WorkRequestEntry.work_request_id == wr_id, WorkRequestEntry.is_error == errors).order_by(order)
    return sql_page(session, stmt, page, limit, response)


@router.get("/workRequests/{workRequestId}/errors", response_model=WorkRequestErrorCollection, response_model_exclude_none=True)
def list_work_request_errors(workRequestId: str, caller: CallerDep, session: SessionDep, response: Response, page: Page = None,
                             limit: Limit = None, sortBy: Literal["timestamp"] | None = None, sortOrder: SortOrder = None) -> WorkRequestErrorCollection:  # fmt: skip
    rows = _entries(session, caller, workRequestId, True, page, limit, sortOrder, response)
    return WorkRequestErrorCollection(items=[WorkRequestError(code=r.code or "InternalError", message=r.message, timestamp=rfc3339(r.timestamp)) for r in rows])


@router.get("/workRequests/{workRequestId}/logs", response_model=WorkRequestLogEntryCollection, response_model_exclude_none=True)
def list_work_request_logs(workRequestId: str, caller: CallerDep, session: SessionDep, response: Response, page: Page = None,
                           limit: Limit = None, sortBy: Literal["timestamp"] | None = None, sortOrder: SortOrder = None) -> WorkRequestLogEntryCollection:  # fmt: skip
    rows = _entries(session, caller, workRequestId, False, page, limit, sortOrder, response)
    return WorkRequestLogEntryCollection(items=[WorkRequestLogEntry(message=r.message, timestamp=rfc3339(r.timestamp)) for r in rows])
