"""The `tuneforge` command line.

Commands are thin: parse, call the modules, print. Keep module-level imports light (no torch,
transformers or fastapi): `tuneforge plan` must answer in well under a second, so a command that
needs a heavy library imports it inside its own function. Each command is one self-contained
block below; `hyperparameter_options` and `overrides_from_flags` are shared with `train`.

Errors: any TuneForgeError raised by a command is printed (no traceback) and exits 2, once,
in `_Main.invoke`; click's own usage errors also exit 2.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from tuneforge.errors import TuneForgeError


class _Main(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TuneForgeError as err:
            click.echo(f"Error: {err}", err=True)
            ctx.exit(2)


@click.group(cls=_Main)
@click.version_option(package_name="tuneforge")
def main() -> None:
    """TuneForge: fine-tune open base models with OCI Generative AI custom-model semantics."""


# --- shared options ------------------------------------------------------------------------------


def hyperparameter_options(f: Callable) -> Callable:
    """Add one string option per hyperparameter of the catalog, --total-training-epochs ... --lora-dropout,
    with the catalog's help text (ranges differ per model: `tuneforge models` lists them).

    Taken as text and converted by `overrides_from_flags`, so a bad value is reported with the
    API's camelCase field name, exactly as the REST API would report it."""
    from tuneforge.catalog import fields, list_models
    from tuneforge.hyperparams import METHOD_NAMES, SNAKE_NAMES

    every_method = {m.method for m in list_models()}
    for field in reversed(fields().values()):
        only = "" if set(field.methods) == every_method else f" ({', '.join(METHOD_NAMES[m] for m in field.methods)} models only)"
        f = click.option(
            f"--{SNAKE_NAMES[field.name].replace('_', '-')}",
            metavar=field.type.upper(),
            default=None,
            help=f"{field.name}: {field.description}{only}",
        )(f)
    return f


def overrides_from_flags(kwargs: dict[str, Any], model=None) -> dict[str, Any]:
    """The hyperparameter flags that were given, as {camelCase API name: int | float}. Ignores other
    keys, so a command can pass all its kwargs."""
    from tuneforge.hyperparams import SNAKE_NAMES, parse_text

    return {
        api_name: parse_text(api_name, kwargs[snake], model.params.get(api_name) if model is not None else None)
        for api_name, snake in SNAKE_NAMES.items()
        if kwargs.get(snake) is not None
    }


def _print_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2))


def _print_rows(rows: list[tuple[str, Any]]) -> None:
    width = max(len(k) for k, _ in rows) + 1
    for key, value in rows:
        click.echo(f"{key + ':':<{width}} {value}")


def _warn_deprecated(model) -> None:
    click.echo(f"Warning: {model.id} is deprecated by OCI; it can still be fine-tuned.", err=True)


# --- tuneforge models ----------------------------------------------------------------------------


def _model_json(model) -> dict[str, Any]:
    return {
        "id": model.id,
        "vendor": model.vendor,
        "method": model.method,
        "trainingConfigType": model.training_config_type,
        "deprecated": model.deprecated,
        "architecture": model.architecture,
        "weightsRepo": model.weights_repo,
        "contextTokens": model.context_tokens,
        "maxPromptTokens": model.max_prompt_tokens,
        "maxCompletionTokens": model.max_completion_tokens,
        "hyperparameters": {
            p.name: {
                "type": p.type,
                "minimum": p.minimum,
                "maximum": p.maximum,
                "minExclusive": p.min_exclusive,
                "maxExclusive": p.max_exclusive,
                "default": p.default,
                "tunable": p.tunable,
                "allowed": p.allowed(),
                "description": p.description,
            }
            for p in model.params.values()
        },
    }


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array with every range.")
def models(as_json: bool) -> None:
    """List the base models that can be fine-tuned, with their default hyperparameters."""
    from tuneforge.catalog import format_number, list_models

    catalog = list_models()
    if as_json:
        _print_json([_model_json(m) for m in catalog])
        return
    width = max(len(m.id) for m in catalog)
    for m in catalog:
        defaults = " ".join(f"{p.name}={format_number(p.default)}" for p in m.params.values())
        marker = "deprecated" if m.deprecated else ""
        click.echo(f"{m.id:<{width}}  {m.method:<4}  {marker:<10}  {defaults}")


# --- tuneforge plan ------------------------------------------------------------------------------


