"""The benchmark's own pieces, fast and without TRL: its scoring function agrees with the engine's
evaluation, and its tables render. The benchmark itself is run by hand (bench/README.md)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))


def test_bench_score_matches_the_engine_evaluation(tiny_llama, parity_dataset):
    import torch
    import vs_peers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge import data
    from tuneforge.engine.batches import encode_example
    from tuneforge.engine.train import evaluate

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    _, val = data.split_examples(data.read_examples(parity_dataset), 42)
    encoded = [encode_example(tokenizer, e.prompt, e.completion) for e in val]
    loss, acc = vs_peers.score(model, tokenizer, val)
    ref_loss, ref_acc = evaluate(model, encoded, tokenizer.pad_token_id, "cpu")
    assert loss == pytest.approx(ref_loss, rel=1e-4) and acc == pytest.approx(ref_acc)


def test_report_tables_render():
    import memory_scaling
    import vs_peers

    run = dict(
        tokens=1000,
        train_seconds=10.0,
        wall_seconds=20.0,
        rss_mib=1000.0,
        steps=3,
        precision="bfloat16",
        own_loss=0.5,
        own_acc=0.9,
    )
    results = {
        "lora-tuneforge": run,
        "lora-trl-fast": {**run, "train_seconds": 40.0, "rss_mib": 2000.0},
        "lora-trl-default": {**run, "train_seconds": 80.0},
    }
    scores = {label: (0.5, 0.9) for label in results}
    runs_md, ratios_md = vs_peers.report(results, scores, peak=500.0, n_params=100_000_000)
    assert "| lora-tuneforge " in runs_md and "| 100 " in runs_md  # 1000 tokens / 10 s
    assert "4.00x" in ratios_md and "0.50x" in ratios_md  # tok/s and RSS against the faster TRL run
    rows = [dict(vocab=32000, seq=256, chunked=c, completion_tokens=384, step_mib=1.0, peak_mib=2.0) for c in (True, False)]
    assert "| 32,000 | 256 | 384 |" in memory_scaling.markdown(rows)
