"""resolve_training_config: seed defaults, every range edge of every model, typing, wire shape."""

import math

import pytest
from helpers.catalog_defaults import LORA_DEFAULTS, TFEW_DEFAULTS

from tuneforge.catalog import get_model, list_models
from tuneforge.errors import InvalidParameter
from tuneforge.hyperparams import (
    API_FIELDS,
    TrainingConfig,
    resolve_training_config,
    steps_per_epoch,
    total_training_steps,
)

EXPECTED_DEFAULTS = {
    "meta.llama-3.3-70b-instruct": LORA_DEFAULTS,
    "meta.llama-3.1-70b-instruct": LORA_DEFAULTS,
    "meta.llama-3-70b-instruct": LORA_DEFAULTS,
    "cohere.command-r-16k": TFEW_DEFAULTS,
    "cohere.command-r-08-2024": TFEW_DEFAULTS,
}
LORA = "meta.llama-3.3-70b-instruct"
TFEW = "cohere.command-r-08-2024"


@pytest.mark.parametrize("model_id", list(EXPECTED_DEFAULTS))
def test_defaults_are_the_seed_values(model_id):
    api = resolve_training_config(get_model(model_id)).to_api()
    assert api == EXPECTED_DEFAULTS[model_id]
    assert list(api) == list(EXPECTED_DEFAULTS[model_id])  # wire key order too
    for key, value in api.items():
        assert type(value) is type(EXPECTED_DEFAULTS[model_id][key])


def _edge_cases():
    """(model, field, value, accepted) at and just beyond every bound the catalog declares."""
    for model in list_models():
        for p in model.params.values():
            step_down = (lambda x: x - 1) if p.type == "int" else (lambda x: math.nextafter(x, -math.inf))
            step_up = (lambda x: x + 1) if p.type == "int" else (lambda x: math.nextafter(x, math.inf))
            cast = int if p.type == "int" else float
            if not p.tunable:
                yield model.id, p.name, p.default, True
                yield model.id, p.name, step_down(p.default), False
                yield model.id, p.name, step_up(p.default), False
                continue
            if p.minimum is not None:
                yield model.id, p.name, cast(p.minimum), not p.min_exclusive
                yield model.id, p.name, step_down(cast(p.minimum)), False
                yield model.id, p.name, step_up(cast(p.minimum)), True
            if p.maximum is not None:
                yield model.id, p.name, cast(p.maximum), not p.max_exclusive
                yield model.id, p.name, step_up(cast(p.maximum)), False
                yield model.id, p.name, step_down(cast(p.maximum)), True
            else:
                yield model.id, p.name, cast(10**6), True  # unbounded above


EDGE_CASES = list(_edge_cases())


def test_edge_cases_cover_every_field_of_every_model():
    covered = {(m, f) for m, f, _, _ in EDGE_CASES}
    assert covered == {(m.id, f) for m in list_models() for f in m.params}
    assert len(EDGE_CASES) > 100


@pytest.mark.parametrize("model_id, field, value, accepted", EDGE_CASES)
def test_range_edges(model_id, field, value, accepted):
    model = get_model(model_id)
    if accepted:
        config = resolve_training_config(model, {field: value})
        assert config.to_api()[field] == value
    else:
        with pytest.raises(InvalidParameter) as e:
            resolve_training_config(model, {field: value})
        assert e.value.field == field
        assert model.params[field].allowed() in str(e.value)


