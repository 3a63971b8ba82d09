"""Experiment tracking in MLflow, optional: `pip install 'tuneforge[tracking]'`.

`tuneforge train --mlflow-tracking-uri URI` logs one MLflow run: its parameters (the resolved training
config, base model, weights, seed), the metric curves as the engine writes its records (a listener
over the same records as metrics.jsonl: training loss, learning rate, tokens/s, validation loss and
accuracy, by step), the final metrics, and the adapter folder, model.json and report.html as
artifacts. `tuneforge sweep --mlflow-tracking-uri URI` logs a parent run with one nested run per
trial: the sweep creates each trial's run and hands its id to the trial's `tuneforge train` in the
environment variable MLFLOW_RUN_ID (MLflow's own name for "the run to log into"), so the service gets
the same logging by passing the flag to its own `tuneforge train` subprocesses.

mlflow is imported only when a tracking URI is given (it takes ~3 s and is not installed by default):
`plan` and `train` without the flag never import it.
"""

from __future__ import annotations

from tuneforge.tracking.mlflow_runs import NULL_RUN, NULL_SWEEP, RunTracker, SweepTracker, check_server, sweep_tracker, track_run

__all__ = ["NULL_RUN", "NULL_SWEEP", "RunTracker", "SweepTracker", "check_server", "sweep_tracker", "track_run"]
