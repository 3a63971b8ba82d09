"""Custom models: a create validates everything up front (the training config against the base
model's ranges, the cluster, every line of the dataset, the plan's length) and then queues the
training job; the model is CREATING until a worker's job ends it ACTIVE or FAILED. Catalog base
models are read-only and appear in every compartment. A base model is a catalog model or one of the
tenancy's ACTIVE imported models (base_models.base_for), whose jobs train its own weights."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update

from tuneforge import data
from tuneforge.errors import DatasetError, InvalidParameter
from tuneforge.hyperparams import DPO_TRAINING_CONFIG, TrainingConfig, make_plan, resolve_training_config
from tuneforge.jobs import lifecycle
from tuneforge.jobs.command import DATASET_JSONL, VALIDATION_JSONL, run_folder
from tuneforge.services import idempotency, tenancy
from tuneforge.services.context import Caller, Services
from tuneforge.services.errors import incorrect_state, invalid, not_found, too_many_requests
from tuneforge.services.protocol import Answer, Page, check_if_match, etag, is_descending, listing, page_of, rfc3339
from tuneforge.services.resources import base_models, clusters, datasets, endpoints, imported_models
from tuneforge.services.schemas.resources import (
    CreateDedicatedAiClusterDetails,
    CreateModelDetails,
    Model,
    ModelSummary,
    TrainingMetrics,
    UpdateModelDetails,
)
from tuneforge.services.tenancy import find_owned, owned
from tuneforge.services.transactions import Conflict, commit_versioned, retrying
from tuneforge.serving.export import ExportError, export_peft
from tuneforge.store import ids, objects, workrequests
from tuneforge.store.tables import (
    ClusterRow,
    ImportedModelRow,
    JobRow,
    MetricRecord,
    ModelRow,
    WorkRequestEntry,
    WorkRequestRow,
)

CUSTOM_CAPABILITIES = ["TEXT_GENERATION", "CHAT"]
STATES = ("ACTIVE", "CREATING", "DELETING", "DELETED", "FAILED")
LIVE_STATES = ("CREATING", "DELETING")  # states that change without the user doing anything
SORT_KEYS = {"displayName": "display_name", "lifecycleState": "lifecycle_state", "timeCreated": "time_created"}


def to_api(row: ModelRow, region: str) -> Model:
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


def _answer(row: ModelRow, region: str, work_request_id: str | None = None) -> Answer[Model]:
    return Answer(to_api(row, region), etag(row.id, row.revision), work_request_id)


# ---- create ---------------------------------------------------------------------------------


def _training_config(
    session, caller: Caller, details: CreateModelDetails, region: str
) -> tuple[base_models.Base, TrainingConfig]:
    base = base_models.base_for(session, caller, details.base_model_id, region)
    overrides = details.fine_tune_details.training_config
    try:
        config = resolve_training_config(base.spec, overrides.model_dump(by_alias=True, exclude_none=True) if overrides else {})
    except InvalidParameter as err:
        raise invalid(f"fineTuneDetails.trainingConfig.{err}") from None
    return base, config


def _hold_cluster(session, cluster_id: str) -> None:
    """Lock the training cluster's row for this transaction, only while it is still ACTIVE (a no-op
    UPDATE: its etag does not move). A delete of the cluster that got there first makes this match no
    row; one that comes after waits for this commit and then finds the queued job (clusters.py counts
    jobs after its own UPDATE), so a job is never queued on a deleted cluster."""
    held = session.execute(
        update(ClusterRow)
        .where(ClusterRow.id == cluster_id, ClusterRow.lifecycle_state == "ACTIVE")
        .values(lifecycle_state=ClusterRow.lifecycle_state)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not held:
        raise invalid(
            f"fineTuneDetails.dedicatedAiClusterId: cluster {cluster_id!r} was deleted while the model was being created"
        )


def _hold_imported(session, model_id: str) -> None:
    """Claim the imported base model for this transaction (imported_models.claim): a delete of it that
    came first makes this fail here; one that comes after counts this fine-tune and is refused."""
    try:
        imported_models.claim(session, session.get(ImportedModelRow, model_id))
    except Conflict:
        raise invalid(f"baseModelId: imported model {model_id!r} was deleted while the model was being created") from None


def method_hint(path: Path, method: str) -> str:
    """When `path` is a valid file of the other method's family: what to set instead (the OCI API's
    field), ending in a space; else "". Only asked once the check has failed, so it costs nothing otherwise."""
    try:
        fmt = data.dataset_format(path, min_examples=1, method=None)
    except DatasetError:
        return ""
    if fmt in data.METHOD_FORMATS[method]:
        return ""
    if method == data.SUPERVISED:
        return (
            f"a preference file trains with fineTuneDetails.trainingConfig.trainingConfigType {DPO_TRAINING_CONFIG} "
            "(preference tuning, docs/dpo.md). "
        )
    return (
        f"fineTuneDetails.trainingConfig.trainingConfigType {DPO_TRAINING_CONFIG} trains on preference pairs; "
        "for supervised fine-tuning use the base model's own training config type. "
    )


def _dataset(
    svc: Services, session, caller: Caller, details: CreateModelDetails, base: base_models.Base, method: str
) -> tuple[Path, int]:
    """The stored dataset object and its number of examples; 400 naming every bad line. `method`
    (data.SUPERVISED or data.DPO, the training config's) refuses a file of the other family."""
    ds = details.fine_tune_details.training_dataset
    where = f"{ds.namespace_name}/{ds.bucket_name}/{ds.object_name}"
    found = None
    if ds.namespace_name == objects.namespace_for(caller.tenancy_id):
        found = objects.find(session, ds.namespace_name, ds.bucket_name, ds.object_name)
    if found is None:
        raise invalid(
            f"fineTuneDetails.trainingDataset: object {where} not found in your namespace; upload it with put_object first"
        )
    path = objects.blob_path(svc.config.objects_dir, found.storage_key)
    try:
        # Token lengths are counted with the tokenizer of the weights the job will train: an imported
        # model's own, a catalog model's from the server's weights.
        weights = str(base.weights) if base.weights is not None else svc.config.weights
        return path, datasets.check(path, where, base.spec, weights, method)
    except DatasetError as err:
        raise invalid(f"fineTuneDetails.trainingDataset: {method_hint(path, method)}{err}") from None


def _check_capacity(svc: Services, session, caller: Caller) -> None:
    pending = session.scalar(
        select(func.count())
        .select_from(JobRow)
        .join(ModelRow, JobRow.model_id == ModelRow.id)
        .where(JobRow.state != "DONE", ModelRow.tenancy_id == caller.tenancy_id)
    )
    if pending >= svc.config.max_pending_jobs_per_tenancy:
        raise too_many_requests(f"your tenancy already has {pending} training jobs queued or running; retry later")


def _link_dataset(source: Path, job_dir: Path, name: str = DATASET_JSONL) -> None:
    """Snapshot the dataset for the job: a later put_object of the same name must not change a queued run.
    Uploads replace files by rename, so a hard link is a true snapshot (copy where links fail)."""
    job_dir.mkdir(parents=True, exist_ok=True)
    target = job_dir / name
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def create_model(
    svc: Services,
    caller: Caller,
    details: CreateModelDetails,
    retry_token: str | None = None,
    *,
    new_cluster: CreateDedicatedAiClusterDetails | None = None,
    seed: int | None = None,
    validation: tuple[Path, int] | None = None,
) -> Answer[Model]:
    """Validate everything, then queue the training job; the Model starts CREATING. With
    `new_cluster` (the console's "a new fine-tuning cluster") the cluster is created in the same
    transaction, only once everything else passed, so a refused create leaves nothing behind.
    The OpenAI API's jobs (openai_jobs) also give the run's `seed` (None: the server's, 42) and a checked
    `validation` dataset (its file and number of examples), which replaces OCI's 80:20 split."""
    digest = idempotency.body_hash(details)
    with svc.session() as session:
        earlier = idempotency.lookup(session, caller.tenancy_id, retry_token, "CreateModel", digest)
        if earlier is not None:
            return _answer(session.get(ModelRow, earlier.resource_id), svc.region, earlier.work_request_id)
        base, training_config = _training_config(session, caller, details, svc.region)
        spec = base.spec
        if new_cluster is None:
            clusters.usable(
                session,
                caller,
                details.fine_tune_details.dedicated_ai_cluster_id,
                "fineTuneDetails.dedicatedAiClusterId",
                "FINE_TUNING",
                "fine-tuning needs a FINE_TUNING cluster",
            )
        method = data.DPO if training_config.is_dpo else data.SUPERVISED
        dataset, n_examples = _dataset(svc, session, caller, details, base, method)
        try:
            plan = make_plan(n_examples, training_config, validation[1] if validation else None)
        except InvalidParameter as err:
            raise invalid(f"fineTuneDetails.trainingConfig.{err}") from None
        _check_capacity(svc, session, caller)

        cluster_id = details.fine_tune_details.dedicated_ai_cluster_id
        if new_cluster is not None:
            cluster_id = clusters.add_cluster(svc, session, caller, new_cluster)[0].id
        else:
            _hold_cluster(session, cluster_id)
        if base.weights is not None:
            _hold_imported(session, spec.id)
        now = datetime.now(UTC)
        model_id = ids.new_ocid(ids.MODEL, svc.region)
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
                "dedicatedAiClusterId": cluster_id,
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
            session,
            region=svc.region,
            tenancy_id=caller.tenancy_id,
            compartment_id=details.compartment_id,
            operation_type="CREATE_MODEL",
            entity_type="GenerativeAiModel",
            resource_id=model_id,
        )
        session.flush()
        job_dir = svc.config.jobs_dir / model_id
        session.add(JobRow(id=wr.id, model_id=model_id, cluster_id=cluster_id, state="QUEUED", job_dir=str(job_dir), seed=seed))
        workrequests.log(session, wr.id, f"Accepted: fine-tune {spec.id} on {plan.describe()}; waiting for a worker.")
        idempotency.record(session, caller.tenancy_id, retry_token, "CreateModel", digest, model_id, wr.id)
        _link_dataset(dataset, job_dir)
        if validation is not None:
            _link_dataset(validation[0], job_dir, VALIDATION_JSONL)
        earlier = idempotency.commit_or_earlier(
            session,
            caller.tenancy_id,
            retry_token,
            "CreateModel",
            digest,
            undo=lambda: shutil.rmtree(job_dir, ignore_errors=True),
        )
        if earlier is not None:  # a concurrent retry with the same token won the race: answer with what it created
            return _answer(session.get(ModelRow, earlier.resource_id), svc.region, earlier.work_request_id)
    svc.wake_workers()
    return _answer(row, svc.region, wr.id)


