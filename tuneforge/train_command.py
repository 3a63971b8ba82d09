"""The trainer's command line: with the run folder (tuneforge/run_folder.py), the whole contract between
the engine and whatever starts it (the service's executors, local and Ray, and sweeps).

A trainer is `python -m tuneforge train ...`, built here by `train_args` and nowhere else, started through
the launcher that ties its life to its parent's (`launched`). Its hyperparameters travel as text, one
flag per camelCase API field (`--learning-rate 0.0002`), and are read back by `parse_hyperparameters`,
the one parser of the CLI, the console and the trainer: a float is written as its repr, the shortest text
that reads back as the same float, so the trainer trains with exactly the value the API accepted.

A trainer stops on SIGTERM at a checkpoint (ExitCode.STOPPED); whoever stops one gives it
TERMINATE_GRACE_S to write it before killing it.

Light: the service, sweeps and `tuneforge plan` import this without torch.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tuneforge.hyperparams import DPO_TRAINING_CONFIG, SNAKE_NAMES, parse_text

TERMINATE_GRACE_S = 120.0  # time a SIGTERMed trainer gets to write its checkpoint before it is killed


def hyperparameter_flag(api_name: str) -> str:
    """The train command's flag of a camelCase hyperparameter: learningRate -> --learning-rate."""
    return "--" + SNAKE_NAMES[api_name].replace("_", "-")


def parse_hyperparameters(texts: Mapping[str, Any], model=None) -> dict[str, int | float]:
    """{camelCase name: text as typed} as {camelCase name: int | float}, each parsed as its field's type
    (an InvalidParameter names the field, and, given the catalog model, its range). Values that are
    numbers already pass through; range checks are `hyperparams.resolve_training_config`'s."""
    return {
        name: parse_text(name, value, model.params.get(name) if model is not None else None) if isinstance(value, str) else value
        for name, value in texts.items()
        if value is not None
    }


def train_args(
    *,
    base_model_id: str,
    dataset: Path,
    output: Path,
    training_config: Mapping[str, Any],
    seed: int,
    validation_dataset: Path | None = None,  # the validation split, instead of OCI's seeded 20 % of `dataset`
    weights: str | None = None,
    base_model_name: str | None = None,
    resume: bool = False,
    device: str | None = None,
    precision: str | None = None,
    micro_batch_size: int | None = None,
    threads: int | None = None,
    mlflow_tracking_uri: str | None = None,
    from_adapter: Path | None = None,
) -> list[str]:
    """`tuneforge train ...` (the arguments after `python -m tuneforge`), printing model.json at the end.
    `training_config`: camelCase hyperparameters (the API's TrainingConfig): trainingConfigType
    DPO_TRAINING_CONFIG becomes `--method dpo` (preference tuning of the base model's own adapter; any other
    type is the model's own, implied by --base-model), `beta` travels as `--beta` like every field.
    `from_adapter`: a finished run's folder whose adapter training starts from (`--from-adapter`).
    `base_model_id` is a catalog id or a model folder; `base_model_name` what model.json calls a folder."""
    args = ["train", "--base-model", base_model_id, "--dataset", str(dataset), "--output", str(output), "--seed", str(seed)]
    if validation_dataset:
        args += ["--validation-dataset", str(validation_dataset)]
    if base_model_name:
        args += ["--base-model-name", base_model_name]
    if device:
        args += ["--device", device]
    if precision:
        args += ["--precision", precision]
    args.append("--json")
    if weights:
        args += ["--weights", weights]
    if micro_batch_size:
        args += ["--micro-batch-size", str(micro_batch_size)]
    if threads:
        args += ["--threads", str(threads)]
    if mlflow_tracking_uri:
        args += ["--mlflow-tracking-uri", mlflow_tracking_uri]
    if resume:
        args.append("--resume")
    if training_config.get("trainingConfigType") == DPO_TRAINING_CONFIG:
        args += ["--method", "dpo"]
    if from_adapter:
        args += ["--from-adapter", str(from_adapter)]
    for name, value in training_config.items():
        if name in SNAKE_NAMES:  # skips trainingConfigType
            args += [hyperparameter_flag(name), repr(value) if isinstance(value, float) else str(value)]
    return args


def launched(args: list[str], parent_pid: int, death_signal: str = "TERM") -> list[str]:
    """The trainer run through the launcher that ties its life to `parent_pid`'s (tuneforge.jobs.launch)."""
    return [sys.executable, "-m", "tuneforge.jobs.launch", str(parent_pid), f"--signal={death_signal}", "--", *args]
