"""The OpenAI API's fine-tuning jobs (/openai/v1/fine_tuning/jobs) over TuneForge's own: a job is
created through models.create_model, so it is one custom model trained by the one queue, engine and
run folder the OCI API uses, seen by both APIs and the console. This module keeps what only OpenAI
has (files, suffix, metadata, the hyperparameters as asked for) in `openai_fine_tuning_jobs` and
derives the rest from the model, its job and its run folder.

Decisions where OpenAI and OCI differ (docs/openai.md says each):
- Clusters: a job trains on the tenancy's FINE_TUNING cluster named CLUSTER_NAME, created on first
  use in the root compartment (the tenancy) with one unit: one job trains at a time, the others
  queue. An administrator gives it more units through the OCI API (updateDedicatedAiCluster).
- Files are checked at create (OpenAI's `validating_files` step happens inside the request), so a
  job is answered `queued`; a bad file is a 400 naming `training_file` and every bad line.
- `hyperparameters`: "auto" is the base model's catalog default (n_epochs: totalTrainingEpochs,
  batch_size: trainingBatchSize, at most the training split's size); learning_rate_multiplier
  multiplies the catalog's default learningRate. Every value is checked against the catalog's
  ranges. The job's first events say what each one became and the steps that makes.
- Status: validating_files never shows (see above); `paused` between a pause and a resume (OpenAI's
  own word); a model deleted through the OCI API while it trained shows `cancelled`.
- The validation split: a validation_file is it (the whole training_file trains); without one, OCI's
  seeded 20 % of training_file.
- Checkpoints are the run's evaluation cycles whose adapter the run folder keeps: the last
  KEPT_CYCLE_ADAPTERS cycles' (run_folder: cycle-adapters/), and the best one's, which is the job's
  model; each answers by its checkpoint name once the job has succeeded.
- The seed (the split and the data order) is the job's `seed`, data.DEFAULT_SEED when it gives none
  (what OCI's createModel always uses); the job row of the queue carries it to the trainer.
- `method: {type: "dpo"}` is OCI's DPO_TRAINING_CONFIG (docs/dpo.md): its files must be preference
  pairs (a supervised job's must not be), beta "auto" is the catalog's default, and the step events
  carry the DPO metrics (loss, reward accuracy, margin) alongside OpenAI's names.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import secrets
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from tuneforge import catalog, data
from tuneforge.catalog import BaseModelSpec
from tuneforge.errors import DatasetError, InvalidParameter
from tuneforge.hyperparams import DPO_TRAINING_CONFIG, check_value, make_plan, resolve_training_config
from tuneforge.jobs.command import DATASET_JSONL, VALIDATION_JSONL, run_folder
from tuneforge.run_folder import KEPT_CYCLE_ADAPTERS, RunFolder
from tuneforge.services.context import Caller, Services
from tuneforge.services.errors import ServiceError
from tuneforge.services.resources import base_models, clusters, datasets, endpoints, models, openai_files
from tuneforge.services.schemas.openai_fine_tuning import (
    JobRequest,
    OpenAIError,
    bad_request,
    check_metadata,
    cursor_page,
    not_found,
    page_limit,
    parse_job_request,
    shown,
)
from tuneforge.services.schemas.resources import CreateDedicatedAiClusterDetails, CreateModelDetails
from tuneforge.store import objects as stored
from tuneforge.store import workrequests
from tuneforge.store.tables import (
    ClusterRow,
    JobRow,
    MetricRecord,
    ModelRow,
    OpenAIFileRow,
    OpenAIJobRow,
    WorkRequestEntry,
    WorkRequestRow,
)

CLUSTER_NAME = "openai-fine-tuning"
CLUSTER_SHAPE = "LARGE_GENERIC"
CANCEL_REASON = "Cancelled through the OpenAI API (fine_tuning.jobs.cancel)."
FINAL = ("succeeded", "failed", "cancelled")
CHECKPOINT = re.compile(r"^(?P<model>ft:.+):ckpt-step-(?P<step>\d+)$")
# OCI error codes of a failed job -> OpenAI's code and the parameter at fault.
FAILURE_CODES = {"DatasetInvalid": ("invalid_training_file", "training_file"), "InvalidParameter": ("invalid_request", None)}


def organization_id(tenancy_id: str) -> str:
    """OpenAI's organization: a stable short name of the tenancy (the ft: name holds it; the OCID is long)."""
    return "org-" + hashlib.sha256(tenancy_id.encode()).hexdigest()[:16]


# ---- create -----------------------------------------------------------------------------------


