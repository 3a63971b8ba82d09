"""DPO preference tuning (issue 23) through the service's doors, on a live server training a tiny Llama:
OCI's CreateModel with trainingConfigType DPO_TRAINING_CONFIG (a TuneForge extension the official `oci`
SDK sends through its generic call_api) and OpenAI's `method: {type: "dpo"}` through the `openai` SDK.
Each door checks that a preference file goes with DPO only, naming the field at fault. Runs are four
steps (32 pairs, batch 8, one epoch)."""

from __future__ import annotations

import json
from pathlib import Path

import oci
import openai
import pytest
from helpers.clients import clients
from helpers.fine_tuning import LORA_MODEL, create_cluster, dataset_lines, upload, wait_work_request
from helpers.identities import new_identity
from helpers.servers import running_service
from helpers.waiting import wait_for

from tuneforge import catalog

PAIRS = Path(__file__).parents[2] / "tuneforge" / "examples" / "dates_preferences.jsonl"
COMPARTMENT = "ocid1.compartment.oc1..aaaadpo"
DPO_BETA = catalog.dpo_params()["beta"].default


def _pairs(n: int = 32) -> bytes:
    return b"".join(PAIRS.read_bytes().splitlines(keepends=True)[:n])


def _prompt_chosen_rejected(n: int = 32) -> bytes:
    """The same pairs as the common {"prompt", "chosen", "rejected"} lines."""
    out = []
    for raw in _pairs(n).splitlines():
        line = json.loads(raw)
        out.append(
            {
                "prompt": line["input"]["messages"][0]["content"],
                "chosen": line["preferred_output"][0]["content"],
                "rejected": line["non_preferred_output"][0]["content"],
            }
        )
    return "".join(json.dumps(o) + "\n" for o in out).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_llama):
    with running_service("sqlite", tmp_path_factory.mktemp("dpo-doors"), tiny_llama) as svc:
        me = new_identity("dpo")
        svc.register(me)
        ai, objects = clients(svc, me)
        key = svc.cli("api-keys", "create-bearer", "--tenancy", me.tenancy, "--user", me.user).stdout.strip()
        yield {
            "svc": svc,
            "ai": ai,
            "objects": objects,
            "cluster": create_cluster(ai, COMPARTMENT),
            "openai": openai.OpenAI(base_url=f"{svc.endpoint}/openai/v1", api_key=key, max_retries=0, timeout=120),
        }


# ---- OCI's API -------------------------------------------------------------------------------


def _dpo_body(cluster_id: str, dataset: dict, **config) -> dict:
    """CreateModelDetails as the wire's JSON: the SDK's TrainingConfig classes know OCI's types only (an
    instance's unknown attributes are not serialized), so a DPO config goes as a dict through call_api."""
    return {
        "compartmentId": COMPARTMENT,
        "baseModelId": LORA_MODEL,
        "displayName": "dpo-test",
        "fineTuneDetails": {
            "trainingDataset": {"datasetType": "OBJECT_STORAGE", **{_camel(k): v for k, v in dataset.items()}},
            "dedicatedAiClusterId": cluster_id,
            "trainingConfig": {"trainingConfigType": "DPO_TRAINING_CONFIG", **config},
        },
    }


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.title() for w in rest)


def _create(ai, body: dict):
    """CreateModel through the SDK's generic call (signed like every call), with the JSON headers its
    create_model sends."""
    return ai.base_client.call_api(
        resource_path="/models",
        method="POST",
        header_params={"accept": "application/json", "content-type": "application/json"},
        body=body,
        response_type="Model",
    )


