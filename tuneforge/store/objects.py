"""Object Storage on the local disk: metadata in the store, bytes in files named by a random key.

Object names never become paths (they may contain "/" or ".."), so nothing can escape the data dir.
Each tenancy has one namespace, derived from its OCID."""

from __future__ import annotations

import hashlib
from pathlib import Path

from sqlalchemy.orm import Session

from tuneforge.store.tables import ObjectRow


def namespace_for(tenancy_id: str) -> str:
    return "tf" + hashlib.sha256(tenancy_id.encode()).hexdigest()[:10]


def blob_path(objects_dir: Path, storage_key: str) -> Path:
    # storage_key is always a hex token generated here, never user input.
    return objects_dir / storage_key[:2] / storage_key


def find(session: Session, namespace: str, bucket: str, name: str) -> ObjectRow | None:
    return session.get(ObjectRow, (namespace, bucket, name))
