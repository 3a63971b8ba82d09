"""The `shared_prefix` switch (RunSpec.shared_prefix, `tuneforge train --shared-prefix`): which device
gets the shared-prefix pass by default, and that turning it off changes the cost, not the math. fp32
throughout; the tolerances are fp32 summation-order noise (the prefix pass adds the rows' gradients
of the prefix keys/values in another order), orders of magnitude below what one optimizer step moves."""

import json

import pytest
import torch
from safetensors.torch import load_file

from tuneforge.catalog import get_model
from tuneforge.engine.adapters import adapter_parameters, apply_lora
from tuneforge.engine.batches import collate, encode_example
from tuneforge.engine.loss import CompletionLoss
from tuneforge.engine.train import RunSpec, common_prefix, fine_tune, use_shared_prefix
from tuneforge.engine.weights import resolve_weights
from tuneforge.hyperparams import resolve_training_config

LLAMA = "meta.llama-3.3-70b-instruct"
INSTRUCTION = "Answer with yes or no only, please: is the number {} odd?"  # a shared prefix well over MIN_SHARED_PREFIX


def test_auto_is_on_for_cpu_and_off_for_cuda():
    assert use_shared_prefix("auto", "cpu") and not use_shared_prefix("auto", "cuda")
    assert not use_shared_prefix("auto", "cuda:1")
    assert use_shared_prefix("on", "cuda") and not use_shared_prefix("off", "cpu")
    with pytest.raises(ValueError, match="shared_prefix is sometimes: allowed values are auto, on, off"):
        use_shared_prefix("sometimes", "cpu")


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_cohere"])
def test_switching_the_prefix_pass_off_keeps_loss_and_gradients(arch, request):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = request.getfixturevalue(arch)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    apply_lora(model, 4, 8, 0.0)
    for p in adapter_parameters(model).values():
        torch.nn.init.normal_(p, std=0.1)  # nonzero B: the adapter shapes the prefix keys/values too
    tok = AutoTokenizer.from_pretrained(path)
    rows = [encode_example(tok, INSTRUCTION.format(i), "yes" if i % 2 else "no") for i in (3, 10, 21, 8, 47)]
    prefix = common_prefix([rows], tok.pad_token_id)  # what the training loop computes
    assert prefix > 0
    batch = collate(rows, tok.pad_token_id)

    scorer = CompletionLoss(model)
    results = {}
    for share in (True, False):
        scorer.share_prefix = share
        stats = scorer(batch, prefix)
        stats.loss_sum.backward()
        results[share] = stats, {n: p.grad.clone() for n, p in adapter_parameters(model).items()}
        model.zero_grad()
    (on, g_on), (off, g_off) = results[True], results[False]
    assert torch.allclose(on.loss_sum, off.loss_sum, rtol=1e-5, atol=0)
    assert (on.correct, on.tokens) == (off.correct, off.tokens)
    for name in g_on:
        assert torch.allclose(g_on[name], g_off[name], rtol=1e-4, atol=1e-5), name


def test_a_short_lora_run_gives_the_same_adapter_either_way(tiny_llama, tmp_path):
    dataset = tmp_path / "shared.jsonl"
    dataset.write_text(
        "".join(json.dumps({"prompt": INSTRUCTION.format(i), "completion": "yes" if i % 2 else "no"}) + "\n" for i in range(40))
    )
    model = get_model(LLAMA)
    # Dropout 0: with dropout the prefix pass draws one mask for the prefix that every row shares, and
    # the random stream differs, so the runs would differ by sampling, not by arithmetic.
    config = resolve_training_config(
        model, {"totalTrainingEpochs": 2, "learningRate": 0.01, "loraDropout": 0.0, "earlyStoppingPatience": 0}
    )
    weights = resolve_weights(str(tiny_llama), model_id=model.id, weights_repo=model.weights_repo)
    adapters, results = {}, {}
    for setting in ("on", "off"):
        out = tmp_path / setting
        results[setting] = fine_tune(
            RunSpec(model, config, dataset, weights, output=out, precision="fp32", device="cpu", shared_prefix=setting)
        )
        adapters[setting] = load_file(out / "adapter" / "adapter_model.safetensors")
    assert results["on"].extra["sharedPrefix"] is True and results["off"].extra["sharedPrefix"] is False
    assert results["on"].steps_run == results["off"].steps_run == 8  # 32 train / 8 validation, batch 8, 2 epochs
    assert results["on"].final_loss == pytest.approx(results["off"].final_loss, rel=1e-4)
    assert any(float(v.abs().max()) > 1e-3 for n, v in adapters["on"].items() if "lora_B" in n)  # it trained
    for name, value in adapters["on"].items():
        assert torch.allclose(value, adapters["off"][name], rtol=1e-4, atol=1e-5), name


def test_the_bench_sweep_plans_both_prefix_settings_and_builds_long_rows(tiny_llama, tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
    import vs_peers
    from transformers import AutoTokenizer

    from tuneforge import data
    from tuneforge.engine.batches import encode_example

    assert [r["label"] for r in vs_peers.plan(True, ["lora"])] == ["lora-tuneforge", "lora-trl-fast", "lora-trl-default"]
    labels = [(r["label"], r.get("shared_prefix")) for r in vs_peers.plan(True, ["lora"], ("on", "off"), epochs=1)]
    assert labels[:2] == [("lora-tuneforge-prefix-on", "on"), ("lora-tuneforge-prefix-off", "off")]

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    examples = data.read_examples(vs_peers.DATASET)
    rows = vs_peers.long_rows(examples, tok, 256, 5)
    lengths = [len(encode_example(tok, r["prompt"], r["completion"]).input_ids) for r in rows]
    assert all(200 < n <= 256 for n in lengths), lengths  # filled close to the limit, never over it
    assert [r["completion"] for r in rows] != [rows[0]["completion"]] * 5  # a different example closes each row