# ---- read -----------------------------------------------------------------------------------


def get_model(svc: Services, caller: Caller, model_id: str) -> Answer[Model]:
    spec = base_models.find(model_id, svc.region)
    if spec is not None:
        model = base_models.to_api(spec, svc.region)
        return Answer(model, etag(model.id, 0))
    with svc.session() as session:
        return _answer(owned(session, caller, ModelRow, model_id, "model"), svc.region)


def list_models(
    svc: Services,
    caller: Caller,
    compartment_id: str | None,
    *,
    vendor: str | None = None,
    capability: list[str] | None = None,
    lifecycle_state: str | None = None,
    display_name: str | None = None,
    model_id: str | None = None,
    base_model: str | None = None,
    include_base: bool = True,
    page: str | None = None,
    limit: int | None = None,
    sort_by: str | None = None,
    sort_order: str | None = None,
) -> Page[Model]:
    """Catalog base models (in every compartment) and the tenancy's custom models. DELETED models are
    listed only when asked for with lifecycle_state="DELETED". compartment_id None: every compartment
    (the console's view; OCI's API always names one)."""
    with svc.session() as session:
        filters = ((ModelRow.id, model_id), (ModelRow.display_name, display_name), (ModelRow.base_model_id, base_model))
        stmt = listing(ModelRow, caller.tenancy_id, compartment_id, lifecycle_state, filters)
        models = [to_api(row, svc.region) for row in session.scalars(stmt)]
    if include_base and not base_model:
        models += base_models.all_base(svc.region)

    def keep(m: Model) -> bool:
        return (
            (not vendor or m.vendor == vendor)
            and (not capability or any(c in m.capabilities for c in capability))
            and (not lifecycle_state or m.lifecycle_state == lifecycle_state)
            and (not display_name or m.display_name == display_name)
            and (not model_id or m.id == model_id)
        )

    sort_by = sort_by or "timeCreated"
    descending = is_descending(sort_by, sort_order)
    attr = SORT_KEYS[sort_by]
    # RFC 3339 strings of one format sort chronologically; id breaks ties so pages are stable.
    ordered = sorted(filter(keep, models), key=lambda m: (getattr(m, attr) or "", m.id), reverse=descending)
    return page_of(ordered, page, limit)


