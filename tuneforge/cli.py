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
from pathlib import Path
from typing import Any, Callable

import click

from tuneforge.errors import InvalidParameter, TuneForgeError


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

# API field -> (metavar, help). Ranges differ per model: `tuneforge models` lists them.
_HYPERPARAMETER_HELP = {
    "totalTrainingEpochs": ("INT", "Passes over the training split."),
    "learningRate": ("FLOAT", "Learning rate."),
    "trainingBatchSize": ("INT", "Examples per optimizer step."),
    "earlyStoppingPatience": ("INT", "Evaluations without improvement before stopping; 0 disables."),
    "earlyStoppingThreshold": ("FLOAT", "Minimum validation-loss decrease that counts as improvement."),
    "logModelMetricsIntervalInSteps": ("INT", "Steps between metric log entries (T-Few: fixed at 1)."),
    "loraR": ("INT", "LoRA rank (LoRA models only)."),
    "loraAlpha": ("INT", "LoRA scaling numerator, alpha / r (LoRA models only)."),
    "loraDropout": ("FLOAT", "LoRA dropout probability, below 1 (LoRA models only)."),
}


def _kebab(api_name: str) -> str:
    from tuneforge.hyperparams import SNAKE_NAMES

    return SNAKE_NAMES[api_name].replace("_", "-")


def hyperparameter_options(f: Callable) -> Callable:
    """Add one string option per hyperparameter, --total-training-epochs ... --lora-dropout.

    Taken as text and converted by `overrides_from_flags`, so a bad value is reported with the
    API's camelCase field name, exactly as the REST API would report it."""
    for api_name, (metavar, help_text) in reversed(_HYPERPARAMETER_HELP.items()):
        f = click.option(f"--{_kebab(api_name)}", metavar=metavar, default=None, help=f"{api_name}: {help_text}")(f)
    return f


def overrides_from_flags(kwargs: dict[str, Any], model=None) -> dict[str, Any]:
    """The hyperparameter flags that were given, as {camelCase API name: int | float}.

    Ignores other keys, so a command can pass all its kwargs. "3.5" or "3.0" for an integer field
    is an InvalidParameter naming the field (and, given the model, its range); range checks are
    left to resolve_training_config."""
    from tuneforge.hyperparams import FIELD_TYPES, SNAKE_NAMES

    out: dict[str, Any] = {}
    for api_name, snake in SNAKE_NAMES.items():
        text = kwargs.get(snake)
        if text is None:
            continue
        if isinstance(text, str):
            text = text.strip()
        try:
            out[api_name] = FIELD_TYPES[api_name](text)
        except (TypeError, ValueError):
            kind = "an integer" if FIELD_TYPES[api_name] is int else "a number"
            spec = model.params.get(api_name) if model is not None else None
            allowed = f"; allowed: {spec.allowed()}" if spec is not None else ""
            raise InvalidParameter(api_name, text, f"must be {kind}{allowed}") from None
    return out


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

