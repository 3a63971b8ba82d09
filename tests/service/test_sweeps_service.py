"""Sweeps as a service resource (/20231130/sweeps) through the official SDK's signed `call_api`, on a
live server, on SQLite and PostgreSQL: the trials are ordinary custom models on a FINE_TUNING cluster's
units (listed, with their curves), ranked in the sweep; keepBest renames the best and deletes the others;
the pruner stops a bad trial (its model FAILED, saying why, its curves kept); cancel stops the trial in
training; the learning curve answers "would more data help?"; bad input is refused with the field's
name and the same words as `tuneforge sweep --param`. Two servers on one PostgreSQL database share one
Optuna study: one coordinates, it is killed, the other takes over and finishes with no trial run twice."""

from __future__ import annotations

import psutil
import pytest
from helpers.clients import clients, native, service_error
from helpers.databases import database
from helpers.fine_tuning import LORA_MODEL, create_cluster, dataset_lines, upload, wait_work_request
from helpers.identities import new_identity
from helpers.servers import Service, servers_on_one_database
from helpers.waiting import wait_for

COMPARTMENT = "ocid1.compartment.oc1..aaaasweeps"
FINAL = ("SUCCEEDED", "FAILED", "CANCELED")
LEASE_S = 5


def sweep_body(cluster_id: str, dataset: dict, **fields) -> dict:
    return {
        "compartmentId": COMPARTMENT,
        "baseModelId": LORA_MODEL,
        "dedicatedAiClusterId": cluster_id,
        "trainingDataset": {"datasetType": "OBJECT_STORAGE", **{_camel(k): v for k, v in dataset.items()}},
        "trainingConfig": {"trainingConfigType": "LORA_TRAINING_CONFIG", "totalTrainingEpochs": 1, "trainingBatchSize": 8},
        **fields,
    }


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.title() for w in rest)


def wait_sweep(ai, sweep_id: str, timeout: float = 240, until=lambda s: s["lifecycleState"] in FINAL) -> dict:
    return wait_for(
        lambda: (s := native(ai, "GET", f"/sweeps/{sweep_id}").data) and until(s) and s, timeout, f"sweep {sweep_id}", 0.5
    )


def metrics(ai, model_id: str) -> list[dict]:
    return native(ai, "GET", f"/models/{model_id}/metrics").data["items"]


@pytest.fixture(scope="module")
def sweeper(backend, tmp_path_factory, slower_weights):
    """A server of the module's own: two workers (a unitCount-2 cluster trains two trials at once) and
    the 4-layer model, whose steps take long enough for the pruner's and a cancel's stop to land mid-run."""
    with database(backend) as url:
        data = tmp_path_factory.mktemp("sweeps") / "data"
        data.mkdir()
        svc = Service(data_dir=data, database_url=url, weights=slower_weights, args=["--workers", "2", "--lease-seconds", "5"])
        try:
            svc.start()
            yield svc
        finally:
            svc.stop()


@pytest.fixture(scope="module")
def users(sweeper):
    alice, bob = new_identity("sweepalice"), new_identity("sweepbob")
    sweeper.register(alice)
    sweeper.register(bob)
    return alice, bob


# ---- the whole flow, on both backends -------------------------------------------------------------


