"""The job queue lives in the store, so it survives restarts and is shared by every server on one
database. A worker claims a job with a conditional UPDATE (exactly one claimer wins) and keeps a
heartbeat on it; a job whose owner died is claimed again (and resumed, or re-attached to where its
executor keeps it running).

Claims are race-free across servers on PostgreSQL: the claimer locks the job's cluster row
(SELECT ... FOR UPDATE) before it counts the cluster's busy units, so two servers never both see the
last free unit. SQLite ignores FOR UPDATE; it is the one-server default, where the worker pool's
lock serialises the claims."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from datetime import timedelta

import psutil
from sqlalchemy import Row, select, update
from sqlalchemy.orm import Session

from tuneforge.store.tables import ClusterRow, JobRow, utcnow

# What the claim reads of each open job: plain values, not ORM objects, so that a read after taking the
# cluster lock sees the rows as they are then (the session would hand back the objects it already holds).
_CLAIM_FIELDS = (
    JobRow.id,
    JobRow.state,
    JobRow.attempts,
    JobRow.cluster_id,
    JobRow.cancel_requested,
    JobRow.owner,
    JobRow.heartbeat_at,
    JobRow.units,
)


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


def _abandoned(job: Row, me: str, mine: set[str], lease: timedelta) -> bool:
    if job.owner == me:
        return job.id not in mine  # ours but no thread of ours runs it any more (it failed)
    stale = job.heartbeat_at is None or job.heartbeat_at < utcnow() - lease
    return stale or owner_is_dead(job.owner)


def one_unit(unit_count: int) -> int:
    """The local executor's rule: a job takes one unit, so a cluster trains `unitCount` jobs at once."""
    return 1


def claim(
    session: Session,
    me: str,
    mine: set[str],
    lease_seconds: float,
    units_per_job: Callable[[int], int] = one_unit,
    detached: bool = False,
) -> JobRow | None:
    """The oldest job that is queued or abandoned and whose cluster has the units it needs, now RUNNING
    for `me`. `mine`: the jobs this process's threads are running now. The executor's rules:
    `units_per_job(unitCount)`, the units of its cluster a job holds while it runs; `detached`, its
    attempts train on when their server dies, so an abandoned job keeps its units until it is claimed again."""
    lease = timedelta(seconds=lease_seconds)
    open_jobs = session.execute(
        select(*_CLAIM_FIELDS).where(JobRow.state.in_(("QUEUED", "RUNNING"))).order_by(JobRow.time_created, JobRow.id)
    ).all()
    session.rollback()  # each candidate is tried in a transaction of its own, which holds its cluster's lock
    full: set[str] = set()
    for job in open_jobs:
        if job.state == "RUNNING" and not _abandoned(job, me, mine, lease):
            continue
        if job.state == "QUEUED" and job.cluster_id in full:  # (an abandoned job does not count its own units)
            continue
        # A job being deleted only needs its cleanup, which takes no unit.
        units = 0 if job.cancel_requested else _free_units_for(session, job, me, mine, lease, units_per_job, detached)
        if units is None:
            full.add(job.cluster_id)
            session.rollback()
            continue
        won = session.execute(
            update(JobRow)
            .where(JobRow.id == job.id, JobRow.state == job.state, JobRow.attempts == job.attempts)
            .values(state="RUNNING", owner=me, heartbeat_at=utcnow(), attempts=job.attempts + 1, units=units)
        ).rowcount
        session.commit()  # releases the cluster's lock
        if won:
            return session.get(JobRow, job.id, populate_existing=True)
    return None


def _free_units_for(
    session: Session,
    job: Row,
    me: str,
    mine: set[str],
    lease: timedelta,
    units_per_job: Callable[[int], int],
    detached: bool,
) -> int | None:
    """The units `job` would take, when its cluster has that many free; None when it has not. Locks the
    cluster's row until the caller's transaction ends: every claimer of this cluster waits here."""
    unit_count = session.scalar(select(ClusterRow.unit_count).where(ClusterRow.id == job.cluster_id).with_for_update())
    unit_count = unit_count or 1  # a job whose cluster row is gone still runs, one at a time
    others = session.execute(
        select(*_CLAIM_FIELDS).where(JobRow.cluster_id == job.cluster_id, JobRow.state == "RUNNING", JobRow.id != job.id)
    ).all()
    busy = sum(other.units for other in others if detached or not _abandoned(other, me, mine, lease))
    need = min(unit_count, units_per_job(unit_count))
    return need if busy + need <= unit_count else None


def heartbeat(session: Session, job_id: str, me: str) -> bool:
    """Renew the lease; False when another worker has taken the job over (we must stop)."""
    renewed = session.execute(
        update(JobRow).where(JobRow.id == job_id, JobRow.owner == me, JobRow.state == "RUNNING").values(heartbeat_at=utcnow())
    ).rowcount
    return bool(renewed)


def abandon(session: Session, job: JobRow) -> None:
    """Leave a running job for any server to take at once: its attempt trains on where it runs (a detached
    executor's), and whoever claims the job re-attaches to it (or, if the model is deleted meanwhile, stops it)."""
    job.owner, job.heartbeat_at = None, None


def release(session: Session, job: JobRow, counted: bool) -> None:
    """Back to the queue (server shutdown, or a crash that will be retried). An attempt that our own
    shutdown interrupted does not count against the job's bounded number of attempts."""
    job.state, job.owner, job.heartbeat_at = "QUEUED", None, None
    if not counted:
        job.attempts = max(0, job.attempts - 1)


def park(session: Session, job: JobRow) -> None:
    """Paused: out of the queue until a resume queues it again (its checkpoint waits in the run folder).
    The attempt a pause ended does not count against the job's bounded number of attempts."""
    job.state, job.owner, job.heartbeat_at, job.pause_requested = "PAUSED", None, None, False
    job.attempts = max(0, job.attempts - 1)
