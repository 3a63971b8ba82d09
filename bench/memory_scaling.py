"""How the peak RSS of one TuneForge training step scales with sequence length and vocabulary size.

    .venv/bin/python bench/memory_scaling.py [--quick]

A tiny random Llama (tests/helpers/tiny_models.py: hidden 256, 2 layers) with a 32k and a 128k vocabulary
(Llama 3's 128,256), fp32 LoRA (r 8) over an fp32 model whose matmuls run in the dtype TuneForge's
`--precision auto` picks (bf16 on CPUs with AVX512-BF16/AMX, else fp32). One step = `completion_stats`
on a batch + backward, with the loss chunked over completion positions as the engine does
(CHUNK_LOGITS = 2**26 logits per chunk) and unchunked (CHUNK_LOGITS set huge: the logits of all
completion tokens at once). Batch 2; the last 3/4 of each row is completion (labels), the first 1/4 prompt.

Each measurement runs in its own subprocess; "step MiB" is the peak RSS during the step minus the
RSS just before it (model, optimizer-free), so it is what the step itself adds; "peak MiB" is the
process's whole peak. The unchunked fp32 logits alone take completion tokens x vocab x 4 bytes.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

HIDDEN, LAYERS, BATCH = 256, 2, 2
VOCABS = (32_000, 128_256)
SEQS = (256, 512, 1024, 2048)


def rss_now_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(vocab: int, seq: int, chunked: bool) -> dict:
    import torch
    from helpers.tiny_models import build_model

    from tuneforge.engine import loss
    from tuneforge.engine.adapters import apply_lora
    from tuneforge.engine.batches import IGNORE
    from tuneforge.engine.precision import pick_dtype, use_bf16_matmuls

    if not chunked:
        loss.CHUNK_LOGITS = 10**15
    model = build_model("llama", vocab_size=vocab, hidden=HIDDEN, layers=LAYERS)
    model.config.max_position_embeddings = max(seq, 512)
    if pick_dtype("auto", "cpu") == torch.bfloat16:
        use_bf16_matmuls(model)
    apply_lora(model, r=8, alpha=8, dropout=0.1)
    model.train()
    g = torch.Generator().manual_seed(0)

    def make_batch(length: int) -> dict:
        ids = torch.randint(3, vocab, (BATCH, length), generator=g)
        labels = ids.clone()
        labels[:, : length // 4] = IGNORE
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}

    batch = make_batch(seq)
    # One warm-up step on a short batch so that allocator and kernel set-up are not counted.
    loss.completion_stats(model, make_batch(32)).loss_sum.backward()
    model.zero_grad(set_to_none=True)
    before = rss_now_mib()
    t0 = time.time()
    stats = loss.completion_stats(model, batch)
    (stats.loss_sum / stats.tokens).backward()
    seconds = time.time() - t0
    peak = peak_mib()
    return {
        "vocab": vocab,
        "seq": seq,
        "chunked": chunked,
        "completion_tokens": stats.tokens,
        "before_mib": before,
        "peak_mib": peak,
        "step_mib": peak - before,
        "seconds": seconds,
        "loss": float(stats.loss_sum) / stats.tokens,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        print(json.dumps(measure(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1")))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="two sequence lengths only")
    args = p.parse_args()
    seqs = SEQS[1::2] if args.quick else SEQS
    rows = []
    for vocab in VOCABS:
        for seq in seqs:
            for chunked in (True, False):
                proc = subprocess.run(
                    [sys.executable, __file__, "_child", str(vocab), str(seq), "1" if chunked else "0"],
                    capture_output=True,
                    text=True,
                    cwd=ROOT,
                )
                if proc.returncode != 0:
                    raise SystemExit(proc.stderr[-3000:])
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                r = rows[-1]
                print(
                    f"vocab {vocab:>7,}  seq {seq:>5}  {'chunked  ' if chunked else 'unchunked'}  "
                    f"completion tokens {r['completion_tokens']:>5}  step +{r['step_mib']:7.0f} MiB  "
                    f"peak {r['peak_mib']:7.0f} MiB  {r['seconds']:.2f} s",
                    flush=True,
                )
    print()
    print(markdown(rows))


def markdown(rows: list[dict]) -> str:
    """One line per (vocab, seq): the step's added MiB chunked vs unchunked, and the fp32 logits size."""
    out = [
        "| vocab | seq (batch 2) | completion tokens | fp32 logits MiB | step MiB chunked | step MiB unchunked "
        "| peak MiB chunked | peak MiB unchunked |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by_key = {(r["vocab"], r["seq"], r["chunked"]): r for r in rows}
    for vocab, seq in sorted({(r["vocab"], r["seq"]) for r in rows}):
        c, u = by_key[(vocab, seq, True)], by_key[(vocab, seq, False)]
        logits = c["completion_tokens"] * vocab * 4 / 2**20
        out.append(
            f"| {vocab:,} | {seq} | {c['completion_tokens']} | {logits:.0f} | {c['step_mib']:.0f} | "
            f"{u['step_mib']:.0f} | {c['peak_mib']:.0f} | {u['peak_mib']:.0f} |"
        )
    return "\n".join(out)


if __name__ == "__main__":
    main()