def test_a_sweep_trains_its_trials_as_custom_models_and_keeps_the_best(sweeper, users, backend):
    if backend == "postgresql":  # CI time: a sweep on PostgreSQL runs in the two-server test below
        pytest.skip("runs on SQLite only")
    alice, bob = users
    ai, objects = clients(sweeper, alice)
    dataset = upload(objects, "sweep/train.jsonl", dataset_lines(160))  # 128 training examples: enough for a learning curve
    cluster = create_cluster(ai, COMPARTMENT, unit_count=2)
    body = sweep_body(
        cluster.id,
        dataset,
        displayName="lr-search",
        trialCount=3,
        pruner="NONE",
        searchSpace={"learningRate": {"low": 0.0001, "high": 0.01, "log": True}},
    )
    created = native(ai, "POST", "/sweeps", body, opc_retry_token="sweep-create-1")
    sweep_id, wr_id = created.data["id"], created.headers["opc-work-request-id"]
    assert created.data["lifecycleState"] == "ACCEPTED" and created.headers["etag"]
    assert created.data["searchSpace"] == {"learningRate": {"low": 0.0001, "high": 0.01, "log": True}}
    assert native(ai, "POST", "/sweeps", body, opc_retry_token="sweep-create-1").data["id"] == sweep_id  # a retry creates nothing

    assert wait_work_request(ai, wr_id, timeout=300).status == "SUCCEEDED"
    sweep = native(ai, "GET", f"/sweeps/{sweep_id}").data
    assert sweep["lifecycleState"] == "SUCCEEDED" and sweep["lifecycleDetails"].startswith("Best: trial ")
    trials = sweep["trials"]
    assert sorted(t["number"] for t in trials) == [0, 1, 2] and {t["state"] for t in trials} == {"COMPLETE"}
    assert [t["validationLoss"] for t in trials] == sorted(t["validationLoss"] for t in trials)
    assert next(t for t in trials if t["number"] == 0)["params"] == {"learningRate": 0.0002}
    assert sweep["bestModelId"] == trials[0]["modelId"] and sweep["trialsFinished"] == 3
    # Each trial is an ordinary custom model: listed, with its own training config, metrics and curves.
    listed = {m.id: m for m in ai.list_models(compartment_id=COMPARTMENT, lifecycle_state="ACTIVE").data.items}
    for trial in trials:
        model = ai.get_model(trial["modelId"]).data
        assert trial["modelId"] in listed and model.display_name == f"lr-search-trial-{trial['number']:03d}"
        assert model.fine_tune_details.training_config.learning_rate == trial["params"]["learningRate"]
        assert model.fine_tune_details.dedicated_ai_cluster_id == cluster.id
        assert model.model_metrics.final_loss == trial["validationLoss"]
        assert trial["stepsRun"] == trial["stepsPlanned"] == 16 and any(
            r["kind"] == "eval" for r in metrics(ai, trial["modelId"])
        )
    logs = [e.message for e in ai.list_work_request_logs(wr_id).data.items]
    assert sum(m.startswith("Trial ") and " started: model " in m for m in logs) == 3 and logs[-1].startswith("Best: trial ")
    assert ai.get_work_request(wr_id).data.percent_complete == 100.0
    listed_sweeps = native(ai, "GET", f"/sweeps?compartmentId={COMPARTMENT}").data["items"]
    assert sweep_id in {s["id"] for s in listed_sweeps}

    # Another tenancy sees nothing of it.
    bob_ai, _ = clients(sweeper, bob)
    assert service_error(lambda: native(bob_ai, "GET", f"/sweeps/{sweep_id}")).status == 404
    assert native(bob_ai, "GET", f"/sweeps?compartmentId={COMPARTMENT}").data["items"] == []
    assert service_error(lambda: native(bob_ai, "POST", f"/sweeps/{sweep_id}/actions/keepBest", {})).status == 404

    if backend == "sqlite":  # once is enough: it trains two more models and scores four
        would_more_data_help(ai, sweep_id, trials)

    # A finished sweep cannot be canceled; keepBest honours if-match, renames the best and deletes the others.
    assert service_error(lambda: native(ai, "POST", f"/sweeps/{sweep_id}/actions/cancel")).status == 409
    stale = service_error(lambda: native(ai, "POST", f"/sweeps/{sweep_id}/actions/keepBest", {}, if_match="0" * 32))
    assert stale.status == 412
    kept = native(ai, "POST", f"/sweeps/{sweep_id}/actions/keepBest", {"isDeleteOthersEnabled": True}).data
    assert kept["modelId"] == sweep["bestModelId"] and sorted(kept["deletedModelIds"]) == sorted(t["modelId"] for t in trials[1:])
    assert ai.get_model(kept["modelId"]).data.display_name == "lr-search"
    for trial in trials[1:]:
        assert ai.get_model(trial["modelId"]).data.lifecycle_state == "DELETED"
        assert metrics(ai, trial["modelId"])  # a deleted model keeps its curves
    assert native(ai, "GET", f"/sweeps/{sweep_id}").data["keptModelId"] == kept["modelId"]


