"""`tuneforge models` and `tuneforge plan`: the catalog, and what a fine-tune would do, without training
(nothing heavy is imported: `plan` answers in well under a second)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from tuneforge.cli.options import (
    hyperparameter_options,
    method_option,
    overrides_from_flags,
    print_json,
    print_rows,
    store_options,
    warn_deprecated,
)

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


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array with every range.")
@click.option(
    "--tenancy",
    default=None,
    metavar="OCID",
    help="Also list this tenancy's ACTIVE imported models (read from the store: --data-dir, --database-url).",
)
@click.option(
    "--discovery", is_flag=True, help="Print what GET /20231130/modelDiscovery answers (JSON: ranges, defaults, capabilities)."
)
@store_options
@click.pass_context
def models(
    ctx: click.Context, as_json: bool, tenancy: str | None, discovery: bool, data_dir: Path, database_url: str | None
) -> None:
    """List the base models that can be fine-tuned, with their default hyperparameters; `models import`
    checks (and with --tenancy registers) a model of your own."""
    if ctx.invoked_subcommand is not None:
        return
    from tuneforge.catalog import format_number, list_models

    catalog = list_models()
    imported = _imported_models(tenancy, data_dir, database_url) if tenancy else []
    if discovery:
        from tuneforge.services.resources import model_discovery

        items = [item for item, _ in model_discovery.catalog_items(_REGION)]
        items += [item for row, _ in imported if (item := model_discovery.imported_item(row, _REGION)) is not None]
        print_json([item.model_dump(by_alias=True, exclude_none=True) for item in items])
        return
    specs = [(m, "deprecated" if m.deprecated else "") for m in catalog] + [(spec, "imported") for _, spec in imported]
    if as_json:
        print_json([_model_json(m) for m, _ in specs])
        return
    width = max(len(m.id) for m, _ in specs)
    for m, marker in specs:
        defaults = " ".join(f"{p.name}={format_number(p.default)}" for p in m.params.values())
        click.echo(f"{m.id:<{width}}  {m.method:<4}  {marker:<10}  {defaults}")


_REGION = "local"  # `tuneforge serve`'s default --region: the region OCIDs made here carry


def _services(data_dir: Path, database_url: str | None, models_dirs: tuple[Path, ...] = ()):
    from tuneforge.services.config import ServiceConfig
    from tuneforge.services.context import Services
    from tuneforge.store.db import open_store

    config = ServiceConfig(data_dir=data_dir.resolve(), database_url=database_url, workers=0, models_dirs=models_dirs)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    return Services(config, open_store(config.url))


def _imported_models(tenancy: str, data_dir: Path, database_url: str | None) -> list:
    """The tenancy's ACTIVE imported models as (row, fine-tuning spec), oldest first."""
    from tuneforge.services.context import Caller
    from tuneforge.services.resources import imported_models, model_discovery

    svc = _services(data_dir, database_url)
    rows = imported_models.active_rows(svc, Caller(tenancy, "tuneforge-cli"))
    return [(row, spec) for row in rows if (spec := model_discovery.imported_spec(row)) is not None]


@models.command(name="import")
@click.argument("source")
@click.option("--branch", default=None, help="A Hugging Face id's branch (default main).")
@click.option("--commit", default=None, help="A Hugging Face id's commit (a full hash or a unique prefix).")
@click.option(
    "--models-dir",
    "models_dirs",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    multiple=True,
    metavar="DIR",
    help="Look for a Hugging Face id here before the Hugging Face cache (as `serve --models-dir`; repeatable).",
)
@click.option(
    "--tenancy",
    default=None,
    metavar="OCID",
    help="Register the model as this tenancy's imported model in the store (what the API's create does); "
    "without it the folder is only checked.",
)
@click.option("--compartment-id", default=None, metavar="OCID", help="With --tenancy (default: the tenancy).")
@click.option("--display-name", default=None)
@click.option("--vendor", default=None)
@click.option("--version", "model_version", default=None)
@store_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def import_model(
    source: str,
    branch: str | None,
    commit: str | None,
    models_dirs: tuple[Path, ...],
    tenancy: str | None,
    compartment_id: str | None,
    display_name: str | None,
    vendor: str | None,
    model_version: str | None,
    data_dir: Path,
    database_url: str | None,
    as_json: bool,
) -> None:
    """Check a model of your own, a Hugging Face id (found offline: --models-dir, then the Hugging Face
    cache) or a model folder, exactly as an import through the API checks it; with --tenancy, import it.

    Exit status 2 when anything is wrong (every problem is listed)."""
    from tuneforge import hf_cache

    folder = Path(source).expanduser()
    if folder.is_dir():
        if branch or commit:
            raise click.UsageError("--branch and --commit apply to a Hugging Face id, not to a folder")
        # A folder goes through the same code as a Hugging Face id found in a models folder: its parent is the
        # models folder and its name the id.
        roots, model_id, where = [folder.resolve().parent], folder.resolve().name, f"folder {folder}"
    else:
        roots = hf_cache.search_roots(tuple(d.resolve() for d in models_dirs))
        model_id, where = source, f"Hugging Face model {source}"
        folder = hf_cache.resolve(source, branch, commit, roots).path  # names every place it looked when it fails
    if tenancy is None:
        _print_check(where, _check_folder(folder), as_json)
        return
    _import(
        tenancy,
        compartment_id or tenancy,
        model_id,
        branch,
        commit,
        roots,
        display_name,
        vendor,
        model_version,
        where,
        data_dir,
        database_url,
        as_json,
    )


