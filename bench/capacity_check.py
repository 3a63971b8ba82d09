"""The capacity model (`tuneforge plan --gpus`, tuneforge/capacity.py) against measured memory: one
process, this CPU, fp32 (the engine's `--precision auto` on a CPU without bf16 hardware).

    .venv/bin/python bench/capacity_check.py [--shapes tiny,llama-1b] [--seq 512] [--rows 2]

For each shape (bench/random_init.py's, random weights) and with/without activation checkpointing, a
child process loads the model the way training does (weights.load_for_training: meta device, then the
safetensors read into place), attaches LoRA r 8 (dropout 0.1), makes the AdamW state and the best-adapter
copy, runs one step to warm up, returns the heap's free pages to the system (malloc_trim: glibc keeps
what loading and the first step freed), resets the peak-RSS mark (/proc/self/clear_refs) and runs a second step
on `--rows` random rows of `--seq` tokens (the last 3/4 of each is completion). "measured" is that
step's peak RSS minus the RSS after imports (Python, torch and the libraries are not the model's);
"formula" is capacity.estimate's weights + adapter/optimizer + activations + logits for the same
shape and batch (no GPU reserve, no FSDP gather: one process). A ratio within 0.8-1.2 is the goal.
Also printed: the RSS held before the measured step (model, optimizer state, and whatever the heap
kept from loading and the first step) and what the step adds on top of it.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

SHAPES = {  # tiny: big enough that the model's bytes are not lost in the allocator's noise
    "tiny": dict(
        hidden_size=512,
        intermediate_size=1536,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=64,
        vocab_size=32000,
        tie_word_embeddings=False,
    ),
}


def rss_mib(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(field)


def shape_of(name: str) -> dict:
    from random_init import SHAPES as PUBLIC

    return SHAPES.get(name) or PUBLIC[name]


def write_model(name: str, out: Path) -> Path:
    import torch
    from helpers.tiny_models import build_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**shape_of(name), max_position_embeddings=4096)
    model = LlamaForCausalLM(config).to(torch.bfloat16)  # random, as real checkpoints are: bf16
    model.save_pretrained(out)
    build_tokenizer().save_pretrained(out)
    return out


def lora_step(folder: Path, seq: int, rows: int, checkpointing: bool, dtype, device: str = "cpu", quantize: str | None = None):
    """The engine's pieces of one LoRA training step (r 8, dropout 0.1) on `rows` random rows of `seq`
    tokens: model loaded as training loads it, adapter initialised, AdamW, the best-adapter copy the loop
    keeps. Returns (step, scorer); step() runs forward, backward and the optimizer once."""
    import torch

    from tuneforge.engine.adapters import adapter_parameters, apply_lora, initial_adapter
    from tuneforge.engine.batches import IGNORE
    from tuneforge.engine.distributed import Distributed
    from tuneforge.engine.loss import CompletionLoss
    from tuneforge.engine.weights import Weights, load_for_training

    dist = Distributed(device=device)

    def prepare(model):
        apply_lora(model, 8, 8, 0.1)
        if checkpointing:
            model.activation_checkpointing_enable()
        return CompletionLoss(model)

    scorer, _ = load_for_training(Weights(str(folder), folder, False, "random"), dtype, dist, prepare, quantize=quantize)
    params = adapter_parameters(scorer.model)
    for name, value in initial_adapter(scorer.model).items():
        dist.fill(params[name], value)
    optimizer = torch.optim.AdamW(params.values(), lr=1e-4, fused=True)
    best = {n: p.detach().clone() for n, p in params.items()}
    ids = torch.randint(3, scorer.model.config.vocab_size, (rows, seq), generator=torch.Generator().manual_seed(0)).to(device)
    labels = ids.clone()
    labels[:, : seq // 4] = IGNORE
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    scorer.train()

    def step():
        stats = scorer(batch, 0)
        (stats.loss_sum / stats.tokens).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return best  # held as long as the step is: the loop keeps it all along

    return step, scorer


def measure(folder: Path, seq: int, rows: int, checkpointing: bool) -> dict:
    import torch

    # The libraries the run loads (transformers' model code, the tokenizer, DCP's reader) are not the model's.
    import torch.distributed.checkpoint
    from transformers import AutoConfig, AutoTokenizer
    from transformers.models.llama import modeling_llama  # noqa: F401

    AutoTokenizer.from_pretrained(folder), AutoConfig.from_pretrained(folder)
    torch.manual_seed(0)
    baseline = rss_mib()
    step, _ = lora_step(folder, seq, rows, checkpointing, torch.float32)
    step()
    # Hand the heap's free pages back (glibc keeps what the load and the first step freed), then reset
    # VmHWM: the peak of the next step alone, over what is really held.
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    before = rss_mib()
    step()
    return {"measured_mib": rss_mib("VmHWM") - baseline, "resident_mib": before - baseline, "step_mib": rss_mib("VmHWM") - before}


def formula(shape, seq: int, rows: int, checkpointing: bool, compute_bytes: int = 4, quantize: str | None = None) -> dict:
    """capacity.estimate for one process and this batch, in MiB, without the GPU reserve. `shape`: a
    name of SHAPES / random_init.SHAPES, or a catalog.ModelShape."""
    from tuneforge import capacity
    from tuneforge.catalog import ModelShape

    if isinstance(shape, str):
        s = shape_of(shape)
        shape = ModelShape(
            s["num_hidden_layers"],
            s["hidden_size"],
            s["num_attention_heads"],
            s["num_key_value_heads"],
            s["intermediate_size"],
            s["vocab_size"],
            s["tie_word_embeddings"],
        )
    completion = seq - seq // 4
    work = capacity.Workload("LORA", 8, 0.1, rows, 1, 0, rows, 1, rows * seq, rows * completion, seq, seq, completion, True)
    layout = capacity.Layout(
        gpu_memory_gib=10**6,
        activation_checkpointing=checkpointing,
        micro_batch_size=rows,
        compute_bytes=compute_bytes,
        quantize_base=quantize,
    )
    est = capacity.estimate(shape, work, layout)
    parts = {k: v * 1024 for k, v in est.gib.items() if k not in ("reserve", "gatheredWeights")}
    return {"formula_mib": sum(parts.values()), "parts_mib": parts}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        folder, seq, rows, ckpt = Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
        print(json.dumps(measure(folder, seq, rows, ckpt)))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="tiny,llama-1b")
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--rows", type=int, default=2)
    args = p.parse_args()
    rows_out = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.shapes.split(","):
            folder = write_model(name, Path(tmp) / name)
            for ckpt in (False, True):
                proc = subprocess.run(
                    [sys.executable, __file__, "_child", str(folder), str(args.seq), str(args.rows), "1" if ckpt else "0"],
                    capture_output=True,
                    text=True,
                    cwd=ROOT,
                )
                if proc.returncode != 0:
                    raise SystemExit(proc.stderr[-3000:])
                got = json.loads(proc.stdout.strip().splitlines()[-1])
                want = formula(name, args.seq, args.rows, ckpt)
                ratio = want["formula_mib"] / got["measured_mib"]
                parts = "  ".join(f"{k} {v:.0f}" for k, v in want["parts_mib"].items())
                held = want["parts_mib"]["weights"] + want["parts_mib"]["adapterAndOptimizer"]
                print(
                    f"{name:>9}  seq {args.seq} x {args.rows}  checkpointing {'on ' if ckpt else 'off'}  measured {got['measured_mib']:7.0f} MiB"
                    f"  formula {want['formula_mib']:7.0f} MiB  ratio {ratio:.2f}   ({parts}) | before the step: measured "
                    f"{got['resident_mib']:.0f}, weights+adapter {held:.0f}; the step adds {got['step_mib']:.0f}",
                    flush=True,
                )
                rows_out.append({"shape": name, "checkpointing": ckpt, **got, **want, "ratio": ratio})
    print(json.dumps(rows_out))


if __name__ == "__main__":
    main()