def test_oci_create_model_trains_dpo_through_the_sdks_generic_call(server):
    ai = server["ai"]
    dataset = upload(server["objects"], "dpo/pairs.jsonl", _pairs())
    body = _dpo_body(server["cluster"].id, dataset, beta=0.2, totalTrainingEpochs=1, trainingBatchSize=8, loraR=4)
    created = _create(ai, body)
    assert created.data.lifecycle_state == "CREATING"
    wr = wait_work_request(ai, created.headers["opc-work-request-id"], timeout=300)
    assert wr.status == "SUCCEEDED", [e.message for e in ai.list_work_request_errors(wr.id).data.items]
    # The raw JSON: the SDK's Model reads an unknown training config type as its base class.
    raw = ai.base_client.call_api(resource_path=f"/models/{created.data.id}", method="GET", response_type="object").data
    config = raw["fineTuneDetails"]["trainingConfig"]
    assert (config["trainingConfigType"], config["beta"], config["loraR"], config["totalTrainingEpochs"]) == (
        "DPO_TRAINING_CONFIG",
        0.2,
        4,
        1,
    )
    assert raw["lifecycleState"] == "ACTIVE"
    metrics = ai.get_model(created.data.id).data.model_metrics  # the DPO loss and reward accuracy (docs/dpo.md)
    assert metrics.final_loss > 0 and 0.0 <= metrics.final_accuracy <= 1.0
    native = ai.base_client.call_api(
        resource_path=f"/models/{created.data.id}/metrics", method="GET", response_type="object"
    ).data
    train = [r for r in native["items"] if r["kind"] == "train"]
    evals = [r for r in native["items"] if r["kind"] == "eval"]
    assert train and all({"rewardAccuracy", "rewardMargin", "rewardsChosen", "rewardsRejected"} <= r.keys() for r in train)
    assert evals and all("validationRewardAccuracy" in r for r in evals)


def test_oci_dpo_takes_prompt_chosen_rejected_lines_and_beta_defaults(server):
    ai = server["ai"]
    dataset = upload(server["objects"], "dpo/pcr.jsonl", _prompt_chosen_rejected())
    created = _create(ai, _dpo_body(server["cluster"].id, dataset, totalTrainingEpochs=1))
    raw = ai.base_client.call_api(resource_path=f"/models/{created.data.id}", method="GET", response_type="object").data
    assert raw["fineTuneDetails"]["trainingConfig"]["beta"] == DPO_BETA
    ai.delete_model(created.data.id)


def _refused(call) -> str:
    with pytest.raises(oci.exceptions.ServiceError) as err:
        call()
    assert err.value.status == 400
    return err.value.message


def test_oci_a_preference_file_goes_with_dpo_only_naming_the_field(server):
    ai, objects, cluster = server["ai"], server["objects"], server["cluster"]
    pairs = upload(objects, "dpo/pairs-2.jsonl", _pairs())
    supervised = upload(objects, "dpo/supervised.jsonl", dataset_lines(40))
    m = oci.generative_ai.models
    lora = m.CreateModelDetails(
        compartment_id=COMPARTMENT,
        base_model_id=LORA_MODEL,
        fine_tune_details=m.FineTuneDetails(
            training_dataset=m.ObjectStorageDataset(**pairs),
            dedicated_ai_cluster_id=cluster.id,
            training_config=m.LoraTrainingConfig(total_training_epochs=1),
        ),
    )
    message = _refused(lambda: ai.create_model(lora))
    assert message.startswith("fineTuneDetails.trainingDataset: a preference file trains with ")
    assert "fineTuneDetails.trainingConfig.trainingConfigType DPO_TRAINING_CONFIG" in message
    message = _refused(lambda: _create(ai, _dpo_body(cluster.id, supervised)))
    assert message.startswith("fineTuneDetails.trainingDataset: fineTuneDetails.trainingConfig.trainingConfigType ")
    assert "DPO trains on preference pairs" in message
    message = _refused(lambda: _create(ai, _dpo_body(cluster.id, pairs, beta=0)))
    assert message.startswith("fineTuneDetails.trainingConfig.beta")
    lora.fine_tune_details.training_dataset = m.ObjectStorageDataset(**supervised)
    body = ai.base_client.sanitize_for_serialization(lora)
    body["fineTuneDetails"]["trainingConfig"]["beta"] = 0.2  # beta on a LoRA config
    message = _refused(lambda: _create(ai, body))
    assert message.startswith("fineTuneDetails.trainingConfig.beta") and "DPO_TRAINING_CONFIG" in message


# ---- OpenAI's API ----------------------------------------------------------------------------


def _openai_error(call) -> dict:
    with pytest.raises(openai.BadRequestError) as err:
        call()
    return err.value.body