def _base_model(svc: Services, name: str) -> BaseModelSpec:
    spec = base_models.find(name, svc.region)
    if spec is not None:
        return spec
    if name.startswith("ft:"):
        raise bad_request(
            f"Model {shown(name)} is a fine-tuned model; TuneForge fine-tunes base models only (a catalog id, "
            "e.g. meta.llama-3.3-70b-instruct).",
            "model",
            "model_not_available",
        )
    raise bad_request(
        f"Model {shown(name)} is not available for fine-tuning or does not exist; the catalog's models are listed "
        "by GET /openai/v1/models and `tuneforge models`.",
        "model",
        "model_not_available",
    )


def _dataset_file(svc: Services, caller: Caller, file_id: str, param: str) -> OpenAIFileRow:
    code = f"invalid_{param}"
    with svc.session() as session:
        row = session.get(OpenAIFileRow, file_id)
    if row is None or row.tenancy_id != caller.tenancy_id:
        raise bad_request(f"File {shown(file_id)} not found (upload it with files.create first).", param, code)
    if row.purpose != "fine-tune":
        raise bad_request(
            f"File {file_id} has purpose {row.purpose!r}; a {param.replace('_', ' ')} must be uploaded with purpose 'fine-tune'.",
            param,
            code,
        )
    if row.status != "processed":
        raise bad_request(f"File {file_id} is not a valid fine-tuning file. {row.status_details or ''}".strip(), param, code)
    return row


def _check_dataset(
    svc: Services, caller: Caller, row: OpenAIFileRow, spec: BaseModelSpec, param: str, method: str = data.SUPERVISED
) -> int:
    """The base model's own checks (OCI's 32-example minimum for training data, token lengths): OpenAI's
    validating_files. `method` (data.SUPERVISED or data.DPO) refuses a file of the other family."""
    path = openai_files.blob_path(svc, caller, row.id)
    try:
        if param == "training_file":
            return datasets.check(path, row.id, spec, svc.config.weights, method)
        return data.scan_dataset(path, min_examples=1, method=method)
    except DatasetError as err:
        raise bad_request(f"{param} {row.id}: {openai_files.problems_text(err)}", param, f"invalid_{param}") from None


def _resolve(
    spec: BaseModelSpec, hyper: dict[str, Any], param: str, n_examples: int, n_validation: int | None
) -> tuple[dict, dict, list[str]]:
    """OpenAI's hyperparameters -> (the resolved OpenAI values, OCI's trainingConfig overrides, how
    each "auto" was decided, in words). Every value inside the catalog's ranges. With a validation file
    (`n_validation` examples) the whole training file trains; without, OCI's 80 %."""
    n_train = n_examples if n_validation is not None else data.split_sizes(n_examples)[0]
    epochs_spec, batch_spec, lr_spec = (spec.params[n] for n in ("totalTrainingEpochs", "trainingBatchSize", "learningRate"))
    how: list[str] = []

    def checked(name: str, p, value, shown_as=None):
        try:
            return check_value(p, value)
        except InvalidParameter:
            what = shown_as or f"{shown(value)}"
            raise bad_request(
                f"Invalid value for '{name}': {what}; for {spec.id} it must be {p.allowed()} (catalog {p.name}).",
                f"{param}.{name}",
            ) from None

    epochs = hyper.get("n_epochs", "auto")
    if epochs == "auto":
        epochs = epochs_spec.default
        how.append(f"n_epochs=auto -> {epochs}: the catalog's default totalTrainingEpochs for {spec.id}")
    else:
        epochs = checked("n_epochs", epochs_spec, epochs)
    batch = hyper.get("batch_size", "auto")
    if batch == "auto":
        batch = batch_spec.default
        if n_train < batch and batch_spec.in_range(n_train):
            batch = n_train
        how.append(
            f"batch_size=auto -> {batch}: the catalog's default trainingBatchSize ({batch_spec.default}), "
            f"at most the {n_train} training examples"
        )
    else:
        batch = checked("batch_size", batch_spec, batch)
    multiplier = hyper.get("learning_rate_multiplier", "auto")
    if multiplier == "auto":
        multiplier = 1.0
        how.append(f"learning_rate_multiplier=auto -> 1: learningRate {lr_spec.default}, the catalog's default")
    else:
        if multiplier <= 0:
            raise bad_request(
                f"Invalid value for 'learning_rate_multiplier': {shown(multiplier)}; it must be above 0.",
                f"{param}.learning_rate_multiplier",
            )
        lr = float(lr_spec.default * multiplier)
        checked(
            "learning_rate_multiplier",
            lr_spec,
            lr,
            f"{shown(multiplier)} gives learningRate {lr:g} ({lr_spec.default:g} x {multiplier:g})",
        )
    learning_rate = float(lr_spec.default * multiplier)
    openai = {"n_epochs": int(epochs), "batch_size": int(batch), "learning_rate_multiplier": float(multiplier)}
    overrides = {"totalTrainingEpochs": int(epochs), "trainingBatchSize": int(batch), "learningRate": learning_rate}
    if "beta" in hyper:  # a DPO job (parse_job_request admits beta for method dpo only)
        beta_spec = catalog.dpo_params()["beta"]
        beta = hyper["beta"]
        if beta == "auto":
            beta = beta_spec.default
            how.append(f"beta=auto -> {beta:g}: the catalog's default beta for DPO (models.toml [dpo])")
        else:
            beta = checked("beta", beta_spec, beta)
        openai["beta"] = overrides["beta"] = float(beta)
    return openai, overrides, how


def _cluster(svc: Services, caller: Caller) -> str:
    """The tenancy's OpenAI fine-tuning cluster, created on first use."""
    with svc.session() as session:
        found = session.scalars(
            select(ClusterRow.id).where(
                ClusterRow.tenancy_id == caller.tenancy_id,
                ClusterRow.type == "FINE_TUNING",
                ClusterRow.display_name == CLUSTER_NAME,
                ClusterRow.lifecycle_state == "ACTIVE",
            )
        ).first()
        if found is not None:
            return found
        details = CreateDedicatedAiClusterDetails(
            type="FINE_TUNING",
            compartment_id=caller.tenancy_id,
            unit_count=1,
            unit_shape=CLUSTER_SHAPE,
            display_name=CLUSTER_NAME,
            description="The OpenAI API's fine-tuning jobs train here (created on first use; add units to train more at once).",
        )
        row, _ = clusters.add_cluster(svc, session, caller, details)
        session.commit()
        return row.id


def create_job(svc: Services, caller: Caller, body: Any) -> dict[str, Any]:
    req: JobRequest = parse_job_request(body)
    spec = _base_model(svc, req.model)
    training = _dataset_file(svc, caller, req.training_file, "training_file")
    validation = _dataset_file(svc, caller, req.validation_file, "validation_file") if req.validation_file else None
    dpo = req.method == "dpo"
    method = data.DPO if dpo else data.SUPERVISED
    n_examples = _check_dataset(svc, caller, training, spec, "training_file", method)
    n_validation = _check_dataset(svc, caller, validation, spec, "validation_file", method) if validation is not None else None
    # A DPO job's beta is always resolved (and shown), "auto" when not given.
    asked = {"beta": "auto", **req.hyperparameters} if dpo else req.hyperparameters
    hyper, overrides, how = _resolve(spec, asked, req.hyperparameters_param, n_examples, n_validation)
    overrides = {"trainingConfigType": DPO_TRAINING_CONFIG if dpo else spec.training_config_type, **overrides}
    job_id = "ftjob-" + secrets.token_hex(12)
    org = organization_id(caller.tenancy_id)
    name = f"ft:{spec.id}:{org}:{req.suffix or ''}:{job_id[6:18]}"
    details = CreateModelDetails.model_validate(
        {
            "compartmentId": caller.tenancy_id,
            "baseModelId": spec.id,
            "displayName": req.suffix or job_id,
            "description": f"OpenAI fine-tuning job {job_id} ({name})",
            "freeformTags": {"openaiFineTuningJob": job_id},
            "fineTuneDetails": {
                "trainingDataset": {
                    "datasetType": "OBJECT_STORAGE",
                    "namespaceName": stored.namespace_for(caller.tenancy_id),
                    "bucketName": openai_files.OPENAI_FILES_BUCKET,
                    "objectName": training.id,
                },
                "dedicatedAiClusterId": _cluster(svc, caller),
                "trainingConfig": overrides,
            },
        }
    )
    seed = data.DEFAULT_SEED if req.seed is None else req.seed
    try:
        plan = make_plan(n_examples, resolve_training_config(spec, overrides), n_validation)
        created = models.create_model(
            svc,
            caller,
            details,
            seed=seed,
            validation=(openai_files.blob_path(svc, caller, validation.id), n_validation) if validation else None,
        )
    except InvalidParameter as err:
        raise bad_request(f"Invalid hyperparameters: {err}", req.hyperparameters_param) from None
    except OpenAIError:
        raise
    except ServiceError as err:
        if err.status == 429:
            raise OpenAIError(429, err.message, None, "rate_limit_exceeded") from None
        raise OpenAIError(err.status, err.message, None, "invalid_request_error") from None
    split = (
        f"all of {training.id}, and {validation.id}"
        if validation is not None
        else f"OCI's 80:20 split of {training.id} with seed {seed}"
    )
    how.append(
        f"{plan.training_examples} training and {plan.validation_examples} validation examples ({split}): "
        f"{plan.steps_per_epoch} steps an epoch, {plan.total_training_steps} steps"
    )
    with svc.session() as session:
        row = OpenAIJobRow(
            id=job_id,
            tenancy_id=caller.tenancy_id,
            model_id=created.value.id,
            base_model=spec.id,
            fine_tuned_model=name,
            training_file=training.id,
            validation_file=validation.id if validation else None,
            suffix=req.suffix,
            seed=seed,
            job_metadata=req.metadata,
            method={"type": req.method, req.method: {"hyperparameters": hyper}},
            resolution=how,
            created_at=datetime.now(UTC),
        )
        session.add(row)
        session.commit()
        return job_object(svc, caller, session, row)


