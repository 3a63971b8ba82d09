"""Work requests: the status of asynchronous operations; percentComplete follows the training
job's progress, logs and errors are what the job reported."""

from __future__ import annotations

from sqlalchemy import select

from tuneforge.services.context import Caller, Services
from tuneforge.services.protocol import Answer, Page, etag, rfc3339, sql_page
from tuneforge.services.schemas.resources import WorkRequest, WorkRequestError, WorkRequestLogEntry, WorkRequestResource
from tuneforge.services.tenancy import owned
from tuneforge.store.tables import WorkRequestEntry, WorkRequestRow

STATUSES = ("ACCEPTED", "IN_PROGRESS", "WAITING", "FAILED", "SUCCEEDED", "CANCELING", "CANCELED")


def to_api(row: WorkRequestRow) -> WorkRequest:
    resource = WorkRequestResource(
        entity_type=row.entity_type, action_type=row.action_type, identifier=row.resource_id, entity_uri=row.entity_uri
    )
    return WorkRequest(
        operation_type=row.operation_type,
        status=row.status,
        id=row.id,
        compartment_id=row.compartment_id,
        resources=[resource],
        percent_complete=row.percent_complete,
        time_accepted=rfc3339(row.time_accepted),
        time_started=rfc3339(row.time_started),
        time_finished=rfc3339(row.time_finished),
    )


def get_work_request(svc: Services, caller: Caller, wr_id: str) -> Answer[WorkRequest]:
    with svc.session() as session:
        row = owned(session, caller, WorkRequestRow, wr_id, "work request")
        return Answer(to_api(row), etag(row.id, row.revision))


def list_work_requests(
    svc: Services,
    caller: Caller,
    compartment_id: str,
    *,
    wr_id: str | None = None,
    status: str | None = None,
    resource_id: str | None = None,
    page: str | None = None,
    limit: int | None = None,
    sort_order: str | None = None,
) -> Page[WorkRequest]:
    stmt = select(WorkRequestRow).where(
        WorkRequestRow.tenancy_id == caller.tenancy_id, WorkRequestRow.compartment_id == compartment_id
    )
    for column, value in ((WorkRequestRow.id, wr_id), (WorkRequestRow.status, status), (WorkRequestRow.resource_id, resource_id)):
        if value:
            stmt = stmt.where(column == value)
    column = WorkRequestRow.time_accepted
    stmt = stmt.order_by(column.asc() if sort_order == "ASC" else column.desc(), WorkRequestRow.id)
    with svc.session() as session:
        rows = sql_page(session, stmt, page, limit)
        return Page([to_api(r) for r in rows.items], rows.next_page)


def _entries(svc: Services, caller: Caller, wr_id: str, errors: bool, page, limit, sort_order) -> Page[WorkRequestEntry]:
    order = WorkRequestEntry.id.desc() if sort_order == "DESC" else WorkRequestEntry.id.asc()
    stmt = (
        select(WorkRequestEntry)
        .where(WorkRequestEntry.work_request_id == wr_id, WorkRequestEntry.is_error == errors)
        .order_by(order)
    )
    with svc.session() as session:
        owned(session, caller, WorkRequestRow, wr_id, "work request")
        return sql_page(session, stmt, page, limit)


def list_errors(svc: Services, caller: Caller, wr_id: str, *, page=None, limit=None, sort_order=None) -> Page[WorkRequestError]:
    rows = _entries(svc, caller, wr_id, True, page, limit, sort_order)
    items = [
        WorkRequestError(code=r.code or "InternalError", message=r.message, timestamp=rfc3339(r.timestamp)) for r in rows.items
    ]
    return Page(items, rows.next_page)


def list_logs(svc: Services, caller: Caller, wr_id: str, *, page=None, limit=None, sort_order=None) -> Page[WorkRequestLogEntry]:
    rows = _entries(svc, caller, wr_id, False, page, limit, sort_order)
    return Page([WorkRequestLogEntry(message=r.message, timestamp=rfc3339(r.timestamp)) for r in rows.items], rows.next_page)
