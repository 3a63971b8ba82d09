"""OCI HTTP-signature verification (draft-cavage, rsa-sha256), as the SDK's signer produces it.

keyId = "<tenancy>/<user>/<fingerprint>" names a key registered with `tuneforge api-keys add`. The
caller's tenancy is the access boundary for everything the request touches.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from fastapi import Request
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from tuneforge.api.errors import not_authenticated
from tuneforge.store.tables import ApiKey

MAX_CLOCK_SKEW_S = 300  # OCI rejects requests whose date is more than 5 minutes off
_PARAM = re.compile(r'(\w+)="([^"]*)"')
# The SDK signs these for every request, plus the body headers for POST/PUT/PATCH (oci-api.md §3.1).
REQUIRED = ("(request-target)", "host")
BODY_HEADERS = ("content-length", "content-type", "x-content-sha256")


@dataclass(frozen=True)
class Caller:
    tenancy_id: str
    user_id: str


def _parse_authorization(value: str) -> dict[str, str]:
    if not value.startswith("Signature "):
        raise not_authenticated("the authorization header must be an OCI request signature")
    params = dict(_PARAM.findall(value))
    for name in ("keyId", "signature", "headers"):
        if name not in params:
            raise not_authenticated(f"the signature has no {name}")
    if params.get("algorithm", "rsa-sha256") != "rsa-sha256":
        raise not_authenticated("only rsa-sha256 signatures are supported")
    return params


def signing_string(request: Request, names: list[str]) -> str:
    lines = []
    for name in names:
        if name == "(request-target)":
            target = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
            query = request.scope.get("query_string", b"").decode("latin-1")
            lines.append(f"(request-target): {request.method.lower()} {target}{'?' + query if query else ''}")
        else:
            value = request.headers.get(name)
            if value is None:
                raise not_authenticated(f"signed header {name} is missing from the request")
            lines.append(f"{name}: {value}")
    return "\n".join(lines)


def _check_date(request: Request, names: list[str]) -> None:
    name = "x-date" if "x-date" in names else "date"
    if name not in names:
        raise not_authenticated("the date header must be signed")
    try:
        sent = parsedate_to_datetime(request.headers[name]).timestamp()
    except (KeyError, TypeError, ValueError, IndexError):
        raise not_authenticated(f"the {name} header is not an RFC 1123 date") from None
    if abs(time.time() - sent) > MAX_CLOCK_SKEW_S:
        raise not_authenticated(f"the {name} header is more than {MAX_CLOCK_SKEW_S // 60} minutes from the server's clock")


async def _check_body(request: Request, names: list[str]) -> None:
    # Object Storage PutObject is signed without body headers (the SDK passes
    # enforce_content_headers=False for it, as OCI allows); every other request with a body is not.
    is_object_upload = request.method == "PUT" and request.url.path.startswith("/n/")
    if request.method in ("POST", "PUT", "PATCH") and not is_object_upload:
        missing = [h for h in BODY_HEADERS if h not in names]
        if missing:
            raise not_authenticated(f"a {request.method} request must sign {', '.join(missing)}")
    if "x-content-sha256" in names:
        digest = base64.b64encode(hashlib.sha256(await request.body()).digest()).decode()
        if digest != request.headers.get("x-content-sha256"):
            raise not_authenticated("x-content-sha256 does not match the request body")


def _lookup_key(sessions: sessionmaker[Session], key_id: str) -> ApiKey | None:
    with sessions() as session:
        return session.get(ApiKey, key_id)


async def authenticate(request: Request) -> Caller:
    """FastAPI dependency: the verified caller, or 401 NotAuthenticated."""
    header = request.headers.get("authorization")
    if not header:
        raise not_authenticated("the request is not signed (no authorization header)")
    params = _parse_authorization(header)
    names = params["headers"].lower().split()
    for name in REQUIRED:
        if name not in names:
            raise not_authenticated(f"{name} must be signed")
    _check_date(request, names)
    key = await run_in_threadpool(_lookup_key, request.app.state.sessions, params["keyId"])
    if key is None:
        raise not_authenticated(f"no API key is registered as {params['keyId']!r}")
    try:
        public_key = serialization.load_pem_public_key(key.public_key_pem.encode())
        public_key.verify(
            base64.b64decode(params["signature"], validate=True),
            signing_string(request, names).encode("latin-1"),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except (InvalidSignature, ValueError, UnicodeEncodeError):
        raise not_authenticated("the signature does not verify with the registered key") from None
    await _check_body(request, names)
    return Caller(tenancy_id=key.tenancy_id, user_id=key.user_id)
