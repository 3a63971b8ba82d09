"""OCIDs in OCI's shape: ocid1.<resource type>.oc1.<region>.<unique part>."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_lowercase + string.digits


def new_ocid(resource_type: str, region: str) -> str:
    # 60 random base-36 characters, like OCI's unique part (about 310 bits: never collides).
    unique = "amaaaaaa" + "".join(secrets.choice(_ALPHABET) for _ in range(52))
    return f"ocid1.{resource_type}.oc1.{region}.{unique}"


MODEL = "generativeaimodel"
CLUSTER = "generativeaidedicatedaicluster"
ENDPOINT = "generativeaiendpoint"
WORK_REQUEST = "generativeaiworkrequest"
IMPORTED_MODEL = "generativeaiimportedmodel"
