"""Model/work-request transitions and queue claims without a server: stand-in runs say so,
deleting a queued job cancels it, deleting a running one flags it for its worker, and a job whose
owner died is taken over."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneforge.jobs import lifecycle, queue
from tuneforge.run_folder import RunResult
from tuneforge.store import workrequests
from tuneforge.store.db import default_url, open_store
from tuneforge.store.tables import JobRow, ModelRow, WorkRequestRow

RESULT = RunResult(
    base_model_id="meta.llama-3.3-70b-instruct",
    method="LORA",
    training_config={},
    stand_in=True,
    device="cpu",
    weights={"source": "stand-in", "path": "/home/someone/.cache/x", "description": "stand-in"},
    precision="float32",
    seed=42,
    training_examples=32,
    validation_examples=8,
    total_training_steps=8,
    steps_run=4,
    early_stopped=True,
    best_step=2,
    evaluation_cycles=2,
    evaluation_every_steps=2,
    evaluation_cycle_examples=8,
    timings={},
    final_accuracy=0.5,
    final_loss=1.25,
)


@pytest.fixture
def store(tmp_path):
    sessions = open_store(default_url(tmp_path))
    with sessions() as session:
        session.add(
            ModelRow(
                id="m1",
                tenancy_id="t",
                compartment_id="c",
                display_name="m",
                base_model_id="meta.llama-3.3-70b-instruct",
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
            resource_id="m1",
        )
        session.flush()
        session.add(JobRow(id=wr.id, model_id="m1", cluster_id="k", state="QUEUED", job_dir=str(tmp_path / "job")))
        session.commit()
    return sessions


def _rows(session):
    job = session.query(JobRow).one()
    return job, session.get(ModelRow, "m1"), session.get(WorkRequestRow, job.id)


def test_stand_in_and_early_stopping_are_reported(store):
    with store() as session:
        job, model, wr = _rows(session)
        lifecycle.succeed(session, job, model, wr, RESULT)
        session.commit()
        assert model.lifecycle_state == "ACTIVE" and wr.status == "SUCCEEDED" and wr.percent_complete == 100
        assert "stand-in" in model.lifecycle_details and "4 of 8 steps" in model.lifecycle_details
        assert model.system_tags == {"tuneforge": {"standIn": "true"}}  # no server path, no repr
        assert model.model_metrics["finalLoss"] == 1.25


def test_deleting_a_queued_job_cancels_it(store):
    with store() as session:
        job, model, wr = _rows(session)
        delete_wr, remove = lifecycle.request_deletion(session, model, "local")
        session.commit()
        assert model.lifecycle_state == "DELETED" and job.state == "DONE"
        assert wr.status == "CANCELED" and delete_wr.status == "SUCCEEDED"
        assert remove == [Path(job.job_dir)]


def test_deleting_a_running_job_asks_its_worker_to_stop_it(store):
    with store() as session:
        job, model, _ = _rows(session)
        assert queue.claim(session, "me", set(), 30) is not None
        delete_wr, remove = lifecycle.request_deletion(session, model, "local")
        session.commit()
        assert model.lifecycle_state == "DELETING" and job.cancel_requested and remove == []
        assert delete_wr.status == "IN_PROGRESS"


def test_claims_skip_running_jobs_and_take_over_dead_owners(store):
    with store() as session:
        assert queue.claim(session, "host:1:1", {"other"}, 30).attempts == 1
        # Running in a live thread of ours: not claimable again.
        job, _, _ = _rows(session)
        assert queue.claim(session, "host:1:1", {job.id}, 30) is None
        # Its owner is a process on this host that no longer exists: taken over at once.
        job.owner = f"{queue.this_process().rsplit(':', 2)[0]}:999999:1"
        session.commit()
        taken = queue.claim(session, queue.this_process(), set(), 30)
        assert taken is not None and taken.attempts == 2


def test_a_cluster_runs_at_most_unit_count_jobs(store, tmp_path):
    from tuneforge.store.tables import ClusterRow

    with store() as session:
        session.add(
            ClusterRow(
                id="k",
                tenancy_id="t",
                compartment_id="c",
                display_name="k",
                type="FINE_TUNING",
                unit_count=1,
                unit_shape="LARGE_GENERIC",
                lifecycle_state="ACTIVE",
            )
        )
        wr2 = workrequests.new_work_request(
            session,
            region="local",
            tenancy_id="t",
            compartment_id="c",
            operation_type="CREATE_MODEL",
            entity_type="GenerativeAiModel",
            resource_id="m1",
        )
        session.flush()
        session.add(JobRow(id=wr2.id, model_id="m1", cluster_id="k", state="QUEUED", job_dir=str(tmp_path / "j2")))
        session.commit()
        me = queue.this_process()
        first = queue.claim(session, me, set(), 30)
        assert queue.claim(session, me, {first.id}, 30) is None  # the cluster's one unit is busy
        first.state = "DONE"
        session.commit()
        assert queue.claim(session, me, set(), 30) is not None
