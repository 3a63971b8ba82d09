"""Work requests: OCI's record of an asynchronous operation, with its logs and errors.

Shared by the API (which accepts operations) and the workers (which finish them)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from tuneforge.store import ids
from tuneforge.store.tables import WorkRequestEntry, WorkRequestRow, utcnow

ENTITY_URI = {
    "GenerativeAiModel": "/20231130/models/",
    "GenerativeAiDedicatedAiCluster": "/20231130/dedicatedAiClusters/",
    "GenerativeAiEndpoint": "/20231130/endpoints/",
    "GenerativeAiSweep": "/20231130/sweeps/",
    "GenerativeAiImportedModel": "/20231130/importedModels/",
}


def new_work_request(
    session: Session,
    *,
    region: str,
    tenancy_id: str,
    compartment_id: str,
    operation_type: str,
    entity_type: str,
    resource_id: str,
    done: bool = False,
) -> WorkRequestRow:
    """A work request for `resource_id`: ACCEPTED, or already SUCCEEDED for synchronous operations."""
    now = utcnow()
    row = WorkRequestRow(
        id=ids.new_ocid(ids.WORK_REQUEST, region),
        tenancy_id=tenancy_id,
        compartment_id=compartment_id,
        operation_type=operation_type,
        status="SUCCEEDED" if done else "ACCEPTED",
        percent_complete=100.0 if done else 0.0,
        entity_type=entity_type,
        resource_id=resource_id,
        action_type=_final_action(operation_type) if done else "IN_PROGRESS",
        entity_uri=ENTITY_URI[entity_type] + resource_id,
        time_accepted=now,
        time_started=now if done else None,
        time_finished=now if done else None,
    )
    session.add(row)
    return row


def _final_action(operation_type: str) -> str:
    return {"CREATE": "CREATED", "DELETE": "DELETED"}.get(operation_type.split("_", 1)[0], "UPDATED")


def finish(session: Session, wr: WorkRequestRow, status: str) -> None:
    """Move a work request to a final status (SUCCEEDED, FAILED or CANCELED)."""
    wr.status = status
    wr.time_finished = utcnow()
    wr.time_started = wr.time_started or wr.time_finished
    if status == "SUCCEEDED":
        wr.percent_complete = 100.0
        wr.action_type = _final_action(wr.operation_type)
    else:
        wr.action_type = "FAILED" if status == "FAILED" else "RELATED"
    wr.revision += 1


def log(session: Session, wr_id: str, message: str) -> None:
    session.add(WorkRequestEntry(work_request_id=wr_id, message=message))


def error(session: Session, wr_id: str, code: str, message: str) -> None:
    session.add(WorkRequestEntry(work_request_id=wr_id, is_error=True, code=code, message=message))
