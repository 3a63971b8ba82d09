"""Issue 20's journey on tiny random models of two architectures, through the official clients: the
`oci` SDK imports a Llama from the server's Hugging Face cache folder (--models-dir, the hub's
refs/snapshots layout) and a Qwen2 from a folder uploaded to Object Storage under a prefix; each is
fine-tuned through the service (baseModelId = the imported model's OCID) and trains its own weights,
never the server's `--weights`; the fine-tune is hosted on an endpoint of a HOSTING cluster and
answers through OCI's inference SDK and the `openai` SDK, as the imported model itself does by its id."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import oci
import openai
import pytest
from helpers.clients import clients
from helpers.console import PASSWORD, Console, create_model
from helpers.fine_tuning import create_cluster, dataset_lines, upload, wait_work_request
from helpers.identities import new_identity
from helpers.servers import running_service
from helpers.tiny_models import save_tiny_checkpoint
from helpers.waiting import wait_for

COMPARTMENT = "ocid1.compartment.oc1..aaaaimported"
COMMIT = "4f1c2e0b9a8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b"
m = oci.generative_ai.models
inf = oci.generative_ai_inference.models


def _hub_cache(root: Path, repo: str, folder: Path) -> None:
    """`folder` as `repo` at COMMIT on main, in the Hugging Face hub cache's layout."""
    model = root / ("models--" + repo.replace("/", "--"))
    shutil.copytree(folder, model / "snapshots" / COMMIT)
    (model / "refs").mkdir()
    (model / "refs" / "main").write_text(COMMIT)


@pytest.fixture(scope="module")
def server(backend, tmp_path_factory, tiny_weights):
    """A server whose `--weights` (the catalog ids' switch) is the tiny Llama, with a models folder."""
    root = tmp_path_factory.mktemp("imported")
    llama = save_tiny_checkpoint(root / "build" / "llama", "llama", seed=1)
    _hub_cache(root / "hub", "acme/tiny-llama", llama)
    with running_service(backend, root, tiny_weights, start=False) as svc:
        svc.args = ["--models-dir", str(root / "hub")]
        svc.start()
        yield svc


@pytest.fixture(scope="module")
def me(server):
    identity = new_identity("importer")
    server.register(identity)
    return identity


def _wait_active(ai, imported_id: str):
    final = ("ACTIVE", "FAILED")
    found = wait_for(
        lambda: (model := ai.get_imported_model(imported_id).data).lifecycle_state in final and model, 120, "the import"
    )
    assert found.lifecycle_state == "ACTIVE", found.lifecycle_details
    return found


def _import_from_cache(ai) -> str:
    source = m.HuggingFaceModel(model_id="acme/tiny-llama", access_token="hf_never_stored")
    details = m.CreateImportedModelDetails(compartment_id=COMPARTMENT, display_name="tiny llama", data_source=source)
    return _wait_active(ai, ai.create_imported_model(details).data.id).id


def _import_from_object_storage(objects, ai, tmp_path: Path) -> str:
    folder = save_tiny_checkpoint(tmp_path / "qwen2", "qwen2", seed=2)
    namespace = objects.get_namespace().data
    for path in sorted(folder.iterdir()):  # what `oci os object bulk-upload --src-dir qwen2 --prefix tiny-qwen2/` puts
        objects.put_object(namespace, "models", f"tiny-qwen2/{path.name}", path.read_bytes())
    source = m.ObjectStorageObject(namespace_name=namespace, bucket_name="models", prefix_name="tiny-qwen2/")
    details = m.CreateImportedModelDetails(compartment_id=COMPARTMENT, display_name="tiny qwen2", data_source=source)
    return _wait_active(ai, ai.create_imported_model(details).data.id).id