# ---- the job object ---------------------------------------------------------------------------


def _latest_job(session, model_id: str) -> JobRow | None:
    return session.scalars(select(JobRow).where(JobRow.model_id == model_id).order_by(JobRow.time_created.desc())).first()


def _status(row: OpenAIJobRow, model: ModelRow, job: JobRow | None) -> str:
    if row.cancelled or model.lifecycle_state in ("DELETING", "DELETED"):
        return "cancelled"
    if model.lifecycle_state == "ACTIVE":
        return "succeeded"
    if model.lifecycle_state == "FAILED":
        return "failed"
    if job is not None and job.state == "PAUSED":
        return "paused"
    if job is not None and job.state == "RUNNING":
        return "running"
    return "queued"


def _unix(dt: datetime | None) -> int | None:
    return int(dt.timestamp()) if dt is not None else None


def _error(session, model: ModelRow, job: JobRow | None) -> dict[str, Any]:
    entry = None
    if job is not None:
        entry = session.scalars(
            select(WorkRequestEntry)
            .where(WorkRequestEntry.work_request_id == job.id, WorkRequestEntry.is_error.is_(True))
            .order_by(WorkRequestEntry.id.desc())
        ).first()
    code, param = FAILURE_CODES.get(entry.code if entry else "", (None, None))
    if code is None:
        code = re.sub(r"(?<!^)(?=[A-Z])", "_", entry.code).lower() if entry and entry.code else "training_failed"
    return {"code": code, "message": model.lifecycle_details or "Training failed.", "param": param}


def job_object(svc: Services, caller: Caller, session, row: OpenAIJobRow) -> dict[str, Any]:
    model = session.get(ModelRow, row.model_id)
    job = _latest_job(session, row.model_id)
    status = _status(row, model, job)
    if status == "succeeded" and row.result_file is None:
        _record_results(svc, caller, session, row)
    wr = session.get(WorkRequestRow, job.id) if job is not None else None
    finished = None
    if status in FINAL:
        finished = (wr.time_finished if wr is not None else None) or model.time_updated or model.time_created
    estimated = None
    if status == "running" and job is not None and job.progress and job.progress.get("etaSeconds") is not None:
        estimated = int(datetime.now(UTC).timestamp() + float(job.progress["etaSeconds"]))
    return {
        "id": row.id,
        "object": "fine_tuning.job",
        "created_at": _unix(row.created_at),
        "error": _error(session, model, job) if status == "failed" else None,
        "fine_tuned_model": row.fine_tuned_model if status == "succeeded" else None,
        "finished_at": _unix(finished),
        "hyperparameters": row.method[row.method["type"]]["hyperparameters"],
        "method": row.method,
        "model": row.base_model,
        "organization_id": organization_id(row.tenancy_id),
        "result_files": [row.result_file] if row.result_file else [],
        "seed": row.seed,
        "status": status,
        "trained_tokens": row.trained_tokens,
        "training_file": row.training_file,
        "validation_file": row.validation_file,
        "estimated_finish": estimated,
        "integrations": [],
        "metadata": row.job_metadata,
        "user_provided_suffix": row.suffix,
        # TuneForge's own: the custom model this job is (the OCI API and the console show it by this id).
        "tuneforge_model_id": row.model_id,
    }


def _owned(session, caller: Caller, job_id: str) -> OpenAIJobRow:
    row = session.get(OpenAIJobRow, job_id)
    if row is None or row.tenancy_id != caller.tenancy_id:
        raise not_found(f"No fine-tuning job found with id {shown(job_id)}.", "fine_tuning_job_id")
    return row