def would_more_data_help(ai, sweep_id: str, trials: list[dict]) -> None:
    """The learning curve asked for after the search: the defaults on 25 % and 50 % of the training split
    (trial 0 is the 100 % run), scored on the whole validation split, fitted, and the sentence."""
    asked = native(ai, "POST", f"/sweeps/{sweep_id}/actions/learningCurve").data
    assert asked["lifecycleState"] == "IN_PROGRESS" and asked["learningCurve"]["status"] == "ACCEPTED"
    sweep = wait_sweep(ai, sweep_id, timeout=300)
    curve = sweep["learningCurve"]
    assert sweep["lifecycleState"] == "SUCCEEDED" and curve["status"] == "SUCCEEDED", curve
    trial0 = next(t for t in trials if t["number"] == 0)
    assert curve["modelIds"]["100"] == trial0["modelId"]  # the same run: the defaults on all the data
    assert [p["trainingExamples"] for p in curve["points"]] == [32, 64, 128]
    assert [p["modelId"] for p in curve["points"]] == [curve["modelIds"][k] for k in ("25", "50", "100")]
    assert curve["verdict"].startswith(("More data is likely to help", "Other settings are likely", "Neither more data"))
    assert "twice the data" in curve["verdict"] and [p["scale"] for p in curve["predictions"]] == [2, 4]
    subset = ai.get_model(curve["modelIds"]["25"]).data
    assert subset.lifecycle_state == "ACTIVE" and subset.fine_tune_details.training_dataset.bucket_name == "tuneforge-sweeps"
    assert subset.fine_tune_details.training_config.learning_rate == 0.0002  # the defaults


def test_bad_input_is_refused_with_the_field_and_the_words_of_the_cli(sweeper, users):
    ai, objects = clients(sweeper, users[0])
    dataset = upload(objects, "sweep/bad.jsonl", dataset_lines(40))
    cluster = create_cluster(ai, COMPARTMENT)

    def refused(**fields) -> str:
        body = sweep_body(cluster.id, dataset, **fields)
        err = service_error(lambda: native(ai, "POST", "/sweeps", body))
        assert err.status == 400 and err.code == "InvalidParameter", err
        assert "Traceback" not in err.message and "/tmp" not in err.message
        return err.message

    # The same check, and the same words, as `tuneforge sweep --param learningRate=1e-5:5`
    assert refused(searchSpace={"learningRate": {"low": 1e-5, "high": 5}}) == (
        "searchSpace.learningRate: 5.0 is not allowed; allowed: a number from 0 to 1.0"
    )
    assert "searchSpace.loraR: loraR does not apply to T-Few models (cohere.command-r-08-2024)" in refused(
        baseModelId="cohere.command-r-08-2024", trainingConfig=None, searchSpace={"loraR": {"values": [4, 8]}}
    )
    assert "low must be below high" in refused(searchSpace={"learningRate": {"low": 0.01, "high": 0.001}})
    assert "searchSpace.learningRate" in refused(searchSpace={"learningRate": {"low": 0.01, "high": 0.1, "values": [0.1]}})
    fixed = {"trainingConfigType": "LORA_TRAINING_CONFIG", "learningRate": 0.001}
    assert "learningRate is both searched and fixed to 0.001" in refused(
        trainingConfig=fixed, searchSpace={"learningRate": {"values": [0.01]}}
    )
    assert refused(trainingConfig={"trainingConfigType": "LORA_TRAINING_CONFIG", "totalTrainingEpochs": 0}).startswith(
        "trainingConfig.totalTrainingEpochs: 0 is not allowed"
    )
    assert "trialCount is 0" in refused(trialCount=0)
    assert "trialCount" in refused(trialCount=10_000)
    hosting = ai.create_dedicated_ai_cluster(
        oci_models().CreateDedicatedAiClusterDetails(
            type="HOSTING", compartment_id=COMPARTMENT, unit_count=1, unit_shape="LARGE_GENERIC"
        )
    ).data
    assert "a sweep's trials train on a FINE_TUNING cluster" in refused(dedicatedAiClusterId=hosting.id)
    missing = {**dataset, "object_name": "sweep/nothing.jsonl"}
    body = sweep_body(cluster.id, missing)
    assert "not found in your namespace" in service_error(lambda: native(ai, "POST", "/sweeps", body)).message
    assert native(ai, "GET", f"/sweeps?compartmentId={COMPARTMENT}&displayName=never").data["items"] == []


