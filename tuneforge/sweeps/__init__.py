"""Hyperparameter sweeps and "would more data help?": searches over the catalog's ranges with Optuna,
each trial a real `tuneforge train` subprocess, pruned on its evaluation cycles; learning curves.

The Python API (the CLI's `tuneforge sweep` is a thin layer over it; the service calls the same):

    spec = SweepSpec(base_model_id, dataset, output, trials=8, space=parse_params([...], model) or None,
                     fixed={...}, weights="stand-in", parallel=2, storage_url="postgresql://...", worker_id="server-1")
    summary = run_sweep(spec, resume=False, should_stop=event.is_set, on_event=callback)   # -> SweepSummary
    curve = run_learning_curve(spec, resume=False, should_stop=..., on_event=...)          # -> dict | None

Rooms: space (the search space, --param), spec (SweepSpec, the output folder, checks), trials (the
training subprocesses), study (Optuna: samplers, pruner, the loop), results (the ranked summary),
learning_curve, score (per-example losses), report + plots (sweep.html).
"""

from tuneforge.sweeps.learning_curve import run_learning_curve
from tuneforge.sweeps.results import SweepSummary, TrialRow, format_table
from tuneforge.sweeps.space import SearchSpace, default_space, parse_params, space_from_json, space_to_json
from tuneforge.sweeps.spec import SweepFolder, SweepSpec, prepare
from tuneforge.sweeps.study import run_sweep

__all__ = [
    "SearchSpace",
    "SweepFolder",
    "SweepSpec",
    "SweepSummary",
    "TrialRow",
    "default_space",
    "format_table",
    "parse_params",
    "prepare",
    "run_learning_curve",
    "run_sweep",
    "space_from_json",
    "space_to_json",
]