def summary(model: Model) -> ModelSummary:
    return ModelSummary(**model.model_dump(exclude={"time_updated"}))


def training_metrics(svc: Services, caller: Caller, model_id: str, since: int = 0, limit: int = 10000) -> TrainingMetrics:
    """Native, for the console: training/evaluation records from metrics.jsonl (streamed into the
    store while the job runs) and the latest progress.json. Poll with since=<next>."""
    with svc.session() as session:
        row = owned(session, caller, ModelRow, model_id, "model")
        records = session.scalars(
            select(MetricRecord)
            .where(MetricRecord.model_id == row.id, MetricRecord.seq >= since)
            .order_by(MetricRecord.seq)
            .limit(limit)
        ).all()
        job = _latest_job(session, row.id)
        return TrainingMetrics(
            model_id=row.id,
            lifecycle_state=row.lifecycle_state,
            progress=job.progress if job else None,
            items=[r.record for r in records],
            next=(records[-1].seq + 1) if records else since,
        )


def _latest_job(session, model_id: str) -> JobRow | None:
    return session.scalars(select(JobRow).where(JobRow.model_id == model_id).order_by(JobRow.time_created.desc())).first()


def run_result(svc: Services, caller: Caller, model_id: str) -> dict[str, Any] | None:
    """The engine's model.json (steps run, early stopping, best step, timings), once training finished."""
    with svc.session() as session:
        row = find_owned(session, caller, ModelRow, model_id)
        job = _latest_job(session, row.id) if row is not None else None
    result = run_folder(Path(job.job_dir)).read_result() if job is not None else None
    return result.to_json() if result is not None else None


