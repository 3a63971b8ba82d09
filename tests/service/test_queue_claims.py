"""Queue claims as several servers make them on one database, without servers: claimers racing for a
cluster's units never exceed its unitCount (PostgreSQL: the claim locks the cluster row), a job whose
owner on another host stopped heartbeating is taken over once the lease has lapsed (and not before),
and the Ray executor's rule: a job holds all its cluster's units."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from helpers.databases import database
from sqlalchemy import select

from tuneforge.jobs import queue
from tuneforge.store import workrequests
from tuneforge.store.db import default_url, open_store
from tuneforge.store.tables import ClusterRow, JobRow, ModelRow, utcnow

CLAIMERS, ROUNDS = 6, 10


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    with database(request.param) as url:
        sessions = open_store(url or default_url(tmp_path))
        yield sessions
        sessions.kw["bind"].dispose()


def _cluster_with_jobs(sessions, units: int, jobs: int) -> list[str]:
    with sessions() as session:
        session.add(
            ClusterRow(
                id="k",
                tenancy_id="t",
                compartment_id="c",
                display_name="k",
                type="FINE_TUNING",
                unit_count=units,
                unit_shape="LARGE_GENERIC",
                lifecycle_state="ACTIVE",
            )
        )
        ids = []
        for i in range(jobs):
            session.add(
                ModelRow(
                    id=f"m{i}",
                    tenancy_id="t",
                    compartment_id="c",
                    display_name="m",
                    base_model_id="b",
                    lifecycle_state="CREATING",
                    fine_tune_details={},
                    model_metrics=None,
                )
            )
            session.flush()
            wr = workrequests.new_work_request(
                session,
                region="local",
                tenancy_id="t",
                compartment_id="c",
                operation_type="CREATE_MODEL",
                entity_type="GenerativeAiModel",
                resource_id=f"m{i}",
            )
            session.flush()
            session.add(JobRow(id=wr.id, model_id=f"m{i}", cluster_id="k", state="QUEUED", job_dir=f"/nowhere/{i}"))
            ids.append(wr.id)
        session.commit()
    return ids


def _server(i: int) -> str:
    """The owner id of a server on another host: judged by its heartbeat alone, as a remote server is."""
    return f"server-{i}.example:{100 + i}:1"


def test_racing_claimers_never_exceed_a_clusters_units():
    """Six servers claim at the same instant (a barrier), ten times; each round exactly unitCount win.
    Counting busy units first and claiming after (the queue before the cluster lock) let 5 or 6 win."""
    with database("postgresql") as url:
        sessions = open_store(url)
        jobs = _cluster_with_jobs(sessions, units=2, jobs=8)
        for _ in range(ROUNDS):
            barrier, won = threading.Barrier(CLAIMERS), []
            threads = [threading.Thread(target=_claim_at_once, args=(sessions, i, barrier, won)) for i in range(CLAIMERS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert len(won) == 2 and len(set(won)) == 2, won
            with sessions() as session:
                for job in session.scalars(select(JobRow).where(JobRow.id.in_(jobs))):
                    job.state, job.owner, job.heartbeat_at = "QUEUED", None, None
                session.commit()
        sessions.kw["bind"].dispose()


def _claim_at_once(sessions, i: int, barrier: threading.Barrier, won: list[str]) -> None:
    with sessions() as session:
        barrier.wait()
        job = queue.claim(session, _server(i), set(), 30)
        if job is not None:
            won.append(job.id)


def test_a_silent_server_on_another_host_loses_its_job_after_the_lease(store):
    [job_id] = _cluster_with_jobs(store, units=1, jobs=1)
    me = queue.this_process()
    with store() as session:
        assert queue.claim(session, _server(1), set(), 30).attempts == 1
        # Its heartbeat is fresh: another host's server cannot tell it is gone, so it waits.
        assert queue.claim(session, me, set(), lease_seconds=5) is None
        session.get(JobRow, job_id).heartbeat_at = utcnow() - timedelta(seconds=6)
        session.commit()
        taken = queue.claim(session, me, set(), lease_seconds=5)
        assert taken is not None and taken.owner == me and taken.attempts == 2
        assert not queue.heartbeat(session, job_id, _server(1))  # the first server learns it lost the job, and stops


def test_a_ray_job_holds_all_its_clusters_units(store):
    all_units = lambda unit_count: unit_count  # the Ray executor's rule
    first_id, _ = _cluster_with_jobs(store, units=2, jobs=2)
    with store() as session:
        first = queue.claim(session, _server(1), set(), 30, all_units)
        assert first.id == first_id and first.units == 2
        assert queue.claim(session, _server(2), set(), 30, all_units) is None  # no unit left
        assert queue.claim(session, _server(2), set(), 30) is None  # nor one for a one-unit job
        first.state = "DONE"
        session.commit()
        assert queue.claim(session, _server(2), set(), 30, all_units).units == 2


def test_an_abandoned_detached_job_keeps_its_units_until_it_is_taken_again(store):
    """With the Ray executor a dead server's job may still train on Ray: no other job gets its units, and
    the job itself is taken again (to be re-attached) even when an older job waits for the same units."""
    first_id, second_id = _cluster_with_jobs(store, units=1, jobs=2)
    with store() as session:
        first = queue.claim(session, _server(1), set(), 30, detached=True)
        assert first.id == first_id
        queue.abandon(session, first)  # its server stopped; the attempt trains on
        session.get(JobRow, second_id).time_created = first.time_created - timedelta(seconds=1)  # the older one now
        session.commit()
        taken = queue.claim(session, _server(2), set(), 30, detached=True)
        assert taken.id == first_id and taken.attempts == 2
        assert queue.claim(session, _server(3), set(), 30, detached=True) is None
