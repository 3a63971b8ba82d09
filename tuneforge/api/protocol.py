"""OCI protocol details the SDK relies on: request ids, etags, RFC 3339 times, page tokens."""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import datetime, timezone
from typing import Sequence, TypeVar

from fastapi import Response
from sqlalchemy import Select
from sqlalchemy.orm import Session
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tuneforge.api.errors import invalid, precondition_failed

T = TypeVar("T")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/-]{1,128}$")


def rfc3339(dt: datetime | None) -> str | None:
    """2024-09-01T12:00:00.123Z: the SDK's strptime format (milliseconds, Z)."""
    if dt is None:
        return None
    dt = dt.astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def etag(resource_id: str, revision: int) -> str:
    return hashlib.sha256(f"{resource_id}:{revision}".encode()).hexdigest()[:32]


def send_etag(response: Response, resource_id: str, revision: int, work_request_id: str | None = None) -> None:
    """The headers of a create/get/update answer: etag, and the work request when there is one."""
    response.headers["etag"] = etag(resource_id, revision)
    if work_request_id:
        response.headers["opc-work-request-id"] = work_request_id


def check_if_match(if_match: str | None, current: str) -> None:
    """412 unless `if-match` is absent, `*`, or the current etag (a list is accepted, as in HTTP)."""
    if if_match is None:
        return
    candidates = {tag.strip().strip('"').removeprefix("W/").strip('"') for tag in if_match.split(",")}
    if "*" not in candidates and current not in candidates:
        raise precondition_failed()


DEFAULT_LIMIT = 100


def paginate(items: Sequence[T], page: str | None, limit: int | None, response: Response) -> list[T]:
    """One page of `items`; sets `opc-next-page` when more follow (the SDK pages until it is absent)."""
    start, size = decode_page(page), limit or DEFAULT_LIMIT
    if start + size < len(items):
        response.headers["opc-next-page"] = encode_page(start + size)
    return list(items[start : start + size])


def sql_page(session: Session, stmt: Select, page: str | None, limit: int | None, response: Response) -> list:
    """`paginate` for an ordered query, without loading more than one page (plus one row)."""
    start, size = decode_page(page), limit or DEFAULT_LIMIT
    rows = session.scalars(stmt.offset(start).limit(size + 1)).all()
    if len(rows) > size:
        response.headers["opc-next-page"] = encode_page(start + size)
    return list(rows[:size])


def encode_page(offset: int) -> str:
    return f"p{offset}"


def decode_page(page: str | None) -> int:
    if page is None:
        return 0
    if not re.fullmatch(r"p\d{1,12}", page):
        raise invalid(f"page: {page!r} is not a page token returned by this service (opc-next-page)")
    return int(page[1:])


class RequestIdMiddleware:
    """Echo the client's opc-request-id (or make one) on every response, errors included.

    Also refuses NUL characters anywhere in the URL before any handler runs: no database stores them,
    and OCI identifiers never contain them."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = dict(scope["headers"]).get(b"opc-request-id", b"").decode("latin-1")
        request_id = sent if _REQUEST_ID.match(sent) else uuid.uuid4().hex.upper()
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["opc-request-id"] = request_id
            await send(message)

        raw = scope.get("raw_path") or b""
        if b"%00" in raw or b"\x00" in raw or b"%00" in scope.get("query_string", b""):
            await _send_json(send_with_id, 400, b'{"code":"InvalidParameter","message":"NUL characters are not allowed in URLs."}')
            return
        await self.app(scope, receive, send_with_id)


async def _send_json(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
