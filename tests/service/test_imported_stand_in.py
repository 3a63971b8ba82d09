"""Issue 20's journey on the stand-in (SmolLM2-135M-Instruct, a real 135M-parameter Llama-architecture
model with its own tokenizer and chat template), brought as a user brings a model: a folder in the
server's models folder (`serve --models-dir`, `<org>/<name>`), imported through the official `oci` SDK,
fine-tuned through the service on its own weights, hosted on an endpoint and called through OCI's
inference SDK and the `openai` SDK."""

from __future__ import annotations

import json
from pathlib import Path

import oci
import openai
import pytest
from helpers.clients import clients
from helpers.fine_tuning import create_cluster, upload, wait_work_request
from helpers.identities import new_identity
from helpers.servers import running_service
from helpers.waiting import wait_for

from tuneforge.engine.weights import STAND_IN, resolve_weights

DATES = Path(__file__).parents[2] / "tuneforge" / "examples" / "dates.jsonl"
COMPARTMENT = "ocid1.compartment.oc1..aaaaimportedstandin"
REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"
m = oci.generative_ai.models
inf = oci.generative_ai_inference.models


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_weights):
    """A server whose `--weights` (the catalog ids' switch) is the tiny Llama: only the import can
    make it train or serve the stand-in."""
    root = tmp_path_factory.mktemp("imported-stand-in")
    stand_in = resolve_weights(STAND_IN, model_id="meta.llama-3.3-70b-instruct", weights_repo=REPO).path
    (root / "models" / REPO).parent.mkdir(parents=True)
    (root / "models" / REPO).symlink_to(stand_in, target_is_directory=True)
    with running_service("sqlite", root, tiny_weights, start=False) as svc:
        svc.args = ["--models-dir", str(root / "models")]
        svc.start()
        yield svc


def test_the_stand_in_imported_fine_tuned_hosted_and_called(server, tiny_weights):
    me = new_identity("standinimport")
    server.register(me)
    ai, objects = clients(server, me)

    source = m.HuggingFaceModel(model_id=REPO)
    created = ai.create_imported_model(m.CreateImportedModelDetails(compartment_id=COMPARTMENT, data_source=source)).data
    imported = wait_for(
        lambda: (found := ai.get_imported_model(created.id).data).lifecycle_state in ("ACTIVE", "FAILED") and found,
        300,
        "the stand-in's import",
    )
    assert imported.lifecycle_state == "ACTIVE", imported.lifecycle_details

    lines = DATES.read_text().splitlines()[:40]  # 32 train + 8 validation: 4 steps, enough to prove the path
    dataset = upload(objects, "dates-40.jsonl", ("\n".join(lines) + "\n").encode())
    cluster = create_cluster(ai, COMPARTMENT, unit_count=1)
    details = m.CreateModelDetails(
        compartment_id=COMPARTMENT,
        base_model_id=imported.id,
        display_name="dates on the imported stand-in",
        fine_tune_details=m.FineTuneDetails(
            training_dataset=m.ObjectStorageDataset(**dataset),
            dedicated_ai_cluster_id=cluster.id,
            training_config=m.LoraTrainingConfig(total_training_epochs=1, learning_rate=0.0015),
        ),
    )
    model = ai.create_model(details)
    done = wait_work_request(ai, model.headers["opc-work-request-id"], timeout=900)
    assert done.status == "SUCCEEDED", ai.get_model(model.data.id).data.lifecycle_details
    result = json.loads((server.data_dir / "jobs" / model.data.id / "output" / "model.json").read_text())
    assert result["baseModelId"] == imported.id and result["standIn"] is False
    trained = Path(result["weights"]["path"]).resolve()
    assert server.data_dir.resolve() in trained.parents and trained != tiny_weights.resolve()  # the import's own copy
    assert json.loads((trained / "config.json").read_text())["num_hidden_layers"] == 30  # SmolLM2-135M, not the tiny Llama

    hosting = ai.create_dedicated_ai_cluster(
        m.CreateDedicatedAiClusterDetails(type="HOSTING", compartment_id=COMPARTMENT, unit_count=1, unit_shape="LARGE_GENERIC")
    ).data
    endpoint = ai.create_endpoint(
        m.CreateEndpointDetails(compartment_id=COMPARTMENT, model_id=model.data.id, dedicated_ai_cluster_id=hosting.id)
    )
    assert wait_work_request(ai, endpoint.headers["opc-work-request-id"], timeout=600).status == "SUCCEEDED"

    infer = oci.generative_ai_inference.GenerativeAiInferenceClient(me.config(), service_endpoint=server.endpoint)
    request = inf.GenericChatRequest(
        messages=[inf.UserMessage(content=[inf.TextContent(text=json.loads(lines[0])["prompt"])])],
        max_tokens=12,
        temperature=0,
    )
    chat = inf.ChatDetails(
        compartment_id=COMPARTMENT, serving_mode=inf.DedicatedServingMode(endpoint_id=endpoint.data.id), chat_request=request
    )
    oci_text = infer.chat(chat).data.chat_response.choices[0].message.content[0].text
    assert oci_text.strip()

    bearer = server.cli("api-keys", "create-bearer", "--tenancy", me.tenancy, "--user", me.user).stdout.strip()
    client = openai.OpenAI(base_url=f"{server.endpoint}/openai/v1", api_key=bearer, max_retries=0, timeout=300)
    answer = client.chat.completions.create(
        model=endpoint.data.id,
        messages=[{"role": "user", "content": json.loads(lines[0])["prompt"]}],
        max_tokens=12,
        temperature=0,
    )
    assert answer.choices[0].message.content == oci_text  # one engine, greedy: both doors give the same reply