def _capacity_options(f: Callable) -> Callable:
    from tuneforge.capacity import GPU_TYPES

    options = [
        click.option(
            "--gpus", type=click.IntRange(min=1), default=None, help="GPUs per machine: show per-GPU memory, fit and time."
        ),
        click.option("--nodes", type=click.IntRange(min=1), default=1, show_default=True, help="Machines (with --gpus)."),
        click.option(
            "--gpu-type",
            type=click.Choice(sorted(GPU_TYPES)),
            default="h100",
            show_default=True,
            help="Its bf16 peak and link speed set the time estimate.",
        ),
        click.option(
            "--gpu-memory-gib", type=click.FloatRange(min=1), default=None, help="Memory per GPU (default: the type's)."
        ),
        click.option(
            "--quantize-base", type=click.Choice(["nf4"]), default=None, help="As train's: a 4-bit frozen base (QLoRA)."
        ),
        click.option(
            "--activation-checkpointing/--no-activation-checkpointing", default=False, show_default=True, help="As train's."
        ),
        click.option(
            "--micro-batch-size", type=click.IntRange(min=1), default=None, help="As train's (rows per pass on each GPU)."
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _load_token_counter(weights: Path | None) -> Callable[[str], int] | None:
    """A token counter from `weights`/tokenizer.json via the `tokenizers` library (no torch), or None."""
    if weights is None:
        return None
    tokenizer_file = weights / "tokenizer.json"
    if not tokenizer_file.is_file():
        click.echo(f"Note: no tokenizer.json in {weights}; token lengths not checked.", err=True)
        return None
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


@main.command()
@click.option("--base-model", "base_model", required=True, metavar="ID", help="Catalog model id (see `tuneforge models`).")
@click.option(
    "--dataset",
    type=click.Path(path_type=Path),
    default=None,
    help="JSONL file of prompt/completion pairs (required unless --gpus: then the bundled example stands in).",
)
@click.option("--seed", type=int, default=None, help="Seed of the 80:20 split (default 42).")
@click.option(
    "--weights",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Model folder; if it holds tokenizer.json, prompt/completion token lengths are checked.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_capacity_options
@hyperparameter_options
def plan(
    base_model: str,
    dataset: Path,
    seed: int | None,
    weights: Path | None,
    as_json: bool,
    gpus: int | None,
    nodes: int,
    gpu_type: str,
    gpu_memory_gib: float | None,
    quantize_base: str | None,
    activation_checkpointing: bool,
    micro_batch_size: int | None,
    **flags: Any,
) -> None:
    """Validate a fine-tuning request and show what training would do, without training.

    With --gpus: the memory each GPU needs, whether it fits, the training time and what to change (docs/scale-out.md)."""
    from tuneforge import data
    from tuneforge.catalog import get_model
    from tuneforge.hyperparams import make_plan, resolve_training_config

    model = get_model(base_model)
    config = resolve_training_config(model, overrides_from_flags(flags, model))
    seed = data.DEFAULT_SEED if seed is None else seed
    stand_in_data = dataset is None
    if stand_in_data:
        if gpus is None:
            raise click.UsageError("Missing option '--dataset' (it may be left out only with --gpus).")
        # A capacity question without data ("does a 70B LoRA fit 8 x 80 GB?"): memory barely depends on the data,
        # time does, so the bundled example sizes the run and the output says so.
        dataset = Path(__file__).parent / "examples" / "dates.jsonl"
    count_tokens = _load_token_counter(weights)
    if count_tokens is None and gpus is None:
        n = data.scan_dataset(dataset)
    else:
        examples = data.read_examples(dataset)
        if count_tokens is not None:
            data.check_token_lengths(
                examples,
                count_tokens,
                max_prompt_tokens=model.max_prompt_tokens,
                max_completion_tokens=model.max_completion_tokens,
                context_tokens=model.context_tokens,
                path=dataset,
            )
        n = len(examples)
    summary = make_plan(n, config)
    capacity = None
    if gpus is not None:
        from tuneforge.capacity import Layout

        layout = Layout(gpu_type, gpus, nodes, gpu_memory_gib, activation_checkpointing, quantize_base, micro_batch_size)
        capacity = _capacity(model, config, examples, seed, count_tokens, weights, layout)
    if model.deprecated:
        _warn_deprecated(model)
    if as_json:
        _print_json(
            {
                "baseModelId": model.id,
                "method": model.method,
                "deprecated": model.deprecated,
                "trainingConfig": config.to_api(),
                **summary.to_json(),
                "seed": seed,
                "tokenLengthsChecked": count_tokens is not None,
                **({"datasetNote": "not given; the bundled example sizes the run"} if stand_in_data else {}),
                **({"capacity": capacity.to_json()} if capacity else {}),
            }
        )
        return
    api = config.to_api()
    rows: list[tuple[str, Any]] = [
        ("baseModelId", model.id + (" (DEPRECATED)" if model.deprecated else "")),
        ("method", f"{model.method} ({api.pop('trainingConfigType')})"),
        (
            "dataset",
            f"not given; the bundled example ({n} examples) sizes the run" if stand_in_data else f"{dataset}: {n} examples",
        ),
        ("split", f"{summary.training_examples} training + {summary.validation_examples} validation (80:20, seed {seed})"),
        *api.items(),
        ("stepsPerEpoch", summary.steps_per_epoch),
        (
            "totalTrainingSteps",
            f"{summary.total_training_steps} = {config.total_training_epochs} * "
            f"ceil({summary.training_examples} / {config.training_batch_size})",
        ),
        ("tokenLengths", "checked" if count_tokens else "not checked (pass --weights DIR with tokenizer.json)"),
    ]
    _print_rows(rows + (_capacity_rows(capacity) if capacity else []))


def _capacity(model, config, examples, seed, count_tokens, weights: Path | None, layout):
    """The capacity model's estimate for this dataset: real token counts with a tokenizer, else CHARS_PER_TOKEN."""
    from tuneforge import capacity, data
    from tuneforge.catalog import ModelShape

    shape = model.shape
    if weights is not None and (weights / "config.json").is_file():  # the weights' own architecture over the catalog's
        shape = ModelShape.from_hf_config(json.loads((weights / "config.json").read_text()))
    count = count_tokens or capacity.estimated_tokens
    train, val = data.split_examples(examples, seed)
    lengths = [[(count(e.prompt), count(e.completion)) for e in part] for part in (train, val)]
    work = capacity.workload(model.method, config, len(train), len(val), *lengths, tokens_counted=count_tokens is not None)
    return capacity.estimate(shape, work, layout)


def _duration(hours: float) -> str:
    return f"{hours * 60:.1f} min" if hours < 1 else f"{hours:.1f} h"


def _capacity_rows(est) -> list[tuple[str, Any]]:
    from tuneforge.capacity import GPU_TYPES, UTILISATION

    lay, g, acts = est.layout, est.gib, est.activations_gib
    where = f"{lay.world} x {GPU_TYPES[lay.gpu_type].name}" + (f" on {lay.nodes} machines" if lay.nodes > 1 else "")
    chosen = [
        name for name, on in (("activation checkpointing", lay.activation_checkpointing), ("nf4 base", lay.quantize_base)) if on
    ]
    memory = (
        f"{est.total_gib:.1f} GiB: weights {g['weights']:.1f} + gathered layers {g['gatheredWeights']:.1f} + adapter and optimizer "
        f"{g['adapterAndOptimizer']:.2f} + activations {g['activations']:.1f} + logits {g['logits']:.1f} + reserve {g['reserve']:.1f}"
    )
    activations = (
        f"{acts['withoutCheckpointing']:.1f} GiB without checkpointing, {acts['withCheckpointing']:.1f} GiB with "
        f"({est.rows_per_pass} row(s) per pass on each GPU, {est.passes_per_step} pass(es) per step)"
    )
    tokens = "counted" if est.tokens_counted else "estimated at 4 characters a token"
    time = f"{_duration(est.hours)}, {est.gpu_hours:.3g} GPU-hours ({est.bound_by}-bound; {UTILISATION:.0%} of the bf16 peak; tokens {tokens})"
    rows = [
        ("gpus", f"{where}, {lay.memory_gib:g} GiB each" + (f" ({', '.join(chosen)})" if chosen else "")),
        ("perGpuMemory", memory),
        ("activations", activations),
        ("fits", "yes" if est.fits else "NO"),
        ("trainingTime", time),
    ]
    return rows + [("toFit", suggestion) for suggestion in est.suggestions]


# --- tuneforge train -----------------------------------------------------------------------------


def _device_options(f: Callable) -> Callable:
    f = click.option(
        "--precision",
        type=click.Choice(["auto", "bf16", "fp32"]),
        default="auto",
        help="Precision of the frozen base's matrix products (activations stay fp32); auto = bf16 on CUDA and on CPUs with AVX512-BF16/AMX.",
    )(f)
    return click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", help="Where to run.")(f)


def _precision_notice(device: str, precision: str) -> None:
    if precision != "bf16" or device == "cuda":
        return
    from tuneforge.engine.precision import cpu_has_bf16_matmuls, pick_device

    if pick_device(device) == "cpu" and not cpu_has_bf16_matmuls():
        click.echo(
            "Warning: --precision bf16: this CPU has neither AVX512-BF16 nor AMX, so bf16 matrix products run "
            "hundreds of times slower than fp32 here; --precision auto picks fp32 on such CPUs.",
            err=True,
        )


def _weights_option(required: bool) -> Callable:
    return click.option(
        "--weights",
        "weights",
        default=None,
        required=required,
        metavar="PATH|stand-in",
        help="A Hugging Face model folder, a .gguf file, or `stand-in` (the bundled SmolLM2-135M-Instruct). "
        "Default: TUNEFORGE_WEIGHTS_<MODEL> or the Hugging Face cache.",
    )


def _stand_in_notice(stand_in: bool, what: str) -> None:
    if stand_in:
        click.echo(f"Note: {what} the bundled SmolLM2-135M-Instruct stand-in, not the real base-model weights.", err=True)


def _print_performance(result) -> None:
    t = result.timings
    _print_rows(
        [
            ("baseModelId", result.base_model_id + (" (on the SmolLM2-135M-Instruct stand-in)" if result.stand_in else "")),
            (
                "steps",
                f"{result.steps_run} of {result.total_training_steps}" + (" (early stopped)" if result.early_stopped else ""),
            ),
            ("bestStep", result.best_step),
            ("finalAccuracy", f"{result.final_accuracy:.4f}  (validation split, completion tokens)"),
            ("finalLoss", f"{result.final_loss:.4f}"),
            ("time", f"{t['totalSeconds']:.0f} s (train {t['trainSeconds']:.0f} s, eval {t['evalSeconds']:.0f} s)"),
        ]
    )


@main.command()
@click.option("--base-model", "base_model", required=True, metavar="ID", help="Catalog model id (see `tuneforge models`).")
@click.option("--dataset", required=True, type=click.Path(path_type=Path), help="JSONL file of prompt/completion pairs.")
@click.option(
    "--output", required=True, type=click.Path(path_type=Path), help="Folder for the adapter, model.json, metrics and report."
)
@_weights_option(required=False)
@click.option("--seed", type=int, default=None, help="Seed of the split, the data order and the adapter init (default 42).")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint in --output.")
@click.option(
    "--micro-batch-size", type=click.IntRange(min=1), default=None, help="Split each batch to bound memory; same result."
)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: every core).")
@click.option("--json", "as_json", is_flag=True, help="Print model.json on stdout at the end.")
@click.option(
    "--mlflow-tracking-uri",
    default=None,
    metavar="URI",
    help="Log params, metric curves and the adapter to MLflow (pip install 'tuneforge[tracking]').",
)
@_device_options
@click.option(
    "--nproc-per-node",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes on this machine, one per GPU: FSDP2 shards the model over all of them (docs/scale-out.md).",
)
@click.option(
    "--nnodes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Machines in the run; start the same command on each, with its own --node-rank.",
)
@click.option(
    "--node-rank", type=click.IntRange(min=0), default=0, show_default=True, help="This machine's number, 0 to --nnodes - 1."
)
@click.option(
    "--master-addr", default="127.0.0.1", show_default=True, metavar="HOST", help="Address of machine 0, reachable from all."
)
@click.option(
    "--master-port",
    type=click.IntRange(1, 65535),
    default=None,
    metavar="PORT",
    help="Port on machine 0 for the process group (default: a free one on one machine; 29500 on several).",
)
@click.option(
    "--activation-checkpointing",
    is_flag=True,
    help="Recompute each decoder layer in the backward pass: far less activation memory for ~1/3 more compute.",
)
@click.option(
    "--quantize-base",
    type=click.Choice(["nf4"]),
    default=None,
    help="Hold the frozen base in 4 bits (QLoRA): a 70B LoRA on one 80 GB GPU. One process; pip install 'tuneforge[qlora]'.",
)
@click.option(
    "--shared-prefix",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="Run the prompt prefix a batch's rows share once: same result, fewer FLOPs, one more decoder call. "
    "auto = on for CPU (FLOP-bound), off for CUDA (small steps there are bound by kernel launches).",
)
@hyperparameter_options
def train(
    base_model: str,
    dataset: Path,
    output: Path,
    weights: str | None,
    seed: int | None,
    resume: bool,
    micro_batch_size: int | None,
    threads: int | None,
    as_json: bool,
    mlflow_tracking_uri: str | None,
    device: str,
    precision: str,
    nproc_per_node: int,
    nnodes: int,
    node_rank: int,
    master_addr: str,
    master_port: int | None,
    activation_checkpointing: bool,
    quantize_base: str | None,
    shared_prefix: str,
    **flags: Any,
) -> None:
    """Fine-tune a base model on a JSONL dataset (exit 3 when stopped; --resume continues).

    On failure the output folder gets error.json (tuneforge/run_folder.py): what the service tells its user."""
    import os

    from tuneforge.run_folder import ExitCode, RunError, RunFolder

    rank = int(os.environ.get("RANK", "0"))  # set by the launcher (or torchrun) in each worker process
    try:
        if quantize_base:
            from tuneforge.engine.quantize import check_layout

            check_layout(quantize_base, nproc_per_node * nnodes)
        if nproc_per_node * nnodes > 1 and "RANK" not in os.environ:
            _check_train_input(base_model, dataset, weights, flags, device, precision, notices=False)  # rank 0 gives them
            raise SystemExit(_launch_workers(output, nproc_per_node, nnodes, node_rank, master_addr, master_port))
        result = _train(
            base_model,
            dataset,
            output,
            weights,
            seed,
            resume,
            micro_batch_size,
            threads,
            device,
            precision,
            flags,
            mlflow_tracking_uri if rank == 0 else None,
            activation_checkpointing,
            quantize_base,
            shared_prefix,
        )
    except SystemExit:
        raise
    except BaseException as err:
        if not isinstance(err, KeyboardInterrupt) and rank == 0:
            RunFolder(output).write_error(RunError.from_exception(err))
        raise
    if result is None:
        raise SystemExit(ExitCode.STOPPED)
    if rank != 0:
        return
    if as_json:
        _print_json(result.to_json())
    else:
        _print_performance(result)
        click.echo(f"Adapter (PEFT format): {output / 'adapter'}    report: {output / 'report.html'}")


def _launch_workers(output: Path, nproc: int, nnodes: int, node_rank: int, master_addr: str, master_port: int | None) -> int:
    """Start this machine's workers (the same command, with RANK etc. set) and wait: their exit code."""
    import sys

    from tuneforge.engine.launch import launch
    from tuneforge.run_folder import ExitCode, RunError, RunFolder

    if nnodes > 1 and master_port is None:
        master_port = 29500  # every machine must name the same port: torchrun's default
    code = launch(sys.argv[1:], nproc, nnodes, node_rank, master_addr, master_port)
    folder = RunFolder(output)
    if code not in (ExitCode.OK, ExitCode.STOPPED) and node_rank == 0 and folder.read_error() is None:
        folder.write_error(RunError.from_exception(RuntimeError("a worker failed")))  # rank 0 was stopped before it could say
    return code


def _check_train_input(base_model, dataset, weights, flags, device, precision, notices: bool = True):
    """The catalog model, its resolved config and weights, after every check that needs no torch
    (fail on bad input before loading anything); with `notices`, what the user should know about them."""
    from tuneforge import data
    from tuneforge.catalog import get_model
    from tuneforge.engine.weights import resolve_weights
    from tuneforge.hyperparams import resolve_training_config

    model = get_model(base_model)
    config = resolve_training_config(model, overrides_from_flags(flags, model))
    data.scan_dataset(dataset)  # fail on bad data before loading any weights
    resolved = resolve_weights(weights, model_id=model.id, weights_repo=model.weights_repo)
    if notices:
        if model.deprecated:
            _warn_deprecated(model)
        _stand_in_notice(resolved.stand_in, "training runs on")
        _precision_notice(device, precision)
    return model, config, resolved


def _train(
    base_model,
    dataset,
    output,
    weights,
    seed,
    resume,
    micro_batch_size,
    threads,
    device,
    precision,
    flags,
    mlflow_tracking_uri=None,
    activation_checkpointing=False,
    quantize_base=None,
    shared_prefix="auto",
):
    """The run's RunResult, or None when it was stopped (a checkpoint is saved)."""
    import os
    import signal
    import threading

    from tuneforge import data

    main_rank = int(os.environ.get("RANK", "0")) == 0  # the other ranks of a distributed run say nothing
    model, config, resolved = _check_train_input(base_model, dataset, weights, flags, device, precision, notices=main_rank)
    from tuneforge.tracking import track_run  # imports mlflow only when a URI is given

    tracker = track_run(
        mlflow_tracking_uri,
        output,
        model=model,
        config=config,
        weights=resolved,
        seed=data.DEFAULT_SEED if seed is None else seed,
        resume=resume,
    )

    import torch

    from tuneforge.engine.progress import ProgressBar
    from tuneforge.engine.train import RunSpec, TrainingStopped, fine_tune

    if threads:
        torch.set_num_threads(threads)

    stop = threading.Event()

    def request_stop(signum, frame):
        if main_rank:
            click.echo("\nStopping: saving a checkpoint (run again with --resume to continue)...", err=True)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    bar = ProgressBar()
    run = RunSpec(
        base_model=model,
        config=config,
        dataset=dataset,
        weights=resolved,
        output=output,
        seed=data.DEFAULT_SEED if seed is None else seed,
        device=device,
        precision=precision,
        micro_batch_size=micro_batch_size,
        activation_checkpointing=activation_checkpointing,
        quantize_base=quantize_base,
        shared_prefix=shared_prefix,
        resume=resume,
        should_stop=stop.is_set,
        listeners=[bar.on_record, *tracker.listeners],
    )
    try:
        return fine_tune(run)
    except TrainingStopped as stopped:
        if main_rank:
            click.echo(f"Stopped at step {stopped.step} of {stopped.total_steps}; checkpoint saved in {output}.", err=True)
        return None
    finally:
        bar.close()
        tracker.end()  # final metrics and the adapter, or the run's stopped/failed status, from the run folder


# --- tuneforge eval / generate -------------------------------------------------------------------


def _load_for_inference(model_dir: Path | None, base_model: str | None, weights: str | None, device: str, precision: str):
    from tuneforge.catalog import get_model
    from tuneforge.engine.generate import load_base, load_trained
    from tuneforge.engine.weights import resolve_weights

    if (model_dir is None) == (base_model is None):
        raise click.UsageError("give either --model DIR or --base-model ID (with --weights)")
    _precision_notice(device, precision)
    if model_dir is not None:
        return load_trained(model_dir, device, precision)
    spec = get_model(base_model)
    return load_base(resolve_weights(weights, model_id=spec.id, weights_repo=spec.weights_repo), device, precision)


@main.command(name="eval")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), default=None, help="A `tuneforge train` output folder.")
@click.option("--base-model", "base_model", default=None, metavar="ID", help="Evaluate a base model instead (with --weights).")
@_weights_option(required=False)
@click.option("--dataset", required=True, type=click.Path(path_type=Path), help="JSONL file of prompt/completion pairs.")
@click.option(
    "--split",
    type=click.Choice(["all", "train", "validation"]),
    default="all",
    help="Which part of the dataset: `validation` is the 20 % held out by training with the same --seed.",
)
@click.option("--seed", type=int, default=None, help="Seed of the 80:20 split (default 42).")
@click.option("--compare-base", is_flag=True, help="With --model: also evaluate its base model, side by side.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_device_options
def eval_command(model_dir, base_model, weights, dataset, split, seed, compare_base, as_json, device, precision) -> None:
    """Loss, token accuracy and exact match of greedy generations on a dataset."""
    from tuneforge import data

    # Any valid, non-empty file: the 32-example minimum is OCI's rule for training data, not for a test set.
    examples = data.read_examples(dataset, min_examples=1)
    if split != "all":
        train_part, val_part = data.split_examples(examples, data.DEFAULT_SEED if seed is None else seed)
        examples = val_part if split == "validation" else train_part
    if compare_base and model_dir is None:
        raise click.UsageError("--compare-base needs --model DIR")
    from tuneforge.engine.generate import load_base, score, trained_base_weights

    loaded = _load_for_inference(model_dir, base_model, weights, device, precision)
    _stand_in_notice(loaded.stand_in, "evaluating")
    results = {"model": {"model": loaded.description, "standIn": loaded.stand_in, "split": split, **score(loaded, examples)}}
    if compare_base:
        base = load_base(trained_base_weights(model_dir), device, precision)
        results["base"] = {"model": base.description, "standIn": base.stand_in, "split": split, **score(base, examples)}
    if as_json:
        _print_json(results if compare_base else results["model"])
        return
    for label, result in results.items():
        if compare_base:
            click.echo(f"== {'fine-tuned' if label == 'model' else 'base model'} ==")
        _print_rows([(k, f"{v:.4f}" if isinstance(v, float) else v) for k, v in result.items() if k != "samples"])
        for s in result["samples"]:
            click.echo(f"  line {s['line']}: {'OK ' if s['match'] else 'MISS'} {s['generated']!r} (expected {s['expected']!r})")
    if compare_base:
        m, b = results["model"], results["base"]
        click.echo(
            f"exact match: base {b['exactMatch']:.1%} -> fine-tuned {m['exactMatch']:.1%}; "
            f"token accuracy {b['accuracy']:.1%} -> {m['accuracy']:.1%}; loss {b['loss']:.3f} -> {m['loss']:.3f}"
        )


@main.command()
@click.option("--model", "model_dir", type=click.Path(path_type=Path), default=None, help="A `tuneforge train` output folder.")
@click.option(
    "--base-model", "base_model", default=None, metavar="ID", help="Generate with a base model instead (with --weights)."
)
@_weights_option(required=False)
@click.option("--prompt", required=True, help="The user message.")
@click.option("--max-new-tokens", type=click.IntRange(1, 4096), default=128, show_default=True)
@click.option("--temperature", type=click.FloatRange(0, 5), default=0.0, show_default=True, help="0 = greedy.")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed.")
@_device_options
def generate(model_dir, base_model, weights, prompt, max_new_tokens, temperature, top_p, seed, device, precision) -> None:
    """Generate a reply to one prompt (greedy by default)."""
    loaded = _load_for_inference(model_dir, base_model, weights, device, precision)
    _stand_in_notice(loaded.stand_in, "generating with")
    from tuneforge.engine.generate import generate as run_generate

    click.echo(run_generate(loaded, [prompt], max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)[0])


# --- tuneforge serve / api-keys ------------------------------------------------------------------


def _store_options(f: Callable) -> Callable:
    f = click.option(
        "--database-url",
        default=None,
        metavar="URL",
        help="SQLAlchemy URL, e.g. postgresql://user@host/db (default: SQLite in the data dir).",
    )(f)
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("tuneforge-data"),
        show_default=True,
        help="Where objects, jobs and the SQLite database live.",
    )(f)


