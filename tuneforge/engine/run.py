"""The trainer process: what `tuneforge train` runs once its flags are parsed, callable without click.

`run_trainer(TrainerOptions(...))` checks the input before loading anything heavy (a bad model id, a bad
hyperparameter or bad data fails in a second), launches the ranks of a distributed run (the same command
line, with RANK etc. set: tuneforge/engine/launch.py), or trains: SIGTERM and Ctrl-C stop the run at a
checkpoint, a progress bar and the tracker (MLflow, when asked) follow it, and `fine_tune` does the work.
It writes the run folder (tuneforge/run_folder.py), error.json included when it fails, and returns how
the process should end; the caller prints the result.

What the user should know (a deprecated model, stand-in weights, a slow precision, stopping) goes to
stderr, from the first rank only. Light at import: torch is imported only when training starts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainerOptions:
    """Everything `tuneforge train` takes (its --help says what each does)."""

    base_model: str  # a catalog model id, a model folder or a Hugging Face id (catalog.find_base_model)
    dataset: Path
    output: Path
    # camelCase name -> the text as typed (or a number), parsed with the model's field types
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    weights: str | None = None  # a folder, a .gguf file, "stand-in", or None: the engine's per-model lookup (catalog ids only)
    base_model_name: str | None = (
        None  # what model.json calls a folder or Hugging Face base (the service: the imported model's OCID)
    )
    seed: int | None = None  # None: data.DEFAULT_SEED
    validation_dataset: Path | None = None  # the validation split instead of a seeded 20 % of `dataset`
    resume: bool = False
    micro_batch_size: int | None = None
    threads: int | None = None
    device: str = "auto"
    precision: str = "auto"
    mlflow_tracking_uri: str | None = None
    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int | None = None
    activation_checkpointing: bool = False
    quantize_base: str | None = None
    shared_prefix: str = "auto"
    method: str = "supervised"  # data.SUPERVISED | data.DPO (preference tuning: trainingConfigType DPO_TRAINING_CONFIG)
    from_adapter: Path | None = None  # a finished run's folder whose adapter training starts from
    # What each launched rank runs after `python -m tuneforge` (a distributed run); None: this process's
    # own arguments, right when this process is `tuneforge train`.
    worker_argv: Sequence[str] | None = None

    @property
    def world(self) -> int:
        return self.nproc_per_node * self.nnodes


@dataclass(frozen=True)
class TrainerExit:
    """How the trainer process ends: its exit code (run_folder.ExitCode, or the ranks' combined code
    when it launched them) and, on the rank that reports the run (rank 0), the finished run."""

    code: int
    result: Any = None  # engine.train.RunResult


def rank() -> int:
    """This process's rank: set by the launcher (or torchrun) in each worker process, else 0."""
    return int(os.environ.get("RANK", "0"))


