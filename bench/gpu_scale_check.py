"""The scale-out checks that need a GPU, prepared for a device visit (docs/scale-out.md says what ran where).

    PYTHONUNBUFFERED=1 python3 bench/gpu_scale_check.py --out $OUT [--shapes llama-1b,llama-8b] [--quick]

On the GPU machine, from the repository root, with its own python3 (torch >= 2.8 with CUDA, transformers,
peft, safetensors; bitsandbytes for the nf4 rows, carried as a wheel if the image lacks it). Writes
$OUT/gpu_scale_check.json and prints one line per check:

1. capacity model vs CUDA memory: for each shape (random weights, bench/random_init.py's shapes, written
   as several safetensors shards) x {bf16 base, nf4 base} x {activation checkpointing off, on}, one LoRA
   step after a warm-up through the engine's own loading (weights.load_for_training onto cuda) and loss;
   torch.cuda.max_memory_allocated and max_memory_reserved against capacity.estimate (same rows, length).
2. `tuneforge train --device cuda --quantize-base nf4` and `--activation-checkpointing`, end to end on the
   1B shape for a few steps (exit 0, model.json written).
3. with 2 or more GPUs only: `--nproc-per-node N` (FSDP2 over NCCL) against one GPU on the 1B shape:
   adapters equal within bf16 tolerance, peak memory per rank against the formula.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
ROWS, SEQ = 4, 1024  # rows per step and tokens per row: the last 3/4 completion


def write_shape(name: str, out: Path) -> Path:
    import torch
    from helpers.tiny_models import build_tokenizer
    from random_init import SHAPES
    from transformers import AutoModelForCausalLM, LlamaConfig

    if (out / "config.json").is_file():
        return out
    config = LlamaConfig(**SHAPES[name], max_position_embeddings=8192)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out, max_shard_size="2GB")
    build_tokenizer().save_pretrained(out)
    del model
    torch.cuda.empty_cache()
    return out


def memory_row(folder: Path, name: str, quantize: str | None, checkpointing: bool) -> dict:
    import torch
    from capacity_check import formula, lora_step

    from tuneforge.catalog import ModelShape

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    step, scorer = lora_step(folder, SEQ, ROWS, checkpointing, torch.bfloat16, device="cuda", quantize=quantize)
    load_seconds = time.time() - t0
    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    step()
    torch.cuda.synchronize()
    seconds = time.time() - t0
    want = formula(
        ModelShape.from_hf_config(scorer.model.config.to_dict()), SEQ, ROWS, checkpointing, compute_bytes=2, quantize=quantize
    )
    predicted = want["formula_mib"] / 1024
    allocated, reserved = torch.cuda.max_memory_allocated() / 2**30, torch.cuda.max_memory_reserved() / 2**30
    n_params = sum(p.numel() for p in scorer.model.parameters()) if not quantize else None
    flops = (6 if checkpointing else 4) * (n_params or 0) * ROWS * SEQ
    return {
        "shape": name,
        "quantize": quantize,
        "checkpointing": checkpointing,
        "formula_gib": round(predicted, 2),
        "allocated_gib": round(allocated, 2),
        "reserved_gib": round(reserved, 2),
        "ratio_allocated": round(predicted / allocated, 3),
        "parts_mib": want["parts_mib"],
        "step_seconds": round(seconds, 3),
        "load_seconds": round(load_seconds, 1),
        "tflops_per_s": round(flops / seconds / 1e12, 1) if n_params else None,
    }


def tuneforge(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tuneforge", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=os.environ | (env or {}),
        timeout=900,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--shapes", default="llama-1b,llama-8b")
    p.add_argument("--quick", action="store_true", help="the 1B shape only, bf16 + nf4 without checkpointing")
    args = p.parse_args()
    import torch

    try:
        import bitsandbytes

        bnb = bitsandbytes.__version__
    except ImportError:
        bnb = None
    import transformers

    results: dict = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "bitsandbytes": bnb,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "memory": [],
        "train": [],
    }
    print(json.dumps({k: v for k, v in results.items() if k not in ("memory", "train")}), flush=True)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "tuneforge-gpu-check"
    shapes = ["llama-1b"] if args.quick else args.shapes.split(",")
    for name in shapes:
        folder = write_shape(name, work / name)
        for quantize in (None, "nf4") if bnb else (None,):
            for ckpt in (False,) if args.quick else (False, True):
                try:
                    row = memory_row(folder, name, quantize, ckpt)
                except torch.OutOfMemoryError as err:
                    row = {"shape": name, "quantize": quantize, "checkpointing": ckpt, "error": f"out of memory: {err}"[:300]}
                results["memory"].append(row)
                print(json.dumps(row), flush=True)

    one_b = write_shape("llama-1b", work / "llama-1b")
    base = [
        "train",
        "--base-model",
        "meta.llama-3.3-70b-instruct",
        "--dataset",
        ROOT / "tuneforge/examples/dates.jsonl",
        "--weights",
        one_b,
        "--device",
        "cuda",
        "--total-training-epochs",
        1,
        "--early-stopping-patience",
        0,
        "--json",
    ]
    variants = [("nf4", ["--quantize-base", "nf4"])] if bnb else []
    variants += [("activation-checkpointing", ["--activation-checkpointing"])]
    n_gpus = torch.cuda.device_count()
    if n_gpus >= 2:
        variants += [
            ("one-gpu-reference", ["--lora-dropout", 0]),
            (f"fsdp-{n_gpus}", ["--lora-dropout", 0, "--nproc-per-node", n_gpus]),
        ]
    for label, extra in variants:
        t0 = time.time()
        proc = tuneforge(*base, "--output", work / f"run-{label}", *extra)
        row = {"run": label, "exit": proc.returncode, "seconds": round(time.time() - t0, 1)}
        if proc.returncode == 0:
            result = json.loads(proc.stdout)
            row |= {
                "stepsRun": result["stepsRun"],
                "finalLoss": result["modelMetrics"]["finalLoss"],
                "extra": result.get("distributed"),
            }
        else:
            row["stderr"] = proc.stderr[-2000:]
        results["train"].append(row)
        print(json.dumps(row), flush=True)
    if n_gpus >= 2:
        from safetensors.torch import load_file

        a = load_file(work / "run-one-gpu-reference" / "adapter" / "adapter_model.safetensors")
        b = load_file(work / f"run-fsdp-{n_gpus}" / "adapter" / "adapter_model.safetensors")
        results["fsdpAdapterMaxDiff"] = max((a[k] - b[k]).abs().max().item() for k in a)
        print(json.dumps({"fsdpAdapterMaxDiff": results["fsdpAdapterMaxDiff"]}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_scale_check.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
