"""What the pages read: the signed-in tenancy's models, clusters, compartments, curves and logs.

Reads go to the store directly (filtered by tenancy, the service's access boundary) and are turned
into the API's own shapes with its converters, so the console shows exactly what the SDK sees."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneforge import catalog
from tuneforge.api import base_models
from tuneforge.api.auth import Caller
from tuneforge.api.models_routes import model_to_api
from tuneforge.catalog import BaseModelSpec
from tuneforge.hyperparams import METHOD_NAMES
from tuneforge.jobs.command import run_folder
from tuneforge.store.tables import BucketRow, ClusterRow, JobRow, ModelRow, WorkRequestEntry, WorkRequestRow

STATES = ("CREATING", "ACTIVE", "FAILED", "DELETING", "DELETED")
LIVE_STATES = ("CREATING", "DELETING")  # the details page keeps polling while a model is in one of these


def method_name(spec: BaseModelSpec | None) -> str:
    return METHOD_NAMES.get(spec.method, spec.method) if spec else "?"


def custom_models(session: Session, caller: Caller, region: str, state: str | None = None, base: str | None = None,
                  compartment: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """The tenancy's custom models, newest first, as API dicts plus the base model's spec.
    DELETED models only when asked for, as in list_models."""
    stmt = select(ModelRow).where(ModelRow.tenancy_id == caller.tenancy_id).order_by(ModelRow.time_created.desc(), ModelRow.id)
    stmt = stmt.where(ModelRow.lifecycle_state == state) if state else stmt.where(ModelRow.lifecycle_state != "DELETED")
    if base:
        stmt = stmt.where(ModelRow.base_model_id == base)
    if compartment:
        stmt = stmt.where(ModelRow.compartment_id == compartment)
    return [model_view(row, region) for row in session.scalars(stmt)]


def model_view(row: ModelRow, region: str) -> dict[str, Any]:
    view = model_to_api(row, region).model_dump(by_alias=True, exclude_none=True)
    spec = _spec(row.base_model_id)
    view["baseModelName"] = row.base_model_id
    view["method"] = method_name(spec)
    view["standIn"] = (row.system_tags or {}).get("tuneforge", {}).get("standIn") == "true"
    return view


def _spec(model_id: str) -> BaseModelSpec | None:
    return next((m for m in catalog.list_models() if m.id == model_id), None)


def base_model_views(region: str, base: str | None = None) -> list[dict[str, Any]]:
    return [{"spec": spec, "ocid": base_models.base_ocid(spec, region), "method": method_name(spec)}
            for spec in catalog.list_models() if not base or spec.id == base]  # fmt: skip


def owned_model(session: Session, caller: Caller, model_id: str) -> ModelRow | None:
    row = session.get(ModelRow, model_id)
    return row if row is not None and row.tenancy_id == caller.tenancy_id else None


def compartments(session: Session, caller: Caller) -> list[str]:
    """Compartments the tenancy has used (they are free-form labels), the tenancy (root) first."""
    found: set[str] = set()
    for table in (ModelRow, ClusterRow, WorkRequestRow, BucketRow):
        found.update(session.scalars(select(table.compartment_id).where(table.tenancy_id == caller.tenancy_id).distinct()))
    found.discard(caller.tenancy_id)
    return [caller.tenancy_id, *sorted(found)]


def fine_tuning_clusters(session: Session, caller: Caller) -> list[ClusterRow]:
    stmt = select(ClusterRow).where(ClusterRow.tenancy_id == caller.tenancy_id, ClusterRow.type == "FINE_TUNING",
                                    ClusterRow.lifecycle_state == "ACTIVE").order_by(ClusterRow.time_created)  # fmt: skip
    return list(session.scalars(stmt))


def latest_job(session: Session, model_id: str) -> JobRow | None:
    return session.scalars(select(JobRow).where(JobRow.model_id == model_id).order_by(JobRow.time_created.desc())).first()


def run_result(job: JobRow | None) -> dict[str, Any] | None:
    """The engine's model.json (steps run, early stopping, best step, timings), once training finished."""
    result = run_folder(Path(job.job_dir)).read_result() if job is not None else None
    return result.to_json() if result is not None else None


def adapter_dir(job: JobRow | None) -> Path | None:
    folder = run_folder(Path(job.job_dir)) if job is not None else None
    return folder.adapter_dir if folder is not None and folder.is_finished() else None


def work_request_log(session: Session, model_id: str, after: int = 0) -> list[dict[str, Any]]:
    """Log lines and errors of every work request on the model (create, delete), oldest first.
    `after` is the last entry id the page already shows."""
    wr_ids = select(WorkRequestRow.id).where(WorkRequestRow.resource_id == model_id)
    stmt = select(WorkRequestEntry).where(WorkRequestEntry.work_request_id.in_(wr_ids), WorkRequestEntry.id > after).order_by(WorkRequestEntry.id)
    return [{"id": e.id, "time": e.timestamp.strftime("%H:%M:%S"), "error": e.is_error, "code": e.code, "message": e.message}
            for e in session.scalars(stmt)]  # fmt: skip
