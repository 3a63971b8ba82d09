"""Peak host memory per rank while a distributed run loads its base model (weights.load_for_training:
meta-device model, FSDP2 sharding, each rank reading only its rows of each tensor from the safetensors
shards), against one process loading the whole model the same way and Hugging Face's from_pretrained.

    .venv/bin/python bench/random_init.py --like DIR --out /tmp/llama-1b --shape llama-1b --max-shard-size 500MB
    .venv/bin/python bench/sharded_load.py --weights /tmp/llama-1b [--precision fp32|bf16]

Each measurement is its own process (ranks: 2 gloo processes on this machine). "peak" is VmHWM minus the
RSS after imports; "anon" is the private (heap) part at the end, "file" the mapped checkpoint pages
counted at the end (page cache shared with every process reading the file, not the rank's own memory);
"params" the bytes of the parameters the rank holds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def status(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def child(weights: Path, how: str, precision: str) -> dict:
    import torch
    import torch.distributed.checkpoint
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from tuneforge.engine.adapters import apply_lora
    from tuneforge.engine.distributed import Distributed
    from tuneforge.engine.loss import CompletionLoss
    from tuneforge.engine.weights import Weights, load_for_training, load_model_and_tokenizer

    AutoTokenizer.from_pretrained(weights), AutoConfig.from_pretrained(weights), AutoModelForCausalLM  # libraries loaded first
    dtype = torch.float32 if precision == "fp32" else torch.bfloat16
    dist = Distributed.from_env("cpu")
    baseline = status("VmRSS")
    w = Weights(str(weights), weights, False, "random")
    if how == "from_pretrained":
        model, _ = load_model_and_tokenizer(w, dtype, "cpu")
        params = model.parameters()
    else:

        def prepare(model):
            apply_lora(model, 8, 8, 0.1)
            scorer = CompletionLoss(model)
            dist.shard(scorer, model)
            return scorer

        scorer, _ = load_for_training(w, dtype, dist, prepare)
        params = scorer.parameters()
    held = sum((p.to_local() if hasattr(p, "to_local") else p).numel() * p.element_size() for p in params) / 2**20
    out = {
        "how": how,
        "rank": dist.rank,
        "world": dist.world,
        "peak_mib": status("VmHWM") - baseline,
        "anon_mib": status("RssAnon"),
        "file_mib": status("RssFile"),
        "params_mib": held,
    }
    dist.close()
    return out


def run(weights: Path, how: str, nproc: int, precision: str) -> list[dict]:
    from tuneforge.engine.launch import free_port, worker_env

    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "_child", str(weights), how, precision],
            stdout=subprocess.PIPE,
            text=True,
            env=os.environ | {"OMP_NUM_THREADS": "1"} | (worker_env(r, nproc, 1, 0, "127.0.0.1", port) if nproc > 1 else {}),
        )
        for r in range(nproc)
    ]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"{how} x{nproc} failed")
    return [json.loads(o.strip().splitlines()[-1]) for o in outs]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        print(json.dumps(child(Path(sys.argv[2]), sys.argv[3], sys.argv[4])))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    args = p.parse_args()
    size = sum(f.stat().st_size for f in args.weights.glob("*.safetensors")) / 2**20
    shards = len(list(args.weights.glob("*.safetensors")))
    print(f"{args.weights}: {shards} safetensors shard(s), {size:.0f} MiB; model held in {args.precision}")
    results = []
    for how, nproc in (("from_pretrained", 1), ("load_for_training", 1), ("load_for_training", 2)):
        for r in run(args.weights, how, nproc, args.precision):
            results.append(r)
            print(
                f"{how:>18} world {r['world']} rank {r['rank']}: peak +{r['peak_mib']:6.0f} MiB  params {r['params_mib']:6.0f} MiB  "
                f"at the end anon {r['anon_mib']:6.0f} MiB, mapped file pages {r['file_mib']:6.0f} MiB",
                flush=True,
            )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
