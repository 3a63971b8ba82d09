"""The transitions of a custom model and its work requests, shared by the API and the workers.

Callers commit; directories returned for removal are removed only after the commit succeeds."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneforge.jobs.command import run_folder
from tuneforge.run_folder import RunResult
from tuneforge.store import workrequests
from tuneforge.store.tables import JobRow, ModelRow, WorkRequestRow, utcnow

STAND_IN_NOTE = (
    "Trained on TuneForge's bundled stand-in model, not on {base}'s weights: accuracy and loss describe "
    "the stand-in. Configure the real weights (serve --weights PATH) for a production model."
)


def touch(model: ModelRow, state: str | None = None, details: str | None = None) -> None:
    if state is not None:
        model.lifecycle_state = state
    if details is not None:
        model.lifecycle_details = details
    model.time_updated = utcnow()  # the UPDATE bumps the revision (the etag) by itself


def succeed(session: Session, job: JobRow, model: ModelRow, wr: WorkRequestRow, result: RunResult) -> None:
    """ACTIVE with the engine's modelMetrics; a stand-in run says so in lifecycleDetails and systemTags
    (which carry no server-side detail such as the weights' path)."""
    model.model_metrics = result.model_metrics
    model.system_tags = {"tuneforge": {"standIn": str(result.stand_in).lower()}}
    details = STAND_IN_NOTE.format(base=model.base_model_id) if result.stand_in else None
    if result.early_stopped:
        steps = f"{result.steps_run} of {result.total_training_steps} steps"
        details = " ".join(filter(None, [f"Early stopping ended training after {steps}.", details]))
    touch(model, "ACTIVE")
    model.lifecycle_details = details
    job.state = "DONE"
    workrequests.log(session, wr.id, "Training succeeded: " + _metrics_text(model.model_metrics))
    workrequests.finish(session, wr, "SUCCEEDED")


def _metrics_text(metrics: dict | None) -> str:
    if not metrics:
        return "no metrics reported"
    return f"finalAccuracy={metrics.get('finalAccuracy')}, finalLoss={metrics.get('finalLoss')}"


def fail(session: Session, job: JobRow, model: ModelRow, wr: WorkRequestRow, code: str, message: str) -> None:
    """FAILED, with lifecycleDetails that say what to fix, and the same text as a work-request error."""
    touch(model, "FAILED", message)
    job.state = "DONE"
    workrequests.error(session, wr.id, code, message)
    workrequests.log(session, wr.id, f"Training failed: {message}")
    workrequests.finish(session, wr, "FAILED")


def open_job(session: Session, model_id: str) -> JobRow | None:
    return session.scalars(select(JobRow).where(JobRow.model_id == model_id, JobRow.state != "DONE")).first()


def pending_delete_request(session: Session, model_id: str) -> WorkRequestRow | None:
    return session.scalars(
        select(WorkRequestRow).where(
            WorkRequestRow.resource_id == model_id,
            WorkRequestRow.operation_type == "DELETE_MODEL",
            WorkRequestRow.status.in_(("ACCEPTED", "IN_PROGRESS")),
        )
    ).first()


def request_deletion(session: Session, model: ModelRow, region: str) -> tuple[WorkRequestRow, list[Path]]:
    """DELETING now; DELETED at once unless a training subprocess must stop first (the worker that
    runs it sees cancel_requested, stops it with SIGTERM and calls finish_deletion)."""
    wr = workrequests.new_work_request(
        session,
        region=region,
        tenancy_id=model.tenancy_id,
        compartment_id=model.compartment_id,
        operation_type="DELETE_MODEL",
        entity_type="GenerativeAiModel",
        resource_id=model.id,
    )
    touch(model, "DELETING")
    session.flush()
    job = open_job(session, model.id)
    if job is not None and job.state == "RUNNING":
        job.cancel_requested = True
        wr.status, wr.time_started = "IN_PROGRESS", utcnow()
        workrequests.log(session, wr.id, "Stopping the running training job.")
        return wr, []
    return wr, finish_deletion(session, model, job)


def request_stop(session: Session, model: ModelRow, reason: str) -> list[Path]:
    """Stop a model's training and keep the model (e.g. a sweep pruned it): FAILED with `reason` as its
    lifecycleDetails, its curves and logs kept. A queued job ends now; a running one when its worker has
    stopped the trainer (it sees cancel_requested with a stop_reason and calls finish_canceled)."""
    job = open_job(session, model.id)
    if job is not None and job.state == "RUNNING":
        job.cancel_requested, job.stop_reason = True, reason
        workrequests.log(session, job.id, f"Stopping the training job: {reason}")
        return []
    if job is None:
        touch(model, "FAILED", reason)
        return []
    job.stop_reason = reason
    return finish_canceled(session, model, job)


def finish_canceled(session: Session, model: ModelRow, job: JobRow) -> list[Path]:
    """A job whose cancel was asked for has ended (or never started): the model is deleted, unless the
    ask was to stop training (job.stop_reason), which ends it FAILED with that reason, its run folder
    kept but for the checkpoint (it is never resumed). Returns the directories to remove after the commit."""
    if job.stop_reason is None or model.lifecycle_state in ("DELETING", "DELETED"):
        return finish_deletion(session, model, job)
    folder = run_folder(Path(job.job_dir))
    wr = session.get(WorkRequestRow, job.id)
    result = folder.read_result() if folder.is_finished() else None
    if result is not None and wr is not None:  # it finished before it could be stopped: finished is finished
        succeed(session, job, model, wr, result)
        return []
    touch(model, "FAILED", job.stop_reason)
    job.state = "DONE"
    if wr is not None and wr.status not in ("SUCCEEDED", "FAILED", "CANCELED"):
        workrequests.log(session, wr.id, f"Training stopped: {job.stop_reason}")
        workrequests.finish(session, wr, "CANCELED")
    return [folder.checkpoint_dir]


def finish_deletion(session: Session, model: ModelRow, job: JobRow | None) -> list[Path]:
    if job is not None and job.state != "DONE":
        job.state = "DONE"
        create_wr = session.get(WorkRequestRow, job.id)
        if create_wr is not None and create_wr.status not in ("SUCCEEDED", "FAILED", "CANCELED"):
            workrequests.log(session, create_wr.id, "Canceled: the model was deleted.")
            workrequests.finish(session, create_wr, "CANCELED")
    # The curves (metric records) and the work requests' logs stay: a deleted or cancelled model's
    # page still shows what it did. Its files (adapter, report, checkpoints) go.
    touch(model, "DELETED")
    delete_wr = pending_delete_request(session, model.id)
    if delete_wr is not None:
        workrequests.log(session, delete_wr.id, "Model deleted.")
        workrequests.finish(session, delete_wr, "SUCCEEDED")
    jobs = session.scalars(select(JobRow).where(JobRow.model_id == model.id)).all()
    return [Path(j.job_dir) for j in jobs]
