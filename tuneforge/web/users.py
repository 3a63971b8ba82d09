"""Who may sign in to the console: console users (a username and password bound to one tenancy,
kept in DATA_DIR/console/users.json) or the holder of an API signing key registered with
`tuneforge api-keys add` (the browser signs a server challenge; the private key never leaves it).

A file rather than a table: the console must not change the service's schema, and servers that
share a database also share the data dir (docs/service.md). users.json is rewritten under a lock
(`fcntl.flock` on a lock file beside it) and published by rename, so two `console-users add` at
once both land and a reader never sees half a file. Removing a user, or giving it a new password,
ends its sessions (session.py). A challenge signs in once: its nonce is marked spent in
DATA_DIR/console/challenges (a file created with O_EXCL, atomic across servers) and a replayed
signature is refused.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from tuneforge.errors import InvalidParameter
from tuneforge.services.resources import keys
from tuneforge.services.resources.keys import OCID_PATTERN
from tuneforge.web import session as sessions

USERNAME = re.compile(r"^[A-Za-z0-9._@+-]{1,128}$")
MIN_PASSWORD = 8
# scrypt as the stdlib offers it; n=2**14 costs ~50 ms, enough to make guessing slow.
SCRYPT = dict(n=2**14, r=8, p=1, dklen=32)
CHALLENGE_TTL_S = 300


def users_file(data_dir: Path) -> Path:
    return data_dir / "console" / "users.json"


def _read(data_dir: Path) -> dict[str, dict]:
    try:
        return json.loads(users_file(data_dir).read_text())
    except FileNotFoundError:
        return {}


@contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    """Read-modify-write of users.json by one process at a time (on this host or over NFS, where flock is lockf)."""
    lock = users_file(data_dir).with_name(".users.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _write(data_dir: Path, users: dict[str, dict]) -> None:
    path = users_file(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".users.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(users, f, indent=1, sort_keys=True)
    os.replace(tmp, path)  # readers see the old file or the new one, never half of one


def _hash(password: str, salt: bytes) -> str:
    return hashlib.scrypt(password.encode(), salt=salt, **SCRYPT).hex()


def add_user(data_dir: Path, tenancy: str, username: str, password: str) -> None:
    """Create or replace (new password) a console user of `tenancy`."""
    if not OCID_PATTERN.match(tenancy):
        raise InvalidParameter("tenancy", tenancy, "must be an OCID such as ocid1.tenancy.oc1..aaaaexample")
    if not USERNAME.match(username):
        raise InvalidParameter("username", username, "1-128 letters, digits or . _ @ + -")
    if len(password) < MIN_PASSWORD:
        raise InvalidParameter("password", "<hidden>", f"must have at least {MIN_PASSWORD} characters")
    salt = secrets.token_bytes(16)
    digest = _hash(password, salt)
    with _locked(data_dir):
        users = _read(data_dir)
        replaced = username in users
        users[username] = {"tenancy": tenancy, "salt": salt.hex(), "scrypt": digest, "created": int(time.time())}
        _write(data_dir, users)
    if replaced:  # a new password (or tenancy): sessions signed in with the old one end
        sessions.end_sessions(data_dir, via="password", user=username)


def remove_user(data_dir: Path, username: str) -> bool:
    """Remove a console user and end its sessions at once (on every server sharing the data dir)."""
    with _locked(data_dir):
        users = _read(data_dir)
        if users.pop(username, None) is None:
            return False
        _write(data_dir, users)
    sessions.end_sessions(data_dir, via="password", user=username)
    return True


def list_users(data_dir: Path) -> list[tuple[str, str]]:
    """(username, tenancy) pairs, sorted by tenancy then username."""
    return sorted(((name, u["tenancy"]) for name, u in _read(data_dir).items()), key=lambda p: (p[1], p[0]))


def user_tenancy(data_dir: Path, username: str) -> str | None:
    """The tenancy of an existing console user; None once the user was removed."""
    user = _read(data_dir).get(username)
    return user["tenancy"] if user else None


def check_password(data_dir: Path, username: str, password: str) -> str | None:
    """The user's tenancy if the password is right, else None (same work either way)."""
    user = _read(data_dir).get(username)
    salt = bytes.fromhex(user["salt"]) if user else b"no-such-user-salt"
    digest = _hash(password, salt)  # computed even for unknown users: the timing tells nothing
    if user and hmac.compare_digest(digest, user["scrypt"]):
        return user["tenancy"]
    return None


# ---- API-key sign-in ------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyHolder:
    tenancy: str
    user: str
    key_id: str


class KeySignInRefused(Exception):
    """Why a key sign-in was refused, as a code the login page maps to a fixed text."""

    def __init__(self, code: str):
        super().__init__(code)
        self.code = code


def new_challenge(key: bytes) -> str:
    """A challenge the server can recognise later without storing it: time.nonce.mac."""
    body = f"tuneforge-console-login.{int(time.time())}.{secrets.token_urlsafe(16)}"
    mac = hmac.new(key, body.encode(), hashlib.sha256).hexdigest()[:32]
    return f"{body}.{mac}"


def _check_challenge(key: bytes, challenge: str) -> None:
    body, _, mac = challenge.rpartition(".")
    if not hmac.compare_digest(mac, hmac.new(key, body.encode(), hashlib.sha256).hexdigest()[:32]):
        raise KeySignInRefused("key-page")
    try:
        issued = int(body.split(".")[1])
    except (IndexError, ValueError):
        raise KeySignInRefused("key-page") from None
    if not 0 <= time.time() - issued <= CHALLENGE_TTL_S:
        raise KeySignInRefused("key-expired")


def _spend(data_dir: Path, challenge: str) -> None:
    """Mark the challenge used; refuse it if it already was (O_EXCL: one winner across servers).
    Markers older than the challenges' lifetime are swept: an expired challenge is refused anyway."""
    folder = data_dir / "console" / "challenges"
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in folder.iterdir():
        try:
            if now - old.stat().st_mtime > 2 * CHALLENGE_TTL_S:
                old.unlink(missing_ok=True)
        except FileNotFoundError:
            continue
    marker = folder / hashlib.sha256(challenge.encode()).hexdigest()[:40]
    try:
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        raise KeySignInRefused("key-used") from None


def check_key_sign_in(db: Session, data_dir: Path, key: bytes, challenge: str, signature_b64: str) -> KeyHolder:
    """The registered key that signed this server's fresh, unused `challenge`; KeySignInRefused
    (with the reason's code) otherwise. A challenge is spent only by a valid signature, so nobody
    can burn another visitor's challenge with garbage."""
    _check_challenge(key, challenge)
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except ValueError:
        raise KeySignInRefused("key-signature") from None
    if not signature:
        raise KeySignInRefused("key-signature")
    row = keys.find_signer(db, challenge.encode(), signature)
    if row is None:
        raise KeySignInRefused("key-unknown")
    _spend(data_dir, challenge)
    return KeyHolder(row.tenancy_id, row.user_id, row.key_id)