STEPS_RULE = "totalTrainingEpochs * ceil(trainingExamples / trainingBatchSize)"


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
@click.option("--dataset", required=True, type=click.Path(path_type=Path), help="JSONL file of prompt/completion pairs.")
@click.option("--seed", type=int, default=None, help="Seed of the 80:20 split (default 42).")
@click.option(
    "--weights",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Model folder; if it holds tokenizer.json, prompt/completion token lengths are checked.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@hyperparameter_options
def plan(base_model: str, dataset: Path, seed: int | None, weights: Path | None, as_json: bool, **flags: Any) -> None:
    """Validate a fine-tuning request and show what training would do, without training."""
    from tuneforge import data
    from tuneforge.catalog import get_model
    from tuneforge.hyperparams import resolve_training_config, steps_per_epoch, total_training_steps

    model = get_model(base_model)
    config = resolve_training_config(model, overrides_from_flags(flags, model))
    seed = data.DEFAULT_SEED if seed is None else seed
    count_tokens = _load_token_counter(weights)
    if count_tokens is None:
        n = data.scan_dataset(dataset)
    else:
        examples = data.read_examples(dataset)
        data.check_token_lengths(
            examples,
            count_tokens,
            max_prompt_tokens=model.max_prompt_tokens,
            max_completion_tokens=model.max_completion_tokens,
            context_tokens=model.context_tokens,
            path=dataset,
        )
        n = len(examples)
    n_train, n_val = data.split_sizes(n)
    per_epoch = steps_per_epoch(n_train, config.training_batch_size)
    total = total_training_steps(n_train, config.training_batch_size, config.total_training_epochs)
    if model.deprecated:
        _warn_deprecated(model)
    if as_json:
        _print_json(
            {
                "baseModelId": model.id,
                "method": model.method,
                "deprecated": model.deprecated,
                "trainingConfig": config.to_api(),
                "datasetExamples": n,
                "trainingExamples": n_train,
                "validationExamples": n_val,
                "stepsPerEpoch": per_epoch,
                "totalTrainingSteps": total,
                "totalTrainingStepsRule": STEPS_RULE,
                "seed": seed,
                "tokenLengthsChecked": count_tokens is not None,
            }
        )
        return
    api = config.to_api()
    rows: list[tuple[str, Any]] = [
        ("baseModelId", model.id + (" (DEPRECATED)" if model.deprecated else "")),
        ("method", f"{model.method} ({api.pop('trainingConfigType')})"),
        ("dataset", f"{dataset}: {n} examples"),
        ("split", f"{n_train} training + {n_val} validation (80:20, seed {seed})"),
        *api.items(),
        ("stepsPerEpoch", per_epoch),
        ("totalTrainingSteps", f"{total} = {config.total_training_epochs} * ceil({n_train} / {config.training_batch_size})"),
        ("tokenLengths", "checked" if count_tokens else "not checked (pass --weights DIR with tokenizer.json)"),
    ]
    _print_rows(rows)



# --- tuneforge train -----------------------------------------------------------------------------

EXIT_STOPPED = 3  # stopped by SIGTERM / Ctrl-C after saving a checkpoint; rerun with --resume


def _device_options(f: Callable) -> Callable:
    f = click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto",
                     help="Precision of the frozen base's matrix products (activations stay fp32); auto = bf16 on CUDA and on CPUs with AVX512-BF16/AMX.")(f)
    return click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", help="Where to run.")(f)


def _precision_notice(device: str, precision: str) -> None:
    if precision != "bf16" or device == "cuda":
        return
    from tuneforge.engine.train import cpu_has_bf16_matmuls, pick_device

    if pick_device(device) == "cpu" and not cpu_has_bf16_matmuls():
        click.echo("Warning: --precision bf16: this CPU has neither AVX512-BF16 nor AMX, so bf16 matrix products run "
                   "hundreds of times slower than fp32 here; --precision auto picks fp32 on such CPUs.", err=True)


def _weights_option(required: bool) -> Callable:
    return click.option(
        "--weights", "weights", default=None, required=required, metavar="PATH|stand-in",
        help="A Hugging Face model folder, a .gguf file, or `stand-in` (the bundled SmolLM2-135M-Instruct). "
        "Default: TUNEFORGE_WEIGHTS_<MODEL> or the Hugging Face cache.",
    )


def _stand_in_notice(stand_in: bool, what: str) -> None:
    if stand_in:
        click.echo(f"Note: {what} the bundled SmolLM2-135M-Instruct stand-in, not the real base-model weights.", err=True)


def _print_performance(result: dict) -> None:
    m = result["modelMetrics"]
    _print_rows([
        ("baseModelId", result["baseModelId"] + (" (on the SmolLM2-135M-Instruct stand-in)" if result["standIn"] else "")),
        ("steps", f"{result['stepsRun']} of {result['totalTrainingSteps']}" + (" (early stopped)" if result["earlyStopped"] else "")),
        ("bestStep", result["bestStep"]),
        ("finalAccuracy", f"{m['finalAccuracy']:.4f}  (validation split, completion tokens)"),
        ("finalLoss", f"{m['finalLoss']:.4f}"),
        ("time", f"{result['timings']['totalSeconds']:.0f} s (train {result['timings']['trainSeconds']:.0f} s, eval {result['timings']['evalSeconds']:.0f} s)"),
    ])


