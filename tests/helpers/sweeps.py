"""The sweep tests' tools: `tuneforge sweep` as a subprocess on the tiny Llama, a small learnable
dataset, and reading the JSON files a running sweep writes."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

from helpers.tiny_models import LLAMA


def write_threshold_dataset(path: Path, n: int, seed: int = 1) -> Path:
    """Is the number above 50? One-word completions: a tiny model learns it in a few dozen steps."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(n):
            a = rng.randint(0, 99)
            f.write(json.dumps({"prompt": f"Is {a} above 50?", "completion": "yes" if a > 50 else "no"}) + "\n")
    return path


def sweep_args(tiny_llama: Path, dataset: Path, output: Path, flags: str = "", *extra: str) -> list[str]:
    """`tuneforge sweep` on the tiny Llama; `flags` is split on spaces, `extra` is taken as it is."""
    # --device cpu: the sweep process then never imports torch to count GPUs
    base = [sys.executable, "-m", "tuneforge", "sweep", "--base-model", LLAMA, "--device", "cpu", "--weights", str(tiny_llama)]
    return [*base, "--dataset", str(dataset), "--output", str(output), *flags.split(), *extra]


def run(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=600, **kw)


def read_json(path: Path) -> dict | None:
    """The file's JSON, or None while it does not exist or is half written."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
