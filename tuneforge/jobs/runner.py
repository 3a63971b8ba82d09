"""Run one claimed job: start the trainer subprocess, stream its progress and metrics into the
store while it runs, and turn its exit into the model's final state.

The trainer's exit code and its run folder (`tuneforge.run_folder`: ExitCode, RunResult, RunError)
say how it ended; its stderr goes to a log file for the operator and is never shown to users.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from tuneforge.jobs import lifecycle, queue
from tuneforge.jobs.command import run_folder, train_command
from tuneforge.run_folder import ExitCode, RunError
from tuneforge.store import workrequests
from tuneforge.store.tables import JobRow, MetricRecord, ModelRow, WorkRequestRow, utcnow

log = logging.getLogger("tuneforge.jobs")
TERMINATE_GRACE_S = 120.0  # time a SIGTERMed trainer gets to write its checkpoint before SIGKILL


@dataclass(frozen=True)
class RunSettings:
    weights: str | None
    max_attempts: int
    seed: int
    threads: int | None = None  # torch threads per training job (None: torch's default, every core)
    poll_seconds: float = 0.5
    heartbeat_seconds: float = 2.0


def _load(session: Session, job_id: str) -> tuple[JobRow, ModelRow, WorkRequestRow]:
    job = session.get(JobRow, job_id)
    return job, session.get(ModelRow, job.model_id), session.get(WorkRequestRow, job.id)


def _delete_model(session: Session, model: ModelRow, job: JobRow) -> None:
    remove = lifecycle.finish_deletion(session, model, job)
    session.commit()
    for path in remove:
        shutil.rmtree(path, ignore_errors=True)


def run_job(sessions: sessionmaker[Session], job_id: str, me: str, settings: RunSettings, stopping: threading.Event) -> None:
    proc = _retrying(_start, sessions, job_id, settings)
    if proc is None:
        return
    try:
        reason = _monitor(sessions, job_id, proc, me, settings, stopping)
        _retrying(_finish, sessions, job_id, proc.returncode, reason, settings)
    finally:
        if proc.poll() is None:  # we are leaving because of an error: do not leave an orphan behind
            _terminate(proc)


def _retrying(step, *args):
    """Run a transaction that changes the model's row again when a user's update committed between
    its read and its write (the row is versioned: services/transactions.py)."""
    for attempt in range(5):
        try:
            return step(*args)
        except StaleDataError:
            log.info("%s: the model changed under us (attempt %d); redoing it", step.__name__, attempt + 1)
    return step(*args)


def _start(sessions, job_id: str, settings: RunSettings) -> subprocess.Popen | None:
    with sessions() as session:
        job, model, wr = _load(session, job_id)
        if job.cancel_requested or model.lifecycle_state in ("DELETING", "DELETED"):
            _delete_model(session, model, job)
            return None
        if job.attempts > settings.max_attempts:
            last = job.last_error or "the server running it stopped before it finished"
            message = (f"Training was interrupted {job.attempts - 1} times without finishing (last: {last}). "
                       "Create the model again; if this repeats, the server log says why.")  # fmt: skip
            lifecycle.fail(session, job, model, wr, "TrainingInterrupted", message)
            session.commit()
            return None
        job_dir = Path(job.job_dir)
        _stop_previous_trainer(job.child_pid, job_dir)
        folder = run_folder(job_dir)
        resume = folder.can_resume()
        folder.path.mkdir(parents=True, exist_ok=True)
        folder.clear_error()
        cmd = train_command(
            base_model_id=model.base_model_id, training_config=model.fine_tune_details["trainingConfig"],
            job_dir=job_dir, weights=settings.weights, seed=settings.seed, resume=resume,
            threads=settings.threads,
        )  # fmt: skip
        with open(job_dir / f"attempt-{job.attempts}.stdout", "wb") as out, open(job_dir / f"attempt-{job.attempts}.stderr", "wb") as err:
            # Own session: a Ctrl-C meant for the server must not reach the trainer; the server
            # stops it with SIGTERM so that it checkpoints first.
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=job_dir, start_new_session=True)
        job.child_pid = proc.pid
        if wr.status == "ACCEPTED":
            wr.status, wr.time_started, wr.revision = "IN_PROGRESS", utcnow(), wr.revision + 1
        how = "resuming from its checkpoint" if resume else "from the start"
        workrequests.log(session, wr.id, f"Attempt {job.attempts} of {settings.max_attempts}: training started ({how}).")
        session.commit()
        return proc


def _stop_previous_trainer(pid: int | None, job_dir: Path) -> None:
    """A trainer from an earlier attempt may still be writing its checkpoint (its server was killed and it
    got SIGTERM): wait for it, so that two trainers never share one job directory."""
    if pid is None:
        return
    try:
        proc = psutil.Process(pid)
        if str(job_dir) not in " ".join(proc.cmdline()):
            return  # the pid was reused by something else
        proc.terminate()
        proc.wait(TERMINATE_GRACE_S)
    except psutil.TimeoutExpired:
        proc.kill()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        pass


def _terminate(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(TERMINATE_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _monitor(sessions, job_id: str, proc: subprocess.Popen, me: str, settings: RunSettings, stopping: threading.Event) -> str | None:
    """Until the trainer exits; returns why we stopped it early ("canceled", "shutdown", "lost") or None."""
    reason: str | None = None
    last_beat = 0.0
    kill_at: float | None = None
    while True:
        exited = proc.poll() is not None
        with sessions() as session:
            job, model, wr = _load(session, job_id)
            ingest(session, job, model, wr)
            if time.monotonic() - last_beat >= settings.heartbeat_seconds:
                last_beat = time.monotonic()
                if not queue.heartbeat(session, job_id, me):
                    reason = reason or "lost"
            if job.cancel_requested:
                reason = reason or "canceled"
            session.commit()
        if exited:
            return reason
        if stopping.is_set():
            reason = reason or "shutdown"
        if reason and kill_at is None:
            proc.terminate()  # the engine checkpoints and exits 3
            kill_at = time.monotonic() + TERMINATE_GRACE_S
        elif kill_at is not None and time.monotonic() > kill_at:
            proc.kill()
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
    return (f"Evaluation at step {r.get('step')} (epoch {r.get('epoch')}): validationLoss={r.get('validationLoss')}, "
            f"validationAccuracy={r.get('validationAccuracy')}" + (" (best so far)" if r.get("isBest") else ""))  # fmt: skip


def _finish(sessions, job_id: str, code: int, reason: str | None, settings: RunSettings) -> None:
    with sessions() as session:
        job, model, wr = _load(session, job_id)
        if reason == "lost":
            log.warning("job %s was taken over by another worker; leaving it", job_id)
            return
        ingest(session, job, model, wr)
        job_dir = Path(job.job_dir)
        if reason == "canceled" or job.cancel_requested:
            _delete_model(session, model, job)
            return
        folder = run_folder(job_dir)
        result = folder.read_result() if code == ExitCode.OK else None
        error = folder.read_error()
        if result is not None:
            lifecycle.succeed(session, job, model, wr, result)
        elif code == ExitCode.BAD_INPUT:
            error = error or RunError("InvalidParameter", "The training input was rejected.")
            # The user can fix their data or config; the weights are the operator's to fix.
            hint = " Fix this and create the model again." if error.code in ("InvalidParameter", "DatasetInvalid") else ""
            lifecycle.fail(session, job, model, wr, error.code, error.message[:1].upper() + error.message[1:] + hint)
        elif reason == "shutdown":
            queue.release(session, job, counted=False)
            workrequests.log(session, wr.id, "Paused: the server is shutting down; training resumes from its checkpoint on restart.")
        else:
            why = _exit_text(code)
            log.warning("job %s: the trainer %s; its log: %s", job_id, why, job_dir / f"attempt-{job.attempts}.stderr")
            job.last_error = why
            if job.attempts >= settings.max_attempts:
                lifecycle.fail(session, job, model, wr, "TrainingFailed",
                               f"Training failed {job.attempts} times; the last attempt {why}. The server's log has the details.")  # fmt: skip
            else:
                queue.release(session, job, counted=True)
                workrequests.log(session, wr.id, f"Attempt {job.attempts} {why}; retrying.")
        session.commit()


def _exit_text(code: int) -> str:
    """How a trainer ended, for users: no stderr, no paths (the operator's log has those)."""
    if code == ExitCode.OK:
        return "ended without writing its result"
    if code == ExitCode.STOPPED:
        return "was stopped by SIGTERM from outside the server"
    if code == ExitCode.CRASHED:
        return "stopped on an internal error"
    return f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
