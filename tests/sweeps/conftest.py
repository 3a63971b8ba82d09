"""Helpers for the sweep tests: the CLI as a subprocess, a small learnable dataset, polling."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

LLAMA = "meta.llama-3.3-70b-instruct"


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


def wait_for(condition, timeout: float = 180.0, what: str = "a condition"):
    """Poll `condition` until it returns something truthy (no sleep stands in for synchronisation)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
