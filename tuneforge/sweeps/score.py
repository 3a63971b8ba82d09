"""Per-example validation losses of a finished run, for the learning curve's bootstrap:

    python -m tuneforge.sweeps.score --dataset FILE --seed S --model RUN_DIR --output SCORES.json [--model ... --output ...]

The dataset's validation split (the same 80:20 split `train --seed S` holds out) is scored one
example at a time with the engine's own loss (`completion_stats`: the same tokens, the same
cross-entropy as training's evaluation), and written as {"examples": [{"line", "lossSum", "tokens",
"correct"}, ...]}: summed over all examples, lossSum / tokens is `tuneforge eval`'s loss. A
subprocess, like training, so that the sweep's own process never loads a model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tuneforge import data
from tuneforge.run_folder import write_json_atomic


def score_examples(model_dir: Path, dataset: Path, seed: int, device: str, precision: str) -> list[dict]:
    import torch

    from tuneforge.engine.batches import collate, encode
    from tuneforge.engine.generate import load_trained
    from tuneforge.engine.loss import completion_stats

    loaded = load_trained(model_dir, device, precision)
    _, validation = data.split_examples(data.read_examples(dataset), seed)
    pad = loaded.tokenizer.pad_token_id
    rows = []
    with torch.no_grad():
        for example in validation:
            encoded = encode(loaded.tokenizer, example)
            batch = {k: v.to(loaded.device) for k, v in collate([encoded], pad).items()}
            stats = completion_stats(loaded.model, batch)
            rows.append(
                {"line": example.line, "lossSum": float(stats.loss_sum), "tokens": stats.tokens, "correct": stats.correct}
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tuneforge.sweeps.score", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, action="append", required=True, help="a run folder (repeatable)")
    parser.add_argument("--output", type=Path, action="append", required=True, help="where to write each --model's scores")
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=data.DEFAULT_SEED)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if len(args.model) != len(args.output):
        parser.error("give one --output per --model")
    for model_dir, output in zip(args.model, args.output):
        rows = score_examples(model_dir, args.dataset, args.seed, args.device, args.precision)
        write_json_atomic(output, {"model": str(model_dir), "examples": rows})


if __name__ == "__main__":
    main()
