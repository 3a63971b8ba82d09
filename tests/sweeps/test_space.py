"""The search space: --param parsing and its errors, the default space per method (derived from the
catalog), trial 0 = the defaults, and every sampled value inside the catalog's range (property test)."""

import math

import optuna
import pytest
from helpers.sweeps import run, sweep_args
from helpers.tiny_models import LLAMA
from hypothesis import given, settings
from hypothesis import strategies as st

from tuneforge.catalog import get_model, list_models
from tuneforge.errors import TuneForgeError
from tuneforge.hyperparams import resolve_training_config
from tuneforge.sweeps.space import Choices, Range, default_space, grid_points, include_defaults, parse_params, suggest

COHERE = "cohere.command-r-08-2024"


def test_params_parse_into_typed_dimensions_in_catalog_order():
    space = parse_params(["loraR=8,16,32", "learningRate=1e-5:1e-3:log", "loraDropout=0:0.3"], get_model(LLAMA))
    assert list(space) == ["learningRate", "loraR", "loraDropout"]
    assert space["learningRate"] == Range("learningRate", 1e-5, 1e-3, log=True)
    assert space["loraR"] == Choices("loraR", (8, 16, 32)) and all(type(v) is int for v in space["loraR"].values)
    assert space["loraDropout"] == Range("loraDropout", 0.0, 0.3)


@pytest.mark.parametrize(
    "text, message",
    [
        ("learningRate=1e-5:5", "learningRate: 5.0 is not allowed; allowed: a number from 0 to 1.0"),
        ("loraR=4.5,8", "loraR: 4.5 is not allowed; must be an integer; allowed: an integer from 1 to 64"),
        ("loraDropout=0:1", "loraDropout: 1.0 is not allowed; allowed: a decimal from 0 up to (not including) 1"),
        ("trainingBatchSize=4:16", "trainingBatchSize: 4 is not allowed; allowed: an integer from 8 to 16"),
    ],
)
def test_a_value_outside_the_catalog_range_is_named_with_the_range(text, message):
    # The same words as `tuneforge train --learning-rate 5` and the REST API use.
    with pytest.raises(TuneForgeError) as err:
        parse_params([text], get_model(LLAMA))
    assert str(err.value) == message


@pytest.mark.parametrize(
    "text, why",
    [
        ("learningRate", "not of the form NAME=VALUES"),
        ("learningRate=", "not of the form NAME=VALUES"),
        ("learningRate=fast:slow", "the values must be numbers"),
        ("learningRate=1e-5:1e-3:linear", "a range is LOW:HIGH or LOW:HIGH:log"),
        ("learningRate=1e-3:1e-5", "LOW must be below HIGH"),
        ("learningRate=0:1e-3:log", "a log range needs LOW above 0"),
        ("lora_r=8,16", "lora_r is not a hyperparameter of meta.llama-3.3-70b-instruct"),
    ],
)
def test_a_malformed_param_names_the_flag_the_text_and_the_syntax(text, why):
    with pytest.raises(TuneForgeError) as err:
        parse_params([text], get_model(LLAMA))
    message = str(err.value)
    assert message.startswith(f"--param {text!r}: {why}") and "NAME=LOW:HIGH:log or NAME=V1,V2" in message
    assert "learningRate" in message  # the names that are allowed


def test_lora_fields_do_not_apply_to_t_few_and_untunable_fields_say_so():
    with pytest.raises(TuneForgeError, match="loraR does not apply to T-Few models"):
        parse_params(["loraR=8,16"], get_model(COHERE))
    with pytest.raises(
        TuneForgeError, match=r"logModelMetricsIntervalInSteps: 2 is not allowed; allowed: only 1 \(not tunable\)"
    ):
        parse_params(["logModelMetricsIntervalInSteps=1,2"], get_model(COHERE))


def test_a_field_searched_twice_or_also_fixed_by_its_flag_is_an_error():
    model = get_model(LLAMA)
    with pytest.raises(TuneForgeError, match="already searched"):
        parse_params(["loraR=8,16", "loraR=4:8"], model)
    with pytest.raises(TuneForgeError, match=r"also fixed to 0\.001 by its flag"):
        parse_params(["learningRate=1e-5:1e-3"], model, fixed={"learningRate": 0.001})


def test_default_space_per_method_as_docs_sweeps_md_lists_it():
    lora = default_space(get_model(LLAMA))
    assert lora == {
        "learningRate": Range("learningRate", 2e-5, 2e-3, log=True),
        "trainingBatchSize": Choices("trainingBatchSize", (8, 16)),
        "loraR": Choices("loraR", (4, 8, 16, 32)),
        "loraAlpha": Choices("loraAlpha", (4, 8, 16, 32)),
        "loraDropout": Range("loraDropout", 0, 0.2),
    }
    assert lora["learningRate"].low == pytest.approx(2e-5) and lora["learningRate"].high == pytest.approx(2e-3)
    tfew = default_space(get_model(COHERE))
    assert tfew == {
        "learningRate": Range("learningRate", 0.001, 0.1, log=True),
        "trainingBatchSize": Choices("trainingBatchSize", (8, 16, 32)),
    }
    assert "learningRate" not in default_space(get_model(LLAMA), fixed={"learningRate": 1e-4})