def oci_models():
    import oci

    return oci.generative_ai.models


# ---- the pruner and cancel ------------------------------------------------------------------------


def test_the_pruner_stops_a_bad_trial_and_cancel_stops_the_one_in_training(sweeper, users, backend):
    if backend != "sqlite":
        pytest.skip("the coordinator's logic is the same on both; PostgreSQL runs the two-server test below")
    ai, objects = clients(sweeper, users[0])
    dataset = upload(objects, "sweep/prune.jsonl", dataset_lines(40, filler_digits=50))
    cluster = create_cluster(ai, COMPARTMENT, unit_count=1)  # one trial at a time: trial 1 meets trial 0's losses at each rung
    config = {
        "trainingConfigType": "LORA_TRAINING_CONFIG",
        "totalTrainingEpochs": 8,
        "trainingBatchSize": 8,
        "earlyStoppingPatience": 0,
    }
    # Grid order: trial 0 the defaults (0.0002), trial 1 at 0.000001 (it learns 200x slower: worse at the
    # first rung, deterministically), trial 2 at 0.00001.
    body = sweep_body(
        cluster.id,
        dataset,
        displayName="prune",
        trialCount=3,
        searchStrategy="GRID",
        trainingConfig=config,
        searchSpace={"learningRate": {"values": [0.000001, 0.00001]}},
    )
    created = native(ai, "POST", "/sweeps", body)
    sweep_id, wr_id = created.data["id"], created.headers["opc-work-request-id"]
    assert created.data["notes"] == [
        "learningRate: the default 0.0002 is added to the choices 0.000001,0.00001 (trial 0 runs the defaults)"
    ]

    def third_trial_created(sweep):
        return any(t["number"] == 2 and t.get("modelId") for t in sweep["trials"])

    sweep = wait_sweep(ai, sweep_id, timeout=300, until=third_trial_created)
    assert service_error(lambda: native(ai, "POST", f"/sweeps/{sweep_id}/actions/cancel", if_match="0" * 32)).status == 412
    cancel = native(ai, "POST", f"/sweeps/{sweep_id}/actions/cancel")
    assert cancel.status == 202 and cancel.headers["opc-work-request-id"] == wr_id
    assert wait_work_request(ai, wr_id, timeout=300).status == "CANCELED"
    sweep = native(ai, "GET", f"/sweeps/{sweep_id}").data
    by_number = {t["number"]: t for t in sweep["trials"]}
    assert sweep["lifecycleState"] == "CANCELED" and [t["number"] for t in sweep["trials"]] == [0, 1, 2]

    assert by_number[0]["state"] == "COMPLETE" and by_number[0]["stepsRun"] == 32
    pruned = by_number[1]
    assert pruned["state"] == "PRUNED" and pruned["params"] == {"learningRate": 0.000001}
    assert pruned["stepsRun"] < pruned["stepsPlanned"] == 32
    model = ai.get_model(pruned["modelId"]).data
    assert model.lifecycle_state == "FAILED" and model.lifecycle_details.startswith(f"Pruned by sweep prune ({sweep_id}): after ")
    assert "successive halving" in model.lifecycle_details
    records = metrics(ai, pruned["modelId"])
    assert [r["step"] for r in records if r["kind"] == "train"][:2] == [1, 2]  # its curves are kept
    create_wr = ai.list_work_requests(compartment_id=COMPARTMENT, resource_id=pruned["modelId"]).data.items[0]
    assert create_wr.status == "CANCELED"
    assert sweep["steps"]["savedByPruning"] == 32 - pruned["stepsRun"] > 0

    canceled = by_number[2]
    assert canceled["state"] == "FAILED"
    model = ai.get_model(canceled["modelId"]).data
    assert model.lifecycle_state == "FAILED" and model.lifecycle_details == f"Stopped: its sweep prune ({sweep_id}) was canceled."
    # A canceled sweep keeps what finished: the best trial can still be kept.
    kept = native(ai, "POST", f"/sweeps/{sweep_id}/actions/keepBest", {"displayName": "prune-best"}).data
    assert kept == {"modelId": by_number[0]["modelId"], "deletedModelIds": [], "notDeleted": []}
    assert ai.get_model(kept["modelId"]).data.display_name == "prune-best"