def _check_folder(folder: Path):
    from tuneforge.model_folder import check
    from tuneforge.services.resources import imported_models

    report = check(folder)
    if report.ok:
        report.problems += imported_models.spec_problems(folder.name, report)
    return report


def _print_check(where: str, report, as_json: bool, imported=None) -> None:
    if as_json:
        out = {"source": where, "ok": report.ok, "problems": report.problems, "notes": report.notes}
        if imported is not None:
            out["importedModel"] = imported.model_dump(by_alias=True, exclude_none=True)
        print_json(out)
    else:
        click.echo(f"Checked {where}:")
        for note in report.notes:
            click.echo(f"  {note}")
        if report.ok:
            click.echo("  config.json and architecture, shards, tensor shapes, dtypes, tokenizer and chat template: all pass")
        else:
            click.echo(f"{len(report.problems)} problem(s):")
            for problem in report.problems:
                click.echo(f"  - {problem}")
        if imported is not None:
            click.echo(f"Imported model {imported.id}: {imported.lifecycle_state}")
    if not report.ok:
        raise SystemExit(2)


def _import(
    tenancy,
    compartment_id,
    model_id,
    branch,
    commit,
    roots,
    display_name,
    vendor,
    model_version,
    where,
    data_dir,
    database_url,
    as_json,
) -> None:
    from tuneforge.model_folder import FolderReport
    from tuneforge.services.context import Caller
    from tuneforge.services.errors import ServiceError
    from tuneforge.services.resources import imported_models
    from tuneforge.services.schemas.imported_models import CreateImportedModelDetails

    svc = _services(data_dir, database_url, tuple(roots))
    caller = Caller(tenancy, "tuneforge-cli")
    details = CreateImportedModelDetails(
        compartment_id=compartment_id,
        display_name=display_name,
        vendor=vendor,
        version=model_version,
        data_source={"sourceType": "HUGGING_FACE_MODEL", "modelId": model_id, "branch": branch, "commit": commit},
    )
    try:
        created = imported_models.create_imported_model(svc, caller, details, background=False).value
    except ServiceError as err:
        raise click.ClickException(err.message) from None
    report = imported_models.run_import(svc, created.id) or FolderReport(problems=["the import did not run"])
    final = imported_models.get_imported_model(svc, caller, created.id).value
    if final.lifecycle_state != "ACTIVE" and report.ok:  # the source itself was not found
        report.problems.append(final.lifecycle_details or "the import failed")
    _print_check(where, report, as_json, final)


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


def _plan_base(base_model: str, data_dir: Path, database_url: str | None):
    """plan's --base-model and the folder of its own weights (None for a catalog id): a catalog id, a model
    folder, a Hugging Face id in the cache, or an imported model's OCID, read from the server's store."""
    from tuneforge.catalog import find_base_model
    from tuneforge.errors import InvalidParameter
    from tuneforge.store.ids import IMPORTED_MODEL

    if not base_model.startswith(f"ocid1.{IMPORTED_MODEL}."):
        return find_base_model(base_model)
    from tuneforge.catalog import spec_for_config
    from tuneforge.store.tables import ImportedModelRow

    if database_url is None and not (data_dir / "tuneforge.db").is_file():
        raise click.UsageError(
            f"--base-model {base_model}: an imported model is read from the server's store; pass its --data-dir"
        )
    with _services(data_dir, database_url).session() as session:
        row = session.get(ImportedModelRow, base_model)
    if row is None or row.lifecycle_state != "ACTIVE" or not row.weights_dir:
        state = "not in this store" if row is None else row.lifecycle_state
        raise InvalidParameter("baseModelId", base_model, f"an ACTIVE imported model of the server's store (this one: {state})")
    return spec_for_config(row.id, row.display_name, row.vendor, row.config or {}), Path(row.weights_dir)


