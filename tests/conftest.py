"""Shared test setup. Kept minimal; fixtures used by several test files may be appended here."""

import sys
from pathlib import Path

# Lets tests import helper modules that live beside them, e.g. `from tiny_models import ...`.
sys.path.insert(0, str(Path(__file__).parent))

import pytest
from tiny_models import write_parity_dataset


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    from tiny_models import save_tiny_checkpoint

    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "llama", "llama")


@pytest.fixture(scope="session")
def tiny_cohere(tmp_path_factory) -> Path:
    from tiny_models import save_tiny_checkpoint

    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "cohere", "cohere")


@pytest.fixture
def parity_dataset(tmp_path) -> Path:
    return write_parity_dataset(tmp_path / "parity.jsonl")
