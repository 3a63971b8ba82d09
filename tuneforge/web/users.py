"""Who may sign in to the console: console users (a username and password bound to one tenancy,
kept in DATA_DIR/console/users.json) or the holder of an API signing key registered with
`tuneforge api-keys add` (the browser signs a server challenge; the private key never leaves it).

A file rather than a table: the console must not change the service's schema, and servers that
share a database also share the data dir (docs/service.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneforge.services.keys import OCID_PATTERN
from tuneforge.errors import InvalidParameter
from tuneforge.store.tables import ApiKey

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
    users = _read(data_dir)
    salt = secrets.token_bytes(16)
    users[username] = {"tenancy": tenancy, "salt": salt.hex(), "scrypt": _hash(password, salt), "created": int(time.time())}
    _write(data_dir, users)


def remove_user(data_dir: Path, username: str) -> bool:
    users = _read(data_dir)
    if users.pop(username, None) is None:
        return False
    _write(data_dir, users)
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
    fingerprint: str


def new_challenge(key: bytes) -> str:
    """A challenge the server can recognise later without storing it: time.nonce.mac."""
    body = f"tuneforge-console-login.{int(time.time())}.{secrets.token_urlsafe(16)}"
    mac = hmac.new(key, body.encode(), hashlib.sha256).hexdigest()[:32]
    return f"{body}.{mac}"


def _challenge_fresh(key: bytes, challenge: str) -> bool:
    body, _, mac = challenge.rpartition(".")
    if not hmac.compare_digest(mac, hmac.new(key, body.encode(), hashlib.sha256).hexdigest()[:32]):
        return False
    try:
        issued = int(body.split(".")[1])
    except (IndexError, ValueError):
        return False
    return 0 <= time.time() - issued <= CHALLENGE_TTL_S


def verify_key_signature(session: Session, key: bytes, challenge: str, signature_b64: str) -> KeyHolder | None:
    """The registered key that signed `challenge` (RSASSA-PKCS1-v1_5 with SHA-256, as OCI signs
    requests), or None. Every registered key is tried: the browser cannot compute OCI's MD5
    fingerprint, and RSA verification costs microseconds."""
    if not _challenge_fresh(key, challenge):
        return None
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except ValueError:
        return None
    for row in session.scalars(select(ApiKey)):
        public_key = serialization.load_pem_public_key(row.public_key_pem.encode())
        try:
            public_key.verify(signature, challenge.encode(), padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            continue
        return KeyHolder(row.tenancy_id, row.user_id, row.fingerprint)
    return None
