"""A sweep over an imported model (issue 20: an ACTIVE imported model is a base model everywhere a
catalog model is), through the official `oci` SDK on a live server: a tiny random Qwen2 is uploaded to
Object Storage and imported, a 2-trial sweep over it (baseModelId = its OCID) finishes, its trials are
fine-tunes of the imported model that trained the imported weights (never the server's `--weights`,
a tiny Llama), keepBest keeps the best of them, and the console's new-sweep form offers the model."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import oci
import pytest
from helpers.clients import clients, native, service_error
from helpers.console import PASSWORD, Console
from helpers.fine_tuning import create_cluster, dataset_lines, upload, wait_work_request
from helpers.identities import new_identity
from helpers.servers import running_service
from helpers.tiny_models import save_tiny_checkpoint
from helpers.waiting import wait_for

COMPARTMENT = "ocid1.compartment.oc1..aaaaimportedsweep"
m = oci.generative_ai.models


@pytest.fixture(scope="module")
def server(backend, tmp_path_factory, tiny_weights):
    if backend == "postgresql":  # CI time: the sweep's store is the same code on both; test_sweeps_service covers PostgreSQL
        pytest.skip("runs on SQLite only")
    with running_service(backend, tmp_path_factory.mktemp("imported-sweep"), tiny_weights) as svc:
        yield svc


def _import_qwen2(ai, objects, folder: Path) -> str:
    namespace = objects.get_namespace().data
    for path in sorted(folder.iterdir()):
        objects.put_object(namespace, "models", f"tiny-qwen2/{path.name}", path.read_bytes())
    source = m.ObjectStorageObject(namespace_name=namespace, bucket_name="models", prefix_name="tiny-qwen2/")
    details = m.CreateImportedModelDetails(compartment_id=COMPARTMENT, display_name="tiny qwen2", data_source=source)
    imported_id = ai.create_imported_model(details).data.id
    found = wait_for(
        lambda: (model := ai.get_imported_model(imported_id).data).lifecycle_state in ("ACTIVE", "FAILED") and model,
        120,
        "the import",
    )
    assert found.lifecycle_state == "ACTIVE", found.lifecycle_details
    return imported_id


def test_a_sweep_over_an_imported_model_trains_its_weights(server, tmp_path, tiny_weights):
    me = new_identity("importsweeper")
    server.register(me)
    ai, objects = clients(server, me)
    imported_id = _import_qwen2(ai, objects, save_tiny_checkpoint(tmp_path / "qwen2", "qwen2", seed=2))
    cluster = create_cluster(ai, COMPARTMENT, unit_count=1)
    dataset = upload(objects, "sweep/train.jsonl", dataset_lines(40))  # 32 training examples: 4 steps a trial
    body = {
        "compartmentId": COMPARTMENT,
        "baseModelId": imported_id,
        "displayName": "imported-search",
        "dedicatedAiClusterId": cluster.id,
        "trainingDataset": {"datasetType": "OBJECT_STORAGE", **{_camel(k): v for k, v in dataset.items()}},
        "trainingConfig": {"trainingConfigType": "LORA_TRAINING_CONFIG", "totalTrainingEpochs": 1, "trainingBatchSize": 8},
        "trialCount": 2,
        "pruner": "NONE",
        "searchSpace": {"learningRate": {"low": 0.0001, "high": 0.01, "log": True}},
    }
    created = native(ai, "POST", "/sweeps", body)
    assert created.data["baseModelId"] == imported_id
    assert wait_work_request(ai, created.headers["opc-work-request-id"], timeout=300).status == "SUCCEEDED"
    sweep = native(ai, "GET", f"/sweeps/{created.data['id']}").data
    assert sweep["lifecycleState"] == "SUCCEEDED", sweep["lifecycleDetails"]
    assert sorted(t["number"] for t in sweep["trials"]) == [0, 1] and {t["state"] for t in sweep["trials"]} == {"COMPLETE"}

    # Each trial is a fine-tune of the imported model that trained its own weights, named by its id.
    imported_folder = None
    for trial in sweep["trials"]:
        model = ai.get_model(trial["modelId"]).data
        assert model.base_model_id == imported_id and model.system_tags == {"tuneforge": {"standIn": "false"}}
        result = json.loads((server.data_dir / "jobs" / model.id / "output" / "model.json").read_text())
        assert result["baseModelId"] == imported_id and result["standIn"] is False
        trained = Path(result["weights"]["path"]).resolve()
        assert trained != tiny_weights.resolve() and json.loads((trained / "config.json").read_text())["model_type"] == "qwen2"
        assert imported_folder in (None, trained)
        imported_folder = trained

    kept = native(ai, "POST", f"/sweeps/{sweep['id']}/actions/keepBest", {"displayName": "best-of-imported"}).data
    best = ai.get_model(kept["modelId"]).data
    assert best.id == sweep["bestModelId"] and best.display_name == "best-of-imported" and best.base_model_id == imported_id

    # The console's new-sweep form offers the imported model, and starts from it when asked.
    password = tmp_path / "password"
    password.write_text(PASSWORD)
    add = [sys.executable, "-m", "tuneforge", "console-users", "add", "--tenancy", me.tenancy, "--username", "importsweeper"]
    subprocess.run([*add, "--password-file", str(password), "--data-dir", str(server.data_dir)], check=True)
    console = Console(httpx.Client(base_url=server.endpoint, timeout=60), server.data_dir)
    assert console.login("importsweeper").status_code == 303
    assert f'value="{imported_id}"' in console.client.get("/console/sweeps/new").text
    started = console.client.get(f"/console/sweeps/new?from={best.id}").text
    assert re.search(rf'<option value="{re.escape(imported_id)}"[^>]*selected', started)

    # In use by the sweep's models: the imported model cannot be deleted.
    refused = service_error(lambda: ai.delete_imported_model(imported_id, retry_strategy=oci.retry.NoneRetryStrategy()))
    assert refused.status == 409 and best.id in refused.message


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.title() for w in rest)
