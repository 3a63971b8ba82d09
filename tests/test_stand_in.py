"""End to end on the bundled stand-in (SmolLM2-135M-Instruct from its GGUF file), through the real
`tuneforge` entry point: a short fine-tune, its outputs, then generation from the result."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

DATES = Path(__file__).parents[1] / "tuneforge" / "examples" / "dates.jsonl"


def tuneforge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuneforge", *args], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict, str]:
    tmp = tmp_path_factory.mktemp("stand-in")
    subset = tmp / "dates40.jsonl"
    subset.write_text("".join(DATES.read_text().splitlines(keepends=True)[:40]))  # 32 train -> 2 steps of 16
    out = tmp / "model"
    proc = tuneforge(
        "train",
        "--base-model",
        "meta.llama-3.3-70b-instruct",
        "--weights",
        "stand-in",
        "--dataset",
        str(subset),
        "--output",
        str(out),
        "--total-training-epochs",
        "1",
        "--training-batch-size",
        "16",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    return out, json.loads(proc.stdout), proc.stderr


def test_stand_in_fine_tune_reports_real_metrics_and_says_it_is_the_stand_in(trained):
    out, result, stderr = trained
    assert result["standIn"] is True and "stand-in" in stderr
    assert result["stepsRun"] == result["totalTrainingSteps"] == 2
    metrics = result["modelMetrics"]
    assert metrics["modelMetricsType"] == "TEXT_GENERATION_MODEL_METRICS"
    assert 0.0 < metrics["finalAccuracy"] < 1.0 and 0.0 < metrics["finalLoss"] < 5.0
    assert json.loads((out / "model.json").read_text()) == result
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines() if '"train"' in line] == [1, 2]
    assert "stand-in" in (out / "report.html").read_text()


def test_generate_from_the_fine_tuned_stand_in(trained):
    out, _, _ = trained
    proc = tuneforge(
        "generate", "--model", str(out), "--prompt", "ISO 8601 date (YYYY-MM-DD only) for: 3 March 1999", "--max-new-tokens", "12"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() and "stand-in" in proc.stderr
