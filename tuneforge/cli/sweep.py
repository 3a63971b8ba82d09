"""`tuneforge sweep` (tuneforge/sweeps; docs/sweeps.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from tuneforge.cli.options import (
    device_options,
    hyperparameter_options,
    method_option,
    overrides_from_flags,
    print_json,
    stand_in_notice,
    weights_option,
)


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


@click.command()
@click.option("--base-model", "base_model", required=True, metavar="ID", help="Catalog model id (see `tuneforge models`).")
@click.option("--dataset", required=True, type=click.Path(path_type=Path), help="JSONL file of prompt/completion pairs.")
@click.option(
    "--output", required=True, type=click.Path(path_type=Path), help="Folder for the trials, best/, results.json and sweep.html."
)
@click.option("--trials", type=click.IntRange(min=0), default=0, help="Trials in the search, trial 0 (the defaults) included.")
@method_option("dpo: every trial is preference tuning (train --method dpo) on a preference file, and beta is searchable.")
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
@weights_option(required=False)
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
@device_options
@hyperparameter_options
def sweep(
    base_model: str,
    dataset: Path,
    output: Path,
    trials: int,
    search: str,
    method: str,
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
    from tuneforge.sweeps.space import for_method

    if not trials and not learning_curve:
        raise click.UsageError("give --trials N (a hyperparameter search), --learning-curve, or both")
    if method == data.DPO and learning_curve:
        # Its scoring reads supervised examples (sweeps/score.py), not preference pairs.
        raise click.UsageError("--learning-curve is not offered for --method dpo")
    model = for_method(get_model(base_model), method)
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
        method=method,
    )
    stand_in_notice(weights == "stand-in", "every run trains")
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
        print_json({"sweep": summary.to_json() if summary else None, "learningCurve": curve})
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