@main.command()
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Interface to listen on (put TLS in front: docs/service.md)."
)
@click.option("--port", type=int, default=8080, show_default=True)
@_store_options
@click.option(
    "--weights",
    default=None,
    metavar="PATH|stand-in",
    help="Weights for every job (as `train --weights`); default: the engine's per-model lookup.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Training jobs this process runs at once (0: API only, jobs run on other servers).",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Times a job is started before it fails when its worker keeps dying.",
)
@click.option("--region", default="local", show_default=True, help="Region name used in OCIDs.")
@click.option(
    "--lease-seconds",
    type=click.FloatRange(min=5),
    default=30.0,
    show_default=True,
    help="A running job whose server sent no heartbeat (every 2 s) for this long is taken over by another server.",
)
@click.option(
    "--executor",
    "executor_kind",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Where trainers run: subprocesses of this server, or Ray jobs on a Ray cluster (docs/scale-out.md).",
)
@click.option(
    "--ray-address", default=None, metavar="URL", help="--executor ray: the Ray cluster's dashboard, e.g. http://HEAD:8265."
)
@click.option(
    "--ray-gpus-per-unit",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="--executor ray: GPUs per cluster unit when the unit shape names no count (H100_X8 names 8).",
)
@click.option(
    "--ray-cpus-per-worker",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="--executor ray: CPUs (and torch threads) of each Ray Train worker.",
)
def serve(
    host: str,
    port: int,
    data_dir: Path,
    database_url: str | None,
    weights: str | None,
    workers: int,
    max_attempts: int,
    region: str,
    lease_seconds: float,
    executor_kind: str,
    ray_address: str | None,
    ray_gpus_per_unit: int,
    ray_cpus_per_worker: float,
) -> None:
    """Run the OCI-compatible fine-tuning API and its training workers."""
    from tuneforge.server import serve as run_server
    from tuneforge.services.config import ServiceConfig

    config = ServiceConfig(
        data_dir=data_dir.resolve(),
        database_url=database_url,
        weights=weights,
        workers=workers,
        region=region,
        max_attempts=max_attempts,
        lease_seconds=lease_seconds,
        executor=executor_kind,
        ray_address=ray_address,
        ray_gpus_per_unit=ray_gpus_per_unit,
        ray_cpus_per_worker=ray_cpus_per_worker,
    )
    run_server(config, host, port)