def test_openai_dpo_job_succeeds_with_resolved_hyperparameters_and_dpo_events(server):
    client = server["openai"]
    file = client.files.create(file=("pairs.jsonl", _pairs()), purpose="fine-tune")
    assert file.status == "processed"
    job = client.fine_tuning.jobs.create(
        model="meta.llama-3.3-70b-instruct",
        training_file=file.id,
        method={"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 1, "batch_size": 8}}},
    )
    assert job.method.type == "dpo"
    hyper = job.method.dpo.hyperparameters
    assert (hyper.beta, hyper.n_epochs, hyper.batch_size, hyper.learning_rate_multiplier) == (DPO_BETA, 1, 8, 1.0)
    done = wait_for(
        lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status in ("succeeded", "failed", "cancelled") and j,
        300,
        f"job {job.id}",
        0.5,
    )
    assert done.status == "succeeded", done.error
    assert done.method.dpo.hyperparameters.beta == DPO_BETA
    assert done.trained_tokens > 0  # both rows of every training pair
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=1000))
    assert any(f"beta=auto -> {DPO_BETA:g}" in e.message for e in events)
    steps = [e for e in events if e.type == "metrics" and "train_loss" in (e.data or {})]
    assert steps and all("train_reward_accuracy" in e.data and "train_reward_margin" in e.data for e in steps)
    assert any("reward accuracy=" in e.message for e in steps)


def test_openai_dpo_bad_inputs_name_their_param(server):
    client = server["openai"]
    pairs = client.files.create(file=("pairs.jsonl", _pairs()), purpose="fine-tune")
    supervised = client.files.create(file=("sft.jsonl", dataset_lines(40)), purpose="fine-tune")
    model = "meta.llama-3.3-70b-instruct"

    def dpo(**hyper):
        return {"type": "dpo", "dpo": {"hyperparameters": hyper}}

    body = _openai_error(lambda: client.fine_tuning.jobs.create(model=model, training_file=supervised.id, method=dpo()))
    assert body["param"] == "training_file" and "DPO trains on preference pairs" in body["message"]
    body = _openai_error(lambda: client.fine_tuning.jobs.create(model=model, training_file=pairs.id))
    assert body["param"] == "training_file" and "preference pairs train with the DPO method" in body["message"]
    body = _openai_error(
        lambda: client.fine_tuning.jobs.create(
            model=model, training_file=pairs.id, method={"type": "supervised", "supervised": {"hyperparameters": {"beta": 1}}}
        )
    )
    assert body["param"] == "method.supervised.hyperparameters.beta"
    body = _openai_error(lambda: client.fine_tuning.jobs.create(model=model, training_file=pairs.id, method=dpo(beta=0)))
    assert body["param"] == "method.dpo.hyperparameters.beta" and "beta" in body["message"]
    body = _openai_error(lambda: client.fine_tuning.jobs.create(model=model, training_file=pairs.id, method=dpo(beta="x")))
    assert body["param"] == "method.dpo.hyperparameters.beta"
    body = _openai_error(
        lambda: client.fine_tuning.jobs.create(model=model, training_file=pairs.id, method={"type": "reinforcement"})
    )
    assert body["param"] == "method.type"
    body = _openai_error(
        lambda: client.fine_tuning.jobs.create(
            model=model, training_file=pairs.id, validation_file=supervised.id, method=dpo(n_epochs=1)
        )
    )
    assert body["param"] == "validation_file"


# ---- sweeps ----------------------------------------------------------------------------------


def _native(ai, method: str, path: str, body: dict | None = None):
    """A signed request to a TuneForge-only route (the SDK has no sweeps client)."""
    headers = {"accept": "application/json", "content-type": "application/json"}
    return ai.base_client.call_api(resource_path=path, method=method, header_params=headers, body=body, response_type="object")