def _fine_tune(ai, objects, imported_id: str, cluster_id: str):
    dataset = upload(objects, "parity.jsonl", dataset_lines(40))
    details = m.CreateModelDetails(
        compartment_id=COMPARTMENT,
        base_model_id=imported_id,
        display_name="ft",
        fine_tune_details=m.FineTuneDetails(
            training_dataset=m.ObjectStorageDataset(**dataset),
            dedicated_ai_cluster_id=cluster_id,
            training_config=m.LoraTrainingConfig(total_training_epochs=1, learning_rate=0.01),
        ),
    )
    created = ai.create_model(details)
    done = wait_work_request(ai, created.headers["opc-work-request-id"], timeout=600)
    model = ai.get_model(created.data.id).data
    assert done.status == "SUCCEEDED", model.lifecycle_details
    return model


def _host(ai, model_id: str):
    hosting = ai.create_dedicated_ai_cluster(
        m.CreateDedicatedAiClusterDetails(type="HOSTING", compartment_id=COMPARTMENT, unit_count=1, unit_shape="LARGE_GENERIC")
    ).data
    created = ai.create_endpoint(
        m.CreateEndpointDetails(compartment_id=COMPARTMENT, model_id=model_id, dedicated_ai_cluster_id=hosting.id)
    )
    assert wait_work_request(ai, created.headers["opc-work-request-id"], timeout=300).status == "SUCCEEDED"
    return ai.get_endpoint(created.data.id).data, hosting


def _chat(infer, serving_mode) -> str:
    request = inf.GenericChatRequest(
        messages=[inf.UserMessage(content=[inf.TextContent(text="Is 7 odd?")])], max_tokens=3, temperature=0, is_stream=False
    )
    answer = infer.chat(inf.ChatDetails(compartment_id=COMPARTMENT, serving_mode=serving_mode, chat_request=request)).data
    return answer.chat_response.choices[0].message.content[0].text


def test_imported_models_fine_tune_host_and_answer(server, me, tmp_path, tiny_weights):
    ai, objects = clients(server, me)
    infer = oci.generative_ai_inference.GenerativeAiInferenceClient(me.config(), service_endpoint=server.endpoint)
    bearer = server.cli("api-keys", "create-bearer", "--tenancy", me.tenancy, "--user", me.user).stdout.strip()
    client = openai.OpenAI(base_url=f"{server.endpoint}/openai/v1", api_key=bearer, max_retries=0, timeout=120)
    cluster = create_cluster(ai, COMPARTMENT, unit_count=1)

    for imported_id in (_import_from_cache(ai), _import_from_object_storage(objects, ai, tmp_path)):
        imported = ai.get_imported_model(imported_id).data
        model = _fine_tune(ai, objects, imported_id, cluster.id)
        assert model.base_model_id == imported_id and model.lifecycle_details is None
        assert model.system_tags == {"tuneforge": {"standIn": "false"}}

        # The job trained the imported model's own weights, named by its id; the server's --weights were not used.
        result = json.loads((server.data_dir / "jobs" / model.id / "output" / "model.json").read_text())
        assert result["baseModelId"] == imported_id and result["method"] == "LORA" and result["standIn"] is False
        trained = Path(result["weights"]["path"])
        assert trained.resolve() != tiny_weights.resolve() and server.data_dir.resolve() in trained.resolve().parents
        assert json.loads((trained / "config.json").read_text())["model_type"] == (
            "llama" if "llama" in imported.display_name else "qwen2"
        )
        assert result["trainingConfig"]["loraR"] == 8 and result["trainingConfig"]["trainingBatchSize"] == 8  # LoRA's table

        # In use: the imported model cannot be deleted.
        with pytest.raises(oci.exceptions.ServiceError) as refused:
            ai.delete_imported_model(imported_id, retry_strategy=oci.retry.NoneRetryStrategy())  # the SDK retries 409s
        assert refused.value.status == 409 and model.id in refused.value.message

        endpoint, hosting = _host(ai, model.id)
        assert endpoint.lifecycle_state == "ACTIVE"
        assert _chat(infer, inf.DedicatedServingMode(endpoint_id=endpoint.id)).strip()
        assert _chat(infer, inf.OnDemandServingMode(model_id=imported_id)) is not None  # the imported model itself
        answer = client.chat.completions.create(
            model=endpoint.id, messages=[{"role": "user", "content": "Is 7 odd?"}], max_tokens=3, temperature=0
        )
        assert answer.choices[0].message.content.strip()
        by_id = client.chat.completions.create(
            model=imported_id, messages=[{"role": "user", "content": "Is 7 odd?"}], max_tokens=3, temperature=0
        )
        assert by_id.model == imported_id and by_id.choices[0].finish_reason in ("stop", "length")
        assert {imported_id, model.id, endpoint.id} <= {entry.id for entry in client.models.list()}

        # A cluster hosts one base: this one, the imported model, the fine-tune's, and no other.
        base_endpoint = ai.create_endpoint(
            m.CreateEndpointDetails(compartment_id=COMPARTMENT, model_id=imported_id, dedicated_ai_cluster_id=hosting.id)
        )
        assert wait_work_request(ai, base_endpoint.headers["opc-work-request-id"], timeout=300).status == "SUCCEEDED"
        with pytest.raises(oci.exceptions.ServiceError) as other_base:
            ai.create_endpoint(
                m.CreateEndpointDetails(
                    compartment_id=COMPARTMENT, model_id="meta.llama-3.3-70b-instruct", dedicated_ai_cluster_id=hosting.id
                )
            )
        assert other_base.value.status == 400 and imported_id in other_base.value.message


