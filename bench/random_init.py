"""Write a randomly initialised Hugging Face model folder of a given shape, for throughput benchmarks
where the real weights cannot travel (e.g. a GPU machine without network access).

    python bench/random_init.py --like DIR --out OUT [--shape smollm2-135m|llama-1b|llama-8b] [--max-shard-size 500MB]

DIR holds the tokenizer (and chat template) to reuse. Speed depends on the shape, not the values, so
tokens/s and memory are meaningful on such a model; losses are not. `--max-shard-size` writes several
safetensors shards and their model.safetensors.index.json, as Hugging Face publishes large models
(bench/sharded_load.py measures what each rank of a distributed run reads of them).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

# Shapes of public models (their config.json), by name: what matters for speed and memory.
SHAPES = {
    "smollm2-135m": None,  # the --like folder's own config.json
    "llama-1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=64,
        vocab_size=128256,
        tie_word_embeddings=True,
    ),  # Llama 3.2 1B
    "llama-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=128256,
        tie_word_embeddings=False,
    ),  # Llama 3.1 8B
}


def main() -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--like", required=True, type=Path, help="folder with config.json and the tokenizer files")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--shape", choices=sorted(SHAPES), default="smollm2-135m")
    p.add_argument(
        "--max-shard-size", default=None, help="e.g. 500MB: several shards plus an index (default: one file up to 50GB)"
    )
    args = p.parse_args()
    config = AutoConfig.from_pretrained(args.like)
    for key, value in (SHAPES[args.shape] or {}).items():
        setattr(config, key, value)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, **({"max_shard_size": args.max_shard_size} if args.max_shard_size else {}))
    for f in args.like.iterdir():
        if f.name.startswith(("tokenizer", "chat_template", "special_tokens", "generation_config")):
            shutil.copy(f, args.out / f.name)
    print(f"{args.out}: {args.shape}, {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters (random)")


if __name__ == "__main__":
    main()
