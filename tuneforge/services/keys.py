"""API signing keys: register a user's public key under its OCI fingerprint (`tuneforge api-keys`)."""

from __future__ import annotations

import hashlib
import re

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneforge.errors import InvalidParameter
from tuneforge.store.tables import ApiKey

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


def add_key(session: Session, tenancy: str, user: str, pem: bytes) -> ApiKey:
    for name, value in (("tenancy", tenancy), ("user", user)):
        if not OCID_PATTERN.match(value):
            raise InvalidParameter(name, value, "must be an OCID such as ocid1.tenancy.oc1..aaaaexample")
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
