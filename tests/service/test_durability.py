"""Jobs outlive their server: a server killed mid-training and restarted finishes the job from its
checkpoint. A job whose input the engine rejects ends FAILED with details that say what to fix."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest
from helpers.clients import clients
from helpers.fine_tuning import create_cluster, dataset_lines, lora_model_details, upload, wait_work_request
from helpers.identities import new_identity
from helpers.waiting import wait_for

COMPARTMENT = "ocid1.compartment.oc1..aaaadurable"


def _native_metrics(ai, model_id: str) -> dict:
    return ai.base_client.call_api(resource_path=f"/models/{model_id}/metrics", method="GET", response_type="object").data


def _trainers(server_pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(server_pid).children(recursive=True) if "train" in p.cmdline()]


def _start_and_create_model(svc, name: str, dataset_body: bytes, **training_config):
    """Start the server, register a user, upload a dataset and create a LoRA model; (identity, ai, response)."""
    svc.start()
    me = new_identity(name)
    svc.register(me)
    ai, objects = clients(svc, me)
    dataset = upload(objects, "train.jsonl", dataset_body)
    cluster = create_cluster(ai, COMPARTMENT)
    return me, ai, ai.create_model(lora_model_details(COMPARTMENT, cluster.id, dataset, **training_config))


def test_killed_server_resumes_the_job_after_restart(fresh_service, slower_weights, backend):
    if backend == "postgresql":  # CI time: on PostgreSQL a killed server's job is taken over in test_several_servers.py
        pytest.skip("runs on SQLite only (the embedded default)")
    svc = fresh_service
    # The kill must land mid-training. With the 2-layer tiny model all 20 steps took ~0.2 s, less
    # than the server's and this test's polling, and the test sometimes only ever saw "done". These
    # weights and ~300-token prompts make a step ~0.25 s on 2 cores: seconds of window, not luck.
    svc.weights = slower_weights
    # Early stopping off: the run must reach exactly its 20 steps however the loss moves.
    me, ai, created = _start_and_create_model(
        svc, "durable", dataset_lines(40, filler_digits=150), total_training_epochs=5, early_stopping_patience=0
    )
    model_id, wr_id = created.data.id, created.headers["opc-work-request-id"]

    def mid_training():
        progress = _native_metrics(ai, model_id).get("progress") or {}
        return progress.get("phase") == "training" and progress.get("step", 0) >= 1

    wait_for(mid_training, 120, "training to pass step 1")
    trainers = _trainers(svc.proc.pid)
    assert trainers, "the job runs in a subprocess of the server"
    assert ai.get_work_request(wr_id).data.status == "IN_PROGRESS"
    svc.kill()
    # The trainer is told (SIGTERM via PR_SET_PDEATHSIG), checkpoints and exits by itself.
    _gone, alive = psutil.wait_procs(trainers, timeout=120)
    assert not alive, "the trainer outlived its killed server"

    svc.start()
    ai, _ = clients(svc, me)
    wr = wait_work_request(ai, wr_id, timeout=180)
    logs = [entry.message for entry in ai.list_work_request_logs(wr_id).data.items]
    assert wr.status == "SUCCEEDED", (logs, [e.message for e in ai.list_work_request_errors(wr_id).data.items])
    model = ai.get_model(model_id).data
    assert model.lifecycle_state == "ACTIVE" and model.model_metrics.final_loss > 0
    assert any("Attempt 2 of 3: training started (resuming from its checkpoint)" in m for m in logs), logs
    steps = [r["step"] for r in _native_metrics(ai, model_id)["items"] if r["kind"] == "train"]
    assert max(steps) == 20, logs  # 5 epochs * ceil(32 / 8)


def test_rejected_job_fails_with_details_and_a_work_request_error(fresh_service):
    svc = fresh_service
    svc.weights = Path("/nonexistent/weights")  # the engine rejects it: exit 2
    _, ai, created = _start_and_create_model(svc, "failing", dataset_lines(40))
    wr = wait_work_request(ai, created.headers["opc-work-request-id"])
    assert wr.status == "FAILED"
    model = ai.get_model(created.data.id).data
    assert model.lifecycle_state == "FAILED"
    # the user is told what happened, but not the operator's paths (the server's log has them)
    assert "could not load the base model's weights" in model.lifecycle_details
    assert "/nonexistent" not in model.lifecycle_details and "/nonexistent" not in json.dumps(model.system_tags or {})
    errors = ai.list_work_request_errors(wr.id).data.items
    assert errors and errors[0].code == "WeightsUnavailable" and "/nonexistent" not in errors[0].message
