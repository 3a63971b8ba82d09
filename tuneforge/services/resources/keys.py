"""API signing keys: register a user's public key under its OCI fingerprint (`tuneforge api-keys`)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneforge.errors import InvalidParameter
from tuneforge.store.tables import ApiKey, BearerKey

# oci/config.py validate_config: what the SDK itself accepts as a tenancy or user OCID.
OCID_PATTERN = re.compile(r"^([0-9a-zA-Z-_]+[.:])([0-9a-zA-Z-_]*[.:]){3,}([0-9a-zA-Z-_]+)$")


def load_public_key(pem: bytes) -> rsa.RSAPublicKey:
    """A PEM public key, or the public half of a PEM private key (without passphrase)."""
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        try:
            key = serialization.load_pem_private_key(pem, password=None).public_key()
        except (ValueError, TypeError) as err:
            raise InvalidParameter("public-key-file", "<file>", f"must be a PEM RSA public key ({err})") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise InvalidParameter("public-key-file", type(key).__name__, "must be an RSA key (OCI signs with rsa-sha256)")
    return key


def fingerprint(key: rsa.RSAPublicKey) -> str:
    """OCI's key fingerprint: MD5 of the DER SubjectPublicKeyInfo, as colon-separated hex."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return ":".join(f"{b:02x}" for b in hashlib.md5(der).digest())


def check_identity(tenancy: str, user: str) -> None:
    """Both must be OCIDs (what the SDK config names); checked before anything is stored or created."""
    for name, value in (("tenancy", tenancy), ("user", user)):
        if not OCID_PATTERN.match(value):
            raise InvalidParameter(name, value, "must be an OCID such as ocid1.tenancy.oc1..aaaaexample")


def add_key(session: Session, tenancy: str, user: str, pem: bytes) -> ApiKey:
    check_identity(tenancy, user)
    key = load_public_key(pem)
    fp = fingerprint(key)
    public_pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    row = ApiKey(
        key_id=f"{tenancy}/{user}/{fp}", tenancy_id=tenancy, user_id=user, fingerprint=fp, public_key_pem=public_pem.decode()
    )
    session.merge(row)
    return row


def list_keys(session: Session, tenancy: str | None = None) -> list[ApiKey]:
    stmt = select(ApiKey).order_by(ApiKey.tenancy_id, ApiKey.user_id, ApiKey.time_created)
    if tenancy:
        stmt = stmt.where(ApiKey.tenancy_id == tenancy)
    return list(session.scalars(stmt))


def remove_key(session: Session, key_id_or_fingerprint: str) -> int:
    """Remove by full keyId (tenancy/user/fingerprint) or by fingerprint; returns how many were removed."""
    rows = session.scalars(
        select(ApiKey).where((ApiKey.key_id == key_id_or_fingerprint) | (ApiKey.fingerprint == key_id_or_fingerprint))
    ).all()
    for row in rows:
        session.delete(row)
    return len(rows)


def get_key(session: Session, key_id: str) -> ApiKey | None:
    """The registered key with this keyId (tenancy/user/fingerprint), or None once it was removed."""
    return session.get(ApiKey, key_id)


def find_signer(session: Session, message: bytes, signature: bytes) -> ApiKey | None:
    """The registered key whose private half signed `message` (RSASSA-PKCS1-v1_5 with SHA-256, as
    OCI signs requests), or None. Every key is tried: a browser cannot compute OCI's MD5
    fingerprint to name its key, and an RSA verification costs microseconds."""
    for row in session.scalars(select(ApiKey)):
        public_key = serialization.load_pem_public_key(row.public_key_pem.encode())
        try:
            public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            continue
        return row
    return None


# ---- bearer keys for the OpenAI-compatible API ----------------------------------------------

BEARER_PREFIX = "tf-"


def create_bearer(session: Session, tenancy: str, user: str) -> tuple[BearerKey, str]:
    """A new bearer key for `tenancy`/`user`: (its row, the token, which is shown once and never stored)."""
    check_identity(tenancy, user)
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    row = BearerKey(key_id=key_id, tenancy_id=tenancy, user_id=user, secret_sha256=hashlib.sha256(secret.encode()).hexdigest())
    session.add(row)
    return row, f"{BEARER_PREFIX}{key_id}-{secret}"


def verify_bearer(session: Session, token: str) -> BearerKey | None:
    """The key a bearer token belongs to, or None (unknown, malformed or removed)."""
    if not token.startswith(BEARER_PREFIX) or len(token) > 128:
        return None
    key_id, _, secret = token[len(BEARER_PREFIX) :].partition("-")
    row = session.get(BearerKey, key_id) if key_id and secret else None
    if row is None or not hmac.compare_digest(row.secret_sha256, hashlib.sha256(secret.encode()).hexdigest()):
        return None
    return row


def list_bearers(session: Session, tenancy: str | None = None) -> list[BearerKey]:
    stmt = select(BearerKey).order_by(BearerKey.tenancy_id, BearerKey.time_created)
    if tenancy:
        stmt = stmt.where(BearerKey.tenancy_id == tenancy)
    return list(session.scalars(stmt))


def remove_bearer(session: Session, key_id: str) -> int:
    row = session.get(BearerKey, key_id.removeprefix(BEARER_PREFIX).partition("-")[0])
    if row is None:
        return 0
    session.delete(row)
    return 1
