"""TuneForge vs Hugging Face TRL + PEFT, side by side on this machine (issue 6).

    .venv/bin/python bench/vs_peers.py            # full run: LoRA 3 epochs + T-Few 1 epoch (~25 min, 2 cores)
    .venv/bin/python bench/vs_peers.py --quick    # smoke run: LoRA 1 epoch on 80 examples (~3 min)

Same model (the SmolLM2-135M-Instruct stand-in), same data and split (tuneforge/examples/dates.jsonl,
`split_examples(seed=42)`: 192 train / 48 validation), same hyperparameters (the seed defaults of
meta.llama-3.3-70b-instruct for LoRA and cohere.command-r-08-2024 for T-Few), same schedule (linear
warmup over the first 6 % of steps, then linear decay to 0; AdamW, weight decay 0, clipping at 1.0),
same loss (mean cross-entropy over the completion tokens of each batch), early stopping off.

Every system runs in its own subprocess, one after the other, alternating, so that each peak RSS is
that system's alone and a noisy neighbour hurts all systems alike. Per system we print:

  tok/s     training-loop throughput: non-padding tokens of the training examples processed
            (epochs x the tokens of each training example, as that system tokenized them), divided by
            the seconds of the training loop (TuneForge: timings.trainSeconds, which excludes its
            evaluation cycles; TRL: the wall time of trainer.train(), run without evaluation)
  wall s    end-to-end wall time of the whole child command (interpreter start, imports, model load,
            training, the evaluation each system does, saving the adapter)
  RSS MiB   peak resident set of the child (getrusage(RUSAGE_SELF).ru_maxrss at its end)
  val loss / acc   mean cross-entropy and argmax accuracy over the completion tokens of the 48
            validation examples, scored by ONE function of this file (`score`) for every system, on
            the saved adapter loaded with PEFT over the fp32 base (column "bench"); TuneForge's own
            finalLoss/finalAccuracy and TRL's in-process score of the model as trained are shown too
  MFU       4 * N * tok/s / (matmul peak measured in this run, in bf16 where the hardware has it,
            else fp32), N = all parameters of the base
            model (tied embedding counted once): a frozen-base LoRA/(IA)^3 step costs ~2N FLOPs
            forward + ~2N backward (activation gradients only) per token (peers.md section 4.1)

The ratios are TuneForge / TRL, against the faster TRL configuration.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATASET = ROOT / "tuneforge" / "examples" / "dates.jsonl"
RESULTS = ROOT / "bench" / "RESULTS.md"
SEED = 42
LORA_MODEL = "meta.llama-3.3-70b-instruct"  # seed LoRA defaults: r 8, alpha 8, dropout 0.1, lr 2e-4, batch 8, 3 epochs
TFEW_MODEL = "cohere.command-r-08-2024"  # seed T-Few defaults: lr 0.01, batch 16, 1 epoch
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
IA3_TARGETS, IA3_FEEDFORWARD = ["k_proj", "v_proj", "down_proj"], ["down_proj"]
QUICK_EXAMPLES = 80  # --quick: the first 80 examples of the dataset -> 64 train / 16 validation

# TRL configurations. "default" is SFTConfig's defaults as far as they run on a CPU: its bf16=True
# default raises "Your setup doesn't support bf16/gpu" unless use_cpu=True, so a CPU user ends up with
# bf16=False (fp32 weights and compute) and TRL's gradient_checkpointing=True. "fast" is the fastest
# configuration we found working on this CPU: bf16 weights (model_init_kwargs dtype) under bf16
# autocast, PEFT keeping the adapter in fp32, no gradient checkpointing. padding_free=True works on
# CPU (transformers builds a block-diagonal SDPA mask from the position ids) but was slower here, and
# packing changes how many examples a step sees, i.e. the hyperparameters (bench/README.md).
TRL_CONFIGS = {
    "default": dict(bf16=False, gradient_checkpointing=True, padding_free=False, weights="float32"),
    "fast": dict(bf16=True, gradient_checkpointing=False, padding_free=False, weights="bfloat16"),
}
# On a CPU without AVX512-BF16/AMX, bf16 matmuls take a generic path hundreds of times slower than
# fp32 (an AVX2 EPYC: 0.3 vs 170 GFLOP/s), so TRL's fastest configuration there is fp32 without
# checkpointing -- and TuneForge's `auto` precision is fp32 too.
FAST_WITHOUT_BF16 = dict(bf16=False, gradient_checkpointing=False, padding_free=False, weights="float32")


def bf16_hardware(device: str) -> bool:
    """What TuneForge's `--precision auto` decides (bf16 on CUDA with bf16, on CPUs with AVX512-BF16/AMX)."""
    import torch

    from tuneforge.engine.precision import pick_dtype

    return pick_dtype("auto", device) == torch.bfloat16