def get_job(svc: Services, caller: Caller, job_id: str) -> dict[str, Any]:
    with svc.session() as session:
        return job_object(svc, caller, session, _owned(session, caller, job_id))


def list_jobs(svc: Services, caller: Caller, after: str | None, limit: int | None, metadata: dict[str, str] | None) -> dict:
    limit = page_limit(limit, 20, 100)
    metadata = check_metadata(metadata)
    with svc.session() as session:
        rows = session.scalars(
            select(OpenAIJobRow)
            .where(OpenAIJobRow.tenancy_id == caller.tenancy_id)
            .order_by(OpenAIJobRow.created_at.desc(), OpenAIJobRow.id.desc())
        ).all()
        if metadata:
            rows = [r for r in rows if all((r.job_metadata or {}).get(k) == v for k, v in metadata.items())]
        ids = [{"id": r.id} for r in rows]
        page = cursor_page(ids, after, limit)
        wanted = {item["id"] for item in page["data"]}
        page["data"] = [job_object(svc, caller, session, r) for r in rows if r.id in wanted]
        return page


# ---- cancel, pause, resume --------------------------------------------------------------------


def cancel_job(svc: Services, caller: Caller, job_id: str) -> dict[str, Any]:
    """Training stops (a running trainer checkpoints and exits); the model ends FAILED with CANCEL_REASON
    on the OCI side, `cancelled` here."""
    with svc.session() as session:
        row = _owned(session, caller, job_id)
        model = session.get(ModelRow, row.model_id)
        status = _status(row, model, _latest_job(session, row.model_id))
    if status in FINAL:
        raise bad_request(
            f"Job {job_id} has already completed (status {status}); only a job in progress can be cancelled.",
            None,
            "invalid_state",
        )
    try:
        models.stop_training(svc, caller, row.model_id, CANCEL_REASON)
    except ServiceError as err:
        if err.status != 409:
            raise
        raise bad_request(
            f"Job {job_id} has already completed; only a job in progress can be cancelled.", None, "invalid_state"
        ) from None
    with svc.session() as session:
        session.execute(update(OpenAIJobRow).where(OpenAIJobRow.id == job_id).values(cancelled=True))
        session.commit()
        return job_object(svc, caller, session, _owned(session, caller, job_id))


def pause_job(svc: Services, caller: Caller, job_id: str) -> dict[str, Any]:
    """A queued job is parked at once; a running one when its worker has stopped the trainer with a
    checkpoint (status `running` until then, `paused` after)."""
    with svc.session() as session:
        row = _owned(session, caller, job_id)
        model = session.get(ModelRow, row.model_id)
        job = _latest_job(session, row.model_id)
        status = _status(row, model, job)
        if status not in ("queued", "running"):
            raise bad_request(f"Job {job_id} is {status}; only a queued or running job can be paused.", None, "invalid_state")
        parked = session.execute(
            update(JobRow).where(JobRow.id == job.id, JobRow.state == "QUEUED").values(state="PAUSED", pause_requested=False)
        ).rowcount
        if parked:
            workrequests.log(session, job.id, "Paused through the OpenAI API before training started.")
        else:
            session.execute(update(JobRow).where(JobRow.id == job.id, JobRow.state == "RUNNING").values(pause_requested=True))
            workrequests.log(session, job.id, "Pausing through the OpenAI API: stopping the trainer with a checkpoint.")
        session.commit()
        return job_object(svc, caller, session, row)


def resume_job(svc: Services, caller: Caller, job_id: str) -> dict[str, Any]:
    """A paused job goes back to the queue and continues from its checkpoint; a pause not yet carried
    out is called off."""
    with svc.session() as session:
        row = _owned(session, caller, job_id)
        model = session.get(ModelRow, row.model_id)
        job = _latest_job(session, row.model_id)
        status = _status(row, model, job)
        pausing = status == "running" and job.pause_requested
        if status != "paused" and not pausing:
            raise bad_request(f"Job {job_id} is {status}; only a paused job can be resumed.", None, "invalid_state")
        session.execute(
            update(JobRow).where(JobRow.id == job.id, JobRow.state == "PAUSED").values(state="QUEUED", pause_requested=False)
        )
        session.execute(update(JobRow).where(JobRow.id == job.id, JobRow.state == "RUNNING").values(pause_requested=False))
        workrequests.log(session, job.id, "Resumed through the OpenAI API: training continues from its checkpoint.")
        session.commit()
        answer = job_object(svc, caller, session, row)
    svc.wake_workers()
    return answer


# ---- events, checkpoints, results -------------------------------------------------------------


