"""Run one claimed job: start the trainer subprocess, stream its progress and metrics into the
store while it runs, and turn its exit into the model's final state.

Engine exit codes (its CLI contract): 0 success (model.json written), 2 bad input (the message on
stderr is for the user), 3 stopped by SIGTERM after saving a checkpoint; anything else is a crash.
"""

from __future__ import annotations

import json
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

from tuneforge.jobs import lifecycle, queue
from tuneforge.jobs.command import can_resume, output_dir, train_command
from tuneforge.jobs.tail import percent_complete, read_new_metrics, read_progress
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
    proc = _start(sessions, job_id, settings)
    if proc is None:
        return
    try:
        reason = _monitor(sessions, job_id, proc, me, settings, stopping)
        _finish(sessions, job_id, proc.returncode, reason, settings)
    finally:
        if proc.poll() is None:  # we are leaving because of an error: do not leave an orphan behind
            _terminate(proc)


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
        resume = can_resume(job_dir)
        output_dir(job_dir).mkdir(parents=True, exist_ok=True)
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
    out = output_dir(Path(job.job_dir))
    progress = read_progress(out)
    if progress is not None and progress != job.progress:
        job.progress = progress
        pct = max(wr.percent_complete, percent_complete(progress))
        if pct != wr.percent_complete and wr.status in ("ACCEPTED", "IN_PROGRESS"):
            wr.percent_complete, wr.revision = pct, wr.revision + 1
    records, offset, restarted = read_new_metrics(out, job.metrics_offset)
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
        result = _read_result(job_dir) if code == 0 else None
        if result is not None:
            lifecycle.succeed(session, job, model, wr, result)
        elif code == 2:
            message = _user_message(job_dir / f"attempt-{job.attempts}.stderr")
            lifecycle.fail(session, job, model, wr, "InvalidParameter", f"{message} Fix this and create the model again.")
        elif reason == "shutdown":
            queue.release(session, job, counted=False)
            workrequests.log(session, wr.id, "Paused: the server is shutting down; training resumes from its checkpoint on restart.")
        else:
            why = _crash_text(code, job_dir / f"attempt-{job.attempts}.stderr")
            job.last_error = why
            if job.attempts >= settings.max_attempts:
                lifecycle.fail(session, job, model, wr, "TrainingFailed",
                               f"Training failed {job.attempts} times; the last attempt {why}. The server log and the job's stderr have details.")  # fmt: skip
            else:
                queue.release(session, job, counted=True)
                workrequests.log(session, wr.id, f"Attempt {job.attempts} {why}; retrying.")
        session.commit()


def _read_result(job_dir: Path) -> dict[str, Any] | None:
    try:
        result = json.loads((output_dir(job_dir) / "model.json").read_text())
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) else None


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        text = path.read_bytes()[-limit * 4 :].decode("utf-8", "replace")
    except OSError:
        return ""
    return text[-limit:].strip()


def _user_message(stderr: Path) -> str:
    """The engine's user-facing error (the CLI prints it as "Error: ..."), without any warnings before it."""
    text = _tail(stderr)
    start = text.rfind("Error: ")
    message = text[start + len("Error: ") :] if start >= 0 else text
    return message.strip() or "The training input was rejected."


def _crash_text(code: int, stderr: Path) -> str:
    if code == 0:
        return "ended without writing model.json"
    if code == 3:
        return "was stopped by SIGTERM (from outside the server)"
    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    last = [line for line in _tail(stderr, 1000).splitlines() if line.strip()][-3:]
    return how + (": " + " | ".join(last) if last else "")