@pytest.mark.parametrize(
    "model_id, field, value, accepted",
    [  # spot checks written from the spec, independent of the catalog
        (LORA, "trainingBatchSize", 16, True),
        (LORA, "trainingBatchSize", 17, False),
        (LORA, "trainingBatchSize", 7, False),
        (LORA, "loraR", 64, True),
        (LORA, "loraR", 65, False),
        (LORA, "loraAlpha", 128, True),
        (LORA, "loraAlpha", 0, False),
        (LORA, "loraDropout", 0.0, True),
        (LORA, "loraDropout", 0.999, True),
        (LORA, "loraDropout", 1.0, False),
        (LORA, "learningRate", 1.0, True),
        (LORA, "learningRate", 1.01, False),
        (LORA, "learningRate", -0.0001, False),
        (LORA, "earlyStoppingPatience", 0, True),
        (LORA, "earlyStoppingPatience", -1, False),
        (LORA, "earlyStoppingThreshold", 0, True),
        (LORA, "totalTrainingEpochs", 0, False),
        (LORA, "totalTrainingEpochs", 50, True),
        (LORA, "logModelMetricsIntervalInSteps", 0, True),
        (LORA, "logModelMetricsIntervalInSteps", 25, True),
        (LORA, "logModelMetricsIntervalInSteps", -1, False),
        (TFEW, "totalTrainingEpochs", 10, True),
        (TFEW, "totalTrainingEpochs", 11, False),
        (TFEW, "learningRate", 0.000005, True),
        (TFEW, "learningRate", 0.000004, False),
        (TFEW, "learningRate", 0.1, True),
        (TFEW, "learningRate", 0.11, False),
        (TFEW, "trainingBatchSize", 32, True),
        (TFEW, "trainingBatchSize", 33, False),
        (TFEW, "earlyStoppingPatience", 16, True),
        (TFEW, "earlyStoppingPatience", 17, False),
        (TFEW, "earlyStoppingThreshold", 0.0009, False),
        (TFEW, "earlyStoppingThreshold", 0.1, True),
        (TFEW, "logModelMetricsIntervalInSteps", 1, True),
        (TFEW, "logModelMetricsIntervalInSteps", 10, False),
    ],
)
def test_spec_spot_checks(model_id, field, value, accepted):
    model = get_model(model_id)
    if accepted:
        assert resolve_training_config(model, {field: value}).to_api()[field] == value
    else:
        with pytest.raises(InvalidParameter, match=field):
            resolve_training_config(model, {field: value})


@pytest.mark.parametrize("model_id", ["cohere.command-r-16k", TFEW])
@pytest.mark.parametrize("field, value", [("loraR", 8), ("loraAlpha", 8), ("loraDropout", 0.1)])
def test_lora_fields_do_not_apply_to_tfew(model_id, field, value):
    with pytest.raises(InvalidParameter) as e:
        resolve_training_config(get_model(model_id), {field: value})
    assert e.value.field == field
    assert "does not apply to T-Few models" in str(e.value)


@pytest.mark.parametrize("field", ["numOfLastLayers", "epochs", "total_training_epochs"])
def test_unknown_fields_are_rejected(field):
    with pytest.raises(InvalidParameter) as e:
        resolve_training_config(get_model(LORA), {field: 1})
    assert e.value.field == field
    assert "not a field of LORA_TRAINING_CONFIG" in str(e.value)
    assert "loraDropout" in str(e.value)  # lists what is allowed


def test_training_config_type_must_match_the_model():
    assert resolve_training_config(get_model(TFEW), {"trainingConfigType": "TFEW_TRAINING_CONFIG"}).lora_r is None
    with pytest.raises(InvalidParameter) as e:
        resolve_training_config(get_model(TFEW), {"trainingConfigType": "LORA_TRAINING_CONFIG"})
    assert e.value.field == "trainingConfigType"
    assert "TFEW_TRAINING_CONFIG" in str(e.value)


@pytest.mark.parametrize(
    "field, value",
    [
        ("totalTrainingEpochs", 3.0),
        ("totalTrainingEpochs", 3.5),
        ("trainingBatchSize", True),
        ("trainingBatchSize", "8"),
        ("loraR", 8.0),
        ("learningRate", "0.1"),
        ("learningRate", False),
        ("loraDropout", [0.1]),
    ],
)
def test_wrong_types_are_rejected(field, value):
    with pytest.raises(InvalidParameter) as e:
        resolve_training_config(get_model(LORA), {field: value})
    assert e.value.field == field


def test_integer_message_says_integer():
    with pytest.raises(InvalidParameter, match="must be an integer"):
        resolve_training_config(get_model(LORA), {"totalTrainingEpochs": 3.0})


