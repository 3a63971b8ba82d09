"""The learning curve's parts that need no training: subsets the engine splits as intended, the fit, the verdict."""

import numpy as np
import pytest
from helpers.sweeps import write_threshold_dataset
from helpers.tiny_models import LLAMA

from tuneforge import data
from tuneforge.sweeps.learning_curve import HELPS, fit, plan, subset_size, verdict, write_subset
from tuneforge.sweeps.spec import SweepSpec, prepare


def test_each_subset_is_a_valid_dataset_whose_own_split_is_the_chosen_examples(tiny_llama, tmp_path):
    dataset = write_threshold_dataset(tmp_path / "d.jsonl", 200)
    setup = prepare(SweepSpec(LLAMA, dataset, tmp_path / "out", weights=str(tiny_llama)))
    train, val = data.split_examples(data.read_examples(dataset), setup.spec.seed)
    key = lambda e: (e.prompt, e.completion)
    points = plan(setup)
    assert [p.training_examples for p in points] == [40, 80, 160]
    previous: set = set()
    for point in points[:-1]:
        write_subset(setup, point)
        sub_train, sub_val = data.split_examples(data.read_examples(point.dataset), setup.spec.seed)  # what `train` will use
        assert len(sub_train) == point.training_examples and data.scan_dataset(point.dataset) == subset_size(
            point.training_examples
        )
        assert {key(e) for e in sub_train} <= {key(e) for e in train}  # training examples only from the training split
        assert {key(e) for e in sub_val} <= {key(e) for e in val}  # and the held-out ones only from the validation split
        assert previous <= {key(e) for e in sub_train}  # nested: 25 % inside 50 %
        previous = {key(e) for e in sub_train}


def test_the_fit_recovers_a_saturating_power_law_and_its_extrapolation():
    ns = np.array([100.0, 200.0, 400.0])
    truth = lambda n: 0.5 + 3.0 * n**-0.5
    c, a, b = fit(ns, truth(ns))
    assert (c[0], a[0], b[0]) == pytest.approx((0.5, 3.0, 0.5), rel=0.02)
    assert c[0] + a[0] * 1600.0 ** -b[0] == pytest.approx(truth(1600.0), rel=0.01)
    # Rows are fitted independently (the bootstrap's resamples), and the constraints hold on data that does not saturate.
    c, a, b = fit(ns, np.stack([truth(ns), [3.0, 2.0, 1.0], [1.0, 1.0, 1.2]]))
    assert (c >= 0).all() and (a >= 0).all() and ((b >= 0.01) & (b <= 2.0)).all()
    assert c[2] + a[2] * 800.0 ** -b[2] == pytest.approx(np.mean([1.0, 1.0, 1.2]))  # rising losses: a flat line, no gain


def _twice(gain):
    return {"reductionMedian": gain, "reductionInterval": (gain / 2, gain * 2)}


@pytest.mark.parametrize(
    "data_gain, search, starts",
    [
        (0.10, None, "More data is likely to help"),
        (0.10, {"gain": 0.02, "bestTrial": 3, "gainInterval": (0.0, 0.04)}, "More data is likely to help"),
        (
            0.03,
            {"gain": 0.20, "bestTrial": 3, "gainInterval": (0.1, 0.3)},
            "Other settings are likely to help more than more data",
        ),
        (0.03, {"gain": 0.01, "bestTrial": 3, "gainInterval": (0.0, 0.02)}, "Neither more data nor other settings"),
        (0.01, None, "Neither more data nor other settings"),
    ],
)
def test_the_verdict_follows_the_documented_thresholds(data_gain, search, starts):
    text = verdict(_twice(data_gain), search)
    assert text.startswith(starts) and f"{100 * data_gain:.1f} %" in text
    assert HELPS == 0.05 and ("no hyperparameter search ran" in text) == (search is None)
