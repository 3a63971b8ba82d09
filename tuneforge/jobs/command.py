"""The trainer's command line and a job's folder.

A job folder holds the dataset snapshot (`dataset.jsonl`), the trainer's logs per attempt and the run
folder (`output/`, read through `tuneforge.run_folder`): the engine's CLI plus the run folder are the
whole contract between the service and the engine, whichever executor starts the trainer."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from tuneforge.hyperparams import SNAKE_NAMES
from tuneforge.run_folder import RunFolder


def train_args(
    *, base_model_id: str, training_config: dict[str, Any], job_dir: Path, weights: str | None, seed: int, resume: bool
) -> list[str]:
    """`tuneforge train ...` for a job (the arguments after `python -m tuneforge`)."""
    args = [
        "train",
        "--base-model",
        base_model_id,
        "--dataset",
        str(job_dir / "dataset.jsonl"),
        "--output",
        str(run_folder(job_dir).path),
        "--seed",
        str(seed),
        "--json",
    ]
    if weights:
        args += ["--weights", weights]
    if resume:
        args.append("--resume")
    for name, value in training_config.items():
        if name in SNAKE_NAMES:  # skips trainingConfigType
            args += ["--" + SNAKE_NAMES[name].replace("_", "-"), repr(value) if isinstance(value, float) else str(value)]
    return args


def launched(args: list[str], parent_pid: int, death_signal: str = "TERM") -> list[str]:
    """The trainer run through the launcher that ties its life to `parent_pid`'s (tuneforge.jobs.launch)."""
    return [sys.executable, "-m", "tuneforge.jobs.launch", str(parent_pid), f"--signal={death_signal}", "--", *args]


def run_folder(job_dir: Path) -> RunFolder:
    return RunFolder(job_dir / "output")


def log_file(job_dir: Path, attempt: int, stream: str, rank: int | None = None) -> Path:
    """The trainer's stdout/stderr of one attempt (per rank when several processes train)."""
    return job_dir / (f"attempt-{attempt}.{stream}" if rank is None else f"attempt-{attempt}.rank-{rank}.{stream}")
