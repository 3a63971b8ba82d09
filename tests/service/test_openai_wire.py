"""The inference APIs' wire details through the real clients (issue 19, items 4 to 6): the OpenAI
routes speak OpenAI (field names, error shape for 413 and 431 too, `models.retrieve`, its sampling
bounds) and OCI's routes OCI's; a body that is not JSON is told so in a sentence; a reply cut inside
a multi-byte character ends before it; a client that goes away from a non-streamed request costs
the server's log one line, no traceback."""

from __future__ import annotations

import time

import httpx
import oci
import openai
import pytest
import requests
from helpers.waiting import wait_for

COMPARTMENT = "ocid1.compartment.oc1..aaaawire"
BASE = "meta.llama-3.3-70b-instruct"
REPLACEMENT = "\ufffd"
inf = oci.generative_ai_inference.models


@pytest.fixture(scope="module")
def bearer(service, alice) -> str:
    done = service.cli("api-keys", "create-bearer", "--tenancy", alice.tenancy, "--user", alice.user)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def client(service, bearer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{service.endpoint}/openai/v1", api_key=bearer, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def infer(service, alice):
    return oci.generative_ai_inference.GenerativeAiInferenceClient(
        alice.config(), service_endpoint=service.endpoint, retry_strategy=oci.retry.NoneRetryStrategy()
    )


def _chat(client, **kw):
    return client.chat.completions.create(
        **{"model": BASE, "messages": [{"role": "user", "content": "Is 7 odd?"}], "max_tokens": 3, **kw}
    )


def _bad_request(call) -> str:
    with pytest.raises(openai.BadRequestError) as err:
        call()
    assert err.value.body["type"] == "invalid_request_error"
    return err.value.body["message"]


def _oci_error(call) -> oci.exceptions.ServiceError:
    with pytest.raises(oci.exceptions.ServiceError) as err:
        call()
    return err.value


def _oci_chat(**kw):
    request = inf.GenericChatRequest(
        messages=[inf.UserMessage(content=[inf.TextContent(text="Is 7 odd?")])], **{"max_tokens": 3, "temperature": 0.0, **kw}
    )
    return inf.ChatDetails(compartment_id=COMPARTMENT, serving_mode=inf.OnDemandServingMode(model_id=BASE), chat_request=request)


# ---- item 4: OpenAI routes speak OpenAI, OCI's routes OCI ---------------------------------------------


def test_openai_errors_name_openais_fields_and_bounds(client):
    for field, value in (("top_p", 1.5), ("frequency_penalty", 3), ("presence_penalty", -2.5), ("temperature", 2.5)):
        message = _bad_request(lambda: _chat(client, **{field: value}))  # noqa: B023 (called at once)
        assert message.startswith(f"{field}: ") and str(value) in message, message
        assert not any(camel in message for camel in ("topP", "frequencyPenalty", "presencePenalty")), message
    assert "prompt: " in _bad_request(lambda: client.completions.create(model=BASE, prompt="Is 7 odd? " * 400, max_tokens=3))
    # OpenAI's bounds are inclusive; top_p 0 keeps only the most likely token (greedy)
    assert _chat(client, temperature=2, top_p=0.5, frequency_penalty=2, presence_penalty=-2).choices[0].finish_reason
    assert (
        _chat(client, temperature=1.5, top_p=0, seed=1).choices[0].message.content
        == _chat(client, temperature=0).choices[0].message.content
    )


def test_oci_routes_keep_ocis_names_and_bounds(infer):
    err = _oci_error(lambda: infer.chat(_oci_chat(temperature=2.5)))
    assert err.status == 400 and "temperature" in err.message
    assert "topP" in _oci_error(lambda: infer.chat(_oci_chat(top_p=1.5))).message
    # OCI documents top_p 0 as "disabled", the same as 1
    assert infer.chat(_oci_chat(top_p=0)).data.chat_response.choices[0].finish_reason in ("stop", "length")


def test_generate_text_errors_name_the_prompt(infer):
    request = inf.LlamaLlmInferenceRequest(prompt="Is 7 odd? " * 400, max_tokens=3)  # the tiny model's context is 512
    details = inf.GenerateTextDetails(
        compartment_id=COMPARTMENT, serving_mode=inf.OnDemandServingMode(model_id=BASE), inference_request=request
    )
    err = _oci_error(lambda: infer.generate_text(details))
    assert err.status == 400 and err.message.startswith("inferenceRequest.prompt: ") and "messages" not in err.message


def test_models_retrieve(client):
    model = client.models.retrieve(BASE)
    assert model.id == BASE and model.object == "model"
    assert {m.id for m in client.models.list()} >= {BASE}
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("ocid1.generativeaimodel.oc1.local.nosuch")
    assert err.value.body["type"] == "invalid_request_error"


def test_size_limits_answer_in_openais_shape_on_openai_routes(service, bearer, client):
    with pytest.raises(openai.APIStatusError) as too_large:
        _chat(client, messages=[{"role": "user", "content": "x" * (1024 * 1024 + 1)}])
    assert too_large.value.status_code == 413
    assert too_large.value.body["code"] == "PayloadTooLarge" and "larger than" in too_large.value.body["message"]
    big_header = httpx.get(
        f"{service.endpoint}/openai/v1/models", headers={"authorization": f"Bearer {bearer}", "x-big": "y" * 9000}
    )
    assert big_header.status_code == 431
    error = big_header.json()["error"]
    assert error["code"] == "RequestHeaderFieldsTooLarge" and error["type"] == "invalid_request_error"
    # OCI's routes keep OCI's shape
    oci_431 = httpx.get(f"{service.endpoint}/20231130/models", headers={"x-big": "y" * 9000})
    assert oci_431.status_code == 431 and oci_431.json()["code"] == "RequestHeaderFieldsTooLarge"


def test_a_body_that_is_not_json_is_told_so(service, bearer, alice):
    answer = httpx.post(
        f"{service.endpoint}/openai/v1/chat/completions",
        content=b'{"model": "x", "messages": [',
        headers={"authorization": f"Bearer {bearer}", "content-type": "application/json"},
    )
    assert answer.status_code == 400
    message = answer.json()["error"]["message"]
    assert message.startswith("The request body is not valid JSON") and message.endswith("."), message
    assert "decode error" not in message
    # the same on OCI's routes, signed by the oci SDK's signer
    config = alice.config()
    signer = oci.signer.Signer(
        config["tenancy"], config["user"], config["fingerprint"], None, private_key_content=alice.private_pem
    )
    oci_answer = requests.post(
        f"{service.endpoint}/20231130/actions/chat",
        data=b'{"compartmentId": ',
        headers={"content-type": "application/json"},
        auth=signer,
        timeout=60,
    )
    assert oci_answer.status_code == 400 and oci_answer.json()["message"].startswith("The request body is not valid JSON")


# ---- item 5: a reply cut inside a multi-byte character ---------------------------------------------------


def test_a_reply_cut_inside_a_character_is_a_prefix_of_the_longer_one(client):
    """The same seed samples the same tokens whatever max_tokens is, so each shorter reply must be a
    prefix of the longest; cut inside a character, a reply used to end with U+FFFD instead."""
    checked = 0
    for seed in range(40):
        longest = _chat(client, temperature=1.0, seed=seed, max_tokens=24).choices[0].message.content
        if not any(ord(c) > 0x7F and c != REPLACEMENT for c in longest):
            continue  # no whole multi-byte character to cut inside
        for max_tokens in range(1, 24):
            short = _chat(client, temperature=1.0, seed=seed, max_tokens=max_tokens).choices[0].message.content
            assert longest.startswith(short) and not short.endswith(REPLACEMENT), (seed, max_tokens, short, longest)
        checked += 1
        if checked == 2:
            break
    assert checked == 2


# ---- item 6: a client that goes away ----------------------------------------------------------------------


def test_a_client_that_goes_away_costs_one_log_line(service, bearer, client):
    # a long greedy generation (the tiny model's reply to it runs to max_tokens, hundreds of steps), timed
    # whole first, then asked again by a client that gives up after a quarter of that time without an
    # answer, as a client with a short read timeout does: the server must notice while it still generates
    body = {"model": BASE, "messages": [{"role": "user", "content": "the quick brown fox"}], "max_tokens": 480, "temperature": 0}
    url, headers = f"{service.endpoint}/openai/v1/chat/completions", {"authorization": f"Bearer {bearer}"}
    _chat(client)  # the model is loaded before the timed generation
    started = time.monotonic()
    whole = httpx.post(url, json=body, headers=headers, timeout=120)
    generation_s = time.monotonic() - started
    assert whole.json()["choices"][0]["finish_reason"] == "length", whole.text
    log_start = service.log.stat().st_size
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url, json=body, headers=headers, timeout=httpx.Timeout(60, read=generation_s / 4))

    def new_log() -> str:
        with open(service.log, "rb") as f:
            f.seek(log_start)
            return f.read().decode(errors="replace")

    wait_for(lambda: "went away" in new_log(), 120, "the server to notice the client went away")
    assert _chat(client).choices[0].finish_reason  # the server goes on serving (and collects the request's garbage)
    log = new_log()
    assert "Traceback" not in log and "never retrieved" not in log, log
    assert len([line for line in log.splitlines() if "went away" in line or '" 499' in line]) == 1, log
