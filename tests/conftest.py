"""Shared test setup. Kept minimal; fixtures used by several test files may be appended here."""

import sys
from pathlib import Path

# Lets tests import helper modules that live beside them, e.g. `from tiny_models import ...`.
sys.path.insert(0, str(Path(__file__).parent))

import json
import random

import pytest


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    from tiny_models import save_tiny_checkpoint

    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "llama", "llama")


@pytest.fixture(scope="session")
def tiny_cohere(tmp_path_factory) -> Path:
    from tiny_models import save_tiny_checkpoint

    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "cohere", "cohere")


def write_parity_dataset(path: Path, n: int = 48, seed: int = 0) -> Path:
    """A learnable toy task: is the number odd? Completions are one word."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(n):
            a = rng.randint(0, 99)
            f.write(json.dumps({"prompt": f"Is {a} odd?", "completion": "yes" if a % 2 else "no"}) + "\n")
    return path


@pytest.fixture
def parity_dataset(tmp_path) -> Path:
    return write_parity_dataset(tmp_path / "parity.jsonl")
