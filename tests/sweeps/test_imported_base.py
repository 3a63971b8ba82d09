"""A sweep whose base is an imported model (`SweepSpec.base_weights`, what the service builds for an
imported model's OCID): its runs train the imported folder under the model's id, as the service's jobs
do, never `--weights`; the learning curve's runs and its scoring subprocess use those weights."""

import json
from pathlib import Path

import pytest
from helpers.sweeps import write_threshold_dataset
from helpers.tiny_models import save_tiny_checkpoint

from tuneforge.errors import TuneForgeError
from tuneforge.run_folder import RunFolder
from tuneforge.sweeps import SweepSpec, prepare
from tuneforge.sweeps.learning_curve import run_learning_curve, smallest_dataset
from tuneforge.sweeps.trials import Slot, TrainJob, train_command

IMPORTED = "ocid1.generativeaiimportedmodel.oc1.local.tinyqwen"


def test_the_runs_train_the_imported_folder_under_its_id(tmp_path):
    folder = save_tiny_checkpoint(tmp_path / "qwen2", "qwen2", seed=2)
    dataset = write_threshold_dataset(tmp_path / "d.jsonl", smallest_dataset())
    spec = SweepSpec(
        IMPORTED,
        dataset,
        tmp_path / "out",
        fixed={"totalTrainingEpochs": 1, "trainingBatchSize": 8},
        device="cpu",
        precision="fp32",
        base_weights=folder,
    )
    setup = prepare(spec)
    assert (setup.model.id, setup.model.architecture) == (IMPORTED, "qwen2")
    job = TrainJob("trial-000", RunFolder(tmp_path / "run"), dataset, setup.config({}))
    args = train_command(spec, job, Slot(0, 1, None), resume=False)
    assert args[args.index("--base-model") + 1] == str(folder) and args[args.index("--base-model-name") + 1] == IMPORTED
    assert "--weights" not in args
    with pytest.raises(TuneForgeError, match="--weights: only a catalog base model takes --weights"):
        prepare(SweepSpec(IMPORTED, dataset, tmp_path / "other", weights="stand-in", base_weights=folder))

    curve = run_learning_curve(spec)
    assert curve is not None and curve["fitted"] and len(curve["points"]) == 3
    for point in curve["points"]:
        result = json.loads((spec.output / point["runFolder"] / "model.json").read_text())
        assert result["baseModelId"] == IMPORTED and Path(result["weights"]["path"]).resolve() == folder.resolve()
    scores = sorted(p.name for p in (spec.output / "learning-curve").glob("scores-*.json"))
    assert scores == ["scores-100.json", "scores-25.json", "scores-50.json"]
