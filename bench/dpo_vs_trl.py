"""Preference tuning (DPO) side by side: TuneForge vs TRL's DPOTrainer + PEFT, on this machine (issue 23).

    .venv/bin/python bench/dpo_vs_trl.py                 # 1 epoch of the bundled pairs, ~15 min on 2 idle cores
    .venv/bin/python bench/dpo_vs_trl.py --quick         # smoke: the first 80 pairs (64 train), ~4 min
    .venv/bin/python bench/dpo_vs_trl.py --no-write      # print only; default rewrites RESULTS.md's dpo block

Same model (the SmolLM2-135M-Instruct stand-in), same data and split (tuneforge/examples/dates_preferences.jsonl,
240 pairs in OpenAI's DPO format, `split_examples(seed=42)`: 192 training / 48 validation pairs), same
hyperparameters (the LoRA seed defaults of meta.llama-3.3-70b-instruct: r 8, alpha 8, dropout 0.1 on the 7
projections, lr 2e-4, 8 pairs a step; beta 0.1, the sigmoid loss), same schedule and optimizer as
bench/vs_peers.py (TuneForge's warmup/decay, installed into TRL's trainer; AdamW, weight decay 0, clipping at
1.0), early stopping off. Both references are the base with the new adapter switched off (TRL: a PEFT model
without `ref_adapter_name`, no precomputed reference log-probabilities, TRL's default).

Each system trains in its own process, one after the other, alternating, with the same children, idle
wait and "others' cores" bookkeeping as bench/vs_peers.py. TRL gets the pairs in its conversational format
(prompt = the context messages, chosen / rejected = one assistant message each), so its own chat-template
tokenization applies, as a TRL user would run it.

  pairs/s   training pairs per second of the training loop (TuneForge: timings.trainSeconds, which excludes
            its evaluation cycles; TRL: the wall time of trainer.train() with eval_strategy "no"). The ratio
            is taken on this figure: the unit of work is the same pair for both.
  tok/s     non-padding tokens of the chosen and rejected rows as each system tokenized them, per second
  wall s    the whole child, from interpreter start to exit (imports, load, tokenization, training, the
            evaluation each system does, saving the adapter)
  RSS MiB   peak resident set of the child at the end of its training
  held-out  every saved adapter is scored by ONE function of this file (`score_pairs`) in a separate process:
            the fp32 base + PeftModel.from_pretrained, the pairs encoded by TuneForge's encoder, log-probs of
            each reply's trained tokens with the adapter on (policy) and off (reference); reward accuracy
            (r_chosen > r_rejected) and mean DPO loss with beta 0.1 over the 48 validation pairs
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vs_peers  # (the shared bench plumbing: children, idle wait, machine line, tables)

ROOT = vs_peers.ROOT
DATASET = ROOT / "tuneforge" / "examples" / "dates_preferences.jsonl"
SEED = vs_peers.SEED
BETA = 0.1
LR, BATCH = 2e-4, 8  # the LoRA seed defaults of meta.llama-3.3-70b-instruct
QUICK_PAIRS = 80
BEGIN, END = "<!-- dpo:begin -->", "<!-- dpo:end -->"


def split(dataset: Path):
    from tuneforge import data

    return data.split_examples(data.read_examples(dataset, method=data.DPO), SEED)


def encoded_pairs(tokenizer, pairs) -> list:
    from tuneforge.engine.batches import encode

    return [encode(tokenizer, p) for p in pairs]


def pair_tokens(encoded) -> int:
    return sum(len(p.chosen.input_ids) + len(p.rejected.input_ids) for p in encoded)


# ------------------------------------------------------------------------------------------------
# Children


def child_tuneforge(spec: dict) -> dict:
    from transformers import AutoTokenizer

    from tuneforge.catalog import get_model
    from tuneforge.engine.train import RunSpec, fine_tune
    from tuneforge.engine.weights import Weights
    from tuneforge.hyperparams import DPO_TRAINING_CONFIG, resolve_training_config

    base = get_model(vs_peers.LORA_MODEL)
    overrides = {
        "trainingConfigType": DPO_TRAINING_CONFIG,
        "beta": BETA,
        "totalTrainingEpochs": spec["epochs"],
        "earlyStoppingPatience": 0,
    }
    config = resolve_training_config(base, overrides)
    result = fine_tune(
        RunSpec(
            base_model=base,
            config=config,
            dataset=Path(spec["dataset"]),
            weights=Weights("bench", Path(spec["weights"]), True, "stand-in"),
            output=Path(spec["output"]),
            seed=SEED,
            device="cpu",
            precision="auto",
        )
    ).to_json()
    rss = vs_peers.peak_rss_mib()
    train, _ = split(Path(spec["dataset"]))
    tokens = pair_tokens(encoded_pairs(AutoTokenizer.from_pretrained(spec["weights"]), train))
    if result["stepsRun"] != result["totalTrainingSteps"]:
        raise SystemExit(f"TuneForge stopped early ({result['stepsRun']} of {result['totalTrainingSteps']} steps)")
    return {
        "train_seconds": result["timings"]["trainSeconds"],
        "pairs": spec["epochs"] * len(train),
        "tokens": spec["epochs"] * tokens,
        "steps": result["stepsRun"],
        "precision": result["precision"] + f", shared prefix {'on' if result['sharedPrefix'] else 'off'}",
        "adapter": str(Path(spec["output"]) / "adapter"),
        "rss_mib": rss,
    }


def child_trl(spec: dict) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    Trainer = vs_peers.with_tuneforge_schedule(DPOTrainer)
    cfg = vs_peers.trl_config(spec["config"], "cpu")
    train, _ = split(Path(spec["dataset"]))
    rows = [
        {
            "prompt": [{"role": m["role"], "content": m["content"]} for m in p.messages],
            "chosen": [{"role": "assistant", "content": p.chosen["content"]}],
            "rejected": [{"role": "assistant", "content": p.rejected["content"]}],
        }
        for p in train
    ]
    args = DPOConfig(
        output_dir=spec["output"],
        beta=BETA,
        num_train_epochs=spec["epochs"],
        per_device_train_batch_size=BATCH,
        learning_rate=LR,
        **vs_peers.TRL_COMMON_ARGS,
        use_cpu=True,
        bf16=cfg["bf16"],
        gradient_checkpointing=cfg["gradient_checkpointing"],
        model_init_kwargs={"dtype": cfg["weights"]},
    )
    peft_config = LoraConfig(r=8, lora_alpha=8, lora_dropout=0.1, target_modules=vs_peers.LORA_TARGETS, task_type="CAUSAL_LM")
    trainer = Trainer(
        model=spec["weights"],
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(spec["weights"]),
        peft_config=peft_config,
    )
    ds = trainer.train_dataset
    tokens = sum(2 * len(p) + len(c) + len(r) for p, c, r in zip(ds["prompt_ids"], ds["chosen_ids"], ds["rejected_ids"]))
    t0 = time.time()
    trainer.train()
    train_seconds = time.time() - t0
    rss = vs_peers.peak_rss_mib()
    adapter = Path(spec["output"]) / "adapter"
    trainer.model.save_pretrained(adapter)
    return {
        "train_seconds": train_seconds,
        "pairs": spec["epochs"] * len(rows),
        "tokens": spec["epochs"] * tokens,
        "steps": trainer.state.global_step,
        "precision": ("bf16 weights" if cfg["weights"] == "bfloat16" else "fp32 weights")
        + (", bf16 autocast" if cfg["bf16"] else "")
        + (", grad ckpt" if cfg["gradient_checkpointing"] else ""),
        "adapter": str(adapter),
        "rss_mib": rss,
    }


def score_pairs(model, encoded, beta: float = BETA, batch_rows: int = 16) -> dict:
    """Reward accuracy and mean DPO loss of a PeftModel on encoded pairs: the summed log-probabilities of each
    reply's trained tokens with the adapter on (policy) and off (reference), full logits, fp32, no dropout."""
    import torch
    import torch.nn.functional as F

    rows = [row for p in encoded for row in (p.chosen, p.rejected)]

    def logps() -> list[float]:
        out = []
        for i in range(0, len(rows), batch_rows):
            for row in rows[i : i + batch_rows]:  # one row a pass: no padding, nothing to mask
                ids = torch.tensor([row.input_ids])
                logits = model(input_ids=ids).logits[0, :-1].float()
                logp = F.log_softmax(logits, dim=-1).gather(1, ids[0, 1:, None])[:, 0]
                out.append(sum(float(logp[s - 1 : e - 1].sum()) for s, e in row.spans))
        return out

    model.eval()
    with torch.no_grad():
        policy = logps()
        with model.disable_adapter():
            reference = logps()
    rewards = [beta * (p - r) for p, r in zip(policy, reference)]
    margins = [rewards[2 * i] - rewards[2 * i + 1] for i in range(len(encoded))]
    return {
        "reward_accuracy": sum(m > 0 for m in margins) / len(margins),
        "loss": sum(float(-F.logsigmoid(torch.tensor(m))) for m in margins) / len(margins),
        "margin": sum(margins) / len(margins),
    }


