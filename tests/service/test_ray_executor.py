"""`tuneforge serve --executor ray` against a real Ray cluster: `ray start --head` on 127.0.0.1 with 2 CPUs,
started for this module and stopped at its end. Two jobs run at once as Ray jobs, each a TorchTrainer with
one CPU worker per unit of its cluster, each worker a rank of one distributed `tuneforge train`: deleting
one model stops its Ray job; the other's curves stream into the store while it trains, and when its server
is killed and restarted the server re-attaches to the Ray job instead of starting it again."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest
from helpers.clients import clients
from helpers.fine_tuning import create_cluster, dataset_lines, lora_model_details, upload, wait_work_request
from helpers.identities import new_identity
from helpers.ray_cluster import ray_head
from helpers.servers import Service
from helpers.waiting import wait_for

pytest.importorskip("ray", reason="the Ray executor needs Ray: pip install -e '.[ray]' (it is in the dev extra)")
from ray.job_submission import JobSubmissionClient

COMPARTMENT = "ocid1.compartment.oc1..aaaaray"


@pytest.fixture(scope="module")
def ray_cluster():
    """A one-node Ray cluster with 2 CPUs on 127.0.0.1; the address of its job API (the dashboard)."""
    with ray_head(cpus=2) as head:
        yield head.dashboard


def _ray_jobs(address: str, wr_id: str) -> list:
    """The Ray jobs the service submitted for a model's job (their metadata names it)."""
    return [j for j in JobSubmissionClient(address).list_jobs() if (j.metadata or {}).get("tuneforgeJob") == wr_id]


@pytest.fixture(scope="module")
def ray_jobs(ray_cluster, tmp_path_factory, slower_weights):
    """A server on the Ray executor and two models training at once: one on a 2-unit cluster (2 CPU workers
    of half a CPU each: both jobs fit on the 2 CPUs), one on a 1-unit cluster, for the tests to cancel and
    to watch across a server restart."""
    root = tmp_path_factory.mktemp("rayserve")
    svc = Service(
        data_dir=root / "data",
        database_url=None,
        weights=slower_weights,
        args=["--executor", "ray", "--ray-address", ray_cluster, "--workers", "2", "--ray-cpus-per-worker", "0.5"],
    )
    svc.data_dir.mkdir(parents=True)
    svc.start()
    try:
        me = new_identity("ray")
        svc.register(me)
        ai, objects = clients(svc, me)
        dataset = upload(objects, "train.jsonl", dataset_lines(40, filler_digits=150))
        jobs = {}
        for name, units, epochs in (("fit", 2, 5), ("cancel", 1, 20)):
            cluster = create_cluster(ai, COMPARTMENT, unit_count=units, display_name=name)
            created = ai.create_model(
                lora_model_details(COMPARTMENT, cluster.id, dataset, total_training_epochs=epochs, early_stopping_patience=0)
            )
            jobs[name] = (created.data.id, created.headers["opc-work-request-id"])
        yield svc, me, jobs
    finally:
        svc.stop()


def _native_metrics(ai, model_id: str) -> dict:
    return ai.base_client.call_api(resource_path=f"/models/{model_id}/metrics", method="GET", response_type="object").data


def _training(ai, model_id: str) -> bool:
    metrics = _native_metrics(ai, model_id)
    return (metrics.get("progress") or {}).get("phase") == "training" and any(r["kind"] == "train" for r in metrics["items"])


def _job_dir(svc: Service, model_id: str) -> Path:
    return svc.data_dir / "jobs" / model_id


def test_deleting_the_model_stops_its_ray_job(ray_cluster, ray_jobs):
    svc, me, jobs = ray_jobs
    model_id, wr_id = jobs["cancel"]
    ai, _ = clients(svc, me)
    wait_for(lambda: _training(ai, model_id), 300, "the Ray job's first training steps in the store", 0.5)
    job_dir = str(_job_dir(svc, model_id))
    ai.delete_model(model_id)
    wait_for(lambda: ai.get_model(model_id).data.lifecycle_state == "DELETED", 120, "the model to be deleted", 0.5)
    assert ai.get_work_request(wr_id).data.status == "CANCELED"
    assert [j.status for j in _ray_jobs(ray_cluster, wr_id)] == ["STOPPED"]
    wait_for(
        lambda: not [p for p in psutil.process_iter(["cmdline"]) if job_dir in " ".join(p.info["cmdline"] or [])],
        60,
        "the Ray job's trainers to be gone",
    )


def test_a_ray_job_trains_on_the_cluster_units_and_a_restarted_server_reattaches(ray_cluster, ray_jobs):
    svc, me, jobs = ray_jobs
    model_id, wr_id = jobs["fit"]
    ai, _ = clients(svc, me)
    # The curves reach the store while the Ray job trains (read from the run folder the ranks write).
    wait_for(lambda: _training(ai, model_id), 300, "the Ray job's first training steps in the store", 0.5)
    [ray_job] = _ray_jobs(ray_cluster, wr_id)
    for restarts, leave in enumerate((svc.stop, svc.kill), 1):  # SIGTERM, then SIGKILL: the Ray job trains on either way
        leave()
        svc.start()
        ai, _ = clients(svc, me)
        # The next leave waits until this server has re-attached: a SIGKILL between its claim and its re-attach
        # would cost the job one counted attempt (the claim counts a start), which is not what this test is about.
        wait_for(
            lambda n=restarts, ai=ai: (
                sum(e.message.startswith("Re-attached") for e in ai.list_work_request_logs(wr_id).data.items) >= n
            ),
            180,
            "the restarted server to re-attach to the Ray job",
            0.5,
        )
    wr = wait_work_request(ai, wr_id, timeout=300)
    logs = [entry.message for entry in ai.list_work_request_logs(wr_id).data.items]
    assert wr.status == "SUCCEEDED", (logs, [e.message for e in ai.list_work_request_errors(wr_id).data.items])
    started = [m for m in logs if "training started" in m]
    assert started == [f"Attempt 1 of 3: training started (from the start) as Ray job {ray_job.submission_id}."], logs
    assert any(m.startswith("The server is shutting down; training goes on") for m in logs), logs
    reattached = [m for m in logs if m.startswith(f"Re-attached to attempt 1 as Ray job {ray_job.submission_id}")]
    assert len(reattached) == 2, logs  # still running, or ended while no server watched it: never started again
    assert [j.status for j in _ray_jobs(ray_cluster, wr_id)] == ["SUCCEEDED"]  # one Ray job, never a second one
    steps = [r["step"] for r in _native_metrics(ai, model_id)["items"] if r["kind"] == "train"]
    assert steps == list(range(1, 21)), steps  # 5 epochs * ceil(32 / 8), each once
    job_dir = _job_dir(svc, model_id)
    result = json.loads((job_dir / "output" / "model.json").read_text())
    assert result["distributed"] == {"worldSize": 2, "sharding": "fsdp2"}  # one CPU rank per unit
    assert sorted(p.name for p in job_dir.glob("attempt-1.rank-*.stderr")) == [
        "attempt-1.rank-0.stderr",
        "attempt-1.rank-1.stderr",
    ]
