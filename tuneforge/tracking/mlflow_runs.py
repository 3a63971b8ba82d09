"""MLflow runs of a fine-tune (`RunTracker`) and of a sweep (`SweepTracker`), through MlflowClient
(explicit run ids, no global "active run": a sweep process holds several runs at once).

Metric records are logged asynchronously (MLflow's own background queue), so a slow tracking server
never slows training; a logging failure after the start is a warning, not the end of a fine-tune.
A failure to reach the server at the start is an error, before any weights are loaded.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.errors import TuneForgeError
from tuneforge.run_folder import RunFolder

if TYPE_CHECKING:
    from tuneforge.catalog import BaseModelSpec
    from tuneforge.engine.weights import Weights
    from tuneforge.hyperparams import TrainingConfig
    from tuneforge.sweeps.results import SweepSummary, TrialRow
    from tuneforge.sweeps.spec import Setup

MLFLOW_VERSION = "3.17.2"
INSTALL = f"pip install 'tuneforge[tracking]' (or pip install mlflow=={MLFLOW_VERSION})"
EXPERIMENT = "tuneforge"  # unless MLFLOW_EXPERIMENT_NAME (MLflow's own variable) names another
RUN_FOLDER_TAG = "tuneforge.runFolder"
PARENT_TAG = "mlflow.parentRunId"  # MLflow's tag for nested runs
# metrics.jsonl field -> MLflow metric name, per record kind
METRICS = {
    "train": {"loss": "trainLoss", "learningRate": "learningRate", "tokensPerSecond": "tokensPerSecond"},
    "eval": {"validationLoss": "validationLoss", "validationAccuracy": "validationAccuracy"},
}


def _client(uri: str):
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise TuneForgeError(f"--mlflow-tracking-uri needs MLflow, which is not installed: {INSTALL}") from None
    # MLflow retries a refused connection for minutes by default; a mistyped URI should fail in seconds.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    # Our stdout is the command's output (--json); MLflow would print "View run ... at: URL" on it.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    return MlflowClient(tracking_uri=uri)


def check_server(uri: str | None) -> None:
    """Raise a user-facing error now if `uri` is given and MLflow is missing or the server cannot be reached."""
    if not uri:
        return
    client = _client(uri)
    try:
        client.search_experiments(max_results=1)
    except Exception as err:
        raise _unreachable(uri, err) from None


def _unreachable(uri: str, err: Exception) -> TuneForgeError:
    return TuneForgeError(f"--mlflow-tracking-uri {uri}: cannot log to MLflow there ({_reason(err)})")


def _reason(err: Exception) -> str:
    """Why, in a sentence: MLflow's HTTP client raises urllib3's text, which embeds Python reprs
    ("Caused by NewConnectionError(...)") that mean nothing to a user."""
    text = str(err)
    lowered = text.lower()
    if "connection refused" in lowered or "newconnectionerror" in lowered:
        return "nothing answers at that address: is the MLflow server running?"
    if "name or service not known" in lowered or "nodename nor servname" in lowered or "failed to resolve" in lowered:
        return "its host name does not resolve"
    if "timed out" in lowered or "timeout" in lowered:
        return "it did not answer in time"
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    for cut in (" (Caused by", "Max retries exceeded"):
        first = first.split(cut)[0]
    return first.strip().rstrip(":")[:300] or type(err).__name__


def _experiment_id(client) -> str:
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # created by a parallel run in the meantime
        return client.get_experiment_by_name(name).experiment_id


def _warn(err: Exception) -> None:
    sys.stderr.write(
        f"Warning: MLflow logging failed ({str(err).strip().splitlines()[0][:300] if str(err).strip() else err!r}); training goes on.\n"
    )


def _ms() -> int:
    return int(time.time() * 1000)


class RunTracker:
    """One `tuneforge train` run's MLflow run. `on_record` is an engine listener; `end` reads the
    run folder once training is over: finished, stopped (a checkpoint; --resume continues the
    same MLflow run) or failed."""

    def __init__(self, client, run_id: str, folder: RunFolder):
        self.client, self.run_id, self.folder = client, run_id, folder
        self.listeners = [self.on_record]
        self._pending: list[Any] = []
        self._failed = False

    def on_record(self, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        names = METRICS.get(record.get("kind"), {})
        step, now = int(record.get("step", 0)), _ms()
        metrics = [Metric(name, float(record[key]), now, step) for key, name in names.items() if record.get(key) is not None]
        if metrics and not self._failed:
            try:
                self._pending.append(self.client.log_batch(self.run_id, metrics=metrics, synchronous=False))
            except Exception as err:
                self._fail(err)

    def _fail(self, err: Exception) -> None:
        if not self._failed:
            _warn(err)
        self._failed = True

    def end(self) -> None:
        from mlflow.entities import Metric

        for op in self._pending:
            try:
                op.wait()
            except Exception as err:
                self._fail(err)
        self._pending.clear()
        folder = self.folder
        result = folder.read_result() if folder.is_finished() else None
        progress = folder.read_progress()
        try:
            if result is not None:
                final = {
                    "finalLoss": result.final_loss,
                    "finalAccuracy": result.final_accuracy,
                    "stepsRun": result.steps_run,
                    "bestStep": result.best_step,
                    "trainSeconds": result.timings.get("trainSeconds", 0.0),
                    "totalSeconds": result.timings.get("totalSeconds", 0.0),
                }
                self.client.log_batch(
                    self.run_id, metrics=[Metric(k, float(v), _ms(), result.steps_run) for k, v in final.items()]
                )
                self.client.log_artifacts(self.run_id, str(folder.adapter_dir), "adapter")
                for path in (folder.model_json, folder.report_html):
                    if path.is_file():
                        self.client.log_artifact(self.run_id, str(path))
                status = "FINISHED"
            elif progress is not None and progress.phase == "stopped":
                status = "KILLED"
            else:
                error = folder.read_error()
                if error is not None:
                    self.client.set_tag(self.run_id, "tuneforge.error", error.message[:5000])
                status = "FAILED"
            self.client.set_terminated(self.run_id, status)
        except Exception as err:
            self._fail(err)


class _NullRun:
    listeners: list = []

    def end(self) -> None:
        pass


NULL_RUN = _NullRun()


def run_params(model: BaseModelSpec, config: TrainingConfig, weights: Weights, seed: int) -> dict[str, Any]:
    return {
        "baseModelId": model.id,
        "method": model.method,
        "weights": weights.source,
        "weightsDescription": weights.description,
        "standIn": weights.stand_in,
        "seed": seed,
        **config.to_api(),
    }


def track_run(
    uri: str | None, output: Path, *, model: BaseModelSpec, config: TrainingConfig, weights: Weights, seed: int, resume: bool
):
    """The tracker of a `tuneforge train` run: a RunTracker logging to `uri`, or NULL_RUN without one.

    The MLflow run is MLFLOW_RUN_ID when set (a sweep's trial), else, on --resume, the unfinished
    run of the same output folder, else a new run in the experiment MLFLOW_EXPERIMENT_NAME (default
    "tuneforge")."""
    if not uri:
        return NULL_RUN
    client = _client(uri)
    from mlflow.entities import Param, RunTag

    path = str(Path(output).resolve())
    try:
        run_id = os.environ.get("MLFLOW_RUN_ID") or (_unfinished_run(client, path) if resume else None)
        if run_id:
            client.update_run(run_id, status="RUNNING")
        else:
            run_id = client.create_run(_experiment_id(client), run_name=Path(output).name).info.run_id
        params = [Param(k, str(v)) for k, v in run_params(model, config, weights, seed).items()]
        client.log_batch(run_id, params=params, tags=[RunTag(RUN_FOLDER_TAG, path)])
    except Exception as err:
        raise _unreachable(uri, err) from None
    return RunTracker(client, run_id, RunFolder(output))


def _unfinished_run(client, path: str) -> str | None:
    runs = client.search_runs(
        [_experiment_id(client)],
        filter_string=f"tags.`{RUN_FOLDER_TAG}` = '{path}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs and runs[0].info.status != "FINISHED" else None


class SweepTracker:
    """A sweep's parent MLflow run and the nested run of each trial (created here, logged into by
    the trial's own `tuneforge train`)."""

    def __init__(self, client, uri: str, experiment_id: str, parent_id: str, setup: Setup):
        self.client, self.uri, self.experiment_id, self.parent_id, self.setup = client, uri, experiment_id, parent_id, setup

    def trial_run(self, number: int, existing: str | None) -> str:
        """The MLflow run of trial `number`: `existing` when resuming it, else a new nested run."""
        if existing:
            return existing
        tags = {PARENT_TAG: self.parent_id, "tuneforge.trial": str(number)}
        try:
            return self.client.create_run(self.experiment_id, run_name=f"trial-{number:03d}", tags=tags).info.run_id
        except Exception as err:
            raise _unreachable(self.uri, err) from None

    def trial_done(self, row: TrialRow, run_id: str | None) -> None:
        from mlflow.entities import Metric

        try:
            if run_id:
                self.client.set_tag(run_id, "tuneforge.state", row.state)
            if row.validation_loss is not None:
                self.client.log_batch(
                    self.parent_id, metrics=[Metric("trialValidationLoss", row.validation_loss, _ms(), row.number)]
                )
        except Exception as err:
            _warn(err)

    def end(self, summary: SweepSummary) -> None:
        from mlflow.entities import Metric

        folder = self.setup.folder
        values = {
            "bestValidationLoss": summary.best.validation_loss if summary.best else None,
            "gainOverDefaults": summary.gain,
            "prunedShare": summary.steps()["prunedShare"],
        }
        try:
            metrics = [Metric(k, float(v), _ms(), 0) for k, v in values.items() if v is not None]
            self.client.log_batch(self.parent_id, metrics=metrics)
            if summary.best is not None:
                self.client.set_tag(self.parent_id, "tuneforge.bestTrial", str(summary.best.number))
            for path in (folder.report_html, folder.results_json):
                if path.is_file():
                    self.client.log_artifact(self.parent_id, str(path))
            self.client.set_terminated(self.parent_id, "KILLED" if summary.stopped else "FINISHED")
        except Exception as err:
            _warn(err)


class _NullSweep:
    def trial_run(self, number: int, existing: str | None) -> None:
        return None

    def trial_done(self, row: TrialRow, run_id: str | None) -> None:
        pass

    def end(self, summary: SweepSummary) -> None:
        pass


NULL_SWEEP = _NullSweep()


def sweep_tracker(uri: str | None, setup: Setup, study: Any):
    """A SweepTracker for the sweep's Optuna `study` (its parent run's id is kept in the study, so a
    resumed sweep goes on logging into the same run), or NULL_SWEEP without a URI."""
    if not uri:
        return NULL_SWEEP
    client = _client(uri)
    from mlflow.entities import Param

    spec = setup.spec
    try:
        experiment_id = _experiment_id(client)
        parent_id = study.user_attrs.get("mlflowParentRunId")
        if parent_id:
            client.update_run(parent_id, status="RUNNING")
        else:
            parent_id = client.create_run(experiment_id, run_name=f"sweep {Path(spec.output).name}").info.run_id
            study.set_user_attr("mlflowParentRunId", parent_id)
            params = {
                "baseModelId": spec.base_model_id,
                "dataset": str(spec.dataset),
                "weights": spec.weights,
                "seed": spec.seed,
                "search": spec.search,
                "trials": spec.trials,
                "pruner": spec.pruner,
                **{f"search.{name}": dim.describe() for name, dim in setup.space.items()},
                **{f"fixed.{name}": value for name, value in spec.fixed.items()},
            }
            client.log_batch(parent_id, params=[Param(k, str(v)) for k, v in params.items()])
    except Exception as err:
        raise _unreachable(uri, err) from None
    return SweepTracker(client, uri, experiment_id, parent_id, setup)