@main.command()
@click.option("--base-model", "base_model", required=True, metavar="ID", help="Catalog model id (see `tuneforge models`).")
@click.option("--dataset", required=True, type=click.Path(path_type=Path), help="JSONL file of prompt/completion pairs.")
@click.option("--output", required=True, type=click.Path(path_type=Path), help="Folder for the adapter, model.json, metrics and report.")
@_weights_option(required=False)
@click.option("--seed", type=int, default=None, help="Seed of the split, the data order and the adapter init (default 42).")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint in --output.")
@click.option("--micro-batch-size", type=click.IntRange(min=1), default=None, help="Split each batch to bound memory; same result.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: every core).")
@click.option("--json", "as_json", is_flag=True, help="Print model.json on stdout at the end.")
@_device_options
@hyperparameter_options
def train(base_model: str, dataset: Path, output: Path, weights: str | None, seed: int | None, resume: bool,
          micro_batch_size: int | None, threads: int | None, as_json: bool, device: str, precision: str, **flags: Any) -> None:
    """Fine-tune a base model on a JSONL dataset (exit 3 when stopped; --resume continues)."""
    import signal
    import threading

    from tuneforge import data
    from tuneforge.catalog import get_model
    from tuneforge.engine.weights import resolve_weights
    from tuneforge.hyperparams import resolve_training_config

    model = get_model(base_model)
    config = resolve_training_config(model, overrides_from_flags(flags, model))
    data.scan_dataset(dataset)  # fail on bad data before loading any weights
    resolved = resolve_weights(weights, model_id=model.id, weights_repo=model.weights_repo)
    if model.deprecated:
        _warn_deprecated(model)
    _stand_in_notice(resolved.stand_in, "training runs on")
    _precision_notice(device, precision)

    import torch

    from tuneforge.engine.progress import ProgressBar
    from tuneforge.engine.train import RunSpec, fine_tune

    if threads:
        torch.set_num_threads(threads)

    stop = threading.Event()

    def request_stop(signum, frame):
        click.echo("\nStopping: saving a checkpoint (run again with --resume to continue)...", err=True)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    bar = ProgressBar()
    run = RunSpec(
        base_model=model, config=config, dataset=dataset, weights=resolved, output=output,
        seed=data.DEFAULT_SEED if seed is None else seed, device=device, precision=precision,
        micro_batch_size=micro_batch_size, resume=resume, listeners=[bar.on_record], should_stop=stop.is_set,
    )
    try:
        result = fine_tune(run)
    finally:
        bar.close()
    if result.get("stopped"):
        click.echo(f"Stopped at step {result['stepsRun']} of {result['totalTrainingSteps']}; checkpoint saved in {output}.", err=True)
        raise SystemExit(EXIT_STOPPED)
    if as_json:
        _print_json(result)
    else:
        _print_performance(result)
        click.echo(f"Adapter (PEFT format): {output / 'adapter'}    report: {output / 'report.html'}")


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
@click.option("--split", type=click.Choice(["all", "train", "validation"]), default="all",
              help="Which part of the dataset: `validation` is the 20 % held out by training with the same --seed.")