def _records(session, model_id: str) -> list[dict[str, Any]]:
    return [
        r.record
        for r in session.scalars(select(MetricRecord).where(MetricRecord.model_id == model_id).order_by(MetricRecord.seq))
    ]


# A DPO run's metrics.jsonl fields (docs/dpo.md) -> their names in a step's event data.
DPO_METRICS = {
    "rewardAccuracy": "train_reward_accuracy",
    "rewardMargin": "train_reward_margin",
    "rewardsChosen": "train_rewards_chosen",
    "rewardsRejected": "train_rewards_rejected",
    "validationRewardAccuracy": "valid_reward_accuracy",
    "validationRewardMargin": "valid_reward_margin",
    "validationRewardsChosen": "valid_rewards_chosen",
    "validationRewardsRejected": "valid_rewards_rejected",
}


def _steps(records: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Step -> OpenAI's metrics of that step: train_loss and train_mean_token_accuracy (the engine's,
    over the trained tokens since its previous record), valid_loss and valid_mean_token_accuracy where
    an evaluation cycle ran."""
    steps: dict[int, dict[str, Any]] = {}
    for r in records:
        step = int(r.get("step") or 0)
        entry = steps.setdefault(step, {"step": step, "total_steps": r.get("totalTrainingSteps")})
        entry["elapsed"] = max(entry.get("elapsed", 0.0), float(r.get("elapsedSeconds") or 0.0))
        if r.get("kind") == "train":
            entry["train_loss"] = r.get("loss")
            entry["train_mean_token_accuracy"] = r.get("accuracy")
        elif r.get("kind") == "eval":
            entry["valid_loss"] = r.get("validationLoss")
            entry["valid_mean_token_accuracy"] = r.get("validationAccuracy")
        for record_name, name in DPO_METRICS.items():  # a DPO run's (its loss is the DPO loss above)
            if r.get(record_name) is not None:
                entry[name] = r[record_name]
    return dict(sorted(steps.items()))


def _event(event_id: str, created: datetime | None, message: str, level: str = "info", data_: dict | None = None) -> dict:
    return {
        "id": event_id,
        "object": "fine_tuning.job.event",
        "created_at": _unix(created) or 0,
        "level": level,
        "message": message,
        "data": data_ or {},
        "type": "metrics" if data_ else "message",
    }


def _events(svc: Services, caller: Caller, session, row: OpenAIJobRow) -> list[dict[str, Any]]:
    """Every event of the job, oldest first."""
    key = row.id[6:]
    model = session.get(ModelRow, row.model_id)
    job = _latest_job(session, row.model_id)
    wr = session.get(WorkRequestRow, job.id) if job is not None else None
    events: list[tuple[Any, ...]] = []  # (time, rank, order, event)
    first = [f"Created fine-tuning job: {row.id}", f"Validating training file: {row.training_file}"]
    if row.validation_file:
        first.append(f"Validating validation file: {row.validation_file}")
    first += list(row.resolution) + ["Files validated, moving job to queued state"]
    for i, text in enumerate(first):
        level, text = ("warn", text[5:]) if text.startswith("warn:") else ("info", text)
        events.append((row.created_at, 0, i, _event(f"ftevent-{key}-{i}", row.created_at, text, level)))
    if wr is not None:
        entries = session.scalars(
            select(WorkRequestEntry).where(WorkRequestEntry.work_request_id == wr.id).order_by(WorkRequestEntry.id)
        ).all()
        for e in entries:
            level = "error" if e.is_error else "info"
            events.append((e.timestamp, 1, e.id, _event(f"ftevent-wr{e.id}", e.timestamp, e.message, level)))
    started = (wr.time_started if wr is not None else None) or row.created_at
    for step, m in _steps(_records(session, row.model_id)).items():
        when = datetime.fromtimestamp(started.timestamp() + m.pop("elapsed", 0.0), UTC)
        total = m.pop("total_steps", None)
        parts = [f"Step {step}/{total}" if total else f"Step {step}"]
        if m.get("train_loss") is not None:
            parts.append(f"training loss={m['train_loss']:.4f}")
        if m.get("train_mean_token_accuracy") is not None:
            parts.append(f"training accuracy={m['train_mean_token_accuracy']:.4f}")
        if m.get("valid_loss") is not None:
            parts.append(f"validation loss={m['valid_loss']:.4f}")
        for name, words in (
            ("train_reward_accuracy", "reward accuracy"),
            ("valid_reward_accuracy", "validation reward accuracy"),
        ):
            if m.get(name) is not None:
                parts.append(f"{words}={m[name]:.4f}")
        events.append((when, 2, step, _event(f"ftevent-{key}-step{step}", when, ", ".join(parts), data_=m)))
    events.sort(key=lambda e: (e[0].timestamp(), e[1], e[2]))
    ordered = [e[3] for e in events]
    # The outcome comes last whatever the clocks say (the work request's last line and its end share a second).
    status = _status(row, model, job)
    if status == "succeeded":
        done = (wr.time_finished if wr is not None else None) or model.time_updated
        result = models.run_result(svc, caller, row.model_id) or {}
        metrics = model.model_metrics or {}
        full = {
            "step": result.get("stepsRun"),
            "full_valid_loss": metrics.get("finalLoss"),
            "full_valid_mean_token_accuracy": metrics.get("finalAccuracy"),
        }
        finals = [
            _event(f"ftevent-{key}-full", done, f"Full validation loss={full['full_valid_loss']}", data_=full),
            _event(f"ftevent-{key}-model", done, f"New fine-tuned model created: {row.fine_tuned_model}"),
            _event(f"ftevent-{key}-done", done, "The job has successfully completed"),
        ]
        ordered += finals
    elif status == "cancelled":
        done = model.time_updated or row.created_at
        ordered.append(_event(f"ftevent-{key}-cancelled", done, "Fine-tuning job cancelled"))
    return ordered


def list_events(svc: Services, caller: Caller, job_id: str, after: str | None, limit: int | None) -> dict[str, Any]:
    """Newest first, as OpenAI lists them; `after` pages on to older ones."""
    limit = page_limit(limit, 20, 1000)
    with svc.session() as session:
        row = _owned(session, caller, job_id)
        return cursor_page(list(reversed(_events(svc, caller, session, row))), after, limit)


def _checkpoints(svc: Services, caller: Caller, session, row: OpenAIJobRow) -> list[dict[str, Any]]:
    """The evaluation cycles whose adapter is kept (the last KEPT_CYCLE_ADAPTERS, and the best one, which
    is the model's own), oldest first: each answers as a model once the job has succeeded."""
    model = session.get(ModelRow, row.model_id)
    job = _latest_job(session, row.model_id)
    wr = session.get(WorkRequestRow, job.id) if job is not None else None
    started = (wr.time_started if wr is not None else None) or row.created_at
    succeeded = _status(row, model, job) == "succeeded"
    result = (models.run_result(svc, caller, row.model_id) or {}) if succeeded else {}
    best = result.get("bestStep")
    adapters = set(run_folder(Path(job.job_dir)).cycle_adapter_steps()) if job is not None else set()
    metrics = model.model_metrics or {}
    out, last_train, last_accuracy = [], None, None
    for step, m in _steps(_records(session, row.model_id)).items():
        last_train = m.get("train_loss", last_train)
        last_accuracy = m.get("train_mean_token_accuracy", last_accuracy)
        kept = succeeded and step == best
        if "valid_loss" not in m or not (kept or step in adapters):
            continue
        out.append(
            {
                "id": f"ftckpt-{row.id[6:]}-{step}",
                "object": "fine_tuning.job.checkpoint",
                "created_at": int(started.timestamp() + m.get("elapsed", 0.0)),
                "fine_tuned_model_checkpoint": f"{row.fine_tuned_model}:ckpt-step-{step}",
                "fine_tuning_job_id": row.id,
                "step_number": step,
                "metrics": {
                    "step": float(step),
                    "train_loss": last_train,
                    "train_mean_token_accuracy": last_accuracy,
                    "valid_loss": m.get("valid_loss"),
                    "valid_mean_token_accuracy": m.get("valid_mean_token_accuracy"),
                    "full_valid_loss": metrics.get("finalLoss") if kept else None,
                    "full_valid_mean_token_accuracy": metrics.get("finalAccuracy") if kept else None,
                },
            }
        )
    return out


def list_checkpoints(svc: Services, caller: Caller, job_id: str, after: str | None, limit: int | None) -> dict[str, Any]:
    limit = page_limit(limit, 10, 1000)
    with svc.session() as session:
        row = _owned(session, caller, job_id)
        return cursor_page(list(reversed(_checkpoints(svc, caller, session, row))), after, limit)


def _results_csv(records: list[dict[str, Any]]) -> bytes:
    """OpenAI's step_metrics.csv: one row per recorded step."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"])

    def cell(value: Any) -> str:
        return "" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)

    for step, m in _steps(records).items():
        writer.writerow(
            [
                step,
                cell(m.get("train_loss")),
                cell(m.get("train_mean_token_accuracy")),
                cell(m.get("valid_loss")),
                cell(m.get("valid_mean_token_accuracy")),
            ]
        )
    return out.getvalue().encode()


def _trained_tokens(svc: Services, row: OpenAIJobRow, session) -> int | None:
    """Tokens of the training split times the epochs run, counted by the base weights' tokenizer
    (None when it is not on this server as a tokenizer.json): the examples' own text, without the
    chat template's role headers (a DPO pair: both its rows, the context once each)."""
    job = _latest_job(session, row.model_id)
    result = run_folder(Path(job.job_dir)).read_result() if job is not None else None
    spec = base_models.find(row.base_model, svc.region)
    limits = datasets.token_limits(svc.config.weights, spec) if spec is not None and result is not None else None
    if limits is None:
        return None
    try:
        examples = data.read_examples(Path(job.job_dir) / DATASET_JSONL, method=None)  # supervised or DPO
        with_validation = (Path(job.job_dir) / VALIDATION_JSONL).is_file()  # then all of it trains
        train = examples if with_validation else data.split_examples(examples, result.seed)[0]
        per_epoch = sum(sum(e.token_counts(limits.count)) for e in train)
    except (DatasetError, OSError):
        return None
    steps_per_epoch = max(1, -(-len(train) // int(result.training_config["trainingBatchSize"])))
    return round(per_epoch * result.steps_run / steps_per_epoch)


def _record_results(svc: Services, caller: Caller, session, row: OpenAIJobRow) -> None:
    """Once succeeded: the result file (the step metrics CSV) and trained_tokens, written by whichever read comes first."""
    body = _results_csv(_records(session, row.model_id))
    file_id = openai_files.write_file(svc, caller, openai_files.RESULTS_PURPOSE, "step_metrics.csv", body)
    tokens = _trained_tokens(svc, row, session)
    won = session.execute(
        update(OpenAIJobRow)
        .where(OpenAIJobRow.id == row.id, OpenAIJobRow.result_file.is_(None))
        .values(result_file=file_id, trained_tokens=tokens)
    ).rowcount
    session.commit()
    if not won:  # another request wrote them first
        openai_files.delete_file(svc, caller, file_id)
    session.refresh(row)


# ---- ft: names --------------------------------------------------------------------------------


def ft_target(svc: Services, caller: Caller, name: str) -> endpoints.Target:
    """What an `ft:` name answers with: the custom model the job trained, or for one of its checkpoints'
    names that evaluation cycle's adapter of the same run (the last KEPT_CYCLE_ADAPTERS cycles' are
    kept, and the best one's is the model's own). 404 in OpenAI's words when the tenancy has no such
    model or checkpoint."""
    match = CHECKPOINT.match(name)
    with svc.session() as session:
        base = match.group("model") if match else name
        row = session.scalars(
            select(OpenAIJobRow).where(OpenAIJobRow.tenancy_id == caller.tenancy_id, OpenAIJobRow.fine_tuned_model == base)
        ).first()
    if row is None:
        raise not_found(f"The model {shown(name)} does not exist or you do not have access to it.", "model")
    target = endpoints.model_target(svc, caller, row.model_id)
    if not match:
        return target
    step, folder = int(match.group("step")), RunFolder(target.run_dir)
    kept = folder.cycle_adapter_steps()
    if step in kept:
        return replace(target, adapter=folder.cycle_adapter_dir(step))
    result = folder.read_result()
    if result is not None and step == result.best_step:  # a run from before cycle adapters were kept
        return target
    names = ", ".join(f"{base}:ckpt-step-{s}" for s in sorted(set(kept) | ({result.best_step} if result else set())))
    raise not_found(
        f"The checkpoint {shown(name)} has no adapter on this server; the last {KEPT_CYCLE_ADAPTERS} evaluation "
        f"cycles' are kept: {names or 'none'}.",
        "model",
    )


def listed_models(svc: Services, caller: Caller) -> list[dict[str, Any]]:
    """GET /models' entries of the tenancy's succeeded jobs, by their ft: names (OpenAI lists them so)."""
    with svc.session() as session:
        rows = session.execute(
            select(OpenAIJobRow, ModelRow)
            .join(ModelRow, ModelRow.id == OpenAIJobRow.model_id)
            .where(
                OpenAIJobRow.tenancy_id == caller.tenancy_id,
                OpenAIJobRow.cancelled.is_(False),
                ModelRow.lifecycle_state == "ACTIVE",
            )
            .order_by(OpenAIJobRow.created_at)
        ).all()
        return [
            {
                "id": row.fine_tuned_model,
                "object": "model",
                "created": _unix(model.time_updated or model.time_created),
                "owned_by": organization_id(caller.tenancy_id),
            }
            for row, model in rows
        ]
