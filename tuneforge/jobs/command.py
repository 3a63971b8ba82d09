"""The training subprocess's command line and a job's folder.

A job folder holds the dataset snapshot (`dataset.jsonl`), the trainer's logs per attempt and the run
folder (`output/`, read through `tuneforge.run_folder`): the engine's CLI plus the run folder are the
whole contract between the service and the engine."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from tuneforge.hyperparams import SNAKE_NAMES
from tuneforge.run_folder import RunFolder


def train_command(
    *, base_model_id: str, training_config: dict[str, Any], job_dir: Path, weights: str | None, seed: int, resume: bool,
    threads: int | None = None,
) -> list[str]:
    """`python -m tuneforge train ...` for a job, run through the launcher that ties its life to ours."""
    args = [
        "train", "--base-model", base_model_id, "--dataset", str(job_dir / "dataset.jsonl"),
        "--output", str(run_folder(job_dir).path), "--seed", str(seed), "--json",
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


def run_folder(job_dir: Path) -> RunFolder:
    return RunFolder(job_dir / "output")