def child_score(spec: dict) -> dict:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec["weights"])
    _, val = split(Path(spec["dataset"]))
    encoded = encoded_pairs(tokenizer, val)
    base = AutoModelForCausalLM.from_pretrained(spec["weights"], dtype=torch.float32)
    out = {}
    for name, adapter in spec["adapters"].items():
        model = PeftModel.from_pretrained(base, adapter)
        out[name] = score_pairs(model, encoded)
        base = model.unload()
    return out


CHILDREN = {"tuneforge": child_tuneforge, "trl": child_trl, "score": child_score}


# ------------------------------------------------------------------------------------------------
# The parent


def quick_dataset(work: Path) -> Path:
    lines = DATASET.read_text().splitlines()[:QUICK_PAIRS]
    path = work / "pairs-quick.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def report(results: dict, scores: dict) -> tuple[str, str]:
    rows = [["run", "precision", "steps", "pairs/s", "tok/s", "wall s", "RSS MiB", "others' cores", "reward acc", "DPO loss"]]
    for label, r in results.items():
        s = scores[label]
        rows.append(
            [
                label,
                r["precision"],
                r["steps"],
                f"{r['pairs'] / r['train_seconds']:.2f}",
                f"{r['tokens'] / r['train_seconds']:.0f}",
                f"{r['wall_seconds']:.0f}",
                f"{r['rss_mib']:.0f}",
                f"{r['others_cores']:.2f}",
                f"{s['reward_accuracy']:.2f}",
                f"{s['loss']:.3f}",
            ]
        )

    def best(prefix: str) -> dict:
        runs = [r for label, r in results.items() if label.startswith(prefix)]
        return max(runs, key=lambda r: r["pairs"] / r["train_seconds"])

    ours = best("tuneforge")
    ratios = [["TuneForge / TRL", "pairs/s", "wall", "peak RSS"]]
    for label, r in results.items():
        if label.startswith("trl"):
            ratios.append(
                [
                    f"vs {label}",
                    f"{(ours['pairs'] / ours['train_seconds']) / (r['pairs'] / r['train_seconds']):.2f}x",
                    f"{ours['wall_seconds'] / r['wall_seconds']:.2f}x",
                    f"{ours['rss_mib'] / r['rss_mib']:.2f}x",
                ]
            )
    return vs_peers.table(rows), vs_peers.table(ratios)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        kind, spec = sys.argv[2], json.loads(sys.argv[3])
        Path(spec["result"]).write_text(json.dumps(CHILDREN[kind](spec)))
        return

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=f"smoke run: the first {QUICK_PAIRS} pairs")
    p.add_argument("--epochs", type=int, default=1, help="training epochs of each run (default 1)")
    p.add_argument("--trl", default="fast,default", help="TRL configurations to run (bench/vs_peers.py's TRL_CONFIGS)")
    p.add_argument("--wait", type=float, default=600, help="wait up to S seconds for idle cores before each run")
    p.add_argument("--no-write", action="store_true", help="print only; do not rewrite bench/RESULTS.md")
    p.add_argument("--keep", action="store_true", help="keep the working folder")
    args = p.parse_args()

    from tuneforge.engine.weights import resolve_weights

    weights = str(resolve_weights("stand-in", model_id=vs_peers.LORA_MODEL, weights_repo="x").path)
    tmp = tempfile.TemporaryDirectory(prefix="tuneforge-dpo-bench-")
    work = Path(tmp.name)
    dataset = quick_dataset(work) if args.quick else DATASET
    started = time.time()
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"machine: {vs_peers.machine()}\nload average before: {' / '.join(load)}")
    base = {"weights": weights, "dataset": str(dataset), "epochs": args.epochs}
    runs = [("tuneforge", "tuneforge", {})]
    for name in args.trl.split(","):
        runs.append((f"trl-{name}", "trl", {"config": name}))
    if not args.quick:
        runs.append(("tuneforge-again", "tuneforge", {}))  # alternating: a drift in the machine shows as two TuneForge figures
    results = {}
    for label, kind, extra in runs:
        spec = {**base, **extra, "output": str(work / label)}
        results[label] = vs_peers.run_child(kind, spec, work, label, args.wait, script=__file__)
    adapters = {label: r["adapter"] for label, r in results.items()}
    scores = vs_peers.run_child("score", {**base, "adapters": adapters}, work, "score", script=__file__)
    after = Path("/proc/loadavg").read_text().split()[:3]
    runs_md, ratios_md = report(results, scores)
    n_train = results["tuneforge"]["pairs"] // args.epochs
    command = (
        "bench/dpo_vs_trl.py" + (" --quick" if args.quick else "") + (f" --epochs {args.epochs}" if args.epochs != 1 else "")
    )
    summary = (
        f"`.venv/bin/python {command}` on {datetime.date.today().isoformat()}, {vs_peers.machine()}; "
        f"load average before {' / '.join(load)}, after {' / '.join(after)}; {(time.time() - started) / 60:.0f} min. "
        f"{n_train} training pairs x {args.epochs} epoch(s), batch {BATCH} pairs, lr {LR}, beta {BETA}, LoRA r 8 / alpha 8 / "
        f"dropout 0.1 on 7 projections. Held-out: the 48 validation pairs (--quick: 16) scored by `score_pairs`."
    )
    print("\n" + summary + "\n\n" + runs_md + "\n\n" + ratios_md)
    if args.keep:
        tmp.cleanup = lambda: None  # type: ignore[method-assign]
        print(f"kept: {work}")
    if not args.no_write:
        text = vs_peers.RESULTS.read_text()
        block = f"{BEGIN}\n{summary}\n\n{runs_md}\n\n{ratios_md}\n{END}"
        if BEGIN in text:
            head, rest = text.split(BEGIN, 1)
            text = head + block + rest.split(END, 1)[1]
        else:
            text = text.rstrip("\n") + "\n\n## Preference tuning (DPO): bench/dpo_vs_trl.py\n\n" + block + "\n"
        vs_peers.RESULTS.write_text(text)
        print(f"wrote {vs_peers.RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
