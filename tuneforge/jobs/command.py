"""The training subprocess's command line: the engine's CLI is the contract between service and engine."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from tuneforge.hyperparams import SNAKE_NAMES


def train_command(
    *, base_model_id: str, training_config: dict[str, Any], job_dir: Path, weights: str | None, seed: int, resume: bool,
    threads: int | None = None,
) -> list[str]:
    """`python -m tuneforge train ...` for a job, run through the launcher that ties its life to ours."""
    args = [
        "train", "--base-model", base_model_id, "--dataset", str(job_dir / "dataset.jsonl"),
        "--output", str(output_dir(job_dir)), "--seed", str(seed), "--json",
    ]  # fmt: skip
    if weights:
        args += ["--weights", weights]
    if resume:
        args.append("--resume")
    if threads:
        args += ["--threads", str(threads)]
    for name, value in training_config.items():
        if name in SNAKE_NAMES:  # skips trainingConfigType
            args += ["--" + SNAKE_NAMES[name].replace("_", "-"), repr(value) if isinstance(value, float) else str(value)]
    return [sys.executable, "-m", "tuneforge.jobs.launch", str(os.getpid()), "--", *args]


def output_dir(job_dir: Path) -> Path:
    return job_dir / "output"


def can_resume(job_dir: Path) -> bool:
    """A previous attempt left a checkpoint (the engine writes one when stopped by SIGTERM), or it
    finished (model.json) before its server saw it exit: `train --resume` then returns that result."""
    checkpoint = output_dir(job_dir) / "checkpoint"
    return (checkpoint.is_dir() and any(checkpoint.iterdir())) or (output_dir(job_dir) / "model.json").is_file()