def run_dir(svc: Services, caller: Caller, model_id: str) -> Path | None:
    """The finished run folder of a model (adapter/, model.json, ...), or None."""
    with svc.session() as session:
        row = find_owned(session, caller, ModelRow, model_id)
        job = _latest_job(session, row.id) if row is not None else None
    folder = run_folder(Path(job.job_dir)) if job is not None else None
    return folder.path if folder is not None and folder.is_finished() else None


def models_on_cluster(svc: Services, caller: Caller, cluster_id: str, limit: int = 100) -> list[Model]:
    """The tenancy's custom models trained (or queued, or training) on a fine-tuning cluster, newest
    first; DELETED ones are left out, as in list_models."""
    with svc.session() as session:
        on_cluster = select(JobRow.model_id).where(JobRow.cluster_id == cluster_id)
        stmt = (
            select(ModelRow)
            .where(ModelRow.tenancy_id == caller.tenancy_id, ModelRow.id.in_(on_cluster), ModelRow.lifecycle_state != "DELETED")
            .order_by(ModelRow.time_created.desc(), ModelRow.id)
            .limit(limit)
        )
        return [to_api(row, svc.region) for row in session.scalars(stmt)]


def export_adapter(svc: Services, caller: Caller, model_id: str, target_dir: Path) -> Path:
    """The finished model's adapter as a self-contained PEFT folder at `target_dir` (which must not
    exist): what `tuneforge export --format peft` writes (adapter, tokenizer, model.json, a README
    naming the base weights; no path of this server). 404 until the model finished training; 409
    when the base weights it needs the tokenizer from are no longer on this server."""
    folder = run_dir(svc, caller, model_id)
    if folder is None:
        raise not_found("adapter (the model has not finished training)")
    try:
        return export_peft(folder, target_dir)
    except ExportError:
        why = "the adapter cannot be packaged: its base model's weights (and tokenizer) are no longer on this server"
        raise incorrect_state(why) from None