def notice(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def deprecated_warning(model_id: str) -> str:
    return f"Warning: {model_id} is deprecated by OCI; it can still be fine-tuned."


def stand_in_note(what: str) -> str:
    return f"Note: {what} the bundled SmolLM2-135M-Instruct stand-in, not the real base-model weights."


def precision_warning(device: str, precision: str) -> str | None:
    """Why --precision bf16 would be very slow here, or None."""
    if precision != "bf16" or device == "cuda":
        return None
    from tuneforge.engine.precision import cpu_has_bf16_matmuls, pick_device

    if pick_device(device) == "cpu" and not cpu_has_bf16_matmuls():
        return (
            "Warning: --precision bf16: this CPU has neither AVX512-BF16 nor AMX, so bf16 matrix products run "
            "hundreds of times slower than fp32 here; --precision auto picks fp32 on such CPUs."
        )
    return None


def run_trainer(options: TrainerOptions) -> TrainerExit:
    """Train (or launch the ranks that train); on failure error.json says why, then the error is raised."""
    from tuneforge.run_folder import ExitCode, RunError, RunFolder

    main_rank = rank() == 0
    try:
        if options.quantize_base:
            from tuneforge.engine.quantize import check_layout

            check_layout(options.quantize_base, options.world)
        if options.world > 1 and "RANK" not in os.environ:
            check_input(options, notices=False)  # rank 0 gives them
            return TrainerExit(_launch_ranks(options))
        result = _train(options, main_rank)
    except SystemExit:
        raise
    except BaseException as err:
        if not isinstance(err, KeyboardInterrupt) and main_rank:
            RunFolder(options.output).write_error(RunError.from_exception(err))
        raise
    if result is None:
        return TrainerExit(ExitCode.STOPPED)
    return TrainerExit(ExitCode.OK, result if main_rank else None)


def check_input(options: TrainerOptions, notices: bool = True):
    """The base model, its resolved config and weights, after every check that needs no torch
    (fail on bad input before loading anything); with `notices`, what the user should know about them."""
    from tuneforge import data
    from tuneforge.catalog import find_base_model
    from tuneforge.engine.weights import Weights, resolve_weights
    from tuneforge.errors import InvalidParameter
    from tuneforge.hyperparams import config_type_of, resolve_training_config
    from tuneforge.train_command import parse_hyperparameters

    if options.method not in (data.SUPERVISED, data.DPO):
        raise InvalidParameter("--method", options.method, f"allowed: {data.SUPERVISED}, {data.DPO}")
    if options.method == data.DPO and options.world > 1:
        # The reference pass switches the adapter off inside the sharded model's forward: not yet verified
        # against FSDP2's gather/reshard hooks, so a DPO run is refused rather than trusted unchecked.
        raise InvalidParameter(
            "--nproc-per-node", options.world, "DPO runs in one process for now (its reference pass is not verified under FSDP2)"
        )
    if options.from_adapter is not None and options.world > 1:
        raise InvalidParameter(
            "--from-adapter", str(options.from_adapter), "is read whole: a run that starts from one runs in one process"
        )
    model, folder = find_base_model(options.base_model, options.base_model_name)
    if folder is not None and options.weights is not None:
        # A folder or Hugging Face base trains its own weights: --weights (the stand-in included) would train
        # another model under its name.
        raise InvalidParameter(
            "--weights", options.weights, "only a catalog --base-model takes --weights; this base trains its own"
        )
    config = resolve_training_config(
        model, {**parse_hyperparameters(options.hyperparameters, model), "trainingConfigType": config_type_of(options.method)}
    )
    data.scan_dataset(options.dataset, method=options.method)  # fail on bad data before loading any weights
    if options.validation_dataset is not None:  # the validation split: the same checks, at least one example
        data.scan_dataset(options.validation_dataset, min_examples=1, method=options.method)
    if folder is not None:
        resolved = Weights(str(folder), folder, False, options.base_model_name or options.base_model)
    else:
        resolved = resolve_weights(options.weights, model_id=model.id, weights_repo=model.weights_repo)
    if notices:
        if model.deprecated:
            notice(deprecated_warning(model.id))
        if resolved.stand_in:
            notice(stand_in_note("training runs on"))
        warning = precision_warning(options.device, options.precision)
        if warning:
            notice(warning)
    return model, config, resolved


def _launch_ranks(options: TrainerOptions) -> int:
    """Start this machine's ranks (the same command, with RANK etc. set) and wait: their exit code."""
    from tuneforge.engine.launch import launch
    from tuneforge.run_folder import ExitCode, RunError, RunFolder

    master_port = options.master_port
    if options.nnodes > 1 and master_port is None:
        master_port = 29500  # every machine must name the same port: torchrun's default
    argv = list(options.worker_argv) if options.worker_argv is not None else sys.argv[1:]
    code = launch(argv, options.nproc_per_node, options.nnodes, options.node_rank, options.master_addr, master_port)
    folder = RunFolder(options.output)
    if code not in (ExitCode.OK, ExitCode.STOPPED) and options.node_rank == 0 and folder.read_error() is None:
        folder.write_error(RunError.from_exception(RuntimeError("a worker failed")))  # rank 0 was stopped before it could say
    return code


def _train(options: TrainerOptions, main_rank: bool):
    """The run's RunResult, or None when it was stopped (a checkpoint is saved)."""
    import signal
    import threading

    from tuneforge import data

    model, config, resolved = check_input(options, notices=main_rank)  # the other ranks of a distributed run say nothing
    seed = data.DEFAULT_SEED if options.seed is None else options.seed
    from tuneforge.tracking import track_run  # imports mlflow only when a URI is given

    tracker = track_run(
        options.mlflow_tracking_uri if main_rank else None,
        options.output,
        model=model,
        config=config,
        weights=resolved,
        seed=seed,
        resume=options.resume,
    )

    import torch

    from tuneforge.engine.progress import ProgressBar
    from tuneforge.engine.train import RunSpec, TrainingStopped, fine_tune

    if options.threads:
        torch.set_num_threads(options.threads)

    stop = threading.Event()

    def request_stop(signum, frame):
        if main_rank:
            notice("\nStopping: saving a checkpoint (run again with --resume to continue)...")
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    bar = ProgressBar()
    run = RunSpec(
        base_model=model,
        config=config,
        dataset=options.dataset,
        validation_dataset=options.validation_dataset,
        weights=resolved,
        output=options.output,
        seed=seed,
        device=options.device,
        precision=options.precision,
        micro_batch_size=options.micro_batch_size,
        activation_checkpointing=options.activation_checkpointing,
        quantize_base=options.quantize_base,
        shared_prefix=options.shared_prefix,
        from_adapter=options.from_adapter,
        resume=options.resume,
        should_stop=stop.is_set,
        listeners=[bar.on_record, *tracker.listeners],
    )
    try:
        return fine_tune(run)
    except TrainingStopped as stopped:
        if main_rank:
            notice(f"Stopped at step {stopped.step} of {stopped.total_steps}; checkpoint saved in {options.output}.")
        return None
    finally:
        bar.close()
        tracker.end()  # final metrics and the adapter, or the run's stopped/failed status, from the run folder
