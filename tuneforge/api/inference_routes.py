"""OCI's inference API (`GenerativeAiInferenceClient`): POST /20231130/actions/chat and
/actions/generateText, answered by the serving engine through tuneforge.services.actions.inference.

Content types are exact, because the SDK decides by them (oci-api.md §4): `application/json` for an
answer, `text/event-stream` (no charset) for a stream of `data: {json}` events, the last of which
carries `finishReason`. A client that goes away cancels its generation, and that is logged as one
line: it is a normal event, not an error.

A stream's headers and a first SSE comment (`: queued`) go out as soon as the request is queued, and a
comment every KEEPALIVE_S while nothing else does (the wait for a decode row, a long prefill), so
neither the client nor a proxy between takes a stream that waits for a slow engine for a dead one.
Comment lines are part of the SSE format; every SSE client skips them (the `openai` and `oci` SDKs
included, tested)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from tuneforge import serving
from tuneforge.api.deps import CallerDep, ServicesDep
from tuneforge.services.actions import inference
from tuneforge.services.errors import ServiceError
from tuneforge.services.schemas.inference import ChatDetails, GenerateTextDetails

router = APIRouter(prefix="/20231130", tags=["inference"])
log = logging.getLogger("tuneforge.inference")
KEEPALIVE_S = 10.0  # an SSE comment this often while a stream has nothing else to send
QUEUED = b": queued\n\n"
KEEPALIVE = b": keep-alive\n\n"


async def _all_results(generation: inference.Generation) -> list:
    # One task awaiting the streams in turn, rather than asyncio.gather: a cancelled gather stores
    # its CancelledError as an exception nobody retrieves, which asyncio logs with a traceback.
    return [await stream.aresult() for stream in generation.streams]


async def _client_gone(request: Request) -> None:
    """Returns when the client closes its connection. The body has been read by then, so the server's
    next message for this request is `http.disconnect` (or none until the response is sent)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def completions(request: Request, generation: inference.Generation) -> list:
    """Every stream's Completion; cancels them all the moment the client disconnects first."""
    waiting = asyncio.create_task(_all_results(generation))
    gone = asyncio.create_task(_client_gone(request))
    try:
        done, _ = await asyncio.wait({waiting, gone}, return_when=asyncio.FIRST_COMPLETED)
        if waiting in done:
            return waiting.result()
        generation.cancel()
        waiting.cancel()
        log.info(
            "%s %s: the client went away before the answer; its generation was cancelled",
            request.method,
            request.url.path,
        )
        raise ServiceError(499, "ClientClosedRequest", "the client went away")
    except serving.QueueFull as err:  # it waited past the start deadline without getting a row
        generation.cancel()
        raise inference.Busy(err) from None
    except serving.Interrupted as err:  # its hosting replica stopped mid-answer
        generation.cancel()
        raise ServiceError(503, "ServiceUnavailable", str(err)) from None
    except serving.ServingError:
        generation.cancel()
        raise ServiceError(
            500, "InternalServerError", "the model failed while generating; the server's log has the details"
        ) from None
    finally:
        for task in (waiting, gone):
            if not task.done():
                task.cancel()


def event_stream(
    generation: inference.Generation,
    delta: Callable[[str], dict],
    end: Callable[[object], dict | list[dict]],
    done_marker: bool = False,
) -> StreamingResponse:
    """Server-sent events: a `: queued` comment at once, one event per text delta (comments while
    there is none for KEEPALIVE_S), then the closing one(s) made from the Completion. Leaving early
    (the client went away) cancels the generation."""
    stream = generation.streams[0]

    async def events() -> AsyncIterator[bytes]:
        deltas = aiter(stream)
        pending: asyncio.Task | None = None
        try:
            yield QUEUED
            while True:
                # One task per delta, kept across keep-alives: cancelling a wait on the stream would close it.
                pending = pending or asyncio.ensure_future(anext(deltas))
                done, _ = await asyncio.wait({pending}, timeout=KEEPALIVE_S)
                if not done:
                    yield KEEPALIVE
                    continue
                try:
                    text = pending.result()
                except StopAsyncIteration:
                    break
                finally:
                    pending = None
                yield b"data: " + json.dumps(delta(text)).encode() + b"\n\n"
            closing = end(await stream.aresult())
            for event in closing if isinstance(closing, list) else [closing]:
                yield b"data: " + json.dumps(event).encode() + b"\n\n"
            if done_marker:
                yield b"data: [DONE]\n\n"
        except (serving.QueueFull, serving.Interrupted) as err:  # no row in time; its replica stopped mid-answer
            yield b"data: " + json.dumps({"error": str(err)}).encode() + b"\n\n"
        except serving.ServingError:
            yield b"data: " + json.dumps({"error": "the model failed while generating"}).encode() + b"\n\n"
        finally:
            if pending is not None:
                pending.cancel()
            generation.cancel()  # no-op when it finished

    return StreamingResponse(events(), headers={"content-type": "text/event-stream", "cache-control": "no-cache"})


@router.post("/actions/chat")
async def chat(details: ChatDetails, request: Request, caller: CallerDep, svc: ServicesDep):
    target = await asyncio.to_thread(inference.resolve, svc, caller, details.serving_mode)
    requests = inference.chat_requests(details, target)
    prompt = "message" if details.chat_request.api_format == "COHERE" else "messages"
    generation = await asyncio.to_thread(inference.start, svc, target, requests, "chatRequest.", prompt)
    if details.chat_request.is_stream:
        return event_stream(
            generation, lambda text: inference.chat_delta(details, text), lambda c: inference.chat_end(details, c)
        )
    return JSONResponse(inference.chat_result(details, generation, await completions(request, generation)))


@router.post("/actions/generateText")
async def generate_text(details: GenerateTextDetails, request: Request, caller: CallerDep, svc: ServicesDep):
    target = await asyncio.to_thread(inference.resolve, svc, caller, details.serving_mode)
    requests = inference.text_requests(details, target)
    generation = await asyncio.to_thread(inference.start, svc, target, requests, "inferenceRequest.", "prompt")
    if details.inference_request.is_stream:
        return event_stream(
            generation, lambda text: inference.text_delta(details, text), lambda c: inference.text_end(details, c)
        )
    return JSONResponse(inference.text_result(details, generation, await completions(request, generation)))