def activity_log(svc: Services, caller: Caller, model_id: str, after: int = 0) -> list[dict[str, Any]]:
    """Log lines and errors of every work request on the model (create, delete), oldest first.
    `after` is the last entry id the caller already has."""
    with svc.session() as session:
        owned(session, caller, ModelRow, model_id, "model")
        wr_ids = select(WorkRequestRow.id).where(WorkRequestRow.resource_id == model_id)
        stmt = (
            select(WorkRequestEntry)
            .where(WorkRequestEntry.work_request_id.in_(wr_ids), WorkRequestEntry.id > after)
            .order_by(WorkRequestEntry.id)
        )
        return [
            {"id": e.id, "time": e.timestamp.strftime("%H:%M:%S"), "error": e.is_error, "code": e.code, "message": e.message}
            for e in session.scalars(stmt)
        ]


# ---- update / delete / move -----------------------------------------------------------------


def update_model(
    svc: Services, caller: Caller, model_id: str, details: UpdateModelDetails, if_match: str | None = None
) -> Answer[Model]:
    """Synchronous, as in OCI (update_model_and_wait_for_state polls the model, not a work request)."""
    return retrying(lambda: _update(svc, caller, model_id, details, if_match))


def _update(svc: Services, caller: Caller, model_id: str, details: UpdateModelDetails, if_match: str | None) -> Answer[Model]:
    with svc.session() as session:
        row = owned(session, caller, ModelRow, model_id, "model")
        check_if_match(if_match, etag(row.id, row.revision))
        if row.lifecycle_state in ("DELETING", "DELETED"):
            raise incorrect_state(f"model {row.id} is {row.lifecycle_state}")
        for field in details.model_fields_set:
            value = getattr(details, field)
            if value is not None:
                setattr(row, field, value)
        lifecycle.touch(row)
        commit_versioned(session)
        return _answer(row, svc.region)


def change_compartment(svc: Services, caller: Caller, model_id: str, compartment_id: str, if_match: str | None = None) -> None:
    tenancy.change_compartment(svc, caller, ModelRow, model_id, "model", compartment_id, if_match)


def delete_model(svc: Services, caller: Caller, model_id: str, if_match: str | None = None) -> str:
    """Cancels the training job if it runs (its worker stops it with SIGTERM), then DELETED. Returns
    the DELETE_MODEL work request id. 409 while an endpoint hosts the model: the check and the
    versioned UPDATE to DELETING are one transaction, and creating an endpoint moves the model's
    revision in its own, so of a delete and an endpoint create sent at the same moment one loses
    (services/resources/endpoints.py)."""
    if base_models.find(model_id, svc.region) is not None:
        raise not_found("model")
    wr_id, remove = retrying(lambda: _delete(svc, caller, model_id, if_match))
    for path in remove:
        shutil.rmtree(path, ignore_errors=True)
    return wr_id


def _delete(svc: Services, caller: Caller, model_id: str, if_match: str | None) -> tuple[str, list[Path]]:
    with svc.session() as session:
        row = owned(session, caller, ModelRow, model_id, "model")
        check_if_match(if_match, etag(row.id, row.revision))
        if row.lifecycle_state == "DELETED":
            raise not_found("model")
        pending = lifecycle.pending_delete_request(session, row.id)
        if pending is not None:  # already being deleted: same answer as the first delete
            return pending.id, []
        if hosted := endpoints.hosting_endpoints(session, row.id):
            raise incorrect_state(f"model {row.id} is hosted by {hosted} endpoint(s); delete them first")
        wr, remove = lifecycle.request_deletion(session, row, svc.region)
        commit_versioned(session)
        return wr.id, remove


def stop_training(svc: Services, caller: Caller, model_id: str, reason: str) -> None:
    """End a model's training early and keep the model (a sweep pruned it, or its sweep was canceled):
    FAILED with `reason` as lifecycleDetails, its curves and work request logs kept, its create work
    request CANCELED. A queued job ends at once; a running trainer is stopped by its worker (SIGTERM:
    it checkpoints and exits), which then ends the model. 409 unless the model is CREATING."""
    for path in retrying(lambda: _stop(svc, caller, model_id, reason)):
        shutil.rmtree(path, ignore_errors=True)


def _stop(svc: Services, caller: Caller, model_id: str, reason: str) -> list[Path]:
    with svc.session() as session:
        row = owned(session, caller, ModelRow, model_id, "model")
        if row.lifecycle_state != "CREATING":
            raise incorrect_state(f"model {row.id} is {row.lifecycle_state}; only a model in training can be stopped")
        remove = lifecycle.request_stop(session, row, reason)
        commit_versioned(session)
        return remove
