"""Console sessions: an HMAC-signed cookie (no server-side session table) carrying who is signed
in and the session's CSRF token.

The signing key lives in DATA_DIR/console/secret.key (created on first use), so sessions survive a
restart and every server sharing the data dir accepts them. Every visitor gets a session, signed in
or not, so that the login form itself carries a CSRF token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request, Response

COOKIE = "tuneforge_console"
LIFETIME_S = 12 * 3600  # a signed-in session lasts a working day
CSRF_FIELD = "csrf"


@dataclass(frozen=True)
class ConsoleSession:
    csrf: str
    tenancy: str | None = None  # None: not signed in
    user: str | None = None  # console username, or the API key's user OCID
    via: str | None = None  # "password" | "api-key"
    expires: float = 0.0

    @property
    def signed_in(self) -> bool:
        return self.tenancy is not None and self.expires > time.time()


def secret_key(data_dir: Path) -> bytes:
    path = data_dir / "console" / "secret.key"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # O_EXCL: two servers starting together on one data dir agree on the key the loser reads back.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_bytes()
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
        return path.read_bytes()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(key: bytes, payload: dict) -> str:
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    mac = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
    return f"{body}.{mac}"


def unsign(key: bytes, token: str) -> dict | None:
    body, _, mac = token.partition(".")
    expected = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
    if not mac or not hmac.compare_digest(mac, expected):
        return None
    try:
        payload = json.loads(_unb64(body))
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def session_key(request: Request) -> bytes:
    # Cached on the app: one read of the key file per process.
    state = request.app.state
    if getattr(state, "console_key", None) is None:
        state.console_key = secret_key(state.config.data_dir)
    return state.console_key


def load(request: Request) -> ConsoleSession:
    """The request's session; a fresh anonymous one (new CSRF token) when the cookie is missing or forged."""
    payload = unsign(session_key(request), request.cookies.get(COOKIE, "")) or {}
    try:
        found = ConsoleSession(**payload)
    except TypeError:
        found = None
    if found is None or not isinstance(found.csrf, str) or len(found.csrf) < 16:
        return ConsoleSession(csrf=secrets.token_urlsafe(24))
    if found.tenancy is not None and not found.signed_in:  # expired: keep nothing but a new token
        return ConsoleSession(csrf=secrets.token_urlsafe(24))
    return found


def save(request: Request, response: Response, session: ConsoleSession) -> None:
    response.set_cookie(
        COOKIE, sign(session_key(request), session.__dict__), max_age=LIFETIME_S, httponly=True, samesite="lax",
        secure=request.url.scheme == "https", path="/",
    )  # fmt: skip


def signed_in_as(tenancy: str, user: str, via: str) -> ConsoleSession:
    # A new CSRF token at sign-in: a token seen before login is worth nothing after it.
    return ConsoleSession(csrf=secrets.token_urlsafe(24), tenancy=tenancy, user=user, via=via, expires=time.time() + LIFETIME_S)


def csrf_ok(session: ConsoleSession, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(session.csrf, sent)
