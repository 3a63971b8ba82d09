"""The whole flow with the official SDK: upload a dataset, create a FINE_TUNING cluster, create a
LoRA model, wait on its work request, read modelMetrics and the native metrics endpoint."""

from __future__ import annotations

import oci
import pytest
from helpers.clients import clients
from helpers.fine_tuning import create_cluster, dataset_lines, lora_model_details, upload, wait_work_request

COMPARTMENT = "ocid1.compartment.oc1..aaaaflow"


@pytest.fixture(scope="module")
def trained(service, alice):
    """One fine-tune per backend, shared by the assertions below."""
    ai, objects = clients(service, alice)
    dataset = upload(objects, "flow/train.jsonl", dataset_lines(40))
    cluster = create_cluster(ai, COMPARTMENT)
    created = ai.create_model(lora_model_details(COMPARTMENT, cluster.id, dataset, lora_r=4, lora_alpha=8))
    wr = wait_work_request(ai, created.headers["opc-work-request-id"])
    return ai, created, wr, cluster


def test_create_returns_creating_model_with_work_request(trained):
    _, created, _, cluster = trained
    model = created.data
    assert model.lifecycle_state == "CREATING"
    assert model.type == "CUSTOM"
    assert model.fine_tune_details.dedicated_ai_cluster_id == cluster.id
    cfg = model.fine_tune_details.training_config
    assert isinstance(cfg, oci.generative_ai.models.LoraTrainingConfig)
    assert (cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout) == (4, 8, 0.1)  # defaults filled in
    assert created.headers["etag"]
    assert created.headers["opc-request-id"]


def test_training_succeeds_with_model_metrics(trained):
    ai, created, wr, _ = trained
    assert wr.status == "SUCCEEDED", [e.message for e in ai.list_work_request_errors(wr.id).data.items]
    assert wr.percent_complete == 100.0
    assert wr.resources[0].identifier == created.data.id
    model = ai.get_model(created.data.id).data
    assert model.lifecycle_state == "ACTIVE"
    metrics = model.model_metrics
    assert isinstance(metrics, oci.generative_ai.models.TextGenerationModelMetrics)
    assert 0.0 <= metrics.final_accuracy <= 1.0
    assert metrics.final_loss > 0
    assert model.system_tags["tuneforge"]["standIn"] == "false"


def test_work_request_logs_and_native_metrics(service, trained):
    ai, created, wr, _ = trained
    logs = [entry.message for entry in ai.list_work_request_logs(wr.id).data.items]
    assert logs[0].startswith("Accepted: fine-tune meta.llama-3.3-70b-instruct on 40 examples (32 training, 8 validation)")
    assert any("Evaluation at step" in m for m in logs)
    assert "Training succeeded" in logs[-1]
    native = ai.base_client.call_api(
        resource_path=f"/models/{created.data.id}/metrics", method="GET", response_type="object"
    ).data
    kinds = {record["kind"] for record in native["items"]}
    assert kinds == {"train", "eval"}
    assert native["progress"]["phase"] == "done"
    assert native["next"] == len(native["items"])


def test_base_models_are_listed_and_accepted_by_name_or_id(service, alice):
    ai, _ = clients(service, alice)
    base = ai.list_models(compartment_id=COMPARTMENT, capability=["FINE_TUNE"]).data.items
    names = {m.display_name for m in base}
    assert "meta.llama-3.3-70b-instruct" in names and "cohere.command-r-08-2024" in names
    assert all(m.type == "BASE" and "FINE_TUNE" in m.capabilities for m in base)
    one = next(m for m in base if m.display_name == "meta.llama-3.3-70b-instruct")
    assert ai.get_model(one.id).data.display_name == one.display_name
