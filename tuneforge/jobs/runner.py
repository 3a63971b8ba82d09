"""Run one claimed job: start (or find again) its trainer through the executor, stream its progress
and metrics into the store while it runs, and turn its exit into the model's final state.

The trainer's exit code and its run folder (`tuneforge.run_folder`: ExitCode, RunResult, RunError)
say how it ended; its stderr goes to a log file for the operator and is never shown to users.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from tuneforge.jobs import lifecycle, queue
from tuneforge.jobs.command import job_train_args, run_folder
from tuneforge.jobs.executors import Attempt, Executor, Launch
from tuneforge.run_folder import ExitCode, RunError
from tuneforge.store import workrequests
from tuneforge.store.tables import ClusterRow, ImportedModelRow, JobRow, MetricRecord, ModelRow, WorkRequestRow, utcnow
from tuneforge.train_command import TERMINATE_GRACE_S

log = logging.getLogger("tuneforge.jobs")


@dataclass(frozen=True)
class RunSettings:
    weights: str | None
    max_attempts: int
    seed: int
    poll_seconds: float = 0.5
    heartbeat_seconds: float = 2.0


def _load(session: Session, job_id: str) -> tuple[JobRow, ModelRow, WorkRequestRow]:
    job = session.get(JobRow, job_id)
    return job, session.get(ModelRow, job.model_id), session.get(WorkRequestRow, job.id)


def _delete_model(session: Session, model: ModelRow, job: JobRow) -> None:
    remove = lifecycle.finish_canceled(session, model, job)  # deleted, or FAILED when only a stop was asked for
    session.commit()
    for path in remove:
        shutil.rmtree(path, ignore_errors=True)


def run_job(
    sessions: sessionmaker[Session], job_id: str, me: str, settings: RunSettings, executor: Executor, stopping: threading.Event
) -> None:
    attempt = _retrying(_start, sessions, job_id, settings, executor)
    if attempt is None:
        return
    try:
        code, reason = _monitor(sessions, job_id, attempt, me, settings, executor, stopping)
        _retrying(_finish, sessions, job_id, code, reason, settings)
    finally:
        if not executor.detached and attempt.poll() is None:  # we are leaving because of an error: no orphan trainer
            _stop_and_wait(attempt)


def _retrying(step, *args):
    """Run a transaction that changes the model's row again when a user's update committed between
    its read and its write (the row is versioned: services/transactions.py)."""
    for attempt in range(5):
        try:
            return step(*args)
        except StaleDataError:
            log.info("%s: the model changed under us (attempt %d); redoing it", step.__name__, attempt + 1)
    return step(*args)


def _start(sessions, job_id: str, settings: RunSettings, executor: Executor) -> Attempt | None:
    with sessions() as session:
        job, model, wr = _load(session, job_id)
        try:
            found = executor.find(job.id, job.executor_ref)
        except Exception:  # e.g. the Ray cluster does not answer: whether the attempt trains on is unknown
            job.attempts -= 1  # the claim counted a start that did not happen
            queue.abandon(session, job)  # for the next try, by this server or another
            session.commit()
            raise
        if found is not None:  # watched again even when the model is being deleted: the monitor then stops it
            return _reattach(session, job, wr, found)
        if job.cancel_requested or model.lifecycle_state in ("DELETING", "DELETED"):
            _delete_model(session, model, job)
            return None
        if job.attempts > settings.max_attempts:
            last = job.last_error or "the server running it stopped before it finished"
            message = (
                f"Training was interrupted {job.attempts - 1} times without finishing (last: {last}). "
                "Create the model again; if this repeats, the server log says why."
            )
            lifecycle.fail(session, job, model, wr, "TrainingInterrupted", message)
            session.commit()
            return None
        job_dir = Path(job.job_dir)
        folder = run_folder(job_dir)
        resume = folder.can_resume()
        folder.path.mkdir(parents=True, exist_ok=True)
        folder.clear_error()
        cluster = session.get(ClusterRow, job.cluster_id)
        base = session.get(ImportedModelRow, model.base_model_id)  # None: a catalog model
        if base is not None and (base.lifecycle_state != "ACTIVE" or not base.weights_dir):
            # Deleting an imported model is refused while a fine-tune uses it; this is what is left when it went anyway.
            message = f"Its base model, imported model {base.id}, is {base.lifecycle_state}; import it again and create the model again."
            lifecycle.fail(session, job, model, wr, "BaseModelUnavailable", message)
            session.commit()
            return None
        args = job_train_args(
            base_model_id=model.base_model_id,
            training_config=model.fine_tune_details["trainingConfig"],
            job_dir=job_dir,
            weights=settings.weights,
            seed=settings.seed if job.seed is None else job.seed,  # a job's own seed (OpenAI's `seed`), else the server's
            resume=resume,
            base_weights=Path(base.weights_dir) if base is not None else None,  # a job trains its own base's weights
        )
        launch = Launch(
            job_id=job.id,
            job_dir=job_dir,
            attempt=job.attempts,
            args=args,
            units=job.units,
            unit_shape=cluster.unit_shape if cluster else "",
            previous_ref=job.executor_ref,
        )
        try:
            attempt = executor.start(launch)
        except Exception:  # e.g. the Ray cluster does not answer: this attempt failed, the job is not lost
            log.exception("job %s: attempt %d could not be started", job_id, job.attempts)
            _attempt_failed(session, job, model, wr, "could not be started", settings)
            session.commit()
            return None
        job.executor_ref = attempt.ref
        if wr.status == "ACCEPTED":
            wr.status, wr.time_started, wr.revision = "IN_PROGRESS", utcnow(), wr.revision + 1
        how = "resuming from its checkpoint" if resume else "from the start"
        workrequests.log(
            session, wr.id, f"Attempt {job.attempts} of {settings.max_attempts}: training started ({how}){attempt.where}."
        )
        session.commit()
        return attempt


def _reattach(session: Session, job: JobRow, wr: WorkRequestRow, attempt: Attempt) -> Attempt:
    """An attempt that outlived the server watching it (a detached executor's): watched again, not started again."""
    job.attempts -= 1  # the claim counted a start, and this attempt was counted when it started
    job.executor_ref = attempt.ref
    state = "still running" if attempt.poll() is None else "which ended while no server watched it"
    workrequests.log(session, wr.id, f"Re-attached to attempt {job.attempts}{attempt.where}, {state}.")
    session.commit()
    return attempt


def _stop_and_wait(attempt: Attempt, grace: float = TERMINATE_GRACE_S) -> None:
    attempt.stop()
    kill_at = time.monotonic() + grace
    while attempt.poll() is None:
        if time.monotonic() > kill_at:
            attempt.kill()
            kill_at = float("inf")
        time.sleep(0.2)


def _monitor(
    sessions, job_id: str, attempt: Attempt, me: str, settings: RunSettings, executor: Executor, stopping: threading.Event
) -> tuple[int | None, str | None]:
    """Until the attempt ends, or until we leave one that goes on without us (a detached executor's, on
    shutdown or a lost lease). Returns (its exit code, None when it goes on) and why we stopped watching
    or stopped it early ("canceled", "paused", "shutdown", "lost") or None."""
    reason: str | None = None
    last_beat = 0.0
    kill_at: float | None = None
    while True:
        code = attempt.poll()
        with sessions() as session:
            job, model, wr = _load(session, job_id)
            ingest(session, job, model, wr)
            if time.monotonic() - last_beat >= settings.heartbeat_seconds:
                last_beat = time.monotonic()
                if not queue.heartbeat(session, job_id, me):
                    reason = reason or "lost"
            if job.cancel_requested:
                reason = reason or "canceled"
            elif job.pause_requested:
                reason = reason or "paused"
            session.commit()
        if code is not None:
            return code, reason
        if stopping.is_set():
            reason = reason or "shutdown"
        if reason in ("shutdown", "lost") and executor.detached:
            return None, reason  # it trains on; whoever claims the job next re-attaches to it
        if reason and kill_at is None:
            attempt.stop()  # a local trainer checkpoints and exits 3
            kill_at = time.monotonic() + TERMINATE_GRACE_S
        elif kill_at is not None and time.monotonic() > kill_at:
            attempt.kill()
        time.sleep(settings.poll_seconds)


def ingest(session: Session, job: JobRow, model: ModelRow, wr: WorkRequestRow) -> None:
    """Copy new progress and metric records from the job's files into the store."""
    folder = run_folder(Path(job.job_dir))
    progress = folder.read_progress()
    if progress is not None and progress.to_json() != job.progress:
        job.progress = progress.to_json()
        pct = max(wr.percent_complete, progress.percent_complete())
        if pct != wr.percent_complete and wr.status in ("ACCEPTED", "IN_PROGRESS"):
            wr.percent_complete, wr.revision = pct, wr.revision + 1
    records, offset, restarted = folder.read_metrics(job.metrics_offset)
    if restarted:
        session.execute(delete(MetricRecord).where(MetricRecord.model_id == model.id))
        job.metrics_lines = 0
    for record in records:
        session.add(MetricRecord(model_id=model.id, seq=job.metrics_lines, record=record))
        job.metrics_lines += 1
        if record.get("kind") == "eval":
            workrequests.log(session, wr.id, _eval_text(record))
    job.metrics_offset = offset


def _eval_text(r: dict[str, Any]) -> str:
    """One evaluation as a log line, its numbers to 5 significant digits (people read 2.3026, not 2.302585092994046)."""

    def shown(value: Any) -> str:
        return f"{value:.5g}" if isinstance(value, float) else str(value)

    best = " (best so far)" if r.get("isBest") else ""
    return (
        f"Evaluation at step {r.get('step')} (epoch {shown(r.get('epoch'))}): validationLoss={shown(r.get('validationLoss'))}, "
        f"validationAccuracy={shown(r.get('validationAccuracy'))}{best}"
    )


def _finish(sessions, job_id: str, code: int | None, reason: str | None, settings: RunSettings) -> None:
    with sessions() as session:
        job, model, wr = _load(session, job_id)
        if reason == "lost":
            log.warning("job %s was taken over by another worker; leaving it", job_id)
            return
        ingest(session, job, model, wr)
        job_dir = Path(job.job_dir)
        if code is None:  # shutdown, and the attempt trains on where it runs (a detached executor's)
            queue.abandon(session, job)  # the next server to take it re-attaches (and stops it, if it is being deleted)
            message = "The server is shutting down; training goes on, and the next server to take the job watches it again."
            workrequests.log(session, wr.id, message)
            session.commit()
            return
        if reason == "canceled" or job.cancel_requested:
            _delete_model(session, model, job)
            return
        job.executor_ref = None  # this attempt is over: nothing to find again
        folder = run_folder(job_dir)
        result = folder.read_result() if code == ExitCode.OK else None
        error = folder.read_error()
        if result is not None:
            lifecycle.succeed(session, job, model, wr, result)
        elif job.pause_requested and code == ExitCode.STOPPED:
            queue.park(session, job)
            workrequests.log(session, wr.id, "Paused: training stopped with a checkpoint; a resume continues from it.")
        elif code == ExitCode.BAD_INPUT:
            error = error or RunError("InvalidParameter", "The training input was rejected.")
            # The user can fix their data or config; the weights are the operator's to fix.
            hint = " Fix this and create the model again." if error.code in ("InvalidParameter", "DatasetInvalid") else ""
            lifecycle.fail(session, job, model, wr, error.code, error.message[:1].upper() + error.message[1:] + hint)
        elif reason == "shutdown":
            queue.release(session, job, counted=False)
            workrequests.log(
                session, wr.id, "Paused: the server is shutting down; training resumes from its checkpoint on restart."
            )
        else:
            why = _exit_text(code)
            log.warning("job %s: the trainer %s; its logs: %s", job_id, why, job_dir / f"attempt-{job.attempts}.*stderr")
            _attempt_failed(session, job, model, wr, why, settings)
        session.commit()


def _attempt_failed(session: Session, job: JobRow, model: ModelRow, wr: WorkRequestRow, why: str, settings: RunSettings) -> None:
    """Retried until the job has been started `max_attempts` times; then FAILED with the last reason."""
    job.last_error = why
    if job.attempts >= settings.max_attempts:
        message = f"Training failed {job.attempts} times; the last attempt {why}. The server's log has the details."
        lifecycle.fail(session, job, model, wr, "TrainingFailed", message)
    else:
        queue.release(session, job, counted=True)
        workrequests.log(session, wr.id, f"Attempt {job.attempts} {why}; retrying.")


def _exit_text(code: int) -> str:
    """How a trainer ended, for users: no stderr, no paths (the operator's log has those)."""
    if code == ExitCode.OK:
        return "ended without writing its result"
    if code == ExitCode.STOPPED:
        return "was stopped from outside the server"
    if code == ExitCode.CRASHED:
        return "stopped on an internal error"
    return f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
