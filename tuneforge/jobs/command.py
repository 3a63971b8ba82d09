"""A job's folder.

A job folder holds the dataset snapshot (`dataset.jsonl`; and `validation.jsonl` where the job has its own
validation dataset, as an OpenAI job's validation_file), the trainer's logs per attempt and the run
folder (`output/`, read through `tuneforge.run_folder`). The trainer's command line plus the run folder
are the whole contract between the service and the engine, whichever executor starts the trainer
(tuneforge/train_command.py builds the command line)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.run_folder import RunFolder
from tuneforge.train_command import train_args

DATASET_JSONL = "dataset.jsonl"
VALIDATION_JSONL = "validation.jsonl"  # with it, the whole dataset trains and this is the validation split


def job_train_args(
    *,
    base_model_id: str,
    training_config: dict[str, Any],
    job_dir: Path,
    weights: str | None,
    seed: int,
    resume: bool,
    base_weights: Path | None = None,
) -> list[str]:
    """`tuneforge train ...` for a job (the arguments after `python -m tuneforge`). `base_weights`: the
    folder of an imported base model, which the job trains (named by its id in model.json); the
    server's `weights` (`serve --weights`, the stand-in switch) apply to catalog ids only."""
    return train_args(
        base_model_id=str(base_weights) if base_weights is not None else base_model_id,
        base_model_name=base_model_id if base_weights is not None else None,
        dataset=job_dir / DATASET_JSONL,
        validation_dataset=job_dir / VALIDATION_JSONL if (job_dir / VALIDATION_JSONL).is_file() else None,
        output=run_folder(job_dir).path,
        training_config=training_config,
        seed=seed,
        weights=weights if base_weights is None else None,
        resume=resume,
    )


def run_folder(job_dir: Path) -> RunFolder:
    return RunFolder(job_dir / "output")


def log_file(job_dir: Path, attempt: int, stream: str, rank: int | None = None) -> Path:
    """The trainer's stdout/stderr of one attempt (per rank when several processes train)."""
    return job_dir / (f"attempt-{attempt}.{stream}" if rank is None else f"attempt-{attempt}.rank-{rank}.{stream}")
