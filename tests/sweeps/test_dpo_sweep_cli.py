"""`tuneforge sweep --method dpo` (issue 23): every trial is preference tuning (`train --method dpo`) on a
preference file, beta is searched, and a supervised sweep refuses beta; the tiny Llama, 32 pairs, one
epoch of four steps per trial."""

from __future__ import annotations

import json
from pathlib import Path

from helpers.sweeps import run, sweep_args

PAIRS = Path(__file__).parents[2] / "tuneforge" / "examples" / "dates_preferences.jsonl"


def test_a_dpo_sweep_searches_beta_and_trains_every_trial_with_dpo(tiny_llama, tmp_path):
    dataset = tmp_path / "pairs.jsonl"
    dataset.write_bytes(b"".join(PAIRS.read_bytes().splitlines(keepends=True)[:32]))
    flags = "--method dpo --trials 2 --search random --pruner none --total-training-epochs 1 --training-batch-size 8 --json"
    done = run(sweep_args(tiny_llama, dataset, tmp_path / "sweep", flags, "--param", "beta=0.05,0.3"))
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout[done.stdout.index("{") :])["sweep"]
    trials = sorted(summary["ranked"], key=lambda t: t["number"])
    assert (summary["trials"], summary["searched"]) == (2, ["beta"])
    assert trials[0]["params"]["beta"] == 0.1 and trials[0]["defaults"]  # trial 0: the catalog's default
    for trial in trials:
        model = json.loads((tmp_path / "sweep" / "trials" / f"{trial['number']:03d}" / "model.json").read_text())
        assert model["trainingMethod"] == "dpo"
        assert model["trainingConfig"]["trainingConfigType"] == "DPO_TRAINING_CONFIG"
        assert model["trainingConfig"]["beta"] == trial["params"]["beta"]


def test_a_supervised_sweep_refuses_beta_and_a_preference_file(tiny_llama, tmp_path):
    dataset = tmp_path / "pairs.jsonl"
    dataset.write_bytes(PAIRS.read_bytes())
    refused = run(sweep_args(tiny_llama, dataset, tmp_path / "a", "--trials 2", "--param", "beta=0.05,0.3"))
    assert refused.returncode != 0 and "beta applies to DPO_TRAINING_CONFIG only" in refused.stderr
    refused = run(sweep_args(tiny_llama, dataset, tmp_path / "b", "--trials 2"))
    assert refused.returncode != 0 and "preference pairs train with the DPO method" in refused.stderr
