"""Fixtures for the serving tests: PEFT adapters on the tiny bases, real training runs. The engine
and reference helpers the tests call are in tests/helpers/serving.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.serving import random_peft_adapter
from helpers.tiny_models import COHERE, LLAMA


@pytest.fixture(scope="session")
def adapters(tiny_llama, tiny_cohere, tmp_path_factory) -> dict[str, dict[str, Path]]:
    """{arch: {name: adapter dir}}: two LoRA adapters of different ranks and one (IA)^3 per base."""
    root = tmp_path_factory.mktemp("adapters")
    out = {}
    for arch, base in (("llama", tiny_llama), ("cohere", tiny_cohere)):
        out[arch] = {
            "lora-a": random_peft_adapter(base, root / arch / "lora-a", "LORA", seed=1, r=4),
            "lora-b": random_peft_adapter(base, root / arch / "lora-b", "LORA", seed=2, r=8),
            "ia3": random_peft_adapter(base, root / arch / "ia3", "IA3", seed=3),
        }
    return out


@pytest.fixture(scope="session")
def trained_runs(tiny_llama, tiny_cohere, tmp_path_factory) -> dict[str, Path]:
    """Real `tuneforge train` run folders (fine_tune, one epoch): LoRA on the tiny Llama, T-Few on the tiny Cohere."""
    from tuneforge.catalog import get_model
    from tuneforge.engine.train import RunSpec, fine_tune
    from tuneforge.engine.weights import resolve_weights
    from tuneforge.hyperparams import resolve_training_config

    root = tmp_path_factory.mktemp("runs")
    dataset = root / "parity.jsonl"  # is the number odd? (tests/conftest.py's task)
    rows = [{"prompt": f"Is {a} odd?", "completion": "yes" if a % 2 else "no"} for a in range(48)]
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    runs = {}
    for name, model_id, weights, lr in (("lora", LLAMA, tiny_llama, 0.05), ("tfew", COHERE, tiny_cohere, 0.1)):
        model = get_model(model_id)
        config = resolve_training_config(model, {"totalTrainingEpochs": 1, "learningRate": lr, "earlyStoppingPatience": 0})
        resolved = resolve_weights(str(weights), model_id=model.id, weights_repo=model.weights_repo)
        fine_tune(RunSpec(model, config, dataset, resolved, output=root / name, precision="fp32"))
        runs[name] = root / name
    return runs
