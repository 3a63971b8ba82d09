"""`tuneforge train / eval / generate` through the real entry point on a tiny model: JSON output,
SIGTERM -> checkpoint + exit 3 -> --resume finishes, clear errors with exit 2."""

import json
import signal
import subprocess
import sys
import time

import pytest

from tuneforge.run_folder import RunFolder

LLAMA = "meta.llama-3.3-70b-instruct"


def tuneforge(*args, **kw):
    return subprocess.run([sys.executable, "-m", "tuneforge", *map(str, args)], capture_output=True, text=True, timeout=600, **kw)


def test_train_json_then_eval_and_generate(tiny_llama, parity_dataset, tmp_path):
    out = tmp_path / "m"
    proc = tuneforge(
        "train",
        "--base-model",
        LLAMA,
        "--dataset",
        parity_dataset,
        "--weights",
        tiny_llama,
        "--output",
        out,
        "--total-training-epochs",
        2,
        "--learning-rate",
        0.05,
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result == json.loads((out / "model.json").read_text())
    assert result["standIn"] is False and result["stepsRun"] == 10

    proc = tuneforge("eval", "--model", out, "--dataset", parity_dataset, "--split", "validation", "--compare-base", "--json")
    assert proc.returncode == 0, proc.stderr
    scores = json.loads(proc.stdout)
    assert scores["model"]["examples"] == scores["base"]["examples"] == 10
    assert scores["model"]["loss"] < scores["base"]["loss"]
    assert scores["model"]["loss"] == pytest.approx(result["modelMetrics"]["finalLoss"], rel=0.05)

    proc = tuneforge("generate", "--model", out, "--prompt", "Is 7 odd?", "--max-new-tokens", 4)
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr

    # A test set needs no 32 examples (that is OCI's rule for training data): 30 lines evaluate.
    small = tmp_path / "test30.jsonl"
    small.write_text("".join(parity_dataset.read_text().splitlines(keepends=True)[:30]))
    proc = tuneforge("eval", "--model", out, "--dataset", small, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["examples"] == 30


def test_sigterm_saves_a_checkpoint_and_resume_finishes(tiny_llama, parity_dataset, tmp_path):
    out = tmp_path / "m"
    args = [
        "train",
        "--base-model",
        LLAMA,
        "--dataset",
        parity_dataset,
        "--weights",
        tiny_llama,
        "--output",
        out,
        "--total-training-epochs",
        40,
        "--early-stopping-patience",
        0,
        "--json",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuneforge", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # poll progress.json until training is under way
        progress = out / "progress.json"
        if progress.is_file() and json.loads(progress.read_text() or "{}").get("step", 0) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 3, stderr
    assert "checkpoint" in stderr and (out / "checkpoint" / "state.pt").is_file()
    assert not (out / "model.json").exists() and not (out / "adapter").exists()
    stopped_at = json.loads((out / "progress.json").read_text())["step"]
    assert 3 <= stopped_at < 200

    proc = tuneforge(*args[:-1], "--resume", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["stepsRun"] == 200


@pytest.mark.parametrize(
    "args,message,code,field",
    [
        (["--weights", "/nonexistent"], "not a Hugging Face model folder", "WeightsUnavailable", None),
        (["--lora-r", "0"], "loraR: 0 is not allowed", "InvalidParameter", "loraR"),
        (["--learning-rate", "fast"], "learningRate: 'fast' is not allowed", "InvalidParameter", "learningRate"),
    ],
)
def test_bad_input_exits_2_with_a_message_naming_it(args, message, code, field, parity_dataset, tmp_path, tiny_llama):
    base = ["train", "--base-model", LLAMA, "--dataset", parity_dataset, "--output", tmp_path / "m"]
    if "--weights" not in args:
        base += ["--weights", tiny_llama]
    proc = tuneforge(*base, *args)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    # the run folder's error report, for the service: typed, and without the operator's paths
    error = RunFolder(tmp_path / "m").read_error()
    assert error.code == code and error.field == field and "/nonexistent" not in error.message


def test_bad_dataset_error_report_names_lines_but_not_the_servers_path(tmp_path, tiny_llama):
    data = tmp_path / "secret-server-dir" / "d.jsonl"
    data.parent.mkdir()
    data.write_text('{"prompt": "a", "completion": "b"}\nnot json\n')
    proc = tuneforge("train", "--base-model", LLAMA, "--dataset", data, "--output", tmp_path / "m", "--weights", tiny_llama)
    assert proc.returncode == 2 and str(data) in proc.stderr  # the CLI user sees their own path
    error = RunFolder(tmp_path / "m").read_error()
    assert error.code == "DatasetInvalid" and "line 2: not valid JSON" in error.message
    assert "1 valid example; at least 32 are needed" in error.message and "secret-server-dir" not in error.message


def test_catalog_model_without_weights_says_how_to_provide_them(parity_dataset, tmp_path):
    proc = tuneforge(
        "train",
        "--base-model",
        "cohere.command-r-08-2024",
        "--dataset",
        parity_dataset,
        "--output",
        tmp_path / "m",
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2
    assert "TUNEFORGE_WEIGHTS_COHERE_COMMAND_R_08_2024" in proc.stderr and "--weights stand-in" in proc.stderr


@pytest.mark.parametrize("has_bf16, warned", [(False, True), (True, False)])
def test_bf16_on_a_cpu_without_bf16_hardware_is_warned_about(has_bf16, warned, monkeypatch, capsys):
    from tuneforge.cli.options import precision_notice
    from tuneforge.engine import precision

    monkeypatch.setattr(precision, "cpu_has_bf16_matmuls", lambda: has_bf16)
    precision_notice("cpu", "bf16")
    precision_notice("cpu", "auto")  # auto never warns: it picks fp32 on such CPUs
    err = capsys.readouterr().err
    assert ("--precision bf16: this CPU has neither AVX512-BF16 nor AMX" in err) is warned
    assert err.count("Warning") == int(warned)


def test_a_validation_datasets_problems_are_named_by_its_lines_before_any_weights_load(tmp_path, tiny_llama, parity_dataset):
    valid = tmp_path / "jobs" / "validation.jsonl"  # as a service job's folder names it
    valid.parent.mkdir()
    valid.write_text('{"prompt": "a", "completion": "b"}\nnot json\n')
    args = ["train", "--base-model", LLAMA, "--dataset", parity_dataset, "--output", tmp_path / "m", "--weights", tiny_llama]
    proc = tuneforge(*args, "--validation-dataset", valid)
    assert proc.returncode == 2 and str(valid) in proc.stderr and "line 2: not valid JSON" in proc.stderr
    assert "at least 32" not in proc.stderr  # one valid example is enough for validation
    error = RunFolder(tmp_path / "m").read_error()
    assert error.code == "DatasetInvalid" and error.message.startswith("the validation dataset: 1 problem(s)"), error.message
