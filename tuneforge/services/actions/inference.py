"""Inference for hosted models, shared by OCI's inference API (`/20231130/actions/chat`,
`/actions/generateText`), the OpenAI API (`/openai/v1`) and the console's "Try it" panel.

What answers: an endpoint's model (DEDICATED), or a model by id or name (ON_DEMAND, and OpenAI's
`model`): a catalog base model or an imported model is served by its own weights, a custom model by
its base plus its adapter. An endpoint (and the console's "Try it" on one) is answered by its HOSTING
cluster's replicas, one serving engine per unit in its own process or Ray actor (`tuneforge.hosting`);
anything else by this process's own engines, one per base (`tuneforge.serving`). Either decodes the rows
of many adapters together; this module turns the APIs' requests into engine requests and the engine's
completions back into the APIs' shapes.

Decisions where the APIs are silent: `maxTokens` defaults to DEFAULT_MAX_TOKENS (a bound on what one
forgotten field can cost); temperature defaults to 1 (GENERIC, OpenAI) and 0.3 (COHERE), as those
APIs document; generateText's prompt is the user turn of the base's chat template (the adapters were
trained on that template); several generations are not streamed (400, naming the field); top_p 0 is
"disabled" on OCI's routes (as OCI's SDK documents it) and greedy on OpenAI's (only the most likely
token is left). Errors name fields as each API spells them (OCI's camelCase, OpenAI's snake_case, and
the field that carried the prompt: `messages`, `message` or `prompt`).
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC
from typing import Any

from tuneforge import serving
from tuneforge.errors import InvalidParameter, WeightsError
from tuneforge.services.context import Caller, Services
from tuneforge.services.errors import ServiceError, invalid, not_found
from tuneforge.services.protocol import rfc3339
from tuneforge.services.resources import endpoints, openai_jobs
from tuneforge.services.resources.endpoints import Target
from tuneforge.services.schemas.inference import (
    ChatCompletionRequest,
    ChatDetails,
    CohereChatRequest,
    CompletionRequest,
    DedicatedServingMode,
    GenerateTextDetails,
    GenericChatRequest,
    LlamaLlmInferenceRequest,
    content_text,
)
from tuneforge.services.schemas.openai_fine_tuning import OpenAIError
from tuneforge.store.tables import utcnow

DEFAULT_MAX_TOKENS = 1024
MODEL_VERSION = "1.0"
_pool_lock = threading.Lock()


# ---- the engines --------------------------------------------------------------------------------


def _engine_config(svc: Services, **overrides) -> dict:
    cfg = svc.config
    return dict(
        max_batch=cfg.serving_max_batch,
        max_queue=cfg.serving_max_queue,
        max_adapters=cfg.serving_max_adapters,
        max_wait_s=cfg.serving_max_wait_s,
        **overrides,
    )


def pool(svc: Services):
    """The serving engines of this process (created on first use: importing them imports torch)."""
    with _pool_lock:
        if svc.serving is None:
            from tuneforge.serving import EngineConfig, EnginePool

            svc.serving = EnginePool(EngineConfig(**_engine_config(svc)))
        return svc.serving


def hosting(svc: Services):
    """The hosting clusters' replicas (tuneforge/hosting): processes of this machine, or Ray actors with
    `--executor ray`. A local replica's engine gets its share of the cores (a cluster's replicas on one
    machine would otherwise each spread over every core and wait at each other's barriers)."""
    with _pool_lock:
        if svc.hosting is None:
            from tuneforge.hosting.launchers import ProcessLauncher, RayLauncher
            from tuneforge.hosting.router import Hosting

            cfg = svc.config
            if cfg.executor == "ray":
                launcher = RayLauncher(
                    cfg.ray_hosting_address or "auto", cfg.ray_cpus_per_replica, cfg.ray_gpus_per_unit, cfg.replica_timeout_s
                )
                engine = _engine_config(svc, threads=max(1, int(cfg.ray_cpus_per_replica)))
            else:
                launcher, engine = ProcessLauncher(cfg.replica_timeout_s), _engine_config(svc)
            svc.hosting = Hosting(launcher, engine)
        return svc.hosting


