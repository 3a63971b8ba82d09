"""The store's schema is exactly what the shipped migrations create (on SQLite and PostgreSQL), and
`tuneforge api-keys` registers keys under OCI's fingerprint."""

from __future__ import annotations

import subprocess
import sys

from helpers.databases import database
from helpers.identities import new_identity
from helpers.servers import ROOT


def test_migrations_match_the_tables(backend, tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from tuneforge.store.db import default_url, make_engine, migrate
    from tuneforge.store.tables import Base

    with database(backend) as url:
        engine = make_engine(url or default_url(tmp_path))
        migrate(engine)
        migrate(engine)  # applying again on start is a no-op
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        engine.dispose()
    assert diff == []


def _cli(tmp_path, *args):
    return subprocess.run(
        [sys.executable, "-m", "tuneforge", "api-keys", *args, "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def test_api_keys_add_list_remove(tmp_path):
    me = new_identity("cli")
    pem = tmp_path / "key.pem"
    pem.write_bytes(me.public_pem)
    added = _cli(tmp_path, "add", "--tenancy", me.tenancy, "--user", me.user, "--public-key-file", str(pem))
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == me.fingerprint  # the SDK config's fingerprint, computed as OCI does
    listed = _cli(tmp_path, "list")
    assert f"{me.tenancy}  {me.user}  {me.fingerprint}" in listed.stdout
    assert _cli(tmp_path, "remove", me.fingerprint).returncode == 0
    assert me.fingerprint not in _cli(tmp_path, "list").stdout
    assert _cli(tmp_path, "remove", me.fingerprint).returncode != 0


def test_api_keys_add_rejects_bad_input(tmp_path):
    not_a_key = tmp_path / "nope.pem"
    not_a_key.write_text("hello")
    bad = _cli(
        tmp_path,
        "add",
        "--tenancy",
        "ocid1.tenancy.oc1..aaaa",
        "--user",
        "ocid1.user.oc1..aaaa",
        "--public-key-file",
        str(not_a_key),
    )
    assert bad.returncode == 2 and "PEM" in bad.stderr
    pem = tmp_path / "key.pem"
    pem.write_bytes(new_identity("x").public_pem)
    bad = _cli(tmp_path, "add", "--tenancy", "not-an-ocid", "--user", "ocid1.user.oc1..aaaa", "--public-key-file", str(pem))
    assert bad.returncode == 2 and "tenancy" in bad.stderr


def test_a_refused_identity_creates_no_data_folder(tmp_path):
    """`api-keys create-bearer --tenancy T` is refused before anything is written: no empty data folder."""
    data_dir = tmp_path / "tf-data"
    for args in (("create-bearer",), ("add", "--public-key-file", __file__)):
        refused = subprocess.run(
            [sys.executable, "-m", "tuneforge", "api-keys", *args, "--tenancy", "T", "--user", "U", "--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        assert refused.returncode == 2 and "tenancy: 'T' is not allowed" in refused.stderr, refused.stderr
        assert not data_dir.exists()
