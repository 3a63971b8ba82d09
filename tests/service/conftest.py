"""Live `tuneforge serve` processes on 127.0.0.1, driven with the real `oci` SDK.

Every test that takes `service` runs once on SQLite and once on a fresh PostgreSQL database
(created for the session on the local server and dropped at the end). The tools the tests call
(servers, identities, clients, the fine-tuning steps) are modules under tests/helpers/."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.identities import Identity, new_identity
from helpers.servers import running_service
from helpers.tiny_models import save_tiny_checkpoint


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def tiny_weights(tiny_llama) -> Path:
    return tiny_llama


@pytest.fixture(scope="session")
def slower_weights(tmp_path_factory) -> Path:
    """A still-small model (hidden 128, 4 layers) whose steps take a visible fraction of a second,
    for tests that must act while a job is mid-training."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("slower") / "llama", "llama", hidden=128, layers=4)


@pytest.fixture(scope="session")
def service(backend, tmp_path_factory, tiny_weights):
    """One server for the session (per backend), shared by the tests that do not restart it."""
    with running_service(backend, tmp_path_factory.mktemp("service"), tiny_weights) as svc:
        yield svc


@pytest.fixture
def fresh_service(backend, tmp_path_factory, tiny_weights):
    """A server and database of its own, not yet started (for tests that kill and restart it)."""
    with running_service(backend, tmp_path_factory.mktemp("fresh"), tiny_weights, start=False) as svc:
        yield svc


@pytest.fixture(scope="session")
def alice(service) -> Identity:
    identity = new_identity("alice")
    service.register(identity)
    return identity


@pytest.fixture(scope="session")
def bob(service) -> Identity:
    identity = new_identity("bob")
    service.register(identity)
    return identity
