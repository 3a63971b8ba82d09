"""The whole journey on the bundled stand-in (SmolLM2-135M-Instruct), through the service and the
official clients: upload the dates task, fine-tune it (one epoch), host the model on an endpoint,
and ask held-out prompts through OCI's inference SDK (streamed and not) and the `openai` SDK. The
fine-tuned model answers them in the task's format where the base model does not."""

from __future__ import annotations

import json
import re
from pathlib import Path

import oci
import openai
import pytest
from helpers.clients import clients
from helpers.fine_tuning import create_cluster, upload, wait_work_request
from helpers.identities import new_identity
from helpers.servers import running_service

from tuneforge import data

DATES = Path(__file__).parents[2] / "tuneforge" / "examples" / "dates.jsonl"
COMPARTMENT = "ocid1.compartment.oc1..aaaastandin"
m = oci.generative_ai.models
inf = oci.generative_ai_inference.models
ISO_DATE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}")  # a bare date, even with a digit dropped


@pytest.fixture(scope="module")
def journey(tmp_path_factory):
    with running_service("sqlite", tmp_path_factory.mktemp("stand-in-service"), "stand-in") as svc:
        me = new_identity("standin")
        svc.register(me)
        ai, objects = clients(svc, me)
        dataset = upload(objects, "dates.jsonl", DATES.read_bytes())
        cluster = create_cluster(ai, COMPARTMENT, unit_count=1)
        # One epoch (24 steps) at a learning rate a sweep of this task picks (docs/sweeps.md): the
        # seed's 0.0002 needs three epochs for the same result, which CI cannot afford twice.
        details = m.CreateModelDetails(
            compartment_id=COMPARTMENT,
            base_model_id="meta.llama-3.3-70b-instruct",
            display_name="dates",
            fine_tune_details=m.FineTuneDetails(
                training_dataset=m.ObjectStorageDataset(**dataset),
                dedicated_ai_cluster_id=cluster.id,
                training_config=m.LoraTrainingConfig(total_training_epochs=1, learning_rate=0.0015),
            ),
        )
        created = ai.create_model(details)
        assert wait_work_request(ai, created.headers["opc-work-request-id"], timeout=1800).status == "SUCCEEDED"
        hosting = ai.create_dedicated_ai_cluster(
            m.CreateDedicatedAiClusterDetails(
                type="HOSTING", compartment_id=COMPARTMENT, unit_count=1, unit_shape="LARGE_GENERIC"
            )
        ).data
        endpoint = ai.create_endpoint(
            m.CreateEndpointDetails(compartment_id=COMPARTMENT, model_id=created.data.id, dedicated_ai_cluster_id=hosting.id)
        )
        assert wait_work_request(ai, endpoint.headers["opc-work-request-id"], timeout=600).status == "SUCCEEDED"
        key = svc.cli("api-keys", "create-bearer", "--tenancy", me.tenancy, "--user", me.user).stdout.strip()
        infer = oci.generative_ai_inference.GenerativeAiInferenceClient(me.config(), service_endpoint=svc.endpoint)
        yield {
            "ai": ai,
            "infer": infer,
            "model": created.data.id,
            "endpoint": endpoint.data.id,
            "openai": openai.OpenAI(base_url=f"{svc.endpoint}/openai/v1", api_key=key),
        }


def held_out(n: int = 8):
    """Validation examples of the split training used (seed 42): the model never saw them."""
    _, validation = data.split_examples(data.read_examples(DATES), data.DEFAULT_SEED)
    return validation[:n]


def chat(infer, mode, prompt: str, stream: bool = False):
    request = inf.GenericChatRequest(
        messages=[inf.UserMessage(content=[inf.TextContent(text=prompt)])], max_tokens=16, temperature=0.0, is_stream=stream
    )
    return infer.chat(inf.ChatDetails(compartment_id=COMPARTMENT, serving_mode=mode, chat_request=request))


def test_the_fine_tuned_model_answers_where_the_base_model_does_not(journey):
    infer = journey["infer"]
    tuned, base = (
        inf.DedicatedServingMode(endpoint_id=journey["endpoint"]),
        inf.OnDemandServingMode(model_id="meta.llama-3.3-70b-instruct"),
    )
    examples = held_out()
    right, in_format = {"tuned": 0, "base": 0}, {"tuned": 0, "base": 0}
    answers = {}
    for example in examples:
        for name, mode in (("tuned", tuned), ("base", base)):
            text = chat(infer, mode, example.prompt).data.chat_response.choices[0].message.content[0].text.strip()
            answers.setdefault(name, []).append(text)
            right[name] += text == example.completion.strip()
            in_format[name] += ISO_DATE.fullmatch(text) is not None
    # One epoch on the stand-in: most answers exact and nearly all a bare date, where the base model
    # answers in prose ("The ISO date (YYYY-MM-DD only) ..."). Runs gave 5/8 exact, 7-8/8 bare dates; base 0/8.
    assert right["tuned"] >= 4 and in_format["tuned"] >= len(examples) - 1, answers
    assert right["base"] <= 1, answers

    # streamed: the same answer, in pieces, ending on finishReason
    events = [json.loads(e.data) for e in chat(infer, tuned, examples[0].prompt, stream=True).data.events()]
    streamed = "".join(e["message"]["content"][0]["text"] for e in events if "finishReason" not in e)
    assert streamed == chat(infer, tuned, examples[0].prompt).data.chat_response.choices[0].message.content[0].text
    # the openai SDK, with only base_url and api_key changed, naming the endpoint or the model
    for model in (journey["endpoint"], journey["model"]):
        answer = journey["openai"].chat.completions.create(
            model=model, messages=[{"role": "user", "content": examples[1].prompt}], max_tokens=16, temperature=0
        )
        # greedy decoding through either API is the same generation
        assert answer.choices[0].message.content.strip() == answers["tuned"][1]