def test_float_fields_accept_ints_and_store_floats():
    config = resolve_training_config(get_model(LORA), {"learningRate": 1, "earlyStoppingThreshold": 0})
    assert config.learning_rate == 1.0 and type(config.learning_rate) is float
    assert type(config.early_stopping_threshold) is float


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 10**400])
@pytest.mark.parametrize("field", ["learningRate", "earlyStoppingThreshold", "loraDropout"])
def test_non_finite_numbers_are_rejected(field, value):
    with pytest.raises(InvalidParameter) as e:
        resolve_training_config(get_model(LORA), {field: value})
    assert e.value.field == field


def test_none_means_default():
    config = resolve_training_config(get_model(LORA), {"loraR": None, "learningRate": None})
    assert config.to_api() == LORA_DEFAULTS


def test_overrides_apply_and_others_keep_defaults():
    config = resolve_training_config(get_model(LORA), {"loraR": 16, "trainingBatchSize": 12})
    assert config.to_api() == {**LORA_DEFAULTS, "loraR": 16, "trainingBatchSize": 12}


@pytest.mark.parametrize("model_id", [LORA, TFEW])
def test_api_round_trip(model_id):
    config = resolve_training_config(get_model(model_id), {"totalTrainingEpochs": 2})
    assert TrainingConfig.from_api(config.to_api()) == config


def test_to_api_uses_wire_order():
    api = resolve_training_config(get_model(LORA)).to_api()
    assert list(api) == ["trainingConfigType", *(f for f in API_FIELDS if f != "beta")]  # beta: DPO configs only


@pytest.mark.parametrize(
    "n_train, batch, per_epoch",
    [(1, 8, 1), (7, 8, 1), (8, 8, 1), (9, 8, 2), (25, 8, 4), (26, 8, 4), (31, 16, 2), (32, 16, 2), (33, 16, 3)],
)
def test_steps_round_each_epoch_up(n_train, batch, per_epoch):
    assert steps_per_epoch(n_train, batch) == per_epoch
    assert total_training_steps(n_train, batch, 3) == 3 * per_epoch


def test_steps_match_ceil_formula_on_many_sizes():
    for n in range(1, 300):
        for batch in (8, 9, 16, 32):
            assert total_training_steps(n, batch, 7) == 7 * math.ceil(n / batch)


def test_integers_are_32_bit_and_plans_are_bounded():
    from tuneforge.hyperparams import MAX_TOTAL_TRAINING_STEPS, make_plan

    model = get_model("meta.llama-3.3-70b-instruct")
    with pytest.raises(
        InvalidParameter,
        match=r"totalTrainingEpochs: 1000000000000000000000000000000 is not allowed; must fit in a 32-bit integer",
    ):
        resolve_training_config(model, {"totalTrainingEpochs": 10**30})
    config = resolve_training_config(model, {"totalTrainingEpochs": 2**31 - 1})  # the largest int32 is a valid field...
    with pytest.raises(InvalidParameter, match="totalTrainingSteps = 51,539,607,528, above the maximum of 1,000,000"):
        make_plan(240, config)  # ... but no plan that long is run
    assert (
        make_plan(240, resolve_training_config(model, {"totalTrainingEpochs": 41666})).total_training_steps
        < MAX_TOTAL_TRAINING_STEPS
    )


def test_fields_types_and_help_come_from_the_catalog():
    from dataclasses import fields

    from tuneforge.catalog import fields as catalog_fields
    from tuneforge.hyperparams import API_FIELDS, FIELD_TYPES, SNAKE_NAMES, TrainingConfig

    assert tuple(catalog_fields()) == API_FIELDS
    assert [f.name for f in fields(TrainingConfig)][1:] == [SNAKE_NAMES[n] for n in API_FIELDS]
    assert FIELD_TYPES["loraR"] is int and FIELD_TYPES["learningRate"] is float
    assert catalog_fields()["loraR"].methods == ("LORA",)
