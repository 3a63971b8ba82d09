"""/20231130/models: fine-tuned models (create queues a training job) and catalog base models."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from tuneforge.api import base_models, idempotency
from tuneforge.api.deps import CallerDep, CompartmentId, ConfigDep, IfMatch, Limit, Page, QueryStr, RetryToken, SessionDep, SortOrder, owned
from tuneforge.api.errors import incorrect_state, invalid, not_found, too_many_requests
from tuneforge.api.protocol import check_if_match, etag, paginate, rfc3339, send_etag
from tuneforge.api.schemas import CreateModelDetails, Model, ModelCollection, ModelSummary, TrainingMetrics, UpdateModelDetails
from tuneforge.data import scan_dataset, split_sizes
from tuneforge.errors import DatasetError, InvalidParameter
from tuneforge.hyperparams import resolve_training_config, total_training_steps
from tuneforge.jobs import lifecycle
from tuneforge.store import ids, objects, workrequests
from tuneforge.store.tables import ClusterRow, JobRow, MetricRecord, ModelRow

router = APIRouter(prefix="/20231130", tags=["models"])

Capability = Literal[
    "TEXT_GENERATION", "TEXT_SUMMARIZATION", "TEXT_EMBEDDINGS", "FINE_TUNE", "CHAT", "TEXT_RERANK", "TEXT_TO_IMAGE",
    "IMAGE_TEXT_TO_IMAGE", "IMAGE_TEXT_TO_TEXT", "IMAGE_TEXT_TO_VIDEO", "IMAGE_TO_IMAGE", "REALTIME", "AUDIO_TO_AUDIO",
    "AUDIO_TO_TEXT", "TEXT_TO_AUDIO", "TEXT_TO_VIDEO", "AUDIO_TEXT_TO_TEXT", "AUDIO_TRANSLATION", "VIDEO_TEXT_TO_TEXT",
]  # fmt: skip
ModelState = Literal["ACTIVE", "CREATING", "DELETING", "DELETED", "FAILED"]
CUSTOM_CAPABILITIES = ["TEXT_GENERATION", "CHAT"]


def model_to_api(row: ModelRow, region: str) -> Model:
    spec = base_models.find(row.base_model_id, region)
    return Model(
        id=row.id,
        compartment_id=row.compartment_id,
        capabilities=CUSTOM_CAPABILITIES,
        lifecycle_state=row.lifecycle_state,
        lifecycle_details=row.lifecycle_details,
        display_name=row.display_name,
        vendor=row.vendor,
        version=row.version,
        description=row.description,
        time_created=rfc3339(row.time_created),
        time_updated=rfc3339(row.time_updated),
        base_model_id=base_models.base_ocid(spec, region) if spec else row.base_model_id,
        type="CUSTOM",
        fine_tune_details=row.fine_tune_details,
        model_metrics=row.model_metrics,
        freeform_tags=row.freeform_tags,
        defined_tags=row.defined_tags,
        system_tags=row.system_tags,
    )


def _custom_model(session, caller, model_id: str) -> ModelRow:
    return owned(session, caller, ModelRow, model_id, "model")


def _send(response: Response, row: ModelRow, region: str, wr_id: str | None = None) -> Model:
    send_etag(response, row.id, row.revision, wr_id)
    return model_to_api(row, region)


# ---- create ---------------------------------------------------------------------------------


def _cluster_for_training(session, caller, cluster_id: str) -> ClusterRow:
    cluster = session.get(ClusterRow, cluster_id)
    field = "fineTuneDetails.dedicatedAiClusterId"
    if cluster is None or cluster.tenancy_id != caller.tenancy_id or cluster.lifecycle_state == "DELETED":
        raise invalid(f"{field}: no dedicated AI cluster {cluster_id!r} in your tenancy")
    if cluster.type != "FINE_TUNING":
        raise invalid(f"{field}: cluster {cluster_id!r} is a {cluster.type} cluster; fine-tuning needs a FINE_TUNING cluster")
    if cluster.lifecycle_state != "ACTIVE":
        raise invalid(f"{field}: cluster {cluster_id!r} is {cluster.lifecycle_state}, not ACTIVE")
    return cluster


def _dataset_file(session, config, caller, details: CreateModelDetails) -> tuple[Path, int]:
    """The stored dataset object and its number of examples; 400 naming every bad line."""
    ds = details.fine_tune_details.training_dataset
    where = f"{ds.namespace_name}/{ds.bucket_name}/{ds.object_name}"
    found = None
    if ds.namespace_name == objects.namespace_for(caller.tenancy_id):
        found = objects.find(session, ds.namespace_name, ds.bucket_name, ds.object_name)
    if found is None:
        raise invalid(f"fineTuneDetails.trainingDataset: object {where} not found in your namespace; upload it with put_object first")
    path = objects.blob_path(config.objects_dir, found.storage_key)
    try:
        return path, scan_dataset(path)
    except DatasetError as err:
        raise invalid(f"fineTuneDetails.trainingDataset: {str(err).replace(str(path), where)}") from None


def _training_config(details: CreateModelDetails, region: str):
    spec = base_models.resolve(details.base_model_id, region)
    overrides = details.fine_tune_details.training_config
    try:
        config = resolve_training_config(spec, overrides.model_dump(by_alias=True, exclude_none=True) if overrides else {})
    except InvalidParameter as err:
        raise invalid(f"fineTuneDetails.trainingConfig.{err}") from None
    return spec, config


def _check_capacity(session, config, caller) -> None:
    pending = session.scalar(
        select(func.count()).select_from(JobRow).join(ModelRow, JobRow.model_id == ModelRow.id)
        .where(JobRow.state != "DONE", ModelRow.tenancy_id == caller.tenancy_id)
    )  # fmt: skip
    if pending >= config.max_pending_jobs_per_tenancy:
        raise too_many_requests(f"your tenancy already has {pending} training jobs queued or running; retry later")


def _link_dataset(source: Path, job_dir: Path) -> None:
    """Snapshot the dataset for the job: a later put_object of the same name must not change a queued run.
    Uploads replace files by rename, so a hard link is a true snapshot (copy where links fail)."""
    job_dir.mkdir(parents=True, exist_ok=True)
    target = job_dir / "dataset.jsonl"
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _replay(session, config, token_row, response: Response) -> Model:
    row = session.get(ModelRow, token_row.resource_id)
    return _send(response, row, config.region, token_row.work_request_id)


@router.post("/models", response_model=Model, response_model_exclude_none=True)
def create_model(details: CreateModelDetails, caller: CallerDep, session: SessionDep, config: ConfigDep,
                 request: Request, response: Response, retry_token: RetryToken = None) -> Model:  # fmt: skip
    """Validate everything up front, then queue the training job; the Model starts CREATING."""
    digest = idempotency.body_hash(details)
    earlier = idempotency.lookup(session, caller.tenancy_id, retry_token, "CreateModel", digest)
    if earlier is not None:
        return _replay(session, config, earlier, response)
    spec, training_config = _training_config(details, config.region)
    _cluster_for_training(session, caller, details.fine_tune_details.dedicated_ai_cluster_id)
    dataset, n_examples = _dataset_file(session, config, caller, details)
    _check_capacity(session, config, caller)

    now = datetime.now(timezone.utc)
    model_id = ids.new_ocid(ids.MODEL, config.region)
    ft = details.fine_tune_details
    row = ModelRow(
        id=model_id,
        tenancy_id=caller.tenancy_id,
        compartment_id=details.compartment_id,
        display_name=details.display_name or "generativeaimodel" + now.strftime("%Y%m%d%H%M%S"),
        description=details.description,
        vendor=details.vendor or spec.vendor,
        version=details.version or "1.0",
        base_model_id=spec.id,
        lifecycle_state="CREATING",
        fine_tune_details={
            "trainingDataset": ft.training_dataset.model_dump(by_alias=True),
            "dedicatedAiClusterId": ft.dedicated_ai_cluster_id,
            "trainingConfig": training_config.to_api(),
        },
        model_metrics=None,
        freeform_tags=details.freeform_tags or {},
        defined_tags=details.defined_tags or {},
        system_tags={},
        time_created=now,
    )
    session.add(row)
    session.flush()
    wr = workrequests.new_work_request(
        session, region=config.region, tenancy_id=caller.tenancy_id, compartment_id=details.compartment_id,
        operation_type="CREATE_MODEL", entity_type="GenerativeAiModel", resource_id=model_id,
    )  # fmt: skip
    session.flush()
    job_dir = config.jobs_dir / model_id
    session.add(JobRow(id=wr.id, model_id=model_id, cluster_id=ft.dedicated_ai_cluster_id, state="QUEUED", job_dir=str(job_dir)))
    workrequests.log(session, wr.id, _plan_text(spec.id, n_examples, training_config))
    idempotency.record(session, caller.tenancy_id, retry_token, "CreateModel", digest, model_id, wr.id)
    _link_dataset(dataset, job_dir)
    try:
        session.commit()
    except IntegrityError:
        # A concurrent retry with the same token won the race: answer with what it created.
        session.rollback()
        shutil.rmtree(job_dir, ignore_errors=True)
        earlier = idempotency.lookup(session, caller.tenancy_id, retry_token, "CreateModel", digest)
        if earlier is None:
            raise
        return _replay(session, config, earlier, response)
    request.app.state.wake_workers()
    return _send(response, row, config.region, wr.id)


def _plan_text(base_id: str, n: int, training_config) -> str:
    n_train, n_val = split_sizes(n)
    steps = total_training_steps(n_train, training_config.training_batch_size, training_config.total_training_epochs)
    return (
        f"Accepted: fine-tune {base_id} on {n} examples ({n_train} training, {n_val} validation), "
        f"totalTrainingSteps = {steps}; waiting for a worker."
    )


# ---- read -----------------------------------------------------------------------------------


@router.get("/models/{modelId}", response_model=Model, response_model_exclude_none=True)
def get_model(modelId: str, caller: CallerDep, session: SessionDep, config: ConfigDep, response: Response) -> Model:
    spec = base_models.find(modelId, config.region)
    if spec is not None:
        model = base_models.to_api(spec, config.region)
        send_etag(response, model.id, 0)
        return model
    return _send(response, _custom_model(session, caller, modelId), config.region)


SORT_KEYS = {"displayName": "display_name", "lifecycleState": "lifecycle_state", "timeCreated": "time_created"}


@router.get("/models", response_model=ModelCollection, response_model_exclude_none=True)
def list_models(
    caller: CallerDep, session: SessionDep, config: ConfigDep, response: Response,
    compartmentId: CompartmentId,
    vendor: QueryStr = None,
    capability: Annotated[list[Capability] | None, Query()] = None,
    lifecycleState: ModelState | None = None,
    displayName: QueryStr = None,
    id: QueryStr = None,
    limit: Limit = None,
    page: Page = None,
    sortOrder: SortOrder = None,
    sortBy: Literal["displayName", "lifecycleState", "timeCreated"] | None = None,
) -> ModelCollection:  # fmt: skip
    """Catalog base models (in every compartment) and the tenancy's custom models in the compartment.
    DELETED models are listed only when asked for with lifecycleState=DELETED."""
    stmt = select(ModelRow).where(ModelRow.tenancy_id == caller.tenancy_id, ModelRow.compartment_id == compartmentId)
    stmt = stmt.where(ModelRow.lifecycle_state == lifecycleState) if lifecycleState else stmt.where(ModelRow.lifecycle_state != "DELETED")
    if id:
        stmt = stmt.where(ModelRow.id == id)
    if displayName:
        stmt = stmt.where(ModelRow.display_name == displayName)
    models = [model_to_api(row, config.region) for row in session.scalars(stmt)] + base_models.all_base(config.region)

    def keep(m: Model) -> bool:
        return (
            (not vendor or m.vendor == vendor)
            and (not capability or any(c in m.capabilities for c in capability))
            and (not lifecycleState or m.lifecycle_state == lifecycleState)
            and (not displayName or m.display_name == displayName)
            and (not id or m.id == id)
        )

    sort_by = sortBy or "timeCreated"
    descending = (sortOrder or ("DESC" if sort_by == "timeCreated" else "ASC")) == "DESC"
    attr = SORT_KEYS[sort_by]
    # RFC 3339 strings of one format sort chronologically; id breaks ties so pages are stable.
    ordered = sorted(filter(keep, models), key=lambda m: (getattr(m, attr) or "", m.id), reverse=descending)
    items = paginate(ordered, page, limit, response)
    return ModelCollection(items=[ModelSummary(**m.model_dump(exclude={"time_updated"})) for m in items])


@router.get("/models/{modelId}/metrics", response_model=TrainingMetrics, response_model_exclude_none=True)
def get_model_metrics(
    modelId: str, caller: CallerDep, session: SessionDep,
    since: Annotated[int, Query(ge=0, le=2**31)] = 0,
    limit: Annotated[int, Query(ge=1, le=10000)] = 10000,
) -> TrainingMetrics:  # fmt: skip
    """Native, for the console: training/evaluation records from metrics.jsonl (streamed into the
    store while the job runs) and the latest progress.json. Poll with ?since=<next>."""
    row = _custom_model(session, caller, modelId)
    records = session.scalars(
        select(MetricRecord).where(MetricRecord.model_id == row.id, MetricRecord.seq >= since).order_by(MetricRecord.seq).limit(limit)
    ).all()
    job = session.scalars(select(JobRow).where(JobRow.model_id == row.id).order_by(JobRow.time_created.desc())).first()
    return TrainingMetrics(
        model_id=row.id,
        lifecycle_state=row.lifecycle_state,
        progress=job.progress if job else None,
        items=[r.record for r in records],
        next=(records[-1].seq + 1) if records else since,
    )


# ---- update / delete ------------------------------------------------------------------------


@router.put("/models/{modelId}", response_model=Model, response_model_exclude_none=True)
def update_model(modelId: str, details: UpdateModelDetails, caller: CallerDep, session: SessionDep, config: ConfigDep,
                 response: Response, if_match: IfMatch = None) -> Model:  # fmt: skip
    """Synchronous, as in OCI (update_model_and_wait_for_state polls the model, not a work request)."""
    row = _custom_model(session, caller, modelId)
    check_if_match(if_match, etag(row.id, row.revision))
    if row.lifecycle_state in ("DELETING", "DELETED"):
        raise incorrect_state(f"model {row.id} is {row.lifecycle_state}")
    for field in details.model_fields_set:
        value = getattr(details, field)
        if value is not None:
            setattr(row, field, value)
    lifecycle.touch(row)
    session.commit()
    return _send(response, row, config.region)


@router.delete("/models/{modelId}", status_code=202, response_class=Response)
def delete_model(modelId: str, caller: CallerDep, session: SessionDep, config: ConfigDep, response: Response,
                 if_match: IfMatch = None) -> Response:  # fmt: skip
    """Cancels the training job if it runs (SIGTERM to its subprocess), then DELETED."""
    if base_models.find(modelId, config.region) is not None:
        raise not_found("model")
    row = _custom_model(session, caller, modelId)
    check_if_match(if_match, etag(row.id, row.revision))
    if row.lifecycle_state == "DELETED":
        raise not_found("model")
    pending = lifecycle.pending_delete_request(session, row.id)
    if pending is not None:  # already being deleted: same answer as the first delete
        return Response(status_code=202, headers={"opc-work-request-id": pending.id})
    wr, remove = lifecycle.request_deletion(session, row, config.region)
    session.commit()
    for path in remove:
        shutil.rmtree(path, ignore_errors=True)
    return Response(status_code=202, headers={"opc-work-request-id": wr.id})