def _model(svc: Services, target: Target):
    """(base weights, adapter or None) of a target, checked but not loaded."""
    from tuneforge.engine.weights import Weights, resolve_weights
    from tuneforge.serving.pool import run_model

    if target.run_dir is not None:  # model.json names the weights it trained: a catalog base's or an imported model's
        if target.adapter is not None:  # a checkpoint: one id per adapter in the engine
            return run_model(target.run_dir, f"{target.model_id}:{target.adapter.name}", target.adapter)
        return run_model(target.run_dir, adapter_id=target.model_id)
    if target.weights is not None:  # an imported model serves its own weights, never `serve --weights`
        return Weights(str(target.weights), target.weights, False, target.spec.display_name), None
    try:
        weights = resolve_weights(svc.config.weights, model_id=target.spec.id, weights_repo=target.spec.weights_repo)
    except WeightsError:
        raise invalid(
            f"modelId: this server has no weights for {target.spec.id}; its operator configures them (tuneforge serve --weights)"
        ) from None
    return weights, None


def _engine(svc: Services, target: Target):
    """What answers a target (an Engine, or its hosting cluster's replicas: both `submit(request)`), and
    the adapter or None; loads the base on first use."""
    weights, adapter = _model(svc, target)
    if target.cluster_id is None:
        return pool(svc).get(weights), adapter
    return _Replicas(hosting(svc).cluster(target.cluster_id, target.units), weights), adapter


@dataclass
class _Replicas:
    """A hosting cluster's replicas for one base, with an engine's `submit`."""

    replicas: Any  # tuneforge.hosting.router.ReplicaSet
    weights: Any

    def submit(self, request: serving.Request):
        return self.replicas.submit(self.weights, request)


def warm_endpoint(svc: Services, endpoint_id: str) -> None:
    """Load an endpoint's base and adapter in the background (on each replica of its cluster), then make
    it ACTIVE (or FAILED)."""

    def load() -> None:
        try:
            with svc.session() as session:
                row = session.get(endpoints.EndpointRow, endpoint_id)
                if row is None:
                    return
                caller = Caller(row.tenancy_id, "tuneforge-hosting")
                model_id, cluster_id = row.model_id, row.cluster_id
            target = endpoints.hosted_target(svc, caller, endpoint_id, model_id, cluster_id)
            weights, adapter = _model(svc, target)
            hosting(svc).cluster(target.cluster_id, target.units).warm(weights, adapter)
            endpoints.finish_creation(svc, endpoint_id)
        except (ServiceError, serving.ServingError, InvalidParameter) as err:
            endpoints.finish_creation(svc, endpoint_id, error=getattr(err, "message", None) or str(err))
        except Exception:
            import logging

            logging.getLogger("tuneforge.hosting").exception("loading endpoint %s failed", endpoint_id)
            endpoints.finish_creation(svc, endpoint_id, error="the model could not be loaded; the server's log has the details")

    threading.Thread(target=load, name=f"warm-{endpoint_id[-8:]}", daemon=True).start()


def resolve(svc: Services, caller: Caller, serving_mode) -> Target:
    """OCI's servingMode: DEDICATED's endpoint, or ON_DEMAND's modelId, which may also be an OpenAI
    fine-tuning job's `ft:` name or one of its checkpoints' (a 404 in OCI's shape when there is none)."""
    if isinstance(serving_mode, DedicatedServingMode):
        return endpoints.endpoint_target(svc, caller, serving_mode.endpoint_id)
    if serving_mode.model_id.startswith("ft:"):
        try:
            return openai_jobs.ft_target(svc, caller, serving_mode.model_id)
        except OpenAIError as err:
            raise ServiceError(err.status, "NotAuthorizedOrNotFound", err.message) from None
    return endpoints.model_target(svc, caller, serving_mode.model_id)


def resolve_openai_model(svc: Services, caller: Caller, model: str) -> Target:
    """OpenAI's `model`: an endpoint id, a custom model id, a base model's name or id, or a fine-tuning
    job's `ft:` name, which answers as the custom model the job trained, or one of its kept checkpoints'
    names (that evaluation cycle's adapter of the same run)."""
    if ".generativeaiendpoint." in model:
        return endpoints.endpoint_target(svc, caller, model)
    if model.startswith("ft:"):  # the same adapter (one id in the engine) whichever name calls it
        return openai_jobs.ft_target(svc, caller, model)
    return endpoints.model_target(svc, caller, model)