@main.group(name="api-keys")
def api_keys() -> None:
    """Register the public keys that sign API requests (OCI API signing keys)."""


def _key_store(data_dir: Path, database_url: str | None):
    from tuneforge.store.db import default_url, open_store

    data_dir.mkdir(parents=True, exist_ok=True)
    return open_store(database_url or default_url(data_dir))


@api_keys.command(name="add")
@click.option("--tenancy", required=True, metavar="OCID", help="Tenancy OCID (the SDK config's `tenancy`).")
@click.option("--user", required=True, metavar="OCID", help="User OCID (the SDK config's `user`).")
@click.option(
    "--public-key-file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM public key (or the private key; only its public half is stored).",
)
@_store_options
def api_keys_add(tenancy: str, user: str, public_key_file: Path, data_dir: Path, database_url: str | None) -> None:
    """Register a key; prints its fingerprint (the SDK config's `fingerprint`)."""
    from tuneforge.services.resources.keys import add_key

    sessions = _key_store(data_dir, database_url)
    with sessions() as session:
        row = add_key(session, tenancy, user, public_key_file.read_bytes())
        session.commit()
    click.echo(row.fingerprint)


@api_keys.command(name="list")
@click.option("--tenancy", default=None, metavar="OCID", help="Only this tenancy's keys.")
@_store_options
def api_keys_list(tenancy: str | None, data_dir: Path, database_url: str | None) -> None:
    """List registered keys: tenancy, user, fingerprint."""
    from tuneforge.services.resources.keys import list_bearers, list_keys

    with _key_store(data_dir, database_url)() as session:
        for row in list_keys(session, tenancy):
            click.echo(f"{row.tenancy_id}  {row.user_id}  {row.fingerprint}")
        for bearer in list_bearers(session, tenancy):
            click.echo(f"{bearer.tenancy_id}  {bearer.user_id}  bearer {bearer.key_id}")


