"""Admission by expected wait on a real `tuneforge serve` (issue 19, item 2): a request that would
wait for a decode row longer than the server's bound is refused at once with 429 and Retry-After,
through the `openai` SDK, the `oci` SDK and plain HTTP, streamed or not, instead of queued behind
the busy model; a streamed answer starts with an SSE comment, sent before the engine does anything
for it, which both SDKs skip.

The server has one row (`--serving-max-batch 1`) and a bound of 0 s (`--serving-max-wait 0`): while
one long greedy generation holds the row, any other request is expected to wait (its steps left x
the measured step time > 0) and so is refused; once the row is free, requests are admitted again.
Nothing here depends on how fast the machine is."""

from __future__ import annotations

import json

import httpx
import oci
import openai
import pytest
from helpers.identities import new_identity
from helpers.servers import running_service
from helpers.waiting import wait_for

COMPARTMENT = "ocid1.compartment.oc1..aaaaadmission"
BASE = "meta.llama-3.3-70b-instruct"
LONG = "the quick brown fox"  # the tiny model's greedy reply to it runs to max_tokens (no end-of-turn token)
inf = oci.generative_ai_inference.models


@pytest.fixture(scope="module")
def busy_service(tmp_path_factory, tiny_weights):
    with running_service("sqlite", tmp_path_factory.mktemp("admission"), tiny_weights, start=False) as svc:
        svc.args = ["--workers", "0", "--serving-max-batch", "1", "--serving-max-wait", "0"]
        svc.start()
        identity = new_identity("admission")
        svc.register(identity)
        bearer = svc.cli("api-keys", "create-bearer", "--tenancy", identity.tenancy, "--user", identity.user)
        assert bearer.returncode == 0, bearer.stderr
        svc.identity, svc.bearer = identity, bearer.stdout.strip()
        yield svc


def _openai(svc) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{svc.endpoint}/openai/v1", api_key=svc.bearer, max_retries=0, timeout=120)


def _oci(svc):
    return oci.generative_ai_inference.GenerativeAiInferenceClient(
        svc.identity.config(), service_endpoint=svc.endpoint, retry_strategy=oci.retry.NoneRetryStrategy(), timeout=(10, 120)
    )


def _oci_chat(stream: bool, text: str = "Is 7 odd?", max_tokens: int = 4):
    request = inf.GenericChatRequest(
        messages=[inf.UserMessage(content=[inf.TextContent(text=text)])], is_stream=stream, max_tokens=max_tokens, temperature=0.0
    )
    return inf.ChatDetails(compartment_id=COMPARTMENT, serving_mode=inf.OnDemandServingMode(model_id=BASE), chat_request=request)


def test_a_stream_starts_with_a_comment_that_both_sdks_skip(busy_service):
    body = {
        "model": BASE,
        "messages": [{"role": "user", "content": "Is 7 odd?"}],
        "max_tokens": 4,
        "temperature": 0,
        "stream": True,
    }
    headers = {"authorization": f"Bearer {busy_service.bearer}"}
    with httpx.stream(
        "POST", f"{busy_service.endpoint}/openai/v1/chat/completions", json=body, headers=headers, timeout=120
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
        raw = b"".join(r.iter_bytes())
    assert raw.startswith(b": queued\n\n")  # before any event: the engine had not produced anything yet
    assert raw.endswith(b"data: [DONE]\n\n")
    chunks = list(_openai(busy_service).chat.completions.create(**{**body, "stream": True}))
    assert chunks and chunks[-1].choices[0].finish_reason in ("stop", "length")
    events = [json.loads(e.data) for e in _oci(busy_service).chat(_oci_chat(stream=True)).data.events()]
    assert events and "finishReason" in events[-1] and all("message" in e for e in events[:-1])


def test_a_request_that_would_wait_past_the_bound_is_refused_with_retry_after(busy_service):
    client = _openai(busy_service)
    # One long greedy generation takes the only row; its first token means it is running and a step was timed.
    holder = client.chat.completions.create(
        model=BASE, messages=[{"role": "user", "content": LONG}], max_tokens=480, temperature=0, stream=True
    )
    first = next(c for c in holder if c.choices and c.choices[0].delta.content)
    assert first.choices[0].finish_reason is None
    try:
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model=BASE, messages=[{"role": "user", "content": "Is 7 odd?"}], max_tokens=4)
        assert int(refused.value.response.headers["retry-after"]) >= 1
        assert refused.value.body["type"] == "rate_limit_error"
        assert "bound of 0 s" in refused.value.body["message"] and "retry in" in refused.value.body["message"]

        with pytest.raises(oci.exceptions.ServiceError) as oci_refused:
            _oci(busy_service).chat(_oci_chat(stream=True))
        assert oci_refused.value.status == 429 and oci_refused.value.code == "TooManyRequests"
        assert int(oci_refused.value.headers["retry-after"]) >= 1

        # a stream is refused before it starts: a 429 answer, not a 200 stream that waits
        body = {"model": BASE, "prompt": "Is 7 odd?", "max_tokens": 4, "stream": True}
        headers = {"authorization": f"Bearer {busy_service.bearer}"}
        answer = httpx.post(f"{busy_service.endpoint}/openai/v1/completions", json=body, headers=headers, timeout=120)
        assert answer.status_code == 429 and int(answer.headers["retry-after"]) >= 1
        assert answer.json()["error"]["code"] == "TooManyRequests"
    finally:
        holder.close()  # the client goes away: its generation is cancelled and the row freed

    def admitted():
        # the server notices the disconnect and the engine frees the row at its next step: until then, 429
        try:
            return client.chat.completions.create(model=BASE, messages=[{"role": "user", "content": "Is 7 odd?"}], max_tokens=4)
        except openai.RateLimitError:
            return None

    again = wait_for(admitted, 120, "the cancelled generation's row to be free")
    assert again.choices[0].finish_reason in ("stop", "length")
