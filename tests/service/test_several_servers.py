"""Two `tuneforge serve` processes on one PostgreSQL database and one data dir, as two machines behind a
load balancer would run (each in a UTS namespace of its own, so each has its own host name and judges the
other by its heartbeat alone; a 5 s lease). A unitCount-1 cluster with three jobs never trains two at once
across the servers, and the job of a server killed mid-training is finished by the other once the
lease has lapsed, exactly once."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import psutil
import pytest
from helpers.clients import clients
from helpers.fine_tuning import create_cluster, dataset_lines, lora_model_details, upload, wait_work_request
from helpers.identities import new_identity
from helpers.servers import Service, servers_on_one_database
from helpers.waiting import wait_for

COMPARTMENT = "ocid1.compartment.oc1..aaaapair"
LEASE_S = 5


@pytest.fixture
def two_servers(tmp_path, slower_weights):
    with servers_on_one_database(tmp_path / "data", slower_weights, "tf-server", workers=2, lease_seconds=LEASE_S) as servers:
        yield servers


def _user(svc: Service, name: str, units: int, filler_digits: int = 0):
    me = new_identity(name)
    svc.register(me)
    ai, objects = clients(svc, me)
    dataset = upload(objects, "train.jsonl", dataset_lines(40, filler_digits=filler_digits))
    return me, ai, dataset, create_cluster(ai, COMPARTMENT, unit_count=units)


def _trainer_of(svc: Service) -> list[psutil.Process]:
    return [p for p in psutil.Process(svc.proc.pid).children(recursive=True) if "train" in p.cmdline()]


def test_a_one_unit_cluster_never_trains_two_jobs_at_once_across_servers(two_servers):
    first, second = two_servers
    _, ai, dataset, cluster = _user(first, "pairunits", units=1)
    wr_ids = [
        ai.create_model(lora_model_details(COMPARTMENT, cluster.id, dataset)).headers["opc-work-request-id"] for _ in range(3)
    ]
    done = [wait_work_request(ai, wr_id, timeout=300) for wr_id in wr_ids]
    assert [wr.status for wr in done] == ["SUCCEEDED"] * 3
    # The work requests' timing records: each job started training after the one before it had finished.
    runs = sorted((wr.time_started, wr.time_finished) for wr in done)
    for (_, finished), (started, _) in itertools.pairwise(runs):
        assert started >= finished, runs
    # Both servers were free to take every job (2 workers each, polling); each job was claimed once. (Which
    # server takes a freed unit is a race the one that just finished usually wins; test_queue_claims.py races
    # six claimers at one instant.)
    claims = [first.log.read_text().count("claimed job"), second.log.read_text().count("claimed job")]
    assert sum(claims) == 3, claims


def test_the_job_of_a_killed_server_is_finished_by_the_other_exactly_once(two_servers):
    # ~300-token prompts: steps of a visible fraction of a second, so that the kill lands mid-training.
    me, ai, dataset, cluster = _user(two_servers[0], "pairkill", units=1, filler_digits=150)
    created = ai.create_model(
        lora_model_details(COMPARTMENT, cluster.id, dataset, total_training_epochs=5, early_stopping_patience=0)
    )
    model_id, wr_id = created.data.id, created.headers["opc-work-request-id"]
    running = wait_for(lambda: [s for s in two_servers if _trainer_of(s)], 120, "a server to start the trainer")[0]
    [survivor] = [s for s in two_servers if s is not running]

    def mid_training():
        progress = ai.base_client.call_api(resource_path=f"/models/{model_id}/metrics", method="GET", response_type="object")
        return (progress.data.get("progress") or {}).get("step", 0) >= 1

    wait_for(mid_training, 120, "training to pass step 1")
    trainers = _trainer_of(running)
    last_heartbeat = _heartbeat(running.database_url, wr_id)  # the killed server's last one is this or later
    running.kill()
    psutil.wait_procs(trainers, timeout=120)  # SIGTERM from its dead server: it checkpoints and exits
    ai, _ = clients(survivor, me)
    wr = wait_work_request(ai, wr_id, timeout=300)
    logs = ai.list_work_request_logs(wr_id).data.items
    messages = [entry.message for entry in logs]
    assert wr.status == "SUCCEEDED", messages
    items = ai.base_client.call_api(resource_path=f"/models/{model_id}/metrics", method="GET", response_type="object").data[
        "items"
    ]
    # Taken over only once the killed server's lease had lapsed.
    [takeover] = [e for e in logs if e.message.startswith("Attempt 2 of 3: training started (resuming from its checkpoint)")]
    assert takeover.timestamp >= last_heartbeat + timedelta(seconds=LEASE_S), (takeover.timestamp, last_heartbeat)
    assert sum(m.startswith("Training succeeded") for m in messages) == 1 and not any("Attempt 3" in m for m in messages)
    assert [r["step"] for r in items if r["kind"] == "train"] == list(range(1, 21))  # every step once: no duplicated metrics
    [job_dir] = (running.data_dir / "jobs").iterdir()
    assert (job_dir / "output" / "model.json").is_file() and not (job_dir / "output" / "error.json").exists()
    assert sorted(p.name for p in job_dir.glob("attempt-*.stderr")) == ["attempt-1.stderr", "attempt-2.stderr"]


def _heartbeat(url: str, job_id: str) -> datetime:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as conn:
        value = conn.execute(text("SELECT heartbeat_at FROM jobs WHERE id = :id"), {"id": job_id}).scalar_one()
    engine.dispose()
    return value.astimezone(UTC)
