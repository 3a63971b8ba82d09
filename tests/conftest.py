"""Fixtures shared by every test folder. Only fixtures and hooks live in conftest.py files: helpers
are modules under tests/helpers/ (tests/ is on sys.path through pyproject's pytest `pythonpath`)."""

from pathlib import Path

import pytest
from helpers.tiny_models import save_tiny_checkpoint, write_parity_dataset


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "llama", "llama")


@pytest.fixture(scope="session")
def tiny_cohere(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "cohere", "cohere")


@pytest.fixture
def parity_dataset(tmp_path) -> Path:
    return write_parity_dataset(tmp_path / "parity.jsonl")


# The longest files first (each takes minutes on 2 cores: they train through servers, Ray or the
# stand-in): `make test` hands whole files to its workers in this order, so the long ones run side by
# side from the start instead of leaving one worker alone at the end. Only the order changes.
LONGEST_FIRST = (
    "service/test_stand_in_hosting.py",
    "service/test_sweeps_service.py",
    "service/test_ray_executor.py",
    "test_cli_train.py",
    "sweeps/test_sweep_runs.py",
    "service/test_durability.py",
    "test_stand_in.py",
    "web/test_browser.py",
    "sweeps/test_mlflow_and_pruning.py",
    "service/test_inference.py",
    "service/test_several_servers.py",
    "service/test_oci_cli.py",
)


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        path = item.path.as_posix()
        return next((i for i, name in enumerate(LONGEST_FIRST) if path.endswith("tests/" + name)), len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: the order within a file, and of the other files, is kept