@pytest.mark.parametrize("model", list_models(), ids=lambda m: m.id)
def test_every_default_space_contains_its_defaults_and_lies_in_the_catalog(model):
    space = default_space(model)
    assert space, model.id
    for name, dim in space.items():
        spec = model.params[name]
        assert dim.contains(spec.default)
        values = dim.values if isinstance(dim, Choices) else (dim.low, dim.high)
        assert all(spec.in_range(v) for v in values)


def test_trial_0_can_always_be_recorded():
    defaults = {"learningRate": 2e-4, "loraR": 8}
    space, notes = include_defaults(
        {"learningRate": Range("learningRate", 1e-3, 1e-2, True), "loraR": Choices("loraR", (16, 32))}, defaults
    )
    assert space["loraR"].values == (8, 16, 32)  # a categorical records only one of its choices
    assert space["learningRate"] == Range("learningRate", 1e-3, 1e-2, True)  # a baseline outside the range
    assert len(notes) == 2 and any("outside the range" in note for note in notes)


def test_grid_points_cover_ranges_by_low_middle_high():
    model = get_model(LLAMA)
    points = grid_points({"learningRate": Range("learningRate", 1e-5, 1e-3, True), "loraR": Choices("loraR", (8, 16))}, model)
    assert len(points) == 6
    assert sorted({p["learningRate"] for p in points}) == pytest.approx([1e-5, 1e-4, 1e-3])


@st.composite
def sub_spaces(draw):
    """A model and a random space inside its catalog ranges, as --param texts."""
    model = draw(st.sampled_from(list_models()))
    texts = []
    for name, spec in model.params.items():
        if not spec.tunable or not draw(st.booleans()):
            continue
        lo_bound = spec.minimum if spec.minimum is not None else 0
        hi_bound = spec.maximum if spec.maximum is not None else lo_bound + 100
        if spec.type == "int":
            lo = draw(st.integers(lo_bound, hi_bound - 1))
            hi = draw(st.integers(lo + 1, hi_bound))
            texts.append(f"{name}={lo}:{hi}" if draw(st.booleans()) else f"{name}={lo},{hi}")
        else:
            top = math.nextafter(hi_bound, 0) if spec.max_exclusive else hi_bound
            lo = draw(st.floats(max(lo_bound, 1e-6), top / 2))
            hi = draw(st.floats(lo * 1.01, top))
            texts.append(f"{name}={lo!r}:{hi!r}" + (":log" if draw(st.booleans()) else ""))
    return model, texts


@pytest.mark.filterwarnings("ignore:Fixed parameter")  # trial 0 outside a drawn range: a baseline, on purpose
@settings(max_examples=25, deadline=None)
@given(sub_spaces(), st.sampled_from(["tpe", "random"]))
def test_every_sampled_value_lies_inside_the_catalog_range(case, sampler_name):
    model, texts = case
    defaults = resolve_training_config(model).to_api()
    space, _ = include_defaults(parse_params(texts, model), defaults)
    sampler = (
        optuna.samplers.TPESampler(seed=0, n_startup_trials=3) if sampler_name == "tpe" else optuna.samplers.RandomSampler(seed=0)
    )
    study = optuna.create_study(sampler=sampler)
    study.enqueue_trial({name: defaults[name] for name in space})
    for i in range(8):
        trial = study.ask()
        values = suggest(trial, space, model)
        if i == 0:
            assert values == {name: defaults[name] for name in space}  # trial 0 is the defaults
        else:
            assert all(space[name].contains(v) for name, v in values.items())
        resolve_training_config(model, values)  # raises unless every value is in the catalog's range
        study.tell(trial, float(i % 3))


def test_the_cli_reports_a_bad_param_without_a_traceback(tmp_path):
    args = sweep_args(tmp_path / "no-weights", tmp_path / "none.jsonl", tmp_path / "s", "--trials 2 --param learningRate=1e-5:5")
    proc = run(args)
    assert proc.returncode == 2 and "learningRate: 5.0 is not allowed; allowed: a number from 0 to 1.0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_dpo_sweep_searches_beta_by_default_and_only_a_dpo_sweep_takes_it():
    from tuneforge.sweeps.space import for_method

    llama = get_model(LLAMA)
    dpo = for_method(llama, "dpo")
    space = default_space(dpo)
    assert space["beta"] == Range("beta", 0.02, 0.5, log=True)  # a fifth to five times the default 0.1
    assert {k: v for k, v in space.items() if k != "beta"} == default_space(llama)
    assert parse_params(["beta=0.05,0.2"], dpo)["beta"] == Choices("beta", (0.05, 0.2))
    with pytest.raises(TuneForgeError, match="beta applies to DPO_TRAINING_CONFIG only"):
        parse_params(["beta=0.05,0.2"], llama)
    with pytest.raises(TuneForgeError, match="beta"):
        parse_params(["beta=0:1"], dpo)  # 0 is outside beta's range (above 0)
    assert for_method(llama, "supervised") is llama
