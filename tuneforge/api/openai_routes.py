"""The OpenAI-compatible API at OCI's path, /openai/v1: `chat/completions` and `completions`
(streaming and not) and `models`, so the `openai` SDK works with only `base_url` and `api_key`
changed. `model` is a custom model id, an endpoint id or a base model's name. Authenticated by a
bearer API key (`tuneforge api-keys create-bearer`) or an OCI request signature; errors in
OpenAI's shape (api/errors.py)."""

from __future__ import annotations

import asyncio
import secrets

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from tuneforge.api.deps import CallerDep, ServicesDep
from tuneforge.api.inference_routes import completions, event_stream
from tuneforge.services.actions import inference
from tuneforge.services.schemas.inference import ChatCompletionRequest, CompletionRequest

router = APIRouter(prefix="/openai/v1", tags=["openai"])


@router.get("/models")
def list_models(caller: CallerDep, svc: ServicesDep) -> JSONResponse:
    return JSONResponse(inference.openai_models(svc, caller))


@router.get("/models/{model_id}")
def retrieve_model(model_id: str, caller: CallerDep, svc: ServicesDep) -> JSONResponse:
    return JSONResponse(inference.openai_model(svc, caller, model_id))


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request, caller: CallerDep, svc: ServicesDep):
    target = await asyncio.to_thread(inference.resolve_openai_model, svc, caller, body.model)
    requests = inference.openai_chat_requests(body)
    generation = await asyncio.to_thread(inference.start, svc, target, requests, "", "messages", True)
    if not body.stream:
        return JSONResponse(inference.openai_chat_result(body.model, generation, await completions(request, generation)))
    chunk_id, created = f"chatcmpl-{secrets.token_hex(12)}", int(generation.created)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    first = True

    def chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> dict:
        choices = [] if usage is not None else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
        out = {"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": body.model, "choices": choices}
        return {**out, "usage": usage} if usage is not None else out

    def delta(text: str) -> dict:
        nonlocal first
        role = {"role": "assistant"} if first else {}
        first = False
        return chunk({**role, "content": text})

    def end(completion) -> dict:
        # OpenAI ends with an empty delta carrying finish_reason; the usage chunk follows when asked for.
        final = chunk({}, completion.finish_reason)
        return final if not include_usage else [final, chunk({}, usage=inference.openai_usage([completion]))]

    return event_stream(generation, delta, end, done_marker=True)


@router.post("/completions")
async def text_completions(body: CompletionRequest, request: Request, caller: CallerDep, svc: ServicesDep):
    target = await asyncio.to_thread(inference.resolve_openai_model, svc, caller, body.model)
    requests = inference.openai_completion_requests(body)
    generation = await asyncio.to_thread(inference.start, svc, target, requests, "", "prompt", True)
    echo = [r.prompt if body.echo else "" for r in requests]
    if not body.stream:
        done = await completions(request, generation)
        return JSONResponse(inference.openai_completion_result(body.model, generation, done, echo, body.n or 1))
    chunk_id, created = f"cmpl-{secrets.token_hex(12)}", int(generation.created)
    pending_echo = echo[0]

    def chunk(text: str, finish: str | None = None) -> dict:
        nonlocal pending_echo
        text, pending_echo = pending_echo + text, ""
        return {
            "id": chunk_id,
            "object": "text_completion",
            "created": created,
            "model": body.model,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
        }

    return event_stream(generation, chunk, lambda completion: chunk("", completion.finish_reason), done_marker=True)