def _sweep_body(cluster_id: str, dataset: dict, config_type: str = "DPO_TRAINING_CONFIG", **fields) -> dict:
    return {
        "compartmentId": COMPARTMENT,
        "baseModelId": LORA_MODEL,
        "dedicatedAiClusterId": cluster_id,
        "trainingDataset": {"datasetType": "OBJECT_STORAGE", **{_camel(k): v for k, v in dataset.items()}},
        "trainingConfig": {"trainingConfigType": config_type, "totalTrainingEpochs": 1, "trainingBatchSize": 8},
        **fields,
    }


def test_a_dpo_sweep_searches_beta_and_the_learning_rate(server):
    ai = server["ai"]
    dataset = upload(server["objects"], "dpo/sweep.jsonl", _pairs())
    space = {"beta": {"values": [0.05, 0.3]}, "learningRate": {"low": 0.0001, "high": 0.001, "log": True}}
    body = _sweep_body(server["cluster"].id, dataset, searchSpace=space, trialCount=2, searchStrategy="RANDOM", pruner="NONE")
    sweep = _native(ai, "POST", "/sweeps", body).data
    assert sweep["trainingConfig"]["trainingConfigType"] == "DPO_TRAINING_CONFIG"
    assert sweep["searchSpace"]["beta"] == {"values": [0.05, DPO_BETA, 0.3]}  # trial 0's default joins the choices
    done = wait_for(
        lambda: (
            (s := _native(ai, "GET", f"/sweeps/{sweep['id']}").data)["lifecycleState"] in ("SUCCEEDED", "FAILED", "CANCELED")
            and s
        ),
        300,
        f"sweep {sweep['id']}",
        0.5,
    )
    assert done["lifecycleState"] == "SUCCEEDED", done.get("lifecycleDetails")
    trials = sorted(done["trials"], key=lambda t: t["number"])
    assert [t["state"] for t in trials] == ["COMPLETE", "COMPLETE"]
    assert trials[0]["params"]["beta"] == DPO_BETA and trials[1]["params"]["beta"] in (0.05, DPO_BETA, 0.3)
    for trial in trials:
        raw = _native(ai, "GET", f"/models/{trial['modelId']}").data
        config = raw["fineTuneDetails"]["trainingConfig"]
        assert (config["trainingConfigType"], config["beta"]) == ("DPO_TRAINING_CONFIG", trial["params"]["beta"])
        assert config["learningRate"] == trial["params"]["learningRate"]
        assert any("rewardAccuracy" in r for r in _native(ai, "GET", f"/models/{trial['modelId']}/metrics").data["items"])


def test_dpo_sweeps_refuse_what_does_not_fit_naming_the_field(server):
    ai, objects, cluster = server["ai"], server["objects"], server["cluster"]
    pairs = upload(objects, "dpo/sweep-2.jsonl", _pairs())
    supervised = upload(objects, "dpo/sweep-sft.jsonl", dataset_lines(40))
    message = _refused(lambda: _native(ai, "POST", "/sweeps", _sweep_body(cluster.id, supervised, trialCount=2)))
    assert message.startswith("trainingDataset: trainingConfig.trainingConfigType DPO_TRAINING_CONFIG trains on preference pairs")
    lora = _sweep_body(cluster.id, supervised, "LORA_TRAINING_CONFIG", trialCount=2, searchSpace={"beta": {"values": [0.1]}})
    message = _refused(lambda: _native(ai, "POST", "/sweeps", lora))
    assert message.startswith("searchSpace.beta: beta applies to DPO_TRAINING_CONFIG only")
    message = _refused(
        lambda: _native(ai, "POST", "/sweeps", _sweep_body(cluster.id, pairs, "LORA_TRAINING_CONFIG", trialCount=2))
    )
    assert message.startswith(
        "trainingDataset: a preference file trains with trainingConfig.trainingConfigType DPO_TRAINING_CONFIG"
    )
    bad_beta = _sweep_body(cluster.id, pairs, trialCount=2, searchSpace={"beta": {"low": 0, "high": 1}})
    assert _refused(lambda: _native(ai, "POST", "/sweeps", bad_beta)).startswith("searchSpace.beta")
    curve = _sweep_body(cluster.id, pairs, trialCount=2, isLearningCurveEnabled=True)
    assert _refused(lambda: _native(ai, "POST", "/sweeps", curve)).startswith("isLearningCurveEnabled")
