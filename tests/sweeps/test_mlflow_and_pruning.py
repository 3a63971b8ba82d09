"""A sweep logged to a real MLflow tracking server (started here, read back with MlflowClient): a parent
run, one nested run per trial with its parameters, curves, final metrics and adapter; the pruner stops
a bad trial early (SIGTERM, far fewer steps than planned). MLflow stays optional."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.sweeps import read_json, run, sweep_args, write_threshold_dataset
from helpers.tiny_models import LLAMA
from helpers.waiting import wait_for

from tuneforge.errors import TuneForgeError


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    import urllib.request

    root = tmp_path_factory.mktemp("mlflow")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }  # no job runner: the server starts in seconds, not a minute
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    store = ["--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")]
    cmd = [mlflow, "server", *store, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with open(root / "server.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def healthy():
        try:
            return urllib.request.urlopen(f"{url}/health", timeout=2).status == 200
        except OSError:
            assert proc.poll() is None, (root / "server.log").read_text()[-2000:]
            return False

    wait_for(healthy, timeout=240, what="the MLflow server")
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(60)


def test_a_sweep_logs_nested_trial_runs_and_the_pruner_stops_a_bad_trial(tiny_llama, tmp_path, mlflow_server):
    from mlflow import MlflowClient

    data = write_threshold_dataset(tmp_path / "above50.jsonl", 48)  # 38 training examples: 5 steps an epoch
    out = tmp_path / "sweep"
    # Grid order: trial 0 the defaults (learningRate 0.0002), then trial 1 at 0.000001: it learns 200x slower, so at the
    # first rung its validation loss is above trial 0's there (deterministic: same seed, data order and init).
    flags = "--trials 2 --search grid --param learningRate=0.000001 --total-training-epochs 4 --json"
    args = sweep_args(tiny_llama, data, out, flags, "--mlflow-tracking-uri", mlflow_server)
    proc = run(args, env={**os.environ, "MLFLOW_EXPERIMENT_NAME": "sweep-test"})
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)["sweep"]
    by_number = {r["number"]: r for r in results["ranked"]}
    assert by_number[0]["state"] == "complete" and by_number[0]["stepsRun"] == 20
    pruned = by_number[1]
    assert pruned["state"] == "pruned" and pruned["params"] == {"learningRate": 0.000001}
    assert pruned["stepsRun"] <= 10 < pruned["stepsPlanned"] == 20  # stopped at the first rungs, not run to the end
    assert results["steps"]["savedByPruning"] == 20 - pruned["stepsRun"] and results["steps"]["prunedShare"] > 0.25
    trial1 = out / "trials" / "001"
    assert not (trial1 / "model.json").exists() and not (trial1 / "checkpoint").exists()

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("sweep-test")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(runs) == 3
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.params["search.learningRate"] == "0.000001,0.0002"
    assert (
        parent.data.params["baseModelId"] == LLAMA and parent.data.metrics["bestValidationLoss"] == by_number[0]["validationLoss"]
    )
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"sweep.html", "results.json"}
    children = {r.data.tags["tuneforge.trial"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == {"0", "1"}

    done = children["0"]
    model_json = read_json(out / "trials" / "000" / "model.json")
    assert done.info.status == "FINISHED" and done.data.tags["tuneforge.state"] == "complete"
    assert done.data.params["learningRate"] == "0.0002" and done.data.params["loraR"] == "8" and done.data.params["seed"] == "42"
    assert done.data.params["baseModelId"] == LLAMA and done.data.params["weights"] == str(tiny_llama)
    curve = client.get_metric_history(done.info.run_id, "validationLoss")
    cycles = [json.loads(line) for line in (out / "trials" / "000" / "metrics.jsonl").read_text().splitlines()]
    eval_steps = [r["step"] for r in cycles if r.get("kind") == "eval"]
    assert len(eval_steps) >= 2 and eval_steps[-1] == 20
    assert [m.step for m in curve] == eval_steps  # every evaluation cycle the run folder holds, by step
    assert len(client.get_metric_history(done.info.run_id, "trainLoss")) == 20
    assert done.data.metrics["finalLoss"] == model_json["modelMetrics"]["finalLoss"]
    artifacts = {a.path for a in client.list_artifacts(done.info.run_id)}
    assert {"adapter", "model.json", "report.html"} <= artifacts
    assert "adapter/adapter_config.json" in {a.path for a in client.list_artifacts(done.info.run_id, "adapter")}

    stopped = children["1"]
    assert stopped.info.status == "KILLED" and stopped.data.tags["tuneforge.state"] == "pruned"
    # Its curve up to where it was stopped (a stop skips the evaluation cycle of its last step).
    stopped_curve = client.get_metric_history(stopped.info.run_id, "validationLoss")
    assert stopped_curve and all(m.step <= pruned["stepsRun"] for m in stopped_curve)


def test_without_mlflow_installed_the_flag_says_how_to_install_it(monkeypatch, tmp_path, tiny_llama):
    from tuneforge.catalog import get_model
    from tuneforge.engine.weights import resolve_weights
    from tuneforge.hyperparams import resolve_training_config
    from tuneforge.tracking import track_run

    monkeypatch.setitem(sys.modules, "mlflow", None)  # what `import mlflow` does when it is not installed: ImportError
    model = get_model(LLAMA)
    weights = resolve_weights(str(tiny_llama), model_id=model.id, weights_repo=model.weights_repo)
    with pytest.raises(TuneForgeError, match=r"needs MLflow, which is not installed: pip install 'tuneforge\[tracking\]'"):
        track_run(
            "http://127.0.0.1:5000",
            tmp_path,
            model=model,
            config=resolve_training_config(model),
            weights=weights,
            seed=42,
            resume=False,
        )


def test_plan_and_train_do_not_import_mlflow_or_optuna():
    code = "import sys, tuneforge.cli, tuneforge.tracking; print(sorted(m for m in ('mlflow', 'optuna') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr
