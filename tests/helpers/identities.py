"""OCI API-key identities for the tests: a tenancy, a user and an RSA key pair, as `oci setup keys` makes."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass


@dataclass
class Identity:
    tenancy: str
    user: str
    private_pem: str
    public_pem: bytes
    fingerprint: str

    def config(self) -> dict:
        return {
            "user": self.user,
            "tenancy": self.tenancy,
            "fingerprint": self.fingerprint,
            "key_content": self.private_pem,
            "region": "us-chicago-1",
        }


def new_identity(name: str) -> Identity:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    public = key.public_key()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return Identity(
        tenancy=f"ocid1.tenancy.oc1..aaaa{name}{uuid.uuid4().hex[:8]}",
        user=f"ocid1.user.oc1..aaaa{name}",
        private_pem=pem,
        public_pem=public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        fingerprint=":".join(f"{b:02x}" for b in hashlib.md5(der).digest()),
    )
