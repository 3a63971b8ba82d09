"""Hosted models answering through the real clients: the `oci` SDK's GenerativeAiInferenceClient
(chat and generateText, GENERIC/LLAMA and COHERE formats, DEDICATED and ON_DEMAND, streamed and
not) and the `openai` SDK (a bearer key, and OCI signatures through oci-openai), on SQLite and on
PostgreSQL, with tiny random models trained through the service."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import oci
import openai
import pytest
from helpers.clients import clients, service_error
from helpers.fine_tuning import create_cluster, dataset_lines, lora_model_details, upload, wait_work_request

COMPARTMENT = "ocid1.compartment.oc1..aaaainference"
m = oci.generative_ai.models
inf = oci.generative_ai_inference.models
TFEW_MODEL = "cohere.command-r-08-2024"


def _train(ai, objects, base: str = "meta.llama-3.3-70b-instruct"):
    dataset = upload(objects, "inference/train.jsonl", dataset_lines(40))
    cluster = create_cluster(ai, COMPARTMENT)
    if base == TFEW_MODEL:
        details = m.CreateModelDetails(
            compartment_id=COMPARTMENT,
            base_model_id=base,
            fine_tune_details=m.FineTuneDetails(
                training_dataset=m.ObjectStorageDataset(**dataset),
                dedicated_ai_cluster_id=cluster.id,
                training_config=m.TFewTrainingConfig(total_training_epochs=1, learning_rate=0.1),
            ),
        )
    else:
        details = lora_model_details(COMPARTMENT, cluster.id, dataset, learning_rate=0.05)
    created = ai.create_model(details)
    assert wait_work_request(ai, created.headers["opc-work-request-id"]).status == "SUCCEEDED"
    return created.data.id


def _host(ai, model_id: str, shape: str) -> str:
    cluster = ai.create_dedicated_ai_cluster(
        m.CreateDedicatedAiClusterDetails(type="HOSTING", compartment_id=COMPARTMENT, unit_count=1, unit_shape=shape)
    ).data
    created = ai.create_endpoint(
        m.CreateEndpointDetails(compartment_id=COMPARTMENT, model_id=model_id, dedicated_ai_cluster_id=cluster.id)
    )
    assert wait_work_request(ai, created.headers["opc-work-request-id"], timeout=300).status == "SUCCEEDED"
    return created.data.id


@pytest.fixture(scope="module")
def hosted(service, alice):
    ai, objects = clients(service, alice)
    lora = _train(ai, objects)
    tfew = _train(ai, objects, TFEW_MODEL)
    infer = oci.generative_ai_inference.GenerativeAiInferenceClient(alice.config(), service_endpoint=service.endpoint)
    return {
        "ai": ai,
        "infer": infer,
        "lora": lora,
        "tfew": tfew,
        "lora_endpoint": _host(ai, lora, "LARGE_GENERIC"),
        "tfew_endpoint": _host(ai, tfew, "SMALL_COHERE_V2"),
    }


def generic_chat(endpoint_id: str | None = None, model_id: str | None = None, stream: bool = False, **kw):
    mode = inf.DedicatedServingMode(endpoint_id=endpoint_id) if endpoint_id else inf.OnDemandServingMode(model_id=model_id)
    request = inf.GenericChatRequest(
        messages=[inf.UserMessage(content=[inf.TextContent(text="Is 7 odd?")])],
        is_stream=stream,
        **{"max_tokens": 4, "temperature": 0.0, **kw},
    )
    return inf.ChatDetails(compartment_id=COMPARTMENT, serving_mode=mode, chat_request=request)


def test_generic_chat_dedicated_and_on_demand(hosted):
    infer = hosted["infer"]
    answer = infer.chat(generic_chat(hosted["lora_endpoint"])).data
    assert answer.model_id == hosted["lora"] and answer.chat_response.api_format == "GENERIC"
    choice = answer.chat_response.choices[0]
    assert choice.finish_reason in ("stop", "length") and isinstance(choice.message.content[0].text, str)
    usage = answer.chat_response.usage
    assert (
        usage.prompt_tokens > 0
        and 0 < usage.completion_tokens <= 4
        and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    )
    # the same request twice (greedy) gives the same text; the base model (ON_DEMAND) answers too
    assert (
        infer.chat(generic_chat(hosted["lora_endpoint"])).data.chat_response.choices[0].message.content[0].text
        == choice.message.content[0].text
    )
    base = infer.chat(generic_chat(model_id="meta.llama-3.3-70b-instruct")).data
    assert base.chat_response.choices[0].message.content[0].text is not None
    two = infer.chat(generic_chat(hosted["lora_endpoint"], num_generations=2, seed=3, temperature=1.0)).data.chat_response
    assert [c.index for c in two.choices] == [0, 1]


def test_generic_chat_streams_as_server_sent_events(hosted):
    response = hosted["infer"].chat(
        generic_chat(hosted["lora_endpoint"], stream=True, stream_options=inf.StreamOptions(is_include_usage=True))
    )
    events = [json.loads(event.data) for event in response.data.events()]
    assert events and "finishReason" in events[-1] and all("finishReason" not in e for e in events[:-1])
    text = "".join(e["message"]["content"][0]["text"] for e in events[:-1])
    assert events[-1]["usage"]["completionTokens"] >= 1
    whole = hosted["infer"].chat(generic_chat(hosted["lora_endpoint"])).data.chat_response.choices[0].message.content[0].text
    assert text == whole


def test_cohere_chat_and_formats_must_match_the_family(hosted):
    infer = hosted["infer"]
    request = inf.CohereChatRequest(
        message="Is 8 odd?",
        chat_history=[inf.CohereUserMessage(message="Is 3 odd?"), inf.CohereChatBotMessage(message="yes")],
        preamble_override="Answer yes or no.",
        max_tokens=4,
        temperature=0.0,
    )
    details = inf.ChatDetails(
        compartment_id=COMPARTMENT,
        serving_mode=inf.DedicatedServingMode(endpoint_id=hosted["tfew_endpoint"]),
        chat_request=request,
    )
    answer = infer.chat(details).data.chat_response
    assert answer.api_format == "COHERE" and answer.finish_reason in ("COMPLETE", "MAX_TOKENS")
    assert answer.chat_history[-1].message == answer.text
    stream_request = inf.CohereChatRequest(message="Is 8 odd?", max_tokens=4, temperature=0.0, is_stream=True)
    stream_details = inf.ChatDetails(compartment_id=COMPARTMENT, serving_mode=details.serving_mode, chat_request=stream_request)
    streamed = [json.loads(e.data) for e in infer.chat(stream_details).data.events()]
    assert streamed[-1]["finishReason"] in ("COMPLETE", "MAX_TOKENS")
    wrong = inf.ChatDetails(
        compartment_id=COMPARTMENT, serving_mode=details.serving_mode, chat_request=generic_chat(model_id="x").chat_request
    )
    err = service_error(lambda: infer.chat(wrong))
    assert err.status == 400 and "Cohere model" in err.message


def test_generate_text_in_both_runtimes(hosted):
    infer = hosted["infer"]
    llama = infer.generate_text(
        inf.GenerateTextDetails(
            compartment_id=COMPARTMENT,
            serving_mode=inf.DedicatedServingMode(endpoint_id=hosted["lora_endpoint"]),
            inference_request=inf.LlamaLlmInferenceRequest(prompt="Is 5 odd?", max_tokens=3, temperature=0.0, num_generations=2),
        )
    ).data
    assert llama.inference_response.runtime_type == "LLAMA" and len(llama.inference_response.choices) == 2
    cohere = infer.generate_text(
        inf.GenerateTextDetails(
            compartment_id=COMPARTMENT,
            serving_mode=inf.DedicatedServingMode(endpoint_id=hosted["tfew_endpoint"]),
            inference_request=inf.CohereLlmInferenceRequest(prompt="Is 5 odd?", max_tokens=3, temperature=0.0, is_echo=True),
        )
    ).data
    assert cohere.inference_response.generated_texts[0].text.startswith("Is 5 odd?")


def test_inference_errors_are_named(hosted, service, bob):
    infer = hosted["infer"]
    assert service_error(lambda: infer.chat(generic_chat("ocid1.generativeaiendpoint.oc1.local.nosuch"))).status == 404
    err = service_error(lambda: infer.chat(generic_chat(hosted["lora_endpoint"], max_tokens=0)))
    assert err.status == 400 and "maxTokens" in err.message
    long = generic_chat(hosted["lora_endpoint"])
    long.chat_request.messages[0].content[0].text = "Is 7 odd? " * 400  # the tiny model's context is 512
    err = service_error(lambda: infer.chat(long))
    assert err.status == 400 and "context" in err.message
    tools = generic_chat(hosted["lora_endpoint"])
    tools.chat_request.tools = [inf.FunctionDefinition(name="f", description="d", parameters={})]
    assert "tools is not supported" in service_error(lambda: infer.chat(tools)).message
    # another tenancy cannot call alice's endpoint
    bob_infer = oci.generative_ai_inference.GenerativeAiInferenceClient(bob.config(), service_endpoint=service.endpoint)
    assert service_error(lambda: bob_infer.chat(generic_chat(hosted["lora_endpoint"]))).status == 404


# ---- the OpenAI API -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def openai_client(service, alice, hosted):
    done = service.cli("api-keys", "create-bearer", "--tenancy", alice.tenancy, "--user", alice.user)
    assert done.returncode == 0, done.stderr
    return openai.OpenAI(base_url=f"{service.endpoint}/openai/v1", api_key=done.stdout.strip())


def test_openai_sdk_with_a_bearer_key(openai_client, hosted):
    client = openai_client
    ids = {model.id for model in client.models.list()}
    assert {hosted["lora"], hosted["lora_endpoint"], "meta.llama-3.3-70b-instruct"} <= ids
    for model in (hosted["lora"], hosted["lora_endpoint"], "meta.llama-3.3-70b-instruct"):
        answer = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Is 7 odd?"}], max_tokens=4, temperature=0
        )
        assert answer.object == "chat.completion" and answer.choices[0].finish_reason in ("stop", "length")
        assert answer.usage.completion_tokens >= 1
    chunks = list(
        client.chat.completions.create(
            model=hosted["lora"],
            messages=[{"role": "user", "content": "Is 7 odd?"}],
            max_tokens=4,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage.completion_tokens >= 1
    whole = client.chat.completions.create(
        model=hosted["lora"], messages=[{"role": "user", "content": "Is 7 odd?"}], max_tokens=4, temperature=0
    )
    assert streamed == whole.choices[0].message.content
    text = client.completions.create(model=hosted["lora"], prompt="Is 9 odd?", max_tokens=3, temperature=0, echo=True)
    assert text.choices[0].text.startswith("Is 9 odd?")


def test_openai_errors_have_openais_shape(openai_client, service):
    with pytest.raises(openai.NotFoundError) as info:
        openai_client.chat.completions.create(
            model="ocid1.generativeaimodel.oc1.local.nosuch", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):
        openai_client.chat.completions.create(
            model="meta.llama-3.3-70b-instruct", messages=[{"role": "user", "content": "x"}], max_tokens=0
        )
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{service.endpoint}/openai/v1", api_key="tf-nope-nope").models.list()


def test_openai_sdk_signed_by_oci(service, alice, hosted, tmp_path):
    from oci_openai import OciOpenAI, OciUserPrincipalAuth

    key = tmp_path / "key.pem"
    key.write_text(alice.private_pem)
    config = tmp_path / "config"
    config.write_text(
        f"[DEFAULT]\nuser={alice.user}\nfingerprint={alice.fingerprint}\ntenancy={alice.tenancy}\nregion=us-chicago-1\nkey_file={key}\n"
    )
    client = OciOpenAI(
        base_url=f"{service.endpoint}/openai/v1", auth=OciUserPrincipalAuth(config_file=str(config)), compartment_id=COMPARTMENT
    )
    answer = client.chat.completions.create(
        model=hosted["lora_endpoint"], messages=[{"role": "user", "content": "Is 7 odd?"}], max_tokens=3, temperature=0
    )
    assert answer.choices[0].message.content is not None


def test_tuneforge_chat_through_a_server(service, openai_client, hosted):
    """`tuneforge chat --model MODEL_ID --endpoint URL`: the terminal chat over the OpenAI route, streamed,
    with the history sent each turn; a refusal is the server's own sentence, no traceback."""
    key = openai_client.api_key
    lines = "Is 7 odd?\n/reset\nIs 8 odd?\n"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tuneforge",
            "chat",
            "--model",
            hosted["lora"],
            "--endpoint",
            service.endpoint,
            "--max-new-tokens",
            "3",
        ],
        input=lines,
        capture_output=True,
        text=True,
        env={**os.environ, "TUNEFORGE_API_KEY": key},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    replies = done.stdout.splitlines()
    assert len(replies) == 2 and "(conversation cleared)" in done.stderr
    whole = openai_client.chat.completions.create(
        model=hosted["lora"], messages=[{"role": "user", "content": "Is 7 odd?"}], max_tokens=3, temperature=0
    )
    assert replies[0] == whole.choices[0].message.content
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "tuneforge",
            "chat",
            "--model",
            "ocid1.generativeaimodel.oc1.local.nosuch",
            "--endpoint",
            service.endpoint,
            "--api-key",
            key,
        ],
        input="hello\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1 and "Traceback" not in refused.stderr and "not found" in refused.stderr