class Busy(ServiceError):
    """429 TooManyRequests with when to come back (the HTTP layer's Retry-After header, in seconds)."""

    def __init__(self, err: serving.QueueFull):
        super().__init__(429, "TooManyRequests", str(err))
        self.retry_after_s = err.retry_after_s


@dataclass
class Generation:
    """Streams started for one API request, and what the answer reports."""

    target: Target
    streams: list  # tuneforge.serving.Stream
    created: float  # Unix time

    def cancel(self) -> None:
        for stream in self.streams:
            stream.cancel()


def start(
    svc: Services,
    target: Target,
    requests: list[serving.Request],
    field_prefix: str = "",
    prompt_field: str = "messages",
    snake_case: bool = False,
) -> Generation:
    """Queue the requests on the target's engine; ServiceErrors in the API's vocabulary: a field is
    named as the API spells it (`field_prefix` before it; `prompt_field`, the field that holds the
    prompt, for the engine's messages or prompt; OpenAI's snake_case with `snake_case`)."""
    streams = []
    try:
        engine, adapter = _engine(svc, target)
        for request in requests:
            streams.append(engine.submit(replace(request, adapter=adapter)))
    except InvalidParameter as err:
        for stream in streams:
            stream.cancel()
        name = _api_field(err.field, prompt_field, snake_case)
        raise invalid(f"{field_prefix}{name}: {_shown(err.value)} is not allowed; {err.allowed}") from None
    except serving.PromptTooLong as err:
        for stream in streams:
            stream.cancel()
        raise invalid(f"{field_prefix}{prompt_field}: {err}") from None
    except serving.QueueFull as err:  # the queue is full, or the expected wait exceeds the bound
        for stream in streams:
            stream.cancel()
        raise Busy(err) from None
    except serving.AdapterUnavailable as err:
        raise not_found(f"model ({err})") from None
    except serving.AdapterInvalid as err:
        raise invalid(str(err)) from None
    except serving.EngineClosed as err:
        raise ServiceError(503, "ServiceUnavailable", str(err)) from None
    return Generation(target, streams, time.time())


_CAPITAL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def _api_field(name: str, prompt_field: str, snake_case: bool) -> str:
    """The engine's field name (OCI's camelCase, `messages`/`prompt`) as the API spells it."""
    if name in ("messages", "prompt") or name.startswith("messages["):
        name = prompt_field if prompt_field != "messages" else name
    return _CAPITAL.sub("_", name).lower() if snake_case else name


def _shown(value) -> str:
    """A rejected value as JSON writes it (never a Python repr), cut short."""
    text = json.dumps(value, default=lambda _: "...")
    return text if len(text) <= 80 else text[:77] + "..."


def _number(value, default: float) -> float:
    return float(value) if value is not None else default


def _oci_top_p(value, default: float) -> float:
    # OCI's SDK documents top_p 0 as "disable", the same as 1 (consider all tokens)
    return 1.0 if value == 0 else _number(value, default)


def _seeds(seed: int | None, n: int) -> list[int | None]:
    return [None if seed is None else seed + i for i in range(n)]


# ---- OCI chat -------------------------------------------------------------------------------


def _check_format(target: Target, fmt: str, cohere_name: str, generic_name: str, field: str) -> None:
    cohere = target.spec.vendor == "cohere"
    if cohere and fmt != cohere_name:
        raise invalid(f"{field}: {target.spec.id} is a Cohere model: send {cohere_name}")
    if not cohere and fmt == cohere_name:
        raise invalid(f"{field}: {cohere_name} is for Cohere models; {target.spec.id} takes {generic_name}")