# ---- two servers, one study -------------------------------------------------------------------------


@pytest.fixture
def two_servers(tmp_path, slower_weights):
    with servers_on_one_database(tmp_path / "data", slower_weights, "tf-sweep", workers=1, lease_seconds=LEASE_S) as servers:
        yield servers


def test_two_servers_share_one_study_and_the_survivor_finishes_the_sweep(two_servers, backend):
    if backend != "sqlite":
        pytest.skip("runs once: it brings its own PostgreSQL database")
    first, _second = two_servers
    me = new_identity("sweeppair")
    first.register(me)
    ai, objects = clients(first, me)
    dataset = upload(objects, "pair.jsonl", dataset_lines(40, filler_digits=50))
    cluster = create_cluster(ai, COMPARTMENT, unit_count=1)
    config = {
        "trainingConfigType": "LORA_TRAINING_CONFIG",
        "totalTrainingEpochs": 2,
        "trainingBatchSize": 8,
        "earlyStoppingPatience": 0,
    }
    body = sweep_body(
        cluster.id,
        dataset,
        displayName="pair",
        trialCount=3,
        pruner="NONE",
        trainingConfig=config,
        searchSpace={"learningRate": {"low": 0.0001, "high": 0.01, "log": True}},
    )
    sweep_id = native(ai, "POST", "/sweeps", body).data["id"]
    coordinating = wait_for(
        lambda: [s for s in two_servers if sweep_id in s.log.read_text()], 60, "a server to coordinate the sweep"
    )
    [coordinator] = coordinating
    [survivor] = [s for s in two_servers if s is not coordinator]

    def second_trial_training(sweep):
        trial = next((t for t in sweep["trials"] if t["number"] == 1 and t.get("modelId")), None)
        return trial and (native(ai, "GET", f"/models/{trial['modelId']}/metrics").data.get("progress") or {}).get("step", 0) >= 1

    wait_sweep(ai, sweep_id, timeout=300, until=second_trial_training)
    trainers = [p for p in psutil.Process(coordinator.proc.pid).children(recursive=True) if "train" in p.cmdline()]
    coordinator.kill()
    psutil.wait_procs(trainers, timeout=120)

    ai, _ = clients(survivor, me)
    sweep = wait_sweep(ai, sweep_id, timeout=300)
    assert sweep["lifecycleState"] == "SUCCEEDED", sweep["lifecycleDetails"]
    assert f"coordinating sweep {sweep_id}" in survivor.log.read_text()
    trials = sweep["trials"]
    assert sorted(t["number"] for t in trials) == [0, 1, 2] and {t["state"] for t in trials} == {"COMPLETE"}
    # No trial ran twice: one model per trial, each trained to success once.
    models = [m for m in ai.list_models(compartment_id=COMPARTMENT).data.items if m.display_name.startswith("pair-trial-")]
    assert sorted(m.display_name for m in models) == ["pair-trial-000", "pair-trial-001", "pair-trial-002"]
    assert {m.id for m in models} == {t["modelId"] for t in trials}
    for model in models:
        wr = ai.list_work_requests(compartment_id=COMPARTMENT, resource_id=model.id).data.items[0]
        logs = [e.message for e in ai.list_work_request_logs(wr.id).data.items]
        assert sum(m.startswith("Training succeeded") for m in logs) == 1, logs
    # One study, in the service's own PostgreSQL database (schema optuna), holds exactly the three trials.
    assert _study_trials(survivor.database_url, sweep_id) == [0, 1, 2]


def _study_trials(url: str, sweep_id: str) -> list[int]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as conn:
        numbers = (
            conn.execute(
                text(
                    "SELECT t.number FROM optuna.trials t JOIN optuna.studies s ON s.study_id = t.study_id "
                    "WHERE s.study_name = :name ORDER BY t.number"
                ),
                {"name": f"tuneforge-{sweep_id}"},
            )
            .scalars()
            .all()
        )
    engine.dispose()
    return list(numbers)
