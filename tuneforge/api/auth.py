"""OCI HTTP-signature verification (draft-cavage, rsa-sha256), as the SDK's signer produces it,
done by an ASGI middleware before any route runs: an unauthenticated request never has its body
read or parsed, and costs one bounded parse of its headers, one key lookup and at most one RSA
verification (a fraction of a millisecond).

keyId = "<tenancy>/<user>/<fingerprint>" names a key registered with `tuneforge api-keys add`. The
OpenAI API (/openai/v1) also takes `Authorization: Bearer <key>` with a key from `tuneforge api-keys
create-bearer`. The caller's tenancy is the access boundary for everything the request touches
(services/tenancy.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from email.utils import parsedate_to_datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from fastapi import Request
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tuneforge.services.context import Caller
from tuneforge.services.errors import ServiceError, not_authenticated
from tuneforge.services.resources.keys import verify_bearer
from tuneforge.store.tables import ApiKey

MAX_CLOCK_SKEW_S = 300  # OCI rejects requests whose date is more than 5 minutes off
# The SDK signs these for every request, plus the body headers for POST/PUT/PATCH (oci-api.md §3.1).
REQUIRED = ("(request-target)", "host")
BODY_HEADERS = ("content-length", "content-type", "x-content-sha256")
SIGNED_PREFIXES = ("/20231130/", "/n/", "/openai/")  # the OCI API; the console has its own sign-in
MAX_SIGNED_BODY = 1024 * 1024  # bodies whose digest is signed are JSON: the limits middleware caps them there


def is_signed_path(path: str) -> bool:
    return path == "/n" or path.startswith(SIGNED_PREFIXES)


def is_object_upload(method: str, path: str) -> bool:
    """PutObject and UploadPart: signed without body headers (the SDK passes enforce_content_headers=False
    for them, as OCI allows) and streamed, never buffered."""
    return method == "PUT" and path.startswith("/n/") and ("/o/" in path or "/u/" in path)


def parse_authorization(value: str) -> dict[str, str]:
    """`Signature keyId="...",algorithm="rsa-sha256",headers="...",signature="..."` -> its parameters.
    One left-to-right pass (no regular expression that could backtrack); the header's size is capped
    before this runs."""
    if not value.startswith("Signature "):
        raise not_authenticated("the authorization header must be an OCI request signature")
    params: dict[str, str] = {}
    rest = value[len("Signature ") :]
    while rest:
        name, eq, rest = rest.partition("=")
        name = name.strip().lstrip(",").strip()
        if not eq or not rest.startswith('"'):
            raise not_authenticated('the signature\'s parameters must look like name="value"')
        end = rest.find('"', 1)
        if end < 0:
            raise not_authenticated("a quoted value in the signature is not closed")
        params[name] = rest[1:end]
        rest = rest[end + 1 :].lstrip()
        if rest.startswith(","):
            rest = rest[1:]
    for name in ("keyId", "signature", "headers"):
        if name not in params:
            raise not_authenticated(f"the signature has no {name}")
    if params.get("algorithm", "rsa-sha256") != "rsa-sha256":
        raise not_authenticated("only rsa-sha256 signatures are supported")
    return params


def signing_string(scope: Scope, headers: dict[str, str], names: list[str]) -> str:
    lines = []
    for name in names:
        if name == "(request-target)":
            target = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
            query = scope.get("query_string", b"").decode("latin-1")
            lines.append(f"(request-target): {scope['method'].lower()} {target}{'?' + query if query else ''}")
        else:
            value = headers.get(name)
            if value is None:
                raise not_authenticated(f"signed header {name} is missing from the request")
            lines.append(f"{name}: {value}")
    return "\n".join(lines)


def _check_date(headers: dict[str, str], names: list[str]) -> None:
    name = "x-date" if "x-date" in names else "date"
    if name not in names:
        raise not_authenticated("the date header must be signed")
    try:
        sent = parsedate_to_datetime(headers[name]).timestamp()
    except (KeyError, TypeError, ValueError, IndexError, OverflowError):
        raise not_authenticated(f"the {name} header is not an RFC 1123 date") from None
    if abs(time.time() - sent) > MAX_CLOCK_SKEW_S:
        raise not_authenticated(f"the {name} header is more than {MAX_CLOCK_SKEW_S // 60} minutes from the server's clock")


def _lookup_key(sessions: sessionmaker[Session], key_id: str) -> ApiKey | None:
    with sessions() as session:
        return session.get(ApiKey, key_id)


def _lookup_bearer(sessions: sessionmaker[Session], token: str) -> Caller | None:
    with sessions() as session:
        row = verify_bearer(session, token)
        return Caller(row.tenancy_id, row.user_id) if row is not None else None


async def verify_bearer_token(headers: dict[str, str], sessions: sessionmaker[Session]) -> Caller | None:
    """The caller of an `Authorization: Bearer <API key>` request (the OpenAI API's way), None when
    the request carries no bearer token, 401 for a token that is not a live key."""
    header = headers.get("authorization", "")
    if not header.startswith("Bearer "):
        return None
    caller = await run_in_threadpool(_lookup_bearer, sessions, header[len("Bearer ") :].strip())
    if caller is None:
        raise not_authenticated("the bearer token is not an API key of this server (tuneforge api-keys create-bearer)")
    return caller


async def verify_signature(scope: Scope, headers: dict[str, str], sessions: sessionmaker[Session]) -> tuple[Caller, list[str]]:
    """The verified caller and the names of the signed headers, or ServiceError 401."""
    header = headers.get("authorization")
    if not header:
        raise not_authenticated("the request is not signed (no authorization header)")
    params = parse_authorization(header)
    names = params["headers"].lower().split()
    for name in REQUIRED:
        if name not in names:
            raise not_authenticated(f"{name} must be signed")
    method = scope["method"]
    if method in ("POST", "PUT", "PATCH") and not is_object_upload(method, scope["path"]):
        missing = [h for h in BODY_HEADERS if h not in names]
        if missing:
            raise not_authenticated(f"a {method} request must sign {', '.join(missing)}")
    _check_date(headers, names)
    key_id = params["keyId"]
    key = await run_in_threadpool(_lookup_key, sessions, key_id) if len(key_id) <= 512 else None
    if key is None:
        raise not_authenticated(f"no API key is registered as {json.dumps(key_id[:200])}")
    try:
        public_key = serialization.load_pem_public_key(key.public_key_pem.encode())
        public_key.verify(
            base64.b64decode(params["signature"], validate=True),
            signing_string(scope, headers, names).encode("latin-1"),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except (InvalidSignature, ValueError, binascii.Error, UnicodeEncodeError):
        raise not_authenticated("the signature does not verify with the registered key") from None
    return Caller(tenancy_id=key.tenancy_id, user_id=key.user_id), names


class SignatureAuthMiddleware:
    """Authenticates every request to the OCI API (SIGNED_PREFIXES) before the app sees it; puts the
    Caller in `scope["state"]["caller"]`. When the body's digest is signed the body (at most
    MAX_SIGNED_BODY bytes: the limits middleware runs first) is read, checked and handed on."""

    def __init__(self, app: ASGIApp, sessions: sessionmaker[Session], error_response):
        self.app, self.sessions, self.error_response = app, sessions, error_response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_signed_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            caller = await verify_bearer_token(headers, self.sessions) if scope["path"].startswith("/openai/") else None
            names = []
            if caller is None:
                caller, names = await verify_signature(scope, headers, self.sessions)
            if "x-content-sha256" in names:
                body = await _read_body(receive)
                if base64.b64encode(hashlib.sha256(body).digest()).decode() != headers.get("x-content-sha256"):
                    raise not_authenticated("x-content-sha256 does not match the request body")
                receive = _replay(body, receive)
        except ServiceError as err:
            await self.error_response(scope, send, err)
            return
        scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, send)


async def _read_body(receive: Receive) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise not_authenticated("the client went away before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_SIGNED_BODY:
            raise ServiceError(413, "PayloadTooLarge", f"the request body is larger than {MAX_SIGNED_BODY:,} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body once, then the client's own messages (so a disconnect is still seen)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def caller_of(request: Request) -> Caller:
    """FastAPI dependency: the caller SignatureAuthMiddleware verified."""
    caller = request.scope.get("state", {}).get("caller")
    if caller is None:  # a route outside SIGNED_PREFIXES asked for a caller: a bug, never a way in
        raise not_authenticated("the request is not signed")
    return caller