@api_keys.command(name="remove")
@click.argument("key", metavar="FINGERPRINT|KEY_ID|BEARER_KEY_ID")
@_store_options
def api_keys_remove(key: str, data_dir: Path, database_url: str | None) -> None:
    """Remove a signing key (by fingerprint or keyId) or a bearer key (by the id `list` shows)."""
    from tuneforge.services.resources.keys import remove_bearer, remove_key

    with _key_store(data_dir, database_url)() as session:
        removed = remove_key(session, key) or remove_bearer(session, key)
        session.commit()
    if not removed:
        raise click.ClickException(f"no key {key!r} is registered")
    click.echo(f"removed {removed} key(s)")


@api_keys.command(name="create-bearer")
@click.option("--tenancy", required=True, metavar="OCID", help="The tenancy whose models the key may call.")
@click.option("--user", required=True, metavar="OCID", help="The user the key acts as.")
@_store_options
def api_keys_create_bearer(tenancy: str, user: str, data_dir: Path, database_url: str | None) -> None:
    """Create an API key for the OpenAI-compatible API (/openai/v1); it is printed once, only its hash is kept."""
    from tuneforge.services.resources.keys import create_bearer

    with _key_store(data_dir, database_url)() as session:
        row, token = create_bearer(session, tenancy, user)
        session.commit()
    click.echo(token)
    click.echo(f"bearer key {row.key_id} for {tenancy}: shown once, store it now (OpenAI(api_key=...))", err=True)