def chat_requests(details: ChatDetails, target: Target) -> list[serving.Request]:
    chat = details.chat_request
    _check_format(target, chat.api_format, "COHERE", "GENERIC", "chatRequest.apiFormat")
    if isinstance(chat, GenericChatRequest):
        roles = {"SYSTEM": "system", "DEVELOPER": "system", "USER": "user", "ASSISTANT": "assistant"}
        messages = [{"role": roles[m.role], "content": "".join(c.text for c in m.content)} for m in chat.messages]
        n = chat.num_generations or 1
        if chat.is_stream and n > 1:
            raise invalid("chatRequest.numGenerations: above 1 cannot be streamed; set isStream false")
        common = dict(
            messages=messages,
            max_tokens=chat.max_completion_tokens or chat.max_tokens or DEFAULT_MAX_TOKENS,
            temperature=_number(chat.temperature, 1.0),
            top_p=_oci_top_p(chat.top_p, 1.0),
            top_k=max(0, chat.top_k or 0),
            frequency_penalty=_number(chat.frequency_penalty, 0.0),
            presence_penalty=_number(chat.presence_penalty, 0.0),
            stop=tuple(chat.stop or ()),
        )
        return [serving.Request(**common, seed=seed) for seed in _seeds(chat.seed, n)]
    assert isinstance(chat, CohereChatRequest)
    common = dict(
        max_tokens=chat.max_tokens or DEFAULT_MAX_TOKENS,
        temperature=_number(chat.temperature, 0.3),
        top_p=_oci_top_p(chat.top_p, 0.75),
        top_k=chat.top_k or 0,
        frequency_penalty=_number(chat.frequency_penalty, 0.0),
        presence_penalty=_number(chat.presence_penalty, 0.0),
        stop=tuple(chat.stop_sequences or ()),
        seed=chat.seed,
    )
    if chat.is_raw_prompting:
        return [serving.Request(prompt=chat.message, **common)]
    roles = {"USER": "user", "CHATBOT": "assistant", "SYSTEM": "system"}
    messages = [{"role": "system", "content": chat.preamble_override}] if chat.preamble_override else []
    messages += [{"role": roles[m.role], "content": m.message} for m in chat.chat_history or []]
    messages.append({"role": "user", "content": chat.message})
    return [serving.Request(messages=messages, **common)]


_COHERE_FINISH = {"stop": "COMPLETE", "length": "MAX_TOKENS", "cancelled": "USER_CANCEL"}


def _usage(completions) -> dict[str, int]:
    prompt = completions[0].prompt_tokens if completions else 0
    generated = sum(c.completion_tokens for c in completions)
    return {"promptTokens": prompt, "completionTokens": generated, "totalTokens": prompt + generated}


def chat_result(details: ChatDetails, generation: Generation, completions) -> dict[str, Any]:
    chat = details.chat_request
    if isinstance(chat, GenericChatRequest):
        response = {
            "apiFormat": "GENERIC",
            "timeCreated": rfc3339(utcnow()),
            "choices": [
                {
                    "index": i,
                    "message": {"role": "ASSISTANT", "content": [{"type": "TEXT", "text": c.text}]},
                    "finishReason": c.finish_reason,
                }
                for i, c in enumerate(completions)
            ],
            "usage": _usage(completions),
        }
    else:
        completion = completions[0]
        history = [
            *[{"role": m.role, "message": m.message} for m in chat.chat_history or []],
            {"role": "USER", "message": chat.message},
            {"role": "CHATBOT", "message": completion.text},
        ]
        response = {
            "apiFormat": "COHERE",
            "text": completion.text,
            "finishReason": _COHERE_FINISH[completion.finish_reason],
            "chatHistory": history,
            "usage": _usage(completions),
        }
    return {"modelId": generation.target.model_id, "modelVersion": MODEL_VERSION, "chatResponse": response}


def chat_delta(details: ChatDetails, delta: str) -> dict[str, Any]:
    """One server-sent event of a streamed chat (what langchain's OCI providers and the console read)."""
    if isinstance(details.chat_request, GenericChatRequest):
        return {"index": 0, "message": {"role": "ASSISTANT", "content": [{"type": "TEXT", "text": delta}]}}
    return {"apiFormat": "COHERE", "text": delta}


def chat_end(details: ChatDetails, completion) -> dict[str, Any]:
    """The last event: it carries finishReason (a stream ends with it) and, if asked for, usage."""
    chat = details.chat_request
    options = chat.stream_options
    usage = {"usage": _usage([completion])} if options is not None and options.is_include_usage else {}
    if isinstance(chat, GenericChatRequest):
        return {"index": 0, "finishReason": completion.finish_reason, **usage}
    return {"apiFormat": "COHERE", "text": completion.text, "finishReason": _COHERE_FINISH[completion.finish_reason], **usage}


