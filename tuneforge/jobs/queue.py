"""The job queue lives in the store, so it survives restarts and is shared by every server on one
database. A worker claims a job with a conditional UPDATE (exactly one claimer wins) and keeps a
heartbeat on it; a job whose owner died is claimed again and resumed from its checkpoint."""

from __future__ import annotations

import os
import socket
from datetime import timedelta

import psutil
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tuneforge.store.tables import ClusterRow, JobRow, utcnow


def this_process() -> str:
    """Owner id: host, pid and start time (a reused pid is not the same process)."""
    started = int(psutil.Process().create_time())
    return f"{socket.gethostname()}:{os.getpid()}:{started}"


def owner_is_dead(owner: str | None) -> bool:
    """True when the owner ran on this host and is gone; other hosts' owners are judged by heartbeat."""
    if not owner:
        return True
    try:
        host, pid, started = owner.rsplit(":", 2)
        if host != socket.gethostname():
            return False
        return int(psutil.Process(int(pid)).create_time()) != int(started)
    except (ValueError, psutil.NoSuchProcess, psutil.AccessDenied):
        return True


def _abandoned(job: JobRow, me: str, mine: set[str], lease: timedelta) -> bool:
    if job.owner == me:
        return job.id not in mine  # ours but no thread of ours runs it any more (it failed)
    stale = job.heartbeat_at is None or job.heartbeat_at < utcnow() - lease
    return stale or owner_is_dead(job.owner)


def claim(session: Session, me: str, mine: set[str], lease_seconds: float) -> JobRow | None:
    """The oldest job that is queued or abandoned and whose cluster has a free unit, now RUNNING for `me`.
    `mine`: the jobs this process's threads are running now."""
    lease = timedelta(seconds=lease_seconds)
    open_jobs = session.scalars(select(JobRow).where(JobRow.state != "DONE").order_by(JobRow.time_created, JobRow.id)).all()
    busy: dict[str, int] = {}
    for job in open_jobs:
        if job.state == "RUNNING" and not _abandoned(job, me, mine, lease):
            busy[job.cluster_id] = busy.get(job.cluster_id, 0) + 1
    units = dict(session.execute(select(ClusterRow.id, ClusterRow.unit_count)).all())
    for job in open_jobs:
        if job.state == "RUNNING" and not _abandoned(job, me, mine, lease):
            continue
        # A job being deleted only needs its cleanup, which takes no unit.
        if not job.cancel_requested and busy.get(job.cluster_id, 0) >= units.get(job.cluster_id, 1):
            continue
        won = session.execute(
            update(JobRow)
            .where(JobRow.id == job.id, JobRow.state == job.state, JobRow.attempts == job.attempts)
            .values(state="RUNNING", owner=me, heartbeat_at=utcnow(), attempts=job.attempts + 1)
        ).rowcount
        session.commit()
        if won:
            return session.get(JobRow, job.id, populate_existing=True)
    session.rollback()
    return None


def heartbeat(session: Session, job_id: str, me: str) -> bool:
    """Renew the lease; False when another worker has taken the job over (we must stop)."""
    renewed = session.execute(
        update(JobRow).where(JobRow.id == job_id, JobRow.owner == me, JobRow.state == "RUNNING").values(heartbeat_at=utcnow())
    ).rowcount
    return bool(renewed)


def release(session: Session, job: JobRow, counted: bool) -> None:
    """Back to the queue (server shutdown, or a crash that will be retried). An attempt that our own
    shutdown interrupted does not count against the job's bounded number of attempts."""
    job.state, job.owner, job.heartbeat_at = "QUEUED", None, None
    if not counted:
        job.attempts = max(0, job.attempts - 1)
