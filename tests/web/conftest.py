"""Console fixtures: an in-process app for TestClient tests, signed in as one of two users in two
tenancies. The browser tests start live servers with tests/helpers/servers.py, as tests/service does."""

from __future__ import annotations

import pytest
from helpers.console import PASSWORD, TENANCY_A, TENANCY_B, Console, signed_in


@pytest.fixture
def console_app(tmp_path):
    """The service app (no workers: jobs stay queued) over a fresh SQLite store, with two console
    users in two tenancies."""
    from tuneforge.api.app import create_app
    from tuneforge.services.config import ServiceConfig
    from tuneforge.services.context import Services
    from tuneforge.store.db import default_url, open_store
    from tuneforge.web.users import add_user

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    config = ServiceConfig(data_dir=data_dir, workers=0)
    app = create_app(Services(config, open_store(default_url(data_dir))))
    add_user(data_dir, TENANCY_A, "alice", PASSWORD)
    add_user(data_dir, TENANCY_B, "bob", PASSWORD)
    return app, data_dir


@pytest.fixture
def alice(console_app) -> Console:
    return signed_in(*console_app, "alice")


@pytest.fixture
def bob(console_app) -> Console:
    return signed_in(*console_app, "bob")


@pytest.fixture
def anonymous(console_app) -> Console:
    return signed_in(*console_app, None)
