"""The training loop: one function, `fine_tune`, readable top to bottom.

What it does, in order:
  1. resolve and load the weights (bf16 matmuls where the hardware runs them fast), read + split the dataset
     (seeded 80:20), encode it with the base model's chat template, check token lengths;
  2. attach the method's adapter (LoRA or T-Few/(IA)^3) to the frozen base;
  3. AdamW (weight decay 0, gradient clipping at 1.0) with a linear warmup over the first 6 % of
     steps, then linear decay to 0 at the last step -- T-Few's recipe (Liu et al. 2022, 60 warm-up
     steps of 1000), used for both methods;
  4. exactly `totalTrainingSteps` = epochs * ceil(n_train / batch) optimizer steps, each on
     `trainingBatchSize` examples (the last batch of an epoch is smaller), unless early stopping
     fires. Each epoch's order is a seeded permutation, so a run is reproducible and a resumed run
     sees the same batches. The loss of a step is the mean over all completion tokens of the batch
     (micro-batches sum token losses, then divide once: accumulation equals one big batch);
  5. evaluation cycles (see `EvalPlan`) feed early stopping and keep the best adapter;
  6. checkpoints at every evaluation cycle and when stopped (SIGTERM / Ctrl-C);
  7. at the end, the best adapter (the last one when early stopping is disabled) is evaluated on
     the whole validation split: that gives finalAccuracy / finalLoss, and it is saved in PEFT format.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tuneforge import data
from tuneforge.catalog import BaseModelSpec
from tuneforge.engine.adapters import adapter_parameters, apply_ia3, apply_lora
from tuneforge.engine.batches import Encoded, collate, encode_example
from tuneforge.engine.checkpoint import load_checkpoint, remove_checkpoint, save_checkpoint
from tuneforge.engine.early_stopping import EarlyStopping
from tuneforge.engine.loss import completion_stats
from tuneforge.engine.metrics_log import MetricsLog, should_log, write_json_atomic
from tuneforge.engine.peft_format import peft_config, save_adapter
from tuneforge.engine.weights import Weights, load_model_and_tokenizer
from tuneforge.errors import TuneForgeError
from tuneforge.hyperparams import TrainingConfig, steps_per_epoch, total_training_steps

WARMUP_SHARE = 0.06
MAX_GRAD_NORM = 1.0
EVAL_SHARE = 0.4  # evaluation-cycle examples, all cycles together, per training example processed
MIN_EVAL_EXAMPLES = 8


@dataclass
class RunSpec:
    base_model: BaseModelSpec
    config: TrainingConfig
    dataset: Path
    weights: Weights
    output: Path
    seed: int = data.DEFAULT_SEED
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto | bf16 | fp32
    micro_batch_size: int | None = None  # split each step's batch to bound memory; same result
    resume: bool = False
    listeners: list[Callable[[dict], None]] = field(default_factory=list)
    should_stop: Callable[[], bool] = lambda: False


@dataclass(frozen=True)
class EvalPlan:
    """When evaluation cycles run and on how many validation examples.

    Patience counts evaluations, so a run needs more than `patience` cycles for early stopping to
    mean anything: we plan 2 * patience + 2 cycles (at least 8), evenly spaced in steps, plus one at
    the last step. Evaluating the whole validation split that often would cost more than training,
    so each cycle evaluates the same fixed, seeded subset of it, sized so that all cycles together
    see EVAL_SHARE validation examples per training example processed (a forward pass costs about a
    third of a training step: evaluation stays near 15 % of the wall time). The final metrics
    always use the whole validation split."""

    every: int
    examples: int

    @staticmethod
    def make(total_steps: int, patience: int, n_train: int, epochs: int, n_val: int) -> "EvalPlan":
        cycles = min(total_steps, max(8, 2 * patience + 2))
        every = max(1, total_steps // cycles)
        budget = math.ceil(EVAL_SHARE * n_train * epochs / cycles)
        return EvalPlan(every, min(n_val, max(MIN_EVAL_EXAMPLES, budget)))

    def due(self, step: int, total_steps: int) -> bool:
        return step % self.every == 0 or step == total_steps


def pick_device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise TuneForgeError("--device cuda: no CUDA device is available; use --device cpu")
    return requested


def pick_dtype(precision: str, device: str) -> torch.dtype:
    """The dtype of the frozen base's matrix products: bf16 where the hardware has bf16 matmuls (CUDA;
    CPUs with AVX512-BF16 or AMX, ~5x the fp32 rate here). Activations, the residual stream, the
    adapter weights and the optimizer state are fp32 either way (`precision.py`)."""
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_bf16_matmuls() else torch.float32


def cpu_has_bf16_matmuls() -> bool:
    """AVX512-BF16 or AMX. Without them (e.g. an AVX2-only EPYC) oneDNN multiplies bf16 in a slow
    generic path: 0.3 GFLOP/s against 170 in fp32 on such a machine."""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return "avx512_bf16" in flags or "amx_bf16" in flags


def lr_at(step: int, total_steps: int, peak: float) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, then linear decay to 0."""
    warmup = max(1, math.ceil(WARMUP_SHARE * total_steps))
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * max(0.0, (total_steps - step) / max(1, total_steps - warmup))


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def batches_of(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


@torch.no_grad()
def evaluate(model, encoded: list[Encoded], pad_id: int, device: str, batch_size: int = 16) -> tuple[float, float]:
    """(mean loss, token accuracy) over the completion tokens of `encoded`. Sorted by length so
    batches carry little padding."""
    was_training = model.training
    model.eval()
    loss_sum, correct, tokens = 0.0, 0, 0
    ordered = sorted(encoded, key=lambda e: len(e.input_ids))
    for chunk in batches_of(ordered, batch_size):
        batch = {k: v.to(device) for k, v in collate(chunk, pad_id).items()}
        stats = completion_stats(model, batch)
        loss_sum += float(stats.loss_sum)
        correct += stats.correct
        tokens += stats.tokens
    model.train(was_training)
    return loss_sum / max(tokens, 1), correct / max(tokens, 1)


def attach_method(model, config: TrainingConfig) -> None:
    if config.training_config_type == "LORA_TRAINING_CONFIG":
        apply_lora(model, config.lora_r, config.lora_alpha, config.lora_dropout)
    else:
        apply_ia3(model)


def fine_tune(run: RunSpec) -> dict:
    started = time.time()
    output, cfg = run.output, run.config
    output.mkdir(parents=True, exist_ok=True)
    state = load_checkpoint(output) if run.resume else None
    if run.resume and state is None and (output / "model.json").is_file():
        # Finished before whoever asked to resume noticed (e.g. the service died just as training ended).
        return json.loads((output / "model.json").read_text())
    log = MetricsLog(output, run.listeners, keep_until_step=state["step"] if state else None)
    log.progress(step=state["step"] if state else 0, totalTrainingSteps=None, epoch=0.0, phase="loading", etaSeconds=None)

    # 1. weights and data
    torch.manual_seed(run.seed)
    device = pick_device(run.device)
    dtype = pick_dtype(run.precision, device)
    examples = data.read_examples(run.dataset)
    train_examples, val_examples = data.split_examples(examples, run.seed)
    model, tokenizer = load_model_and_tokenizer(run.weights, dtype, device)
    data.check_token_lengths(
        examples,
        lambda text: len(tokenizer(text, add_special_tokens=False).input_ids),
        max_prompt_tokens=run.base_model.max_prompt_tokens,
        max_completion_tokens=run.base_model.max_completion_tokens,
        context_tokens=min(run.base_model.context_tokens, model.config.max_position_embeddings),
        path=run.dataset,
    )
    train_set = [encode_example(tokenizer, e.prompt, e.completion) for e in train_examples]
    val_set = [encode_example(tokenizer, e.prompt, e.completion) for e in val_examples]
    pad_id = tokenizer.pad_token_id

    n_train, batch_size, epochs = len(train_set), cfg.training_batch_size, cfg.total_training_epochs
    per_epoch = steps_per_epoch(n_train, batch_size)
    total_steps = total_training_steps(n_train, batch_size, epochs)
    plan = EvalPlan.make(total_steps, cfg.early_stopping_patience, n_train, epochs, len(val_set))
    cycle_set = [val_set[i] for i in epoch_order(len(val_set), run.seed, -1)[: plan.examples]]

    # 2. the method's adapter on the frozen base
    attach_method(model, cfg)
    params = adapter_parameters(model)
    # 3. optimizer and schedule
    # fused: one kernel for all adapter tensors instead of ~8 small ops each (420 tensors for LoRA)
    optimizer = torch.optim.AdamW(params.values(), lr=cfg.learning_rate, weight_decay=0.0, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, total_steps, 1.0))
    stopper = EarlyStopping(cfg.early_stopping_patience, cfg.early_stopping_threshold)
    best_adapter = {n: p.detach().clone() for n, p in params.items()}
    best_step, step, train_seconds, eval_seconds, evals = 0, 0, 0.0, 0.0, 0
    if state is not None:
        for n, p in params.items():
            p.data.copy_(state["adapter"][n])
        best_adapter = state["best_adapter"]
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        stopper = EarlyStopping(**state["early_stopping"])
        best_step, step, evals = state["best_step"], state["step"], state["evals"]
        train_seconds, eval_seconds = state["train_seconds"], state["eval_seconds"]
        torch.set_rng_state(state["rng"])

    def checkpoint() -> None:
        save_checkpoint(output, {
            "step": step, "adapter": {n: p.detach().clone() for n, p in params.items()},
            "best_adapter": best_adapter, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "early_stopping": stopper.state_dict(), "best_step": best_step, "evals": evals,
            "train_seconds": train_seconds, "eval_seconds": eval_seconds, "rng": torch.get_rng_state(),
        })

    # 4. the loop
    model.train()
    micro = run.micro_batch_size or batch_size
    early_stopped = stopped = False
    window_loss, window_steps, window_tokens, window_start = 0.0, 0, 0, time.time()
    while step < total_steps and not early_stopped:
        epoch, index = divmod(step, per_epoch)
        order = epoch_order(n_train, run.seed, epoch)
        batch_examples = [train_set[i] for i in order[index * batch_size : (index + 1) * batch_size]]
        t0 = time.time()
        n_tokens = sum(e.completion_len for e in batch_examples)  # completion tokens: the loss's denominator
        step_loss = 0.0
        for chunk in batches_of(batch_examples, micro):
            batch = {k: v.to(device) for k, v in collate(chunk, pad_id).items()}
            stats = completion_stats(model, batch)
            (stats.loss_sum / n_tokens).backward()
            step_loss += float(stats.loss_sum.detach()) / n_tokens
        torch.nn.utils.clip_grad_norm_(params.values(), MAX_GRAD_NORM)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        train_seconds += time.time() - t0
        window_loss += step_loss
        window_steps += 1
        window_tokens += sum(len(e.input_ids) for e in batch_examples)

        epoch_f = step / per_epoch
        if should_log(step, cfg.log_model_metrics_interval_in_steps):
            now = time.time()
            log.record({
                "kind": "train", "step": step, "totalTrainingSteps": total_steps, "epoch": round(epoch_f, 4), "loss": window_loss / window_steps,
                "learningRate": lr_at(step - 1, total_steps, cfg.learning_rate),
                "tokensPerSecond": window_tokens / max(now - window_start, 1e-9), "elapsedSeconds": now - started,
            })
            window_loss, window_steps, window_tokens, window_start = 0.0, 0, 0, now

        # 5. evaluation cycle -> early stopping, best adapter, checkpoint
        if plan.due(step, total_steps):
            log.progress(step=step, totalTrainingSteps=total_steps, epoch=epoch_f, phase="evaluating", etaSeconds=None)
            t0 = time.time()
            val_loss, val_acc = evaluate(model, cycle_set, pad_id, device)
            eval_seconds += time.time() - t0
            evals += 1
            is_best = stopper.update(val_loss)
            if is_best:
                best_adapter, best_step = {n: p.detach().clone() for n, p in params.items()}, step
            early_stopped = stopper.should_stop
            log.record({
                "kind": "eval", "step": step, "totalTrainingSteps": total_steps, "epoch": round(epoch_f, 4), "validationLoss": val_loss,
                "validationAccuracy": val_acc, "isBest": is_best, "patienceCounter": stopper.counter,
                "elapsedSeconds": time.time() - started,
            })
            checkpoint()
        eta = (train_seconds + eval_seconds) / max(step - (state["step"] if state else 0), 1) * (total_steps - step)
        log.progress(step=step, totalTrainingSteps=total_steps, epoch=epoch_f, phase="training", etaSeconds=eta)
        if run.should_stop() and step < total_steps and not early_stopped:
            checkpoint()  # 6. stopped from outside: resumable from exactly here
            stopped = True
            break

    if stopped:
        log.progress(step=step, totalTrainingSteps=total_steps, epoch=step / per_epoch, phase="stopped", etaSeconds=None)
        log.close()
        return {"stopped": True, "stepsRun": step, "totalTrainingSteps": total_steps}

    # 7. final metrics of the best adapter on the whole validation split; save it in PEFT format.
    # With early stopping disabled (patience 0) the model is the last step's, as when training
    # without validation-based selection ("the final model is the best model found" is part of
    # Cohere's early stopping, not of training).
    if cfg.early_stopping_patience > 0:
        for n, p in params.items():
            p.data.copy_(best_adapter[n])
    else:
        best_step = step
    t0 = time.time()
    final_loss, final_acc = evaluate(model, val_set, pad_id, device)
    eval_seconds += time.time() - t0
    tmp = output / "adapter.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_adapter(model, tmp, peft_config(
        run.base_model.method, base_model=str(run.weights.path),
        r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
    ))
    shutil.rmtree(output / "adapter", ignore_errors=True)
    tmp.rename(output / "adapter")

    result = {
        "baseModelId": run.base_model.id,
        "method": run.base_model.method,
        "trainingConfig": cfg.to_api(),
        "weights": {"source": run.weights.source, "path": str(run.weights.path), "description": run.weights.description},
        "standIn": run.weights.stand_in,
        "device": device,
        "precision": str(dtype).removeprefix("torch."),
        "seed": run.seed,
        "trainingExamples": n_train,
        "validationExamples": len(val_set),
        "totalTrainingSteps": total_steps,
        "stepsRun": step,
        "earlyStopped": early_stopped,
        "bestStep": best_step,
        "evaluationCycles": evals,
        "evaluationEverySteps": plan.every,
        "evaluationCycleExamples": plan.examples,
        "timings": {"totalSeconds": time.time() - started, "trainSeconds": train_seconds, "evalSeconds": eval_seconds},
        "modelMetrics": {"modelMetricsType": "TEXT_GENERATION_MODEL_METRICS", "finalAccuracy": final_acc, "finalLoss": final_loss},
    }
    write_json_atomic(output / "model.json", result)
    log.progress(step=step, totalTrainingSteps=total_steps, epoch=step / per_epoch, phase="done", etaSeconds=0.0)
    log.close()
    from tuneforge.report import write_report

    write_report(output, result, log.records())
    remove_checkpoint(output)
    return result
