"""`--quantize-base nf4` (QLoRA) on this CPU: bitsandbytes' CPU backend runs NF4, so a tiny model really
trains on a 4-bit frozen base here (the same code path a GPU runs; bench/gpu_scale_check.sh runs it on
CUDA). Plus the clear errors where it cannot run."""

import builtins
import json

import pytest
import torch
from helpers.tiny_models import save_tiny_checkpoint

from tuneforge.catalog import get_model
from tuneforge.engine.train import RunSpec, fine_tune
from tuneforge.engine.weights import resolve_weights
from tuneforge.errors import TuneForgeError
from tuneforge.hyperparams import resolve_training_config

LLAMA, COHERE = "meta.llama-3.3-70b-instruct", "cohere.command-r-08-2024"


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """64 features wide, not conftest's 32: on CPUs with AVX512-BF16 bitsandbytes repacks 4-bit weights
    for its own kernel in blocks of 64 input features, and a 32-wide layer leaves it an empty block."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny64") / "llama", "llama", hidden=64)


def run_spec(model_id, weights, dataset, output, **overrides) -> RunSpec:
    model = get_model(model_id)
    return RunSpec(
        base_model=model,
        config=resolve_training_config(model, overrides),
        dataset=dataset,
        weights=resolve_weights(str(weights), model_id=model.id, weights_repo=model.weights_repo),
        output=output,
        precision="fp32",
        quantize_base="nf4",
    )


@pytest.mark.parametrize("model_id,lr", [(LLAMA, 0.05), (COHERE, 0.1)])
def test_both_methods_learn_on_a_4bit_base(model_id, lr, tiny_llama, parity_dataset, tmp_path):
    import bitsandbytes as bnb

    from tuneforge.engine.generate import load_trained

    result = fine_tune(
        run_spec(model_id, tiny_llama, parity_dataset, tmp_path, totalTrainingEpochs=6, learningRate=lr, earlyStoppingPatience=0)
    )
    evals = [r for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "eval"]
    assert evals[-1]["validationLoss"] < 0.8 * evals[0]["validationLoss"]
    assert result.extra["quantizeBase"] == "nf4"
    # The adapter is an ordinary PEFT adapter: it loads over the full-precision base too.
    assert load_trained(tmp_path, device="cpu", precision="fp32").model is not None

    from helpers.tiny_models import build_model

    from tuneforge.engine.adapters import apply_lora
    from tuneforge.engine.quantize import quantize_linears

    model = build_model("llama")
    apply_lora(model, 4, 4, 0.0)
    n = quantize_linears(model.model.layers[0], "nf4", "cpu")
    assert n == 7 and isinstance(model.model.layers[0].self_attn.q_proj.base, bnb.nn.Linear4bit)
    assert model.model.layers[0].self_attn.q_proj.base.weight.dtype == torch.uint8  # packed 4-bit codes
    assert isinstance(model.lm_head, torch.nn.Linear) and model.lm_head.weight.is_floating_point()  # the head stays


def test_nf4_errors_say_what_to_do(monkeypatch):
    from tuneforge.engine import quantize

    with pytest.raises(TuneForgeError, match=r"one process .* FSDP cannot shard 4-bit weights"):
        quantize.require("nf4", "cuda:0", world=8)
    real_import = builtins.__import__

    def no_bitsandbytes(name, *args, **kwargs):
        if name.startswith("bitsandbytes"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bitsandbytes)
    with pytest.raises(TuneForgeError, match=r"needs bitsandbytes, which is not installed: pip install 'tuneforge\[qlora\]'"):
        quantize.require("nf4", "cpu", world=1)