# ---- OCI generateText -----------------------------------------------------------------------


def text_requests(details: GenerateTextDetails, target: Target) -> list[serving.Request]:
    req = details.inference_request
    _check_format(target, req.runtime_type, "COHERE", "LLAMA", "inferenceRequest.runtimeType")
    n = req.num_generations or 1
    if req.is_stream and n > 1:
        raise invalid("inferenceRequest.numGenerations: above 1 cannot be streamed; set isStream false")
    stop = req.stop if isinstance(req, LlamaLlmInferenceRequest) else req.stop_sequences
    common = dict(
        messages=[{"role": "user", "content": req.prompt}],
        max_tokens=req.max_tokens or DEFAULT_MAX_TOKENS,
        temperature=_number(req.temperature, 1.0),
        top_p=_oci_top_p(req.top_p, 1.0),
        top_k=max(0, req.top_k or 0),
        frequency_penalty=_number(req.frequency_penalty, 0.0),
        presence_penalty=_number(req.presence_penalty, 0.0),
        stop=tuple(stop or ()),
    )
    return [serving.Request(**common) for _ in range(n)]


def text_result(details: GenerateTextDetails, generation: Generation, completions) -> dict[str, Any]:
    req = details.inference_request
    echo = req.prompt if req.is_echo else ""
    if isinstance(req, LlamaLlmInferenceRequest):
        response = {
            "runtimeType": "LLAMA",
            "created": rfc3339(utcnow()),
            "choices": [{"index": i, "text": echo + c.text, "finishReason": c.finish_reason} for i, c in enumerate(completions)],
        }
    else:
        response = {
            "runtimeType": "COHERE",
            "timeCreated": rfc3339(utcnow()),
            "prompt": req.prompt if req.is_echo else None,
            "generatedTexts": [
                {"id": secrets.token_hex(8), "text": echo + c.text, "finishReason": _COHERE_FINISH[c.finish_reason]}
                for c in completions
            ],
        }
        response = {k: v for k, v in response.items() if v is not None}
    return {"modelId": generation.target.model_id, "modelVersion": MODEL_VERSION, "inferenceResponse": response}


def text_delta(details: GenerateTextDetails, delta: str) -> dict[str, Any]:
    if isinstance(details.inference_request, LlamaLlmInferenceRequest):
        return {"index": 0, "text": delta}
    return {"text": delta}


def text_end(details: GenerateTextDetails, completion) -> dict[str, Any]:
    if isinstance(details.inference_request, LlamaLlmInferenceRequest):
        return {"index": 0, "text": "", "finishReason": completion.finish_reason}
    return {"text": "", "finishReason": _COHERE_FINISH[completion.finish_reason], "isFinished": True}


# ---- OpenAI ---------------------------------------------------------------------------------


def _stops(stop) -> tuple[str, ...]:
    return (stop,) if isinstance(stop, str) else tuple(stop or ())


def _openai_sampling(temperature, top_p) -> dict[str, float]:
    # top_p 0 keeps only the most likely token: greedy decoding (the engine's top_p is in (0, 1])
    if top_p == 0:
        return {"temperature": 0.0, "top_p": 1.0}
    return {"temperature": _number(temperature, 1.0), "top_p": _number(top_p, 1.0)}


def openai_chat_requests(body: ChatCompletionRequest) -> list[serving.Request]:
    n = body.n or 1
    if body.stream and n > 1:
        raise invalid("n: above 1 cannot be streamed; set stream false")
    roles = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
    messages = [{"role": roles[m.role], "content": content_text(m.content)} for m in body.messages]
    common = dict(
        messages=messages,
        max_tokens=body.max_completion_tokens or body.max_tokens or DEFAULT_MAX_TOKENS,
        **_openai_sampling(body.temperature, body.top_p),
        stop=_stops(body.stop),
        frequency_penalty=_number(body.frequency_penalty, 0.0),
        presence_penalty=_number(body.presence_penalty, 0.0),
    )
    return [serving.Request(**common, seed=seed) for seed in _seeds(body.seed, n)]


