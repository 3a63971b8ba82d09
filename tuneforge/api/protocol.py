"""HTTP-level protocol: request ids on every response, size limits on every request, and the
headers (etag, opc-work-request-id, opc-next-page) of a service answer.

Limits (answered before any route runs, in OCI's error shape):
- headers: at most MAX_HEADER_BYTES per header value and MAX_HEADERS_BYTES in all -> 431;
  (uvicorn itself refuses a header block above 64 KiB before it reaches the app);
- bodies: PutObject and UploadPart stream up to 50 GiB (services/objects.py checks Content-Length);
  the console's dataset upload likewise; every other body is JSON or a form of at most
  MAX_BODY_BYTES -> 413, whether it declares a Content-Length or streams.
"""

from __future__ import annotations

import abc
import json
import re
import uuid
from typing import TypeVar

from fastapi import Response
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tuneforge.api.auth import is_object_upload
from tuneforge.api.errors import error_json
from tuneforge.services.protocol import Answer, Page
from tuneforge.services.resources.objects import MAX_PUT_BYTES

T = TypeVar("T")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/-]{1,128}$")
MAX_HEADER_BYTES = 8 * 1024
MAX_HEADERS_BYTES = 32 * 1024
MAX_BODY_BYTES = 1024 * 1024
# POST routes that check the session before reading their (large) body
STREAMED_UPLOADS = ("/console/models/new", "/console/api/dataset-check", "/openai/v1/files")  # each bounds its own size


def send_answer(response: Response, answer: Answer[T]) -> T:
    """The headers of a create/get/update answer: etag, and the work request when there is one."""
    if answer.etag:
        response.headers["etag"] = answer.etag
    if answer.work_request_id:
        response.headers["opc-work-request-id"] = answer.work_request_id
    return answer.value


def send_accepted(work_request_id: str) -> Response:
    """202 for an operation that goes on after the answer (a delete, a cancel): the work request to poll."""
    return Response(status_code=202, headers={"opc-work-request-id": work_request_id})


def send_page(response: Response, page: Page[T]) -> list[T]:
    if page.next_page:
        response.headers["opc-next-page"] = page.next_page
    return page.items


class _HttpMiddleware(abc.ABC):
    """An ASGI middleware that acts on HTTP requests only (`http`); lifespan and other scopes pass through."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.http(scope, receive, send)

    @abc.abstractmethod
    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one HTTP request: answer it, or pass it on to `self.app`."""


class RequestIdMiddleware(_HttpMiddleware):
    """Echo the client's opc-request-id (or make one) on every response, errors included.

    Also refuses NUL characters anywhere in the URL before any handler runs: no database stores them,
    and OCI identifiers and object names never contain them."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        sent = next((v for k, v in scope["headers"] if k == b"opc-request-id"), b"").decode("latin-1")
        request_id = sent if _REQUEST_ID.match(sent) else uuid.uuid4().hex.upper()
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["opc-request-id"] = request_id
            await send(message)

        raw = scope.get("raw_path") or b""
        if b"%00" in raw or b"\x00" in raw or b"%00" in scope.get("query_string", b""):
            await send_json(send_with_id, 400, "InvalidParameter", "NUL characters are not allowed in URLs.", scope["path"])
            return
        await self.app(scope, receive, send_with_id)


class LimitsMiddleware(_HttpMiddleware):
    """Header and body size limits (see the module docstring)."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        total = 0
        for name, value in scope["headers"]:
            total += len(name) + len(value)
            if len(value) > MAX_HEADER_BYTES:
                message = f"the {name.decode('latin-1')[:64]} header is larger than {MAX_HEADER_BYTES:,} bytes"
            elif total > MAX_HEADERS_BYTES:
                message = f"the request's headers are larger than {MAX_HEADERS_BYTES:,} bytes in all"
            else:
                continue
            await send_json(send, 431, "RequestHeaderFieldsTooLarge", message, scope["path"])
            return
        method, path = scope["method"], scope["path"]
        streamed = is_object_upload(method, path) or (method == "POST" and path in STREAMED_UPLOADS)
        limit = MAX_PUT_BYTES if streamed else MAX_BODY_BYTES
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await send_json(
                send,
                413,
                "PayloadTooLarge",
                f"the request body is larger than this service accepts ({limit:,} bytes at most)",
                path,
            )
            return
        await self.app(scope, _counting(receive, limit), send)


def _counting(receive: Receive, limit: int) -> Receive:
    """Cut a streamed body off at `limit` bytes: the app sees the client disconnect."""
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                return {"type": "http.disconnect"}
        return message

    return counted


async def send_json(send: Send, status: int, code: str, message: str, path: str = "") -> None:
    """An error answered by a middleware, in the shape of the API `path` belongs to (api/errors.py)."""
    body = json.dumps(error_json(path, status, code, message)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
