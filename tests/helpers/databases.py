"""The store of a test server: the default SQLite file, or a PostgreSQL database of its own on the
local server (created for the test and dropped after it)."""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager

import pytest

PG_ADMIN_URL = os.environ.get("TUNEFORGE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@contextmanager
def database(kind: str):
    """None (the default SQLite file in the data dir) or the URL of a new PostgreSQL database."""
    if kind == "sqlite":
        yield None
        return
    from sqlalchemy import create_engine, text

    name = f"tuneforge_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as err:  # pragma: no cover - depends on the machine
        pytest.skip(f"PostgreSQL not available at {PG_ADMIN_URL}: {err}")
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