@click.option("--seed", type=int, default=None, help="Seed of the 80:20 split (default 42).")
@click.option("--compare-base", is_flag=True, help="With --model: also evaluate its base model, side by side.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_device_options
def eval_command(model_dir, base_model, weights, dataset, split, seed, compare_base, as_json, device, precision) -> None:
    """Loss, token accuracy and exact match of greedy generations on a dataset."""
    from tuneforge import data

    examples = data.read_examples(dataset)
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
        click.echo(f"exact match: base {b['exactMatch']:.1%} -> fine-tuned {m['exactMatch']:.1%}; "
                   f"token accuracy {b['accuracy']:.1%} -> {m['accuracy']:.1%}; loss {b['loss']:.3f} -> {m['loss']:.3f}")


@main.command()
@click.option("--model", "model_dir", type=click.Path(path_type=Path), default=None, help="A `tuneforge train` output folder.")
@click.option("--base-model", "base_model", default=None, metavar="ID", help="Generate with a base model instead (with --weights).")
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
    f = click.option("--database-url", default=None, metavar="URL",
                     help="SQLAlchemy URL, e.g. postgresql://user@host/db (default: SQLite in the data dir).")(f)  # fmt: skip
    return click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("tuneforge-data"),
                        show_default=True, help="Where objects, jobs and the SQLite database live.")(f)  # fmt: skip


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (put TLS in front: docs/service.md).")
@click.option("--port", type=int, default=8080, show_default=True)
@_store_options
@click.option("--weights", default=None, metavar="PATH|stand-in",
              help="Weights for every job (as `train --weights`); default: the engine's per-model lookup.")  # fmt: skip
@click.option("--workers", type=click.IntRange(min=0), default=1, show_default=True,
              help="Training jobs this process runs at once (0: API only, jobs run on other servers).")  # fmt: skip
@click.option("--max-attempts", type=click.IntRange(min=1), default=3, show_default=True,
              help="Times a job is started before it fails when its worker keeps dying.")  # fmt: skip
@click.option("--region", default="local", show_default=True, help="Region name used in OCIDs.")
def serve(host: str, port: int, data_dir: Path, database_url: str | None, weights: str | None, workers: int,
          max_attempts: int, region: str) -> None:  # fmt: skip
    """Run the OCI-compatible fine-tuning API and its training workers."""
    from tuneforge.api.config import ServiceConfig
    from tuneforge.api.server import serve as run_server

    config = ServiceConfig(data_dir=data_dir.resolve(), database_url=database_url, weights=weights, workers=workers,
                           region=region, max_attempts=max_attempts)  # fmt: skip
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
@click.option("--public-key-file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PEM public key (or the private key; only its public half is stored).")  # fmt: skip
@_store_options
def api_keys_add(tenancy: str, user: str, public_key_file: Path, data_dir: Path, database_url: str | None) -> None:
    """Register a key; prints its fingerprint (the SDK config's `fingerprint`)."""
    from tuneforge.api.keys import add_key

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
    from tuneforge.api.keys import list_keys

    with _key_store(data_dir, database_url)() as session:
        for row in list_keys(session, tenancy):
            click.echo(f"{row.tenancy_id}  {row.user_id}  {row.fingerprint}")


@api_keys.command(name="remove")
@click.argument("key", metavar="FINGERPRINT|KEY_ID")
@_store_options
def api_keys_remove(key: str, data_dir: Path, database_url: str | None) -> None:
    """Remove a key by fingerprint or by keyId (tenancy/user/fingerprint)."""
    from tuneforge.api.keys import remove_key

    with _key_store(data_dir, database_url)() as session:
        removed = remove_key(session, key)
        session.commit()
    if not removed:
        raise click.ClickException(f"no key {key!r} is registered")
    click.echo(f"removed {removed} key(s)")


# --- tuneforge console-users (the web console's sign-in; tuneforge/web/users.py) ----------------


def _console_data_dir(f: Callable) -> Callable:
    # The users file lives in the data dir (DATA_DIR/console/users.json), so only --data-dir matters.
    return click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("tuneforge-data"),
                        show_default=True, help="The server's --data-dir.")(f)  # fmt: skip


@main.group(name="console-users")
def console_users() -> None:
    """Users who sign in to the web console with a password; each belongs to one tenancy."""


@console_users.command(name="add")
@click.option("--tenancy", required=True, metavar="OCID", help="The tenancy whose models the user sees and creates.")
@click.option("--username", required=True, help="Sign-in name (letters, digits, . _ @ + -).")
@click.option("--password-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Read the password from this file (first line); default: prompt for it.")  # fmt: skip
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