# --- tuneforge console-users (the web console's sign-in; tuneforge/web/users.py) ----------------


def _console_data_dir(f: Callable) -> Callable:
    # The users file lives in the data dir (DATA_DIR/console/users.json), so only --data-dir matters.
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("tuneforge-data"),
        show_default=True,
        help="The server's --data-dir.",
    )(f)


@main.group(name="console-users")
def console_users() -> None:
    """Users who sign in to the web console with a password; each belongs to one tenancy."""


@console_users.command(name="add")
@click.option("--tenancy", required=True, metavar="OCID", help="The tenancy whose models the user sees and creates.")
@click.option("--username", required=True, help="Sign-in name (letters, digits, . _ @ + -).")
@click.option(
    "--password-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Read the password from this file (first line); default: prompt for it.",
)
@_console_data_dir
def console_users_add(tenancy: str, username: str, password_file: Path | None, data_dir: Path) -> None:
    """Create a console user, or set a new password for an existing one."""
    from tuneforge.web.users import add_user

    if password_file is not None:
        password = (password_file.read_text().splitlines() or [""])[0]
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    add_user(data_dir.resolve(), tenancy, username, password)
    click.echo(f"console user {username} can sign in to tenancy {tenancy}")


@console_users.command(name="list")
@_console_data_dir
def console_users_list(data_dir: Path) -> None:
    """List console users: username and tenancy."""
    from tuneforge.web.users import list_users

    for username, tenancy in list_users(data_dir.resolve()):
        click.echo(f"{username}  {tenancy}")


