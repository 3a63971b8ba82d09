"""OCI's inference API (`GenerativeAiInferenceClient`): POST /20231130/actions/chat and
/actions/generateText, answered by the serving engine through tuneforge.services.actions.inference.

Content types are exact, because the SDK decides by them (oci-api.md §4): `application/json` for an
answer, `text/event-stream` (no charset) for a stream of `data: {json}` events, the last of which
carries `finishReason`. A client that goes away cancels its generation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from tuneforge import serving
from tuneforge.api.deps import CallerDep, ServicesDep
from tuneforge.services.actions import inference
from tuneforge.services.errors import ServiceError
from tuneforge.services.schemas.inference import ChatDetails, GenerateTextDetails

router = APIRouter(prefix="/20231130", tags=["inference"])
DISCONNECT_POLL_S = 0.5


async def completions(request: Request, generation: inference.Generation) -> list:
    """Every stream's Completion; cancels them all when the client disconnects first."""
    waiting = asyncio.ensure_future(asyncio.gather(*(stream.aresult() for stream in generation.streams)))
    try:
        while True:
            done, _ = await asyncio.wait({waiting}, timeout=DISCONNECT_POLL_S)
            if done:
                return waiting.result()
            if await request.is_disconnected():
                generation.cancel()
                waiting.cancel()
                raise ServiceError(499, "ClientClosedRequest", "the client went away")
    except serving.ServingError:
        raise ServiceError(
            500, "InternalServerError", "the model failed while generating; the server's log has the details"
        ) from None


def event_stream(
    generation: inference.Generation,
    delta: Callable[[str], dict],
    end: Callable[[object], dict | list[dict]],
    done_marker: bool = False,
) -> StreamingResponse:
    """Server-sent events: one per text delta, then the closing one(s) made from the Completion.
    Leaving early (the client went away) cancels the generation."""
    stream = generation.streams[0]

    async def events() -> AsyncIterator[bytes]:
        try:
            async for text in stream:
                yield b"data: " + json.dumps(delta(text)).encode() + b"\n\n"
            closing = end(await stream.aresult())
            for event in closing if isinstance(closing, list) else [closing]:
                yield b"data: " + json.dumps(event).encode() + b"\n\n"
            if done_marker:
                yield b"data: [DONE]\n\n"
        except serving.ServingError:
            yield b"data: " + json.dumps({"error": "the model failed while generating"}).encode() + b"\n\n"
        finally:
            generation.cancel()  # no-op when it finished

    return StreamingResponse(events(), headers={"content-type": "text/event-stream", "cache-control": "no-cache"})


@router.post("/actions/chat")
async def chat(details: ChatDetails, request: Request, caller: CallerDep, svc: ServicesDep):
    target = await asyncio.to_thread(inference.resolve, svc, caller, details.serving_mode)
    requests = inference.chat_requests(details, target)
    generation = await asyncio.to_thread(inference.start, svc, target, requests, "chatRequest.")
    if details.chat_request.is_stream:
        return event_stream(
            generation, lambda text: inference.chat_delta(details, text), lambda c: inference.chat_end(details, c)
        )
    return JSONResponse(inference.chat_result(details, generation, await completions(request, generation)))


@router.post("/actions/generateText")
async def generate_text(details: GenerateTextDetails, request: Request, caller: CallerDep, svc: ServicesDep):
    target = await asyncio.to_thread(inference.resolve, svc, caller, details.serving_mode)
    requests = inference.text_requests(details, target)
    generation = await asyncio.to_thread(inference.start, svc, target, requests, "inferenceRequest.")
    if details.inference_request.is_stream:
        return event_stream(
            generation, lambda text: inference.text_delta(details, text), lambda c: inference.text_end(details, c)
        )
    return JSONResponse(inference.text_result(details, generation, await completions(request, generation)))
