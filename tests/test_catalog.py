"""The catalog must say exactly what the seed tables say. Expected values are hard-coded here from
spec/hyperparameters.md so a wrong models.toml fails, rather than being read back from itself."""

import pytest

from tuneforge.catalog import format_number, get_model, list_models
from tuneforge.errors import InvalidParameter

LORA_IDS = ["meta.llama-3.3-70b-instruct", "meta.llama-3.1-70b-instruct", "meta.llama-3-70b-instruct"]
TFEW_IDS = ["cohere.command-r-16k", "cohere.command-r-08-2024"]

# name: (type, minimum, maximum, min_exclusive, max_exclusive, default, tunable)
LORA_TABLE = {
    "totalTrainingEpochs": ("int", 1, None, False, False, 3, True),
    "learningRate": ("float", 0, 1.0, False, False, 0.0002, True),
    "trainingBatchSize": ("int", 8, 16, False, False, 8, True),
    "earlyStoppingPatience": ("int", 0, None, False, False, 15, True),
    "earlyStoppingThreshold": ("float", 0, None, False, False, 0.0001, True),
    "logModelMetricsIntervalInSteps": ("int", 0, None, False, False, 10, True),
    "loraR": ("int", 1, 64, False, False, 8, True),
    "loraAlpha": ("int", 1, 128, False, False, 8, True),
    "loraDropout": ("float", 0, 1, False, True, 0.1, True),
}
TFEW_TABLE = {
    "totalTrainingEpochs": ("int", 1, 10, False, False, 1, True),
    "learningRate": ("float", 0.000005, 0.1, False, False, 0.01, True),
    "trainingBatchSize": ("int", 8, 32, False, False, 16, True),
    "earlyStoppingPatience": ("int", 0, 16, False, False, 10, True),
    "earlyStoppingThreshold": ("float", 0.001, 0.1, False, False, 0.001, True),
    "logModelMetricsIntervalInSteps": ("int", 1, 1, False, False, 1, False),
}

# id: (vendor, method, trainingConfigType, deprecated, architecture, weights_repo, context, prompt, completion)
MODELS = {
    "meta.llama-3.3-70b-instruct": (
        "meta",
        "LORA",
        "LORA_TRAINING_CONFIG",
        False,
        "llama",
        "meta-llama/Llama-3.3-70B-Instruct",
        128000,
        None,
        None,
    ),
    "meta.llama-3.1-70b-instruct": (
        "meta",
        "LORA",
        "LORA_TRAINING_CONFIG",
        False,
        "llama",
        "meta-llama/Llama-3.1-70B-Instruct",
        128000,
        None,
        None,
    ),
    "meta.llama-3-70b-instruct": (
        "meta",
        "LORA",
        "LORA_TRAINING_CONFIG",
        True,
        "llama",
        "meta-llama/Meta-Llama-3-70B-Instruct",
        8192,
        None,
        None,
    ),
    "cohere.command-r-16k": (
        "cohere",
        "TFEW",
        "TFEW_TRAINING_CONFIG",
        True,
        "cohere",
        "CohereForAI/c4ai-command-r-v01",
        16000,
        None,
        None,
    ),
    "cohere.command-r-08-2024": (
        "cohere",
        "TFEW",
        "TFEW_TRAINING_CONFIG",
        False,
        "cohere",
        "CohereForAI/c4ai-command-r-08-2024",
        128000,
        16000,
        4000,
    ),
}


def test_five_models_in_seed_order():
    assert [m.id for m in list_models()] == list(MODELS)


@pytest.mark.parametrize("model_id", list(MODELS))
def test_model_record(model_id):
    m = get_model(model_id)
    got = (
        m.vendor,
        m.method,
        m.training_config_type,
        m.deprecated,
        m.architecture,
        m.weights_repo,
        m.context_tokens,
        m.max_prompt_tokens,
        m.max_completion_tokens,
    )
    assert got == MODELS[model_id]
    assert m.display_name


@pytest.mark.parametrize("model_id", list(MODELS))
def test_hyperparameter_table_matches_seed(model_id):
    m = get_model(model_id)
    table = LORA_TABLE if model_id in LORA_IDS else TFEW_TABLE
    assert list(m.params) == list(table)  # the seed's row order
    for name, expected in table.items():
        p = m.params[name]
        assert p.name == name
        assert (p.type, p.minimum, p.maximum, p.min_exclusive, p.max_exclusive, p.default, p.tunable) == expected
        assert type(p.default) is (int if p.type == "int" else float)
        assert p.description


def test_unknown_model_lists_known_ids():
    with pytest.raises(InvalidParameter) as e:
        get_model("cohere.command-r-plus")
    assert e.value.field == "baseModelId"
    for model_id in MODELS:
        assert model_id in str(e.value)


def test_list_models_returns_a_copy():
    list_models().clear()
    assert len(list_models()) == 5


@pytest.mark.parametrize(
    "model_id, name, sentence",
    [
        ("meta.llama-3.3-70b-instruct", "trainingBatchSize", "an integer from 8 to 16"),
        ("meta.llama-3.3-70b-instruct", "learningRate", "a number from 0 to 1.0"),
        ("meta.llama-3.3-70b-instruct", "earlyStoppingThreshold", "0 or a positive number"),
        ("meta.llama-3.3-70b-instruct", "earlyStoppingPatience", "0 or a positive integer"),
        ("meta.llama-3.3-70b-instruct", "totalTrainingEpochs", "an integer of 1 or more"),
        ("meta.llama-3.3-70b-instruct", "loraDropout", "a decimal from 0 up to (not including) 1"),
        ("cohere.command-r-08-2024", "learningRate", "a number from 0.000005 to 0.1"),
        ("cohere.command-r-08-2024", "logModelMetricsIntervalInSteps", "only 1 (not tunable)"),
    ],
)
def test_allowed_sentences(model_id, name, sentence):
    assert get_model(model_id).params[name].allowed() == sentence


def test_format_number_avoids_scientific_notation():
    assert format_number(0.000005) == "0.000005"
    assert format_number(1.0) == "1.0"
    assert format_number(16) == "16"