def test_a_fine_tune_of_an_imported_model_is_checked_against_its_table(server, me):
    ai, objects = clients(server, me)
    imported_id = _import_from_cache(ai)
    cluster = create_cluster(ai, COMPARTMENT, unit_count=1)
    dataset = upload(objects, "parity.jsonl", dataset_lines(40))

    def create(base_model_id: str, config):
        details = m.CreateModelDetails(
            compartment_id=COMPARTMENT,
            base_model_id=base_model_id,
            fine_tune_details=m.FineTuneDetails(
                training_dataset=m.ObjectStorageDataset(**dataset), dedicated_ai_cluster_id=cluster.id, training_config=config
            ),
        )
        with pytest.raises(oci.exceptions.ServiceError) as err:
            ai.create_model(details)
        assert err.value.status == 400
        return err.value.message

    assert "loraR" in create(imported_id, m.LoraTrainingConfig(lora_r=65)) and "from 1 to 64" in create(
        imported_id, m.LoraTrainingConfig(lora_r=65)
    )
    assert "LORA_TRAINING_CONFIG" in create(imported_id, m.TFewTrainingConfig())
    unknown = imported_id[:-4] + "zzzz"
    assert "no imported model" in create(unknown, m.LoraTrainingConfig())


def test_the_console_offers_an_active_imported_model(server, me, tmp_path):
    ai, _ = clients(server, me)
    imported_id = _import_from_cache(ai)
    password = tmp_path / "password"
    password.write_text(PASSWORD)
    add = [sys.executable, "-m", "tuneforge", "console-users", "add", "--tenancy", me.tenancy, "--username", "importer"]
    subprocess.run([*add, "--password-file", str(password), "--data-dir", str(server.data_dir)], check=True)
    console = Console(httpx.Client(base_url=server.endpoint, timeout=60), server.data_dir)
    assert console.login("importer").status_code == 303

    assert f'value="{imported_id}"' in console.client.get("/console/models/new").text
    plan = console.client.get("/console/api/plan", params={"baseModelId": imported_id, "n": 40, "totalTrainingEpochs": 2})
    assert plan.json()["totalTrainingSteps"] == 8 and not plan.json()["errors"]  # 2 * ceil(32 / 8), LoRA's table

    model_id = create_model(console, baseModelId=imported_id)
    assert ai.get_model(model_id).data.base_model_id == imported_id
    assert "LoRA" in console.client.get(f"/console/models/{model_id}").text  # the method, from its training config
    ai.delete_model(model_id)  # nothing more to learn from its training here