def openai_completion_requests(body: CompletionRequest) -> list[serving.Request]:
    prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
    n = body.n or 1
    if body.stream and (n > 1 or len(prompts) > 1):
        raise invalid("n: one prompt and one choice can be streamed; set stream false")
    common = dict(
        max_tokens=body.max_tokens or DEFAULT_MAX_TOKENS,
        **_openai_sampling(body.temperature, body.top_p),
        stop=_stops(body.stop),
        frequency_penalty=_number(body.frequency_penalty, 0.0),
        presence_penalty=_number(body.presence_penalty, 0.0),
    )
    # A completion continues raw text: no chat template (what OpenAI's completions API means).
    return [serving.Request(prompt=p, **common, seed=seed) for p in prompts for seed in _seeds(body.seed, n)]


def openai_usage(completions, choices_per_prompt: int = 0) -> dict[str, int]:
    """Usage in OpenAI's names; each prompt's tokens count once however many choices it had."""
    per = choices_per_prompt or len(completions) or 1
    prompt = sum(c.prompt_tokens for c in completions[::per])
    generated = sum(c.completion_tokens for c in completions)
    return {"prompt_tokens": prompt, "completion_tokens": generated, "total_tokens": prompt + generated}


def openai_chat_result(model: str, generation: Generation, completions) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{secrets.token_hex(12)}",
        "object": "chat.completion",
        "created": int(generation.created),
        "model": model,
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": c.text}, "finish_reason": c.finish_reason, "logprobs": None}
            for i, c in enumerate(completions)
        ],
        "usage": openai_usage(completions),
    }


def openai_completion_result(model: str, generation: Generation, completions, echo: list[str], n: int) -> dict[str, Any]:
    """`echo`: the text put before each choice (its prompt when echo was asked for); `n` choices per prompt."""
    return {
        "id": f"cmpl-{secrets.token_hex(12)}",
        "object": "text_completion",
        "created": int(generation.created),
        "model": model,
        "choices": [
            {"index": i, "text": e + c.text, "finish_reason": c.finish_reason, "logprobs": None}
            for i, (c, e) in enumerate(zip(completions, echo))
        ],
        "usage": openai_usage(completions, n),
    }


def openai_models(svc: Services, caller: Caller) -> dict[str, Any]:
    """What `model` can be: the tenancy's ACTIVE custom models, imported models and endpoints, its
    succeeded fine-tuning jobs' `ft:` models, and the catalog's base models."""
    from tuneforge.services.resources import base_models, imported_models, models

    found = []
    for model in models.list_models(svc, caller, None, lifecycle_state="ACTIVE", include_base=False, limit=1000).items:
        found.append({"id": model.id, "object": "model", "created": _epoch(model.time_created), "owned_by": caller.tenancy_id})
    for imported in imported_models.active_rows(svc, caller):
        found.append(
            {
                "id": imported.id,
                "object": "model",
                "created": _epoch(rfc3339(imported.time_created)),
                "owned_by": caller.tenancy_id,
            }
        )
    for endpoint in endpoints.list_endpoints(svc, caller, None, lifecycle_state="ACTIVE", limit=1000).items:
        found.append(
            {"id": endpoint.id, "object": "model", "created": _epoch(endpoint.time_created), "owned_by": caller.tenancy_id}
        )
    found += openai_jobs.listed_models(svc, caller)  # succeeded fine-tuning jobs' models by their ft: names
    for spec in base_models.catalog.list_models():
        found.append({"id": spec.id, "object": "model", "created": _epoch(base_models.CATALOG_TIME), "owned_by": spec.vendor})
    return {"object": "list", "data": found}


def openai_model(svc: Services, caller: Caller, model_id: str) -> dict[str, Any]:
    """One of openai_models' entries (the SDK's `models.retrieve`); 404 for anything else."""
    for model in openai_models(svc, caller)["data"]:
        if model["id"] == model_id:
            return model
    raise not_found(f"model {model_id[:200]}")


def _epoch(rfc: str) -> int:
    from datetime import datetime

    return int(datetime.strptime(rfc, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp())
