"""What several commands share: the hyperparameter flags (and their one parser, tuneforge/train_command.py),
the device, weights and store options, the notices every command gives the same way, and printing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def method_option(help: str) -> Callable:
    """--method supervised|dpo (data.SUPERVISED, data.DPO): the training method of train, plan and sweep."""
    return click.option("--method", type=click.Choice(["supervised", "dpo"]), default="supervised", show_default=True, help=help)


def hyperparameter_options(f: Callable) -> Callable:
    """Add one string option per hyperparameter of the catalog, --total-training-epochs ... --lora-dropout,
    with the catalog's help text (ranges differ per model: `tuneforge models` lists them).

    Taken as text and converted by `overrides_from_flags`, so a bad value is reported with the
    API's camelCase field name, exactly as the REST API would report it."""
    from tuneforge.catalog import fields, list_models
    from tuneforge.hyperparams import METHOD_NAMES
    from tuneforge.train_command import hyperparameter_flag

    every_method = {m.method for m in list_models()}
    for field in reversed(fields().values()):
        only = "" if set(field.methods) == every_method else f" ({', '.join(METHOD_NAMES[m] for m in field.methods)} models only)"
        f = click.option(
            hyperparameter_flag(field.name),
            metavar=field.type.upper(),
            default=None,
            help=f"{field.name}: {field.description}{only}",
        )(f)
    return f


def hyperparameter_texts(kwargs: dict[str, Any]) -> dict[str, str]:
    """The hyperparameter flags that were given, as typed: {camelCase API name: text}. Ignores other
    keys, so a command can pass all its kwargs."""
    from tuneforge.hyperparams import SNAKE_NAMES

    return {api_name: kwargs[snake] for api_name, snake in SNAKE_NAMES.items() if kwargs.get(snake) is not None}


def overrides_from_flags(kwargs: dict[str, Any], model=None) -> dict[str, Any]:
    """The hyperparameter flags that were given, as {camelCase API name: int | float}, through the one
    parser of the trainer's command line (tuneforge/train_command.py)."""
    from tuneforge.train_command import parse_hyperparameters

    return parse_hyperparameters(hyperparameter_texts(kwargs), model)


def print_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2))


def print_rows(rows: list[tuple[str, Any]]) -> None:
    width = max(len(k) for k, _ in rows) + 1
    for key, value in rows:
        click.echo(f"{key + ':':<{width}} {value}")


def warn_deprecated(model) -> None:
    from tuneforge.engine.run import deprecated_warning

    click.echo(deprecated_warning(model.id), err=True)


def device_options(f: Callable) -> Callable:
    f = click.option(
        "--precision",
        type=click.Choice(["auto", "bf16", "fp32"]),
        default="auto",
        help="Precision of the frozen base's matrix products (activations stay fp32); auto = bf16 on CUDA and on CPUs with AVX512-BF16/AMX.",
    )(f)
    return click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", help="Where to run.")(f)


def precision_notice(device: str, precision: str) -> None:
    from tuneforge.engine.run import precision_warning

    warning = precision_warning(device, precision)
    if warning:
        click.echo(warning, err=True)


def weights_option(required: bool) -> Callable:
    return click.option(
        "--weights",
        "weights",
        default=None,
        required=required,
        metavar="PATH|stand-in",
        help="A Hugging Face model folder, a .gguf file, or `stand-in` (the bundled SmolLM2-135M-Instruct). "
        "Default: TUNEFORGE_WEIGHTS_<MODEL> or the Hugging Face cache.",
    )


def stand_in_notice(stand_in: bool, what: str) -> None:
    if stand_in:
        from tuneforge.engine.run import stand_in_note

        click.echo(stand_in_note(what), err=True)


def store_options(f: Callable) -> Callable:
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