@console_users.command(name="remove")
@click.argument("username")
@_console_data_dir
def console_users_remove(username: str, data_dir: Path) -> None:
    """Remove a console user; their open console sessions end at once."""
    from tuneforge.web.users import remove_user

    if not remove_user(data_dir.resolve(), username):
        raise click.ClickException(f"no console user {username!r}")
    click.echo(f"removed console user {username}")


# --- tuneforge sweep (tuneforge/sweeps; docs/sweeps.md) ------------------------------------------


def _print_sweep_event(event: dict[str, Any]) -> None:
    kind = event["event"]
    if kind == "note":
        click.echo(f"Note: {event['message']}", err=True)
    elif kind == "trial-started":
        params = " ".join(f"{k}={v:.6g}" for k, v in event["params"].items())
        click.echo(
            f"trial {event['trial']} started: {params}" + (" (resuming from its checkpoint)" if event["resumed"] else ""),
            err=True,
        )
    elif kind == "trial-stopped":
        click.echo(f"trial {event['trial']} stopped at step {event['step']} (checkpoint saved)", err=True)
    elif kind == "trial-finished":
        row, best = event["row"], event["best"]
        if row.state == "complete":
            text = f"complete: validation loss {row.validation_loss:.4f}" + (
                f" (best so far: trial {best.number})" if best else ""
            )
        elif row.state == "pruned":
            text = f"pruned at step {row.steps_run} of {row.steps_planned}"
        else:
            text = f"{row.state}: {row.error or ''}"
        click.echo(f"trial {row.number} {text}", err=True)
    elif kind == "curve-started":
        click.echo(
            f"learning curve: training the defaults on {event['trainingExamples']} examples ({event['fraction']:.0%})", err=True
        )
    elif kind == "curve-scoring":
        click.echo(f"learning curve: scoring {event['runs']} run(s) on every validation example", err=True)


@main.command()
@click.option("--base-model", "base_model", required=True, metavar="ID", help="Catalog model id (see `tuneforge models`).")
@click.option("--dataset", required=True, type=click.Path(path_type=Path), help="JSONL file of prompt/completion pairs.")
@click.option(
    "--output", required=True, type=click.Path(path_type=Path), help="Folder for the trials, best/, results.json and sweep.html."
)
@click.option("--trials", type=click.IntRange(min=0), default=0, help="Trials in the search, trial 0 (the defaults) included.")
@click.option(
    "--search", type=click.Choice(["tpe", "random", "grid"]), default="tpe", show_default=True, help="How trials are chosen."
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="NAME=LOW:HIGH[:log]|NAME=A,B,..",
    help="A hyperparameter to search, repeatable (default: the model's tunable ones over sub-ranges, docs/sweeps.md).",
)
@click.option(
    "--pruner",
    type=click.Choice(["asha", "none"]),
    default="asha",
    show_default=True,
    help="Stop trials whose validation loss trails the others' (successive halving).",
)
@click.option(
    "--parallel",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Trials at a time; the cores or GPUs are split between them.",
)
@click.option(
    "--learning-curve",
    is_flag=True,
    help="Train the defaults on 25 % and 50 % of the data too and say whether more data would help.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the sweep in --output: finished trials are kept, interrupted ones resume from their checkpoints.",
)
@click.option(
    "--storage",
    "storage_url",
    default=None,
    metavar="URL",
    help="Optuna storage, a SQLAlchemy URL (default: SQLite in --output).",
)
@click.option("--study-name", default="tuneforge-sweep", show_default=True, help="The study's name in --storage.")
@click.option(
    "--mlflow-tracking-uri", default=None, metavar="URI", help="Log the sweep to MLflow: a parent run, one nested run per trial."
)
@_weights_option(required=False)
@click.option(
    "--seed", type=int, default=None, help="Seed of the split, the data order, the adapter init and the sampler (default 42)."
)
@click.option(
    "--micro-batch-size", type=click.IntRange(min=1), default=None, help="Split each batch to bound memory; same result."
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="CPU threads per trial (default: the cores divided by --parallel).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results (and the learning curve) as JSON at the end.")
@_device_options
@hyperparameter_options
def sweep(
    base_model: str,
    dataset: Path,
    output: Path,
    trials: int,
    search: str,
    params: tuple[str, ...],
    pruner: str,
    parallel: int,
    learning_curve: bool,
    resume: bool,
    storage_url: str | None,
    study_name: str,
    mlflow_tracking_uri: str | None,
    weights: str | None,
    seed: int | None,
    micro_batch_size: int | None,
    threads: int | None,
    as_json: bool,
    device: str,
    precision: str,
    **flags: Any,
) -> None:
    """Search hyperparameters inside the catalog's ranges, or ask whether more data would help (exit 3 when stopped; --resume continues).

    Every trial is a real `tuneforge train` run; trial 0 is the defaults. Fixed hyperparameters take train's flags."""
    import signal
    import threading

    from tuneforge import data
    from tuneforge.catalog import get_model
    from tuneforge.run_folder import ExitCode
    from tuneforge.sweeps import SweepSpec, format_table, parse_params, run_learning_curve, run_sweep

    if not trials and not learning_curve:
        raise click.UsageError("give --trials N (a hyperparameter search), --learning-curve, or both")
    model = get_model(base_model)
    fixed = overrides_from_flags(flags, model)
    spec = SweepSpec(
        base_model_id=model.id,
        dataset=dataset,
        output=output,
        trials=trials,
        search=search,
        space=parse_params(params, model, fixed) if params else None,
        fixed=fixed,
        pruner=pruner,
        weights=weights,
        seed=data.DEFAULT_SEED if seed is None else seed,
        device=device,
        precision=precision,
        micro_batch_size=micro_batch_size,
        parallel=parallel,
        threads=threads,
        storage_url=storage_url,
        study_name=study_name,
        mlflow_tracking_uri=mlflow_tracking_uri,
    )
    _stand_in_notice(weights == "stand-in", "every run trains")
    stop = threading.Event()

    def request_stop(signum, frame):
        click.echo("\nStopping: checkpointing the running trials (run the same command with --resume to continue)...", err=True)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    summary = run_sweep(spec, resume=resume, should_stop=stop.is_set, on_event=_print_sweep_event) if trials else None
    curve = None
    if learning_curve and not stop.is_set():
        curve = run_learning_curve(spec, resume=resume, should_stop=stop.is_set, on_event=_print_sweep_event)
    if as_json:
        _print_json({"sweep": summary.to_json() if summary else None, "learningCurve": curve})
    else:
        if summary is not None:
            click.echo(format_table(summary))
            if summary.best is not None and summary.gain is not None:
                click.echo(
                    f"best: trial {summary.best.number}, validation loss {summary.best.validation_loss:.4f}, "
                    f"{summary.gain:.1%} below the defaults' (trial 0); its run folder: {output / 'best'}"
                )
            steps = summary.steps()
            click.echo(
                f"training steps: {steps['run']} run of {steps['planned']} planned; "
                f"the pruner saved {steps['savedByPruning']} ({steps['prunedShare']:.0%})"
            )
        if curve is not None and curve["fitted"]:
            expected = ", ".join(
                f"{p['scale']}x the data ({p['trainingExamples']} examples): {p['loss']:.4f} "
                f"(80 % interval {p['low']:.4f} to {p['high']:.4f})"
                for p in curve["predictions"]
            )
            click.echo(f"expected validation loss with {expected}")
        if curve is not None:
            click.echo(curve["verdict"])
        click.echo(f"report: {output / 'sweep.html'}")
    if stop.is_set():
        click.echo("Stopped; run the same command with --resume to continue.", err=True)
        raise SystemExit(ExitCode.STOPPED)