@click.command()
@click.option(
    "--base-model",
    "base_model",
    required=True,
    metavar="ID|DIR|ORG/NAME|OCID",
    help="A catalog model id (see `tuneforge models`), a model folder, a Hugging Face id in the Hugging Face cache, or "
    "an imported model's OCID (read from the server's --data-dir); the last three are sized from their config.json.",
)
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
@method_option("dpo: a preference file (docs/dpo.md), the DPO training config (--beta) and its steps.")
@_capacity_options
@store_options
@hyperparameter_options
def plan(
    base_model: str,
    dataset: Path,
    seed: int | None,
    weights: Path | None,
    as_json: bool,
    data_dir: Path,
    database_url: str | None,
    gpus: int | None,
    nodes: int,
    gpu_type: str,
    gpu_memory_gib: float | None,
    quantize_base: str | None,
    activation_checkpointing: bool,
    micro_batch_size: int | None,
    method: str,
    **flags: Any,
) -> None:
    """Validate a fine-tuning request and show what training would do, without training.

    With --gpus: the memory each GPU needs, whether it fits, the training time and what to change (docs/scale-out.md)."""
    from tuneforge import data
    from tuneforge.hyperparams import config_type_of, make_plan, resolve_training_config

    model, own_weights = _plan_base(base_model, data_dir, database_url)
    if own_weights is not None:
        if weights is not None:
            raise click.UsageError("--weights is for a catalog --base-model; this one has its own tokenizer and config.json")
        weights = own_weights  # its tokenizer counts the tokens, its config.json sizes the run
    if method == data.DPO and gpus is not None:
        # The capacity model sizes a supervised step; DPO adds a reference pass and runs on one device (docs/dpo.md).
        raise click.UsageError("--gpus sizes supervised runs; DPO (--method dpo) trains on one device and is not sized")
    config = resolve_training_config(model, {**overrides_from_flags(flags, model), "trainingConfigType": config_type_of(method)})
    seed = data.DEFAULT_SEED if seed is None else seed
    stand_in_data = dataset is None
    if stand_in_data:
        if gpus is None:
            raise click.UsageError("Missing option '--dataset' (it may be left out only with --gpus).")
        # A capacity question without data ("does a 70B LoRA fit 8 x 80 GB?"): memory barely depends on the data,
        # time does, so the bundled example sizes the run and the output says so.
        dataset = Path(__file__).parents[1] / "examples" / "dates.jsonl"
    count_tokens = _load_token_counter(weights)
    if count_tokens is None and gpus is None:
        n = data.scan_dataset(dataset, method=method)
    else:
        examples = data.read_examples(dataset, method=method)
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
        warn_deprecated(model)
    if as_json:
        print_json(
            {
                "baseModelId": model.id,
                **({"architecture": model.architecture} if own_weights is not None else {}),  # sized from its config.json
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
        *([("architecture", f"{model.architecture} (its config.json)")] if own_weights is not None else []),
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
        ("evaluation", summary.evaluation.describe()),
        ("tokenLengths", "checked" if count_tokens else "not checked (pass --weights DIR with tokenizer.json)"),
    ]
    print_rows(rows + (_capacity_rows(capacity) if capacity else []))


def _capacity(model, config, examples, seed, count_tokens, weights: Path | None, layout):
    """The capacity model's estimate for this dataset: real token counts with a tokenizer, else CHARS_PER_TOKEN."""
    from tuneforge import capacity, data
    from tuneforge.catalog import ModelShape

    shape = model.shape
    if weights is not None and (weights / "config.json").is_file():  # the weights' own architecture over the catalog's
        shape = ModelShape.from_hf_config(json.loads((weights / "config.json").read_text()))
    count = count_tokens or capacity.estimated_tokens
    train, val = data.split_examples(examples, seed)
    lengths = [[e.token_counts(count) for e in part] for part in (train, val)]
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
