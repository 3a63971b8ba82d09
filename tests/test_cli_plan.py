"""`tuneforge models` and `tuneforge plan` through click's CliRunner, plus the no-heavy-imports rule."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

# The seed defaults, hard-coded once (tests/ is on sys.path: pyproject's pytest pythonpath).
from helpers.catalog_defaults import LORA_DEFAULTS as LORA_CONFIG
from helpers.catalog_defaults import TFEW_DEFAULTS as TFEW_CONFIG
from helpers.tiny_models import word_tokenizer_dir

from tuneforge.cli import main
from tuneforge.cli.catalog import plan
from tuneforge.cli.options import overrides_from_flags
from tuneforge.errors import InvalidParameter

MODEL_IDS = [
    "meta.llama-3.3-70b-instruct",
    "meta.llama-3.1-70b-instruct",
    "meta.llama-3-70b-instruct",
    "cohere.command-r-16k",
    "cohere.command-r-08-2024",
]
DEPRECATED = {"meta.llama-3-70b-instruct", "cohere.command-r-16k"}


@pytest.fixture
def dataset(tmp_path):
    """37 examples: an odd size, so the 80:20 split (30 + 7) and the step rounding both show."""
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"q {i}", "completion": f"a {i}"}) + "\n" for i in range(37)))
    return path


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def plan_json(model_id, dataset, *extra):
    result = run("plan", "--base-model", model_id, "--dataset", dataset, "--json", *extra)
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_plan_json_defaults(model_id, dataset):
    lora = model_id.startswith("meta.")
    got = plan_json(model_id, dataset)
    per_epoch = 4 if lora else 2  # ceil(30 / 8), ceil(30 / 16)
    assert got == {
        "baseModelId": model_id,
        "method": "LORA" if lora else "TFEW",
        "deprecated": model_id in DEPRECATED,
        "trainingConfig": LORA_CONFIG if lora else TFEW_CONFIG,
        "datasetExamples": 37,
        "trainingExamples": 30,
        "validationExamples": 7,
        "stepsPerEpoch": per_epoch,
        "totalTrainingSteps": per_epoch * (3 if lora else 1),
        "totalTrainingStepsRule": "totalTrainingEpochs * ceil(trainingExamples / trainingBatchSize)",
        "evaluationCycles": 5 if lora else 1,
        "evaluationCycleExamples": 7,
        "evaluationPlan": f"{'5 evaluation cycles' if lora else '1 evaluation cycle'} on all 7 validation examples, then a final "
        f"evaluation of the kept adapter: fewer than the {32 if lora else 22} early stopping wants (2 * earlyStoppingPatience "
        "+ 2, at least 8), as more would take evaluation above 15 % of the run's compute; too few for earlyStoppingPatience "
        f"{15 if lora else 10} to end the run early",
        "seed": 42,
        "tokenLengthsChecked": False,
    }


def test_plan_applies_flags(dataset):
    got = plan_json(
        "meta.llama-3.3-70b-instruct",
        dataset,
        "--total-training-epochs",
        2,
        "--learning-rate",
        "1e-4",
        "--training-batch-size",
        16,
        "--early-stopping-patience",
        0,
        "--early-stopping-threshold",
        0,
        "--log-model-metrics-interval-in-steps",
        5,
        "--lora-r",
        16,
        "--lora-alpha",
        32,
        "--lora-dropout",
        0.05,
        "--seed",
        7,
    )
    assert got["trainingConfig"] == {
        "trainingConfigType": "LORA_TRAINING_CONFIG",
        "totalTrainingEpochs": 2,
        "learningRate": 0.0001,
        "trainingBatchSize": 16,
        "earlyStoppingPatience": 0,
        "earlyStoppingThreshold": 0.0,
        "logModelMetricsIntervalInSteps": 5,
        "loraR": 16,
        "loraAlpha": 32,
        "loraDropout": 0.05,
    }
    assert (got["stepsPerEpoch"], got["totalTrainingSteps"], got["seed"]) == (2, 4, 7)


@pytest.mark.parametrize(
    "model_id, flag, value, field",
    [
        ("meta.llama-3.3-70b-instruct", "--training-batch-size", "17", "trainingBatchSize"),
        ("meta.llama-3.3-70b-instruct", "--lora-r", "65", "loraR"),
        ("meta.llama-3.3-70b-instruct", "--lora-r", "3.5", "loraR"),
        ("meta.llama-3.3-70b-instruct", "--total-training-epochs", "3.0", "totalTrainingEpochs"),
        ("meta.llama-3.3-70b-instruct", "--lora-dropout", "1", "loraDropout"),
        ("meta.llama-3.3-70b-instruct", "--learning-rate", "nan", "learningRate"),
        ("meta.llama-3.3-70b-instruct", "--learning-rate", "fast", "learningRate"),
        ("cohere.command-r-08-2024", "--total-training-epochs", "11", "totalTrainingEpochs"),
        ("cohere.command-r-08-2024", "--log-model-metrics-interval-in-steps", "10", "logModelMetricsIntervalInSteps"),
        ("cohere.command-r-08-2024", "--lora-r", "8", "loraR"),
    ],
)
def test_plan_rejects_bad_values_naming_the_field(model_id, flag, value, field, dataset):
    result = run("plan", "--base-model", model_id, "--dataset", dataset, flag, value)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {field}: ")
    assert "Traceback" not in result.output + result.stderr


def test_plan_int_error_gives_the_range(dataset):
    result = run("plan", "--base-model", "meta.llama-3.3-70b-instruct", "--dataset", dataset, "--lora-r", "3.5")
    assert "must be an integer" in result.stderr and "from 1 to 64" in result.stderr


def test_plan_unknown_model_lists_known_ids(dataset):
    result = run("plan", "--base-model", "cohere.command-r-plus", "--dataset", dataset)
    assert result.exit_code == 2
    assert "baseModelId" in result.stderr
    for model_id in MODEL_IDS:
        assert model_id in result.stderr


def test_plan_dataset_problems_exit_2_with_lines(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\nnot json\n{"prompt": 1, "completion": "b"}\n')
    result = run("plan", "--base-model", "meta.llama-3.3-70b-instruct", "--dataset", path)
    assert result.exit_code == 2
    assert "line 2: not valid JSON" in result.stderr
    assert 'line 3: "prompt" must be a string, got number' in result.stderr
    assert "at least 32" in result.stderr
    assert "Traceback" not in result.stderr


def test_plan_missing_required_option_is_a_usage_error(dataset):
    assert run("plan", "--dataset", dataset).exit_code == 2


@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_plan_warns_about_deprecated_models(model_id, dataset):
    result = run("plan", "--base-model", model_id, "--dataset", dataset, "--json")
    assert ("deprecated" in result.stderr) == (model_id in DEPRECATED)


def test_plan_text_summary(dataset):
    result = run("plan", "--base-model", "meta.llama-3-70b-instruct", "--dataset", dataset)
    assert result.exit_code == 0
    out = result.stdout
    assert "DEPRECATED" in out
    assert "loraR:" in out and "30 training + 7 validation" in out
    assert "totalTrainingSteps:" in out and "12 = 3 * ceil(30 / 8)" in out
    assert "evaluation:" in out and "evaluation cycles on" in out  # how many cycles run, and why
    value_columns = {len(line) - len(line.split(":", 1)[1].lstrip()) for line in out.splitlines()}
    assert len(value_columns) == 1  # aligned key: value lines


# --- token lengths with --weights -----------------------------------------------------------------


def test_plan_checks_token_lengths_with_a_tokenizer(tmp_path, dataset):
    weights = word_tokenizer_dir(tmp_path)
    got = plan_json("cohere.command-r-08-2024", dataset, "--weights", weights)
    assert got["tokenLengthsChecked"] is True


def test_plan_reports_over_long_prompts(tmp_path, dataset):
    weights = word_tokenizer_dir(tmp_path)
    lines = dataset.read_text().splitlines()
    lines[4] = json.dumps({"prompt": "a " * 16001, "completion": "b"})
    dataset.write_text("\n".join(lines) + "\n")
    result = run("plan", "--base-model", "cohere.command-r-08-2024", "--dataset", dataset, "--weights", weights)
    assert result.exit_code == 2
    assert "line 5: prompt is 16,001 tokens; this model allows at most 16,000" in result.stderr
    # Llama 3.3 has no separate prompt limit and a 128k context: the same file passes.
    assert plan_json("meta.llama-3.3-70b-instruct", dataset, "--weights", weights)["tokenLengthsChecked"]


def test_plan_weights_without_tokenizer_skips_the_check(tmp_path, dataset):
    got = run("plan", "--base-model", "meta.llama-3.3-70b-instruct", "--dataset", dataset, "--json", "--weights", tmp_path)
    assert json.loads(got.stdout)["tokenLengthsChecked"] is False
    assert "no tokenizer.json" in got.stderr


def test_plan_weights_must_exist(tmp_path, dataset):
    result = run("plan", "--base-model", "meta.llama-3.3-70b-instruct", "--dataset", dataset, "--weights", tmp_path / "missing")
    assert result.exit_code == 2


# --- models ---------------------------------------------------------------------------------------


def test_models_json():
    result = run("models", "--json")
    assert result.exit_code == 0
    got = json.loads(result.stdout)
    assert [m["id"] for m in got] == MODEL_IDS
    r08 = got[4]
    assert {
        k: r08[k]
        for k in (
            "vendor",
            "method",
            "trainingConfigType",
            "deprecated",
            "architecture",
            "weightsRepo",
            "contextTokens",
            "maxPromptTokens",
            "maxCompletionTokens",
        )
    } == {
        "vendor": "cohere",
        "method": "TFEW",
        "trainingConfigType": "TFEW_TRAINING_CONFIG",
        "deprecated": False,
        "architecture": "cohere",
        "weightsRepo": "CohereForAI/c4ai-command-r-08-2024",
        "contextTokens": 128000,
        "maxPromptTokens": 16000,
        "maxCompletionTokens": 4000,
    }
    assert list(r08["hyperparameters"]) == list(TFEW_CONFIG)[1:]
    dropout = got[0]["hyperparameters"]["loraDropout"]
    assert dropout == {
        "type": "float",
        "minimum": 0,
        "maximum": 1,
        "minExclusive": False,
        "maxExclusive": True,
        "default": 0.1,
        "tunable": True,
        "allowed": "a decimal from 0 up to (not including) 1",
        "description": dropout["description"],
    }
    assert {m["id"]: m["hyperparameters"]["trainingBatchSize"]["default"] for m in got} == {
        i: (8 if i.startswith("meta.") else 16) for i in MODEL_IDS
    }


def test_models_text():
    result = run("models")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == MODEL_IDS
    assert "deprecated" in lines[2] and "deprecated" not in lines[0]
    assert "loraR=8" in lines[0] and "logModelMetricsIntervalInSteps=1" in lines[4]


# --- shared helpers that `train` reuses -----------------------------------------------------------


def test_plan_has_the_nine_hyperparameter_flags():
    flags = {opt for p in plan.params for opt in p.opts}
    for flag in (
        "--total-training-epochs",
        "--learning-rate",
        "--training-batch-size",
        "--early-stopping-patience",
        "--early-stopping-threshold",
        "--log-model-metrics-interval-in-steps",
        "--lora-r",
        "--lora-alpha",
        "--lora-dropout",
    ):
        assert flag in flags


def test_overrides_from_flags():
    kwargs = {"lora_r": "16", "learning_rate": "2e-4", "lora_alpha": None, "base_model": "x", "as_json": True}
    assert overrides_from_flags(kwargs) == {"loraR": 16, "learningRate": 0.0002}
    with pytest.raises(InvalidParameter) as e:
        overrides_from_flags({"training_batch_size": "8.0"})
    assert e.value.field == "trainingBatchSize"


# --- startup cost ---------------------------------------------------------------------------------

HEAVY = ("torch", "transformers", "fastapi", "peft")


def test_importing_the_cli_loads_nothing_heavy():
    code = f"import sys, tuneforge.cli; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_running_plan_loads_nothing_heavy(tmp_path, dataset):
    # In a fresh interpreter: other test files in this session may have imported torch already.
    weights = word_tokenizer_dir(tmp_path)
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from tuneforge.cli import main\n"
        f"r = CliRunner().invoke(main, ['plan', '--base-model', 'cohere.command-r-08-2024', '--dataset', {str(dataset)!r},"
        f" '--weights', {str(weights)!r}, '--json'])\n"
        "assert r.exit_code == 0, r.output\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_python_dash_m_tuneforge():
    out = subprocess.run([sys.executable, "-m", "tuneforge", "models"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("meta.llama-3.3-70b-instruct")