# --- tuneforge chat / export (tuneforge/serving; docs/serving.md) --------------------------------

_EXPORT_FORMATS = "peft: adapter + tokenizer + README; merged: a Hugging Face folder with the adapter folded in; gguf: one file for llama.cpp/Ollama."


@main.command()
@click.option(
    "--model",
    "model_dir",
    default=None,
    help="A `tuneforge train` output folder; or, with --endpoint, a custom model id, an endpoint id or a base model name.",
)
@click.option("--base-model", "base_model", default=None, metavar="ID", help="Chat with a base model instead (with --weights).")
@click.option(
    "--endpoint",
    "server",
    default=None,
    metavar="URL",
    help="A running `tuneforge serve` (e.g. http://127.0.0.1:8080): chat through its OpenAI-compatible API.",
)
@click.option(
    "--api-key",
    envvar="TUNEFORGE_API_KEY",
    default=None,
    help="With --endpoint: a bearer key from `tuneforge api-keys create-bearer` (or $TUNEFORGE_API_KEY).",
)
@_weights_option(required=False)
@click.option("--system", default=None, help="A system message that opens the conversation.")
@click.option("--max-new-tokens", type=click.IntRange(1, 4096), default=512, show_default=True, help="Per reply.")
@click.option("--temperature", type=click.FloatRange(0, 5), default=0.0, show_default=True, help="0 = greedy.")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed.")
@_device_options
def chat(
    model_dir, base_model, server, api_key, weights, system, max_new_tokens, temperature, top_p, seed, device, precision
) -> None:
    """Chat in the terminal, replies streamed: /reset clears the history, /exit or Ctrl-D ends."""
    from tuneforge.serving.terminal import COMMANDS, RemoteEngine, chat_loop, open_engine

    if server is not None:
        if model_dir is None or base_model is not None:
            raise click.UsageError("with --endpoint, give --model MODEL_ID (a custom model, an endpoint or a base model name)")
        if not api_key:
            raise click.UsageError("--endpoint needs --api-key KEY (or $TUNEFORGE_API_KEY): `tuneforge api-keys create-bearer`")
        engine, adapter, what = RemoteEngine(server, model_dir, api_key), None, f"{model_dir} at {server}"
    else:
        if (model_dir is None) == (base_model is None):
            raise click.UsageError("give either --model DIR or --base-model ID (with --weights), or --model ID --endpoint URL")
        _precision_notice(device, precision)
        engine, adapter, what, stand_in = open_engine(
            None if model_dir is None else Path(model_dir), base_model, weights, device, precision
        )
        _stand_in_notice(stand_in, "chatting with")
    if click.get_text_stream("stdin").isatty():
        click.echo(f"Chatting with {what}. {COMMANDS}.", err=True)
    sampling = dict(max_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    try:
        chat_loop(engine, adapter, sampling, system)
    finally:
        engine.shutdown()


@main.command()
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path), help="A `tuneforge train` output folder.")
@click.option("--format", "fmt", required=True, type=click.Choice(["peft", "merged", "gguf"]), help=_EXPORT_FORMATS)
@click.option(
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="The folder (peft, merged) or .gguf file to write; must not exist.",
)
@click.option(
    "--gguf-type",
    type=click.Choice(["f16", "q8_0"]),
    default="f16",
    show_default=True,
    help="GGUF tensor type (1-D tensors stay f32).",
)
def export(model_dir: Path, fmt: str, output: Path, gguf_type: str) -> None:
    """Export a fine-tuned model for PEFT, vLLM, llama.cpp or Ollama (docs/serving.md)."""
    from tuneforge.serving import export as exports

    if fmt == "peft":
        written = exports.export_peft(model_dir, output)
    elif fmt == "merged":
        written = exports.export_merged(model_dir, output)
    else:
        written = exports.export_gguf(model_dir, output, gguf_type)
    click.echo(f"{fmt} export written to {written}")
