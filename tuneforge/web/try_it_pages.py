"""The details page's "Try it" panel: POST /console/api/models/{id}/try-it streams a chat reply
from the model (and, when asked, its base model) as server-sent events, `data: {json}` each:
{"side": "model"|"base", "delta": text}, then {"side", "done": true, "finishReason", ...} or
{"side", "error": sentence} once per side. static/try_it.js reads them.

Like every console POST it needs a signed-in session and the session's CSRF token (sent by the
page's fetch() in the x-csrf-token header). The checks and the generation are the service layer's
(tuneforge.services.actions.try_it); a refusal before anything streams is JSON {"message", "code"} with the
API's status. A browser that goes away (the tab closed, Stop pressed) cancels the generation:
Starlette cancels the response's iterator on disconnect, and closing it cancels the streams.
"""

from __future__ import annotations

import contextlib
import json

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from tuneforge.services.actions import try_it
from tuneforge.services.errors import ServiceError
from tuneforge.web.deps import ConsoleCaller, ServicesDep, csrf_header_ok
from tuneforge.web.render import env

router = APIRouter(include_in_schema=False)
# The panel's inputs show the bounds the service enforces: one source for both.
env.globals["try_it_limits"] = try_it.LIMITS


@router.post("/console/api/models/{model_id}/try-it")
async def try_it_api(request: Request, model_id: str, caller: ConsoleCaller, svc: ServicesDep) -> Response:
    if not csrf_header_ok(request):
        return JSONResponse({"message": "The page expired (missing or stale CSRF token): reload it.", "code": "Csrf"}, 403)
    try:
        body = await request.json()
    except ValueError:
        return JSONResponse({"message": "The request must be a JSON object.", "code": "InvalidParameter"}, 400)
    try:
        chat = await run_in_threadpool(try_it.start, svc, caller, model_id, body)
    except ServiceError as err:
        return JSONResponse({"message": err.message, "code": err.code}, status_code=err.status)

    async def sse():
        # aclosing: the events' generator is closed (and the generation cancelled) at once when
        # the response stops early, not whenever the garbage collector gets to it.
        async with contextlib.aclosing(try_it.events(chat)) as events:
            async for event in events:
                yield b"data: " + json.dumps(event).encode() + b"\n\n"

    # no-transform and X-Accel-Buffering: a proxy in front must pass each event on as it comes.
    headers = {"cache-control": "no-cache, no-transform", "x-accel-buffering": "no"}
    return StreamingResponse(sse(), media_type="text/event-stream", headers=headers)