def trl_config(name: str, device: str) -> dict:
    return FAST_WITHOUT_BF16 if name == "fast" and not bf16_hardware(device) else TRL_CONFIGS[name]


# ------------------------------------------------------------------------------------------------
# Shared by all children: the data, the split, and the one scoring function.


def split(dataset: Path):
    from tuneforge import data

    return data.split_examples(data.read_examples(dataset), SEED)


def score(model, tokenizer, examples, batch_size: int = 16) -> tuple[float, float]:
    """(mean cross-entropy, argmax accuracy) over the completion tokens of `examples`, from the plain
    HF forward (full logits, no TuneForge loss code). Completion tokens are TuneForge's definition
    (`encode_example`: the assistant turn up to and including its end-of-turn token)."""
    import torch
    import torch.nn.functional as F

    from tuneforge.engine.batches import encode_example

    encoded = [encode_example(tokenizer, e.prompt, e.completion) for e in examples]
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    loss_sum, correct, tokens = 0.0, 0, 0
    with torch.no_grad():
        for i in range(0, len(encoded), batch_size):
            chunk = encoded[i : i + batch_size]
            width = max(len(e.input_ids) for e in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            labels = torch.full((len(chunk), width), -100, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, e in enumerate(chunk):
                n = len(e.input_ids)
                ids[row, :n] = torch.tensor(e.input_ids)
                mask[row, :n] = 1
                labels[row, e.prompt_len : n] = ids[row, e.prompt_len : n]
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, :-1].float().cpu()
            targets = labels[:, 1:]
            where = targets != -100
            loss_sum += float(F.cross_entropy(logits[where], targets[where], reduction="sum"))
            correct += int((logits[where].argmax(-1) == targets[where]).sum())
            tokens += int(where.sum())
    model.train(was_training)
    return loss_sum / tokens, correct / tokens


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def peak_gpu_mib(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None


# ------------------------------------------------------------------------------------------------
# Children: one system, one run. Each writes its figures as JSON to spec["result"].


def child_tuneforge(spec: dict) -> dict:
    from tuneforge.catalog import get_model
    from tuneforge.engine.batches import encode_example
    from tuneforge.engine.train import RunSpec, fine_tune
    from tuneforge.engine.weights import Weights
    from tuneforge.hyperparams import resolve_training_config

    base = get_model(spec["model_id"])
    config = resolve_training_config(base, spec["overrides"])
    weights = Weights("bench", Path(spec["weights"]), True, "stand-in")
    result = fine_tune(
        RunSpec(
            base_model=base,
            config=config,
            dataset=Path(spec["dataset"]),
            weights=weights,
            output=Path(spec["output"]),
            seed=SEED,
            device=spec["device"],
            precision="auto",
            shared_prefix=spec.get("shared_prefix", "auto"),
        )
    ).to_json()
    train_rss, gpu_mib = peak_rss_mib(), peak_gpu_mib(spec["device"])
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec["weights"])
    train_examples, _ = split(Path(spec["dataset"]))
    per_epoch = sum(len(encode_example(tokenizer, e.prompt, e.completion).input_ids) for e in train_examples)
    if result["stepsRun"] != result["totalTrainingSteps"]:
        raise SystemExit(f"TuneForge stopped early ({result['stepsRun']} of {result['totalTrainingSteps']} steps)")
    return {
        "train_seconds": result["timings"]["trainSeconds"],
        "eval_seconds": result["timings"]["evalSeconds"],
        "tokens": config.total_training_epochs * per_epoch,
        "steps": result["stepsRun"],
        "best_step": result["bestStep"],
        "precision": result["precision"]
        + ("" if spec.get("shared_prefix", "auto") == "auto" else f", prefix {spec['shared_prefix']}"),
        "shared_prefix": result["sharedPrefix"],
        "own_loss": result["modelMetrics"]["finalLoss"],
        "own_acc": result["modelMetrics"]["finalAccuracy"],
        "adapter": str(Path(spec["output"]) / "adapter"),
        "rss_mib": train_rss,
        "gpu_mib": gpu_mib,
    }


# What every TRL child sets alike: TuneForge's optimizer settings (the "linear" schedule is replaced by
# `with_tuneforge_schedule`), no evaluation, saving or logging during the timed loop.
TRL_COMMON_ARGS = dict(
    lr_scheduler_type="linear",
    warmup_steps=0.06,
    weight_decay=0.0,
    max_grad_norm=1.0,
    seed=SEED,
    eval_strategy="no",
    save_strategy="no",
    logging_strategy="no",
    report_to="none",
    disable_tqdm=True,
    dataloader_num_workers=0,
)


def with_tuneforge_schedule(trainer_class: type) -> type:
    """A TRL trainer class on TuneForge's schedule: transformers' "linear" warms up from lr 0 at the first
    step, TuneForge from peak/warmup; the decay is the same. Overriding the scheduler makes them identical."""
    from torch.optim.lr_scheduler import LambdaLR

    from tuneforge.engine.train import lr_at  # the schedule itself, so both runs see identical learning rates

    class Trainer(trainer_class):
        def create_scheduler(self, num_training_steps, optimizer=None):
            if self.lr_scheduler is None:
                opt = optimizer if optimizer is not None else self.optimizer
                self.lr_scheduler = LambdaLR(opt, lambda s: lr_at(s, num_training_steps, 1.0))
                self._created_lr_scheduler = True
            return self.lr_scheduler

    return Trainer


def child_trl(spec: dict) -> dict:
    from datasets import Dataset
    from peft import IA3Config, LoraConfig
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    Trainer = with_tuneforge_schedule(SFTTrainer)
    cfg = trl_config(spec["config"], spec["device"])
    train_examples, val_examples = split(Path(spec["dataset"]))
    rows = [
        {"prompt": [{"role": "user", "content": e.prompt}], "completion": [{"role": "assistant", "content": e.completion}]}
        for e in train_examples
    ]
    tokenizer = AutoTokenizer.from_pretrained(spec["weights"])
    if spec["method"] == "lora":
        peft_config = LoraConfig(r=8, lora_alpha=8, lora_dropout=0.1, target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
    else:
        peft_config = IA3Config(target_modules=IA3_TARGETS, feedforward_modules=IA3_FEEDFORWARD, task_type="CAUSAL_LM")
    args = SFTConfig(
        output_dir=spec["output"],
        num_train_epochs=spec["epochs"],
        per_device_train_batch_size=spec["batch_size"],
        learning_rate=spec["lr"],
        **TRL_COMMON_ARGS,
        use_cpu=spec["device"] == "cpu",
        # On a GPU, SFTConfig's own default is bf16 autocast (it is only refused on a CPU).
        bf16=cfg["bf16"] or spec["device"] == "cuda",
        gradient_checkpointing=cfg["gradient_checkpointing"],
        padding_free=cfg["padding_free"],
        # TRL refuses padding_free without packing unless max_length is None (it would not be enforced);
        # the longest example here is ~100 tokens, far below the default 1024, so nothing changes;
        # --row-tokens rows get room for their whole length (TRL would cut off their completion).
        max_length=None if cfg["padding_free"] else spec.get("max_length", 1024),
        model_init_kwargs={"dtype": cfg["weights"]},
    )
    trainer = Trainer(
        model=spec["weights"],
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    # Non-padding tokens TRL trains on, from its own tokenization (its completion also holds the "\n"
    # the chat template writes after <|im_end|>: one token per example more than TuneForge's).
    per_epoch = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    t0 = time.time()
    trainer.train()
    train_seconds = time.time() - t0
    train_rss, gpu_mib = peak_rss_mib(), peak_gpu_mib(spec["device"])
    t0 = time.time()
    own_loss, own_acc = score(trainer.model, tokenizer, val_examples)
    eval_seconds = time.time() - t0
    adapter = Path(spec["output"]) / "adapter"
    trainer.model.save_pretrained(adapter)
    return {
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "tokens": spec["epochs"] * per_epoch,
        "steps": trainer.state.global_step,
        "precision": ("bf16 weights" if cfg["weights"] == "bfloat16" else "fp32 weights")
        + (", bf16 autocast" if cfg["bf16"] or spec["device"] == "cuda" else "")
        + (", grad ckpt" if cfg["gradient_checkpointing"] else "")
        + (", padding-free" if cfg["padding_free"] else ""),
        "own_loss": own_loss,
        "own_acc": own_acc,
        "adapter": str(adapter),
        "rss_mib": train_rss,
        "gpu_mib": gpu_mib,
    }


def child_score(spec: dict) -> dict:
    """Every adapter scored the same way: fp32 base + PeftModel.from_pretrained + `score`."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec["weights"])
    _, val_examples = split(Path(spec["dataset"]))
    base = AutoModelForCausalLM.from_pretrained(spec["weights"], dtype=torch.float32)
    out = {"base": score(base, tokenizer, val_examples)}
    for name, adapter in spec["adapters"].items():
        model = PeftModel.from_pretrained(base, adapter)
        out[name] = score(model, tokenizer, val_examples)
        base = model.unload()  # strip the adapter again for the next one
    return out


def child_matmul_peak(spec: dict) -> dict:
    """Matmul throughput in the dtype the base multiplies in (bf16 where the hardware has it, else
    fp32): n x n @ n x n in a loop for `seconds` (n = 2048 on CPU, 8192 on a GPU)."""
    import torch

    device = spec.get("device", "cpu")
    n = 8192 if device == "cuda" else 2048
    dtype = torch.bfloat16 if bf16_hardware(device) else torch.float32
    a, b = (torch.randn(n, n, dtype=dtype, device=device) for _ in range(2))
    for _ in range(3):
        a @ b  # warm-up
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < spec["seconds"]:
        a @ b
        count += 1
        if count % 10 == 0:
            sync()
    sync()
    return {
        "gflops": 2 * n**3 * count / (time.perf_counter() - t0) / 1e9,
        "n": n,
        "threads": torch.get_num_threads(),
        "dtype": str(dtype).removeprefix("torch."),
    }


def child_random_model(spec: dict) -> dict:
    """A randomly initialised model of one of bench/random_init.py's shapes, with `like`'s tokenizer
    (initialised on the GPU when there is one: an 8B model initialises in seconds there)."""
    import torch
    from random_init import SHAPES
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(spec["like"])
    for key, value in (SHAPES[spec["shape"]] or {}).items():
        setattr(config, key, value)
    torch.manual_seed(0)
    with torch.device(spec["device"]):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(spec["out"])
    for f in Path(spec["like"]).iterdir():
        if f.name.startswith(("tokenizer", "chat_template", "special_tokens", "generation_config")):
            shutil.copy(f, Path(spec["out"]) / f.name)
    return {"params": sum(p.numel() for p in model.parameters())}


CHILDREN = {
    "tuneforge": child_tuneforge,
    "trl": child_trl,
    "score": child_score,
    "matmul": child_matmul_peak,
    "random_model": child_random_model,
}


# ------------------------------------------------------------------------------------------------
# The parent: plan, run the children alternating, print and write the table.


def busy_cpu_seconds() -> float:
    """CPU seconds all processes of the machine have spent busy since boot (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_for_idle(max_wait: float, threshold: float = 0.3) -> None:
    """Wait (at most max_wait seconds) until other processes keep fewer than `threshold` cores busy
    over 5 s, so a run does not start while a neighbour is training."""
    deadline, said = time.time() + max_wait, False
    while time.time() < deadline:
        busy0 = busy_cpu_seconds()
        time.sleep(5)
        if (busy_cpu_seconds() - busy0) / 5 < threshold:
            return
        if not said:
            print(f" (waiting up to {max_wait:.0f} s for other processes to finish)", end="", flush=True)
            said = True


def run_child(
    kind: str, spec: dict, work: Path, label: str, wait: float = 0.0, keep_going: bool = False, script: str = __file__
) -> dict:
    """Run one child; its wall time, and how many cores OTHER processes kept busy meanwhile (the
    machine may be shared: a figure above ~0.2 means that run was slowed by a neighbour). A failed
    child ends the benchmark, or with `keep_going` gives {"failed": its last output} (e.g. out of
    GPU memory at one shape, where the other runs of a one-shot device call still count). `script`: the
    file whose `_child KIND` runs it (bench/dpo_vs_trl.py has children of its own)."""
    spec = {**spec, "result": str(work / f"{label}.json")}
    print(f"  running {label} ...", end="", flush=True)
    if wait:
        wait_for_idle(wait)
    busy0, own0, t0 = busy_cpu_seconds(), children_cpu_seconds(), time.time()
    proc = subprocess.run([sys.executable, script, "_child", kind, json.dumps(spec)], cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - t0
    others = max(0.0, (busy_cpu_seconds() - busy0) - (children_cpu_seconds() - own0)) / wall
    (work / f"{label}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        print(" FAILED")
        if keep_going:
            return {"failed": (proc.stdout + proc.stderr)[-1500:], "wall_seconds": wall}
        raise SystemExit(f"{label} failed (exit {proc.returncode}); last output:\n{(proc.stdout + proc.stderr)[-4000:]}")
    result = json.loads(Path(spec["result"]).read_text())
    result["wall_seconds"], result["others_cores"] = wall, others
    print(f" {wall:.0f} s (other processes: {others:.2f} cores busy)", flush=True)
    return result


def machine() -> str:
    cpu = "unknown CPU"
    if Path("/proc/cpuinfo").exists():
        info = Path("/proc/cpuinfo").read_text()
        cpu = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), cpu)
        flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
        extras = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags]
        cpu += f" ({', '.join(extras)})" if extras else ""
    import peft
    import torch
    import transformers
    import trl

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = f"{torch.cuda.get_device_name()}, " if torch.cuda.is_available() else ""
    return (
        f"{gpu}{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"transformers {transformers.__version__}, peft {peft.__version__}, trl {trl.__version__}"
    )


def base_params(weights: str) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(weights))
    return sum(p.numel() for p in model.parameters())  # tied embedding / LM head counted once


def plan(quick: bool, methods: list[str], prefixes: tuple[str, ...] = ("auto",), epochs: int | None = None) -> list[dict]:
    """The runs, per method, alternating TuneForge and TRL. `prefixes`: one TuneForge run per
    shared-prefix setting (labelled by it unless it is the default "auto" alone); `epochs`: LoRA's
    epoch count instead of 3 (--quick: 1)."""

    def tuneforge(base: dict) -> list[dict]:
        if tuple(prefixes) == ("auto",):
            return [dict(base, system="tuneforge", label=f"{base['method']}-tuneforge")]
        return [dict(base, system="tuneforge", shared_prefix=p, label=f"{base['method']}-tuneforge-prefix-{p}") for p in prefixes]

    runs = []
    if "lora" in methods:
        epochs = epochs or (1 if quick else 3)
        lora = dict(
            method="lora",
            epochs=epochs,
            batch_size=8,
            lr=2e-4,
            model_id=LORA_MODEL,
            overrides={"totalTrainingEpochs": epochs, "earlyStoppingPatience": 0},
        )
        runs += [
            *tuneforge(lora),
            dict(lora, system="trl", config="fast", label="lora-trl-fast"),
            dict(lora, system="trl", config="default", label="lora-trl-default"),
        ]
        if not quick and tuple(prefixes) == (
            "auto",
        ):  # TuneForge again last: a second sample of the noise on this shared machine
            runs.append(dict(lora, system="tuneforge", label="lora-tuneforge-2"))
    if "tfew" in methods:
        tfew = dict(method="tfew", epochs=1, batch_size=16, lr=0.01, model_id=TFEW_MODEL, overrides={"earlyStoppingPatience": 0})
        runs += [
            *tuneforge(tfew),
            dict(tfew, system="trl", config="fast", label="tfew-trl-fast"),
            dict(tfew, system="trl", config="default", label="tfew-trl-default"),
        ]
    return runs


def fmt_row(cells: list, widths: list[int]) -> str:
    return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"


def table(rows: list[list]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = [fmt_row(rows[0], widths), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    return "\n".join([*lines, *(fmt_row(r, widths) for r in rows[1:])])


def report(results: dict[str, dict], scores: dict, peak: float, n_params: int) -> tuple[str, str]:
    """The per-system table and the ratio table, as Markdown."""
    head = [
        "run",
        "system / precision",
        "steps",
        "tokens",
        "loop s",
        "tok/s",
        "MFU",
        "wall s",
        "peak RSS MiB",
        "val loss (bench)",
        "val acc (bench)",
        "val loss / acc (own)",
        "others' cores",
    ]
    failed = {label: r for label, r in results.items() if "failed" in r}  # --keep-going: shown, not measured
    results = {label: r for label, r in results.items() if label not in failed}
    gpu = all(r.get("gpu_mib") is not None for r in results.values())
    rows = [head + (["peak GPU MiB"] if gpu else [])]
    for label, r in failed.items():
        reason = next((line for line in reversed(r["failed"].splitlines()) if line.strip()), "no output")[:120]
        rows.append([label, f"FAILED: {reason}"] + ["-"] * (len(rows[0]) - 2))
    for label, r in results.items():
        tps = r["tokens"] / r["train_seconds"]
        loss, acc = (f"{x:.4f}" for x in scores[label]) if label in scores else ("-", "-")  # no scoring on random weights
        system = "TuneForge" if "tuneforge" in label else "TRL " + label.rsplit("trl-", 1)[1]
        rows.append(
            [
                label,
                f"{system} ({r['precision']})",
                r["steps"],
                r["tokens"],
                f"{r['train_seconds']:.1f}",
                f"{tps:.0f}",
                f"{100 * 4 * n_params * tps / (peak * 1e9):.1f} %",
                f"{r['wall_seconds']:.0f}",
                f"{r['rss_mib']:.0f}",
                loss,
                acc,
                f"{r['own_loss']:.4f} / {r['own_acc']:.4f}",
                f"{r.get('others_cores', 0.0):.2f}",
            ]
            + ([f"{r['gpu_mib']:.0f}"] if gpu else [])
        )
    ratios = [
        [
            "method",
            "TuneForge run",
            "vs TRL (faster config)",
            "tok/s ratio",
            "wall ratio",
            "RSS ratio",
            "val loss ratio (bench)",
            "val loss vs TRL default",
        ]
    ]
    for method in ("lora", "tfew"):
        tf_runs = [name for name in results if name.startswith(f"{method}-tuneforge")]
        trl_runs = [name for name in results if name.startswith(f"{method}-trl")]
        if not tf_runs or not trl_runs:
            continue
        fast = max(trl_runs, key=lambda name: results[name]["tokens"] / results[name]["train_seconds"])
        default = f"{method}-trl-default"
        for tf in tf_runs:
            a, b = results[tf], results[fast]
            ratios.append(
                [
                    method,
                    tf,
                    fast,
                    f"{(a['tokens'] / a['train_seconds']) / (b['tokens'] / b['train_seconds']):.2f}x",
                    f"{a['wall_seconds'] / b['wall_seconds']:.2f}x",
                    f"{a['rss_mib'] / b['rss_mib']:.2f}x",
                    f"{scores[tf][0] / scores[fast][0]:.3f}" if tf in scores and fast in scores else "-",
                    f"{scores[tf][0] / scores[default][0]:.3f}" if tf in scores and default in scores else "-",
                ]
            )
    return table(rows), table(ratios)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        kind, spec = sys.argv[2], json.loads(sys.argv[3])
        out = CHILDREN[kind](spec)
        Path(spec["result"]).write_text(json.dumps(out))
        return

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: LoRA only, 1 epoch, 80 examples")
    p.add_argument("--methods", default=None, help="comma-separated subset of lora,tfew (default: both; --quick: lora)")
    p.add_argument("--no-write", action="store_true", help="print only; do not rewrite bench/RESULTS.md")
    p.add_argument(
        "--wait",
        type=float,
        default=600,
        metavar="S",
        help="before each run, wait up to S seconds for the machine to be idle (default 600; 0: never)",
    )
    p.add_argument("--keep", action="store_true", help="keep the working folder (adapters, logs)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where both systems train (default cpu)")
    p.add_argument(
        "--weights", default="stand-in", metavar="DIR", help="base model folder (default: the SmolLM2-135M-Instruct stand-in)"
    )
    sweep_opts = p.add_argument_group(
        "speed sweep (bench/gpu_speed_check.sh): tok/s, MFU and memory only, no scoring, RESULTS.md untouched"
    )
    sweep_opts.add_argument(
        "--shapes",
        default=None,
        help="comma-separated shapes of bench/random_init.py (smollm2-135m,llama-1b,llama-8b): randomly initialised "
        "models with the --weights folder's tokenizer, trained one after the other",
    )
    sweep_opts.add_argument(
        "--row-tokens",
        default=None,
        metavar="T,...",
        help="row lengths: 0 = the dataset's rows as they are (~74 tokens); T = rows of about T tokens, several "
        "examples concatenated into one prompt (e.g. 0,1024)",
    )
    sweep_opts.add_argument(
        "--shared-prefix", default=None, metavar="S,...", help="one TuneForge run per setting, of auto,on,off (e.g. on,off)"
    )
    sweep_opts.add_argument("--epochs", type=int, default=None, help="LoRA epochs (default 3; --quick: 1)")
    sweep_opts.add_argument(
        "--examples", type=int, default=None, help="use this many rows (80:20 split; at least 32), e.g. 120 -> 12 LoRA steps"
    )
    sweep_opts.add_argument("--keep-going", action="store_true", help="record a failed run (e.g. out of memory) and go on")
    sweep_opts.add_argument("--out", type=Path, default=None, help="write results.json and results.md here")
    args = p.parse_args()
    methods = (args.methods or ("lora" if args.quick else "lora,tfew")).split(",")
    if any(v is not None for v in (args.shapes, args.row_tokens, args.shared_prefix, args.epochs, args.examples, args.out)):
        return sweep(args, methods)

    started = time.time()
    command = ".venv/bin/python bench/vs_peers.py " + " ".join(sys.argv[1:])
    work = Path(tempfile.mkdtemp(prefix="tuneforge-bench-"))
    dataset = DATASET
    if args.quick:
        dataset = work / "dates-quick.jsonl"
        dataset.write_text("".join(DATASET.read_text().splitlines(keepends=True)[:QUICK_EXAMPLES]))
    from tuneforge.engine.weights import resolve_weights

    weights = str(resolve_weights(args.weights, model_id=LORA_MODEL, weights_repo="x").path)
    n_train, n_val = (len(s) for s in split(dataset))
    n_params = base_params(weights)
    print(f"TuneForge vs TRL+PEFT: {dataset.name}, {n_train} train / {n_val} validation, {machine()}")
    print(f"working folder {work}")

    start_peak = run_child("matmul", {"seconds": 4, "device": args.device}, work, "matmul-start", args.wait)
    peaks = [start_peak["gflops"]]
    results = {}
    for r in plan(args.quick, methods):
        spec = dict(r, dataset=str(dataset), weights=weights, output=str(work / r["label"]), device=args.device)
        results[r["label"]] = run_child(r["system"], spec, work, r["label"], args.wait)
    peaks.append(run_child("matmul", {"seconds": 4, "device": args.device}, work, "matmul-end", args.wait)["gflops"])
    scores = run_child(
        "score",
        {"dataset": str(dataset), "weights": weights, "adapters": {name: r["adapter"] for name, r in results.items()}},
        work,
        "score",
    )
    peak = max(peaks)

    runs_md, ratios_md = report(results, scores, peak, n_params)
    base_loss, base_acc = scores["base"]
    summary = (
        f"{start_peak['dtype']} matmul peak ({start_peak['n']}^3, this run): {peaks[0]:.0f} GFLOP/s at the start, {peaks[1]:.0f} at the end; "
        f"MFU uses the higher. N = {n_params / 1e6:.1f}M parameters -> 4N = {4 * n_params / 1e9:.2f} GFLOP "
        f"per token. Untrained base on the validation split: loss {base_loss:.4f}, accuracy {base_acc:.4f}."
    )
    print()
    print(runs_md)
    print()
    print(ratios_md)
    print()
    print(summary)
    total = time.time() - started
    print(f"\nbenchmark wall time {total / 60:.1f} min")
    raw = {
        "command": command,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "dataset": str(dataset.name),
        "n_train": n_train,
        "n_val": n_val,
        "n_params": n_params,
        "matmul_gflops": peaks,
        "results": results,
        "scores": scores,
        "minutes": total / 60,
    }
    (work / "results.json").write_text(json.dumps(raw, indent=1))
    if not args.no_write:
        write_results(raw, runs_md, ratios_md, summary, args.quick)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


def long_rows(examples, tokenizer, row_tokens: int, n_rows: int) -> list[dict]:
    """`n_rows` rows of at most `row_tokens` tokens (chat template included), as long as the bundled
    examples make them: row i is examples i, i+1, ... with their answers, one prompt, and the next
    example's question left open for the completion. A long row of the same kind of task."""
    from tuneforge.engine.batches import encode_example

    rows = []
    for i in range(n_rows):
        parts, j = [], i
        row = {"prompt": examples[i % len(examples)].prompt, "completion": examples[i % len(examples)].completion}
        while True:
            e = examples[j % len(examples)]
            prompt = "\n\n".join([*parts, e.prompt])
            if len(encode_example(tokenizer, prompt, e.completion).input_ids) > row_tokens:
                break
            row, j = {"prompt": prompt, "completion": e.completion}, j + 1
            parts.append(f"{e.prompt}\n{e.completion}")
        rows.append(row)
    return rows


def sweep_dataset(work: Path, weights: str, row_tokens: int, n_rows: int | None) -> Path:
    """The bundled dataset's first `n_rows` rows, or as many rows of ~`row_tokens` tokens."""
    from transformers import AutoTokenizer

    from tuneforge import data

    examples = data.read_examples(DATASET)
    n_rows = n_rows or len(examples)
    path = work / f"rows-{row_tokens}-{n_rows}.jsonl"
    if row_tokens:
        rows = long_rows(examples, AutoTokenizer.from_pretrained(weights), row_tokens, n_rows)
    else:
        rows = [{"prompt": e.prompt, "completion": e.completion} for e in examples[:n_rows]]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def sweep(args, methods: list[str]) -> None:
    """Every shape x row length x system variant, one after the other, with the bf16 matmul peak
    measured at the start and the end of this one invocation; results.json + results.md in --out."""
    from tuneforge.engine.weights import resolve_weights

    started, work = time.time(), Path(tempfile.mkdtemp(prefix="tuneforge-sweep-"))
    out = args.out or work
    out.mkdir(parents=True, exist_ok=True)
    like = str(resolve_weights(args.weights, model_id=LORA_MODEL, weights_repo="x").path)
    shapes = args.shapes.split(",") if args.shapes else [None]  # None: --weights itself
    row_settings = [int(t) for t in (args.row_tokens or "0").split(",")]
    prefixes = tuple((args.shared_prefix or "auto").split(","))
    print(f"TuneForge vs TRL+PEFT speed sweep: shapes {args.shapes or args.weights}, rows {row_settings}, {machine()}")
    print(f"working folder {work}")
    peaks = [run_child("matmul", {"seconds": 4, "device": args.device}, work, "matmul-start", args.wait)]
    cases = []
    for shape in shapes:
        weights = like
        if shape is not None:
            weights = str(work / f"model-{shape}")
            spec = {"like": like, "out": weights, "shape": shape, "device": args.device}
            run_child("random_model", spec, work, f"random-{shape}")
        n_params = base_params(weights)
        for row_tokens in row_settings:
            dataset = sweep_dataset(work, weights, row_tokens, args.examples)
            train_rows, val_rows = split(dataset)
            results = {}
            for r in plan(args.quick, methods, prefixes, args.epochs):
                label = f"{shape or 'weights'}-{row_tokens}-{r['label']}"
                spec = dict(r, dataset=str(dataset), weights=weights, output=str(work / label), device=args.device)
                spec["max_length"] = max(1024, row_tokens + 64)
                results[r["label"]] = run_child(r["system"], spec, work, label, args.wait, args.keep_going)
                partial = [*cases, dict(shape=shape or args.weights, row_tokens=row_tokens, results=results)]
                (out / "results.json").write_text(json.dumps({"command": sys.argv, "partial": True, "cases": partial}, indent=1))
                shutil.rmtree(work / label, ignore_errors=True)  # adapters of random weights: nothing to score
            cases.append(
                dict(
                    shape=shape or args.weights,
                    row_tokens=row_tokens,
                    n_params=n_params,
                    n_train=len(train_rows),
                    n_val=len(val_rows),
                    results=results,
                )
            )
        if shape is not None:
            shutil.rmtree(weights, ignore_errors=True)  # an 8B model is 16 GB of disk
    peaks.append(run_child("matmul", {"seconds": 4, "device": args.device}, work, "matmul-end", args.wait))
    peak = max(p["gflops"] for p in peaks)
    lines = [
        f"Measured {datetime.datetime.now().isoformat(timespec='seconds')} with "
        f"`python3 bench/vs_peers.py {' '.join(sys.argv[1:])}`, {(time.time() - started) / 60:.1f} min in all.",
        "",
        f"Machine: {machine()}.",
        "",
        f"{peaks[0]['dtype']} matmul peak ({peaks[0]['n']}^3, this run): {peaks[0]['gflops']:,.0f} GFLOP/s at the start, "
        f"{peaks[1]['gflops']:,.0f} at the end; MFU = 4 N tok/s over the higher (attention's T^2 term not counted). "
        "Random weights: losses are meaningless and not scored.",
    ]
    for case in cases:
        runs_md, ratios_md = report(case["results"], {}, peak, case["n_params"])
        rows = "the dataset's rows" if not case["row_tokens"] else f"rows of <= {case['row_tokens']} tokens"
        lines += [
            "",
            f"### {case['shape']} (N = {case['n_params'] / 1e6:.0f}M), {rows}, {case['n_train']} train",
            "",
            runs_md,
            "",
            ratios_md,
        ]
    markdown = "\n".join(lines)
    print("\n" + markdown)
    raw = {"command": sys.argv, "machine": machine(), "matmul": peaks, "cases": cases, "minutes": (time.time() - started) / 60}
    (out / "results.json").write_text(json.dumps(raw, indent=1))
    (out / "results.md").write_text(markdown + "\n")
    print(f"\nwrote {out / 'results.json'} and {out / 'results.md'}")
    if args.out and not args.keep:
        shutil.rmtree(work, ignore_errors=True)


def write_results(raw: dict, runs_md: str, ratios_md: str, summary: str, quick: bool) -> None:
    """Replace the generated block of bench/RESULTS.md (between the markers); the notes around it stay."""
    begin, end = "<!-- vs_peers:begin -->", "<!-- vs_peers:end -->"
    block = "\n".join(
        [
            begin,
            f"Measured {raw['date']} with `{raw['command'].strip()}`{' (QUICK smoke run)' if quick else ''}, "
            f"{raw['minutes']:.1f} min in all.",
            "",
            f"Machine: {raw['machine']}.",
            "",
            f"Data: {raw['dataset']}, {raw['n_train']} training / {raw['n_val']} validation examples "
            f"(`split_examples(seed=42)`).",
            "",
            runs_md,
            "",
            ratios_md,
            "",
            summary,
            "",
            "```json",
            json.dumps({k: raw[k] for k in ("matmul_gflops", "results", "scores")}, indent=None)[:20000],
            "```",
            end,
        ]
    )
    text = RESULTS.read_text() if RESULTS.exists() else f"# Benchmark results\n\n{begin}\n{end}\n"
    if begin not in text:
        text += f"\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    RESULTS.write_text(head + block + rest.split(end, 1)[1])


if __name__ == "__main__":
    main()
