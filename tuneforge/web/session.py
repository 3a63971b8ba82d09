"""Console sessions: an HMAC-signed cookie carrying the session's CSRF token and, once signed in,
a session id whose record lives on the server, so that signing out, removing a console user or an
API key ends the session everywhere, and a copied cookie is worth nothing afterwards.

Records are files in DATA_DIR/console/sessions (one per signed-in session, named by a hash of its
id, JSON inside), not a table: the console keeps its own state out of the service's schema, as
users.json does, and every server that shares a database shares the data dir too (docs/service.md).
A file per session needs no lock: a record is written once (temporary file, then rename) and ended
by unlinking it, both atomic, so two servers never see half a record or fight over one file.

The signing key lives in DATA_DIR/console/secret.key (created on first use). Every visitor gets a
cookie, signed in or not, so that the login form itself carries a CSRF token.
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
CSRF_HEADER = "x-csrf-token"  # the page's fetch() POSTs carry the token here


@dataclass(frozen=True)
class ConsoleSession:
    csrf: str
    sid: str | None = None  # None: not signed in
    tenancy: str | None = None
    user: str | None = None  # console username, or the API key's user OCID
    via: str | None = None  # "password" | "api-key"
    key_id: str | None = None  # the API key's keyId (tenancy/user/fingerprint) when via == "api-key"
    expires: float = 0.0
    ended: bool = False  # the cookie named a session that has ended (signed out, removed, expired)

    @property
    def signed_in(self) -> bool:
        return self.sid is not None and self.expires > time.time()


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


# ---- server-side records --------------------------------------------------------------------


def sessions_dir(data_dir: Path) -> Path:
    return data_dir / "console" / "sessions"


def _record_path(data_dir: Path, sid: str) -> Path:
    # A hash, not the id: a listing of the folder (a backup, an operator) shows no usable session.
    return sessions_dir(data_dir) / hashlib.sha256(sid.encode()).hexdigest()[:40]


def _write_record(data_dir: Path, sid: str, record: dict) -> None:
    path = _record_path(data_dir, sid)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    os.replace(tmp, path)


def _read_record(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def end_sessions(data_dir: Path, *, via: str, user: str) -> int:
    """End every session of a console user (via "password") or of an API key's user; returns how many."""
    ended = 0
    for path in _records(data_dir):
        record = _read_record(path)
        if record is not None and record.get("via") == via and record.get("user") == user:
            path.unlink(missing_ok=True)
            ended += 1
    return ended


def _records(data_dir: Path) -> list[Path]:
    try:
        return [p for p in sessions_dir(data_dir).iterdir() if not p.name.startswith(".")]
    except FileNotFoundError:
        return []


def _sweep_expired(data_dir: Path) -> None:
    """Remove records past their expiry (done at each sign-in: the folder holds live sessions only)."""
    now = time.time()
    for path in _records(data_dir):
        record = _read_record(path)
        if record is None or float(record.get("expires") or 0) <= now:
            path.unlink(missing_ok=True)


# ---- the request's session ------------------------------------------------------------------


def session_key(request: Request) -> bytes:
    # Cached on the app: one read of the key file per process.
    state = request.app.state
    if getattr(state, "console_key", None) is None:
        state.console_key = secret_key(state.config.data_dir)
    return state.console_key


def _data_dir(request: Request) -> Path:
    return request.app.state.config.data_dir


def _anonymous(ended: bool = False) -> ConsoleSession:
    return ConsoleSession(csrf=secrets.token_urlsafe(24), ended=ended)


def load(request: Request) -> ConsoleSession:
    """The request's session (read once per request): signed in while its server-side record
    exists and has not expired; otherwise a fresh anonymous one with a new CSRF token."""
    cached = getattr(request.state, "console_session", None)
    if cached is None:
        cached = request.state.console_session = _load(request)
    return cached


def _load(request: Request) -> ConsoleSession:
    payload = unsign(session_key(request), request.cookies.get(COOKIE, "")) or {}
    csrf, sid = payload.get("csrf"), payload.get("sid")
    if not isinstance(csrf, str) or len(csrf) < 16:
        return _anonymous()
    if sid is None:
        return ConsoleSession(csrf=csrf)
    record = _read_record(_record_path(_data_dir(request), str(sid)))
    if record is None or float(record.get("expires") or 0) <= time.time():
        return _anonymous(ended=True)
    return ConsoleSession(
        csrf=csrf,
        sid=str(sid),
        tenancy=record.get("tenancy"),
        user=record.get("user"),
        via=record.get("via"),
        key_id=record.get("keyId"),
        expires=float(record["expires"]),
    )


def save(request: Request, response: Response, session: ConsoleSession) -> None:
    token = sign(session_key(request), {"csrf": session.csrf, "sid": session.sid})
    secure = request.url.scheme == "https"
    response.set_cookie(COOKIE, token, max_age=LIFETIME_S, httponly=True, samesite="lax", secure=secure, path="/")


def start(request: Request, tenancy: str, user: str, via: str, key_id: str | None = None) -> ConsoleSession:
    """A new signed-in session, recorded on the server. New CSRF token too: a token seen before
    sign-in is worth nothing after it."""
    data_dir = _data_dir(request)
    _sweep_expired(data_dir)
    sid, expires = secrets.token_urlsafe(32), time.time() + LIFETIME_S
    _write_record(data_dir, sid, {"tenancy": tenancy, "user": user, "via": via, "keyId": key_id, "expires": expires})
    csrf = secrets.token_urlsafe(24)
    request.state.console_session = ConsoleSession(csrf, sid, tenancy, user, via, key_id, expires)
    return request.state.console_session


def end(request: Request, session: ConsoleSession) -> ConsoleSession:
    """Sign out: the record goes, so this cookie (or a copy of it) never signs anyone in again."""
    if session.sid is not None:
        _record_path(_data_dir(request), session.sid).unlink(missing_ok=True)
    request.state.console_session = _anonymous()
    return request.state.console_session


def end_current(request: Request) -> None:
    """The session's record is gone for a reason found elsewhere (its user or key was removed)."""
    end(request, load(request))
    request.state.console_session = _anonymous(ended=True)


def csrf_ok(session: ConsoleSession, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(session.csrf, sent)
