"""The training loop: one function, `fine_tune`, readable top to bottom.

What it does, in order:
  1. resolve and load the weights (bf16 matmuls where the hardware runs them fast), read + split the dataset
     (seeded 80:20; or, with `validation_dataset`, all of it trains and that file is the validation split),
     encode it with the base model's chat template, check token lengths;
  2. attach the method's adapter (LoRA or T-Few/(IA)^3) to the frozen base (starting from a finished run's
     adapter with `from_adapter`);
  3. AdamW (weight decay 0, gradient clipping at 1.0) with a linear warmup over the first 6 % of
     steps, then linear decay to 0 at the last step -- T-Few's recipe (Liu et al. 2022, 60 warm-up
     steps of 1000), used for both methods;
  4. exactly `totalTrainingSteps` = epochs * ceil(n_train / batch) optimizer steps, each on
     `trainingBatchSize` examples (the last batch of an epoch is smaller), unless early stopping
     fires. Each epoch's order is a seeded permutation, so a run is reproducible and a resumed run
     sees the same batches. The loss of a step is the mean over all completion tokens of the batch
     (micro-batches sum token losses, then divide once: accumulation equals one big batch). A DPO run
     (`config.is_dpo`, docs/dpo.md) takes the same steps on preference pairs: `trainingBatchSize` pairs a
     step, each pair's chosen and rejected rows in one batch, the loss the mean DPO loss over the pairs
     (loss.PreferenceLoss: the reference is the same model with its adapter off, scored without gradients);
  5. evaluation cycles (see `EvalPlan`) feed early stopping and keep the best adapter (DPO: on the
     validation DPO loss; the accuracy is the reward accuracy);
  6. checkpoints at every evaluation cycle and when stopped (SIGTERM / Ctrl-C); each cycle's adapter is
     kept too, for the last 3 cycles (run_folder: cycle-adapters/, the OpenAI API's checkpoints);
  7. at the end, the best adapter (the last one when early stopping is disabled) is evaluated on
     the whole validation split: that gives finalAccuracy / finalLoss, and it is saved in PEFT format.

The same function runs one process or several (`distributed.py`: FSDP2 ranks, each taking its share of
every step's examples; `dist` is a no-op object in one process). Every rank runs every line; rank 0
alone writes the run folder (`dist.main_only`), and the values decisions are taken on (evaluation
losses, stop requests) are summed or agreed across the ranks first, so all ranks take the same ones.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tuneforge import data
from tuneforge.catalog import BaseModelSpec
from tuneforge.engine import quantize
from tuneforge.engine.adapters import adapter_parameters, apply_ia3, apply_lora, initial_adapter
from tuneforge.engine.batches import Encoded, EncodedPair, collate, encode, encode_all
from tuneforge.engine.checkpoint import TrainState, restore_checkpoint, save_checkpoint
from tuneforge.engine.distributed import Distributed
from tuneforge.engine.early_stopping import EarlyStopping
from tuneforge.engine.eval_plan import EvalPlan
from tuneforge.engine.loss import CompletionLoss, PreferenceLoss, reward_metrics, shared_prefix_len
from tuneforge.engine.metrics_log import MetricsLog, should_log
from tuneforge.engine.precision import pick_device, pick_dtype
from tuneforge.engine.result import finish_folder, keep_cycle_adapter, run_result, write_adapter
from tuneforge.engine.weights import Weights, load_for_training
from tuneforge.hyperparams import TrainingConfig, steps_per_epoch, total_training_steps
from tuneforge.run_folder import Progress, RunFolder, RunResult

WARMUP_SHARE = 0.06
MAX_GRAD_NORM = 1.0


@dataclass
class RunSpec:
    base_model: BaseModelSpec
    config: TrainingConfig
    dataset: Path
    weights: Weights
    output: Path
    seed: int = data.DEFAULT_SEED
    validation_dataset: Path | None = None  # the validation split; None: a seeded 20 % of `dataset`
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto | bf16 | fp32
    micro_batch_size: int | None = None  # split each step's batch (each rank's share of it) to bound memory; same result
    activation_checkpointing: bool = False  # recompute each decoder layer in the backward pass: less memory, ~1/3 more compute
    quantize_base: str | None = None  # "nf4": a 4-bit frozen base (QLoRA, quantize.py)
    shared_prefix: str = "auto"  # auto | on | off: run the rows' shared prefix once per batch (`use_shared_prefix`)
    from_adapter: Path | None = None  # a finished run's folder: its adapter is where training starts (e.g. DPO after SFT)
    resume: bool = False
    listeners: list[Callable[[dict], None]] = field(default_factory=list)
    should_stop: Callable[[], bool] = lambda: False


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
def evaluate_metrics(
    model, encoded: list[Encoded | EncodedPair], pad_id: int, device: str, batch_size: int = 16, dist: Distributed | None = None
) -> dict[str, float]:
    """{"loss", "accuracy", and the scorer's other metrics} as means over `encoded`: the completion tokens'
    cross-entropy and token accuracy, or for pairs (a PreferenceLoss `model`) the DPO loss, the reward
    accuracy and the rewards (`reward_metrics`). Sorted by length so batches carry little padding. On
    several ranks each runs every W-th batch (ranks without one in a round run a copy and drop it: the
    passes must match) and the sums are added up across ranks."""
    scorer, dist = CompletionLoss.of(model), dist or Distributed()
    was_training = scorer.training
    scorer.eval()
    sums: dict[str, float] = {"loss": 0.0, "count": 0.0}
    ordered = sorted(encoded, key=lambda e: e.n_tokens)
    for group in batches_of(batches_of(ordered, batch_size), dist.world):
        mine = dist.this_ranks(group)
        stats = scorer(to_device(collate(mine or group[0], pad_id), device), common_prefix(group, pad_id))
        # Every rank adds every name (a dropped copy adds 0): all_sum needs the same values on every rank.
        for name, value in {"loss": float(stats.loss_sum), "count": stats.count, **stats.sums()}.items():
            sums[name] = sums.get(name, 0.0) + (value if mine is not None else 0.0)
    totals = dict(zip(sums, dist.all_sum(*sums.values()), strict=True))
    scorer.train(was_training)
    count = max(totals.pop("count"), 1)
    if isinstance(scorer, PreferenceLoss):
        mean = {name: totals[name] / count for name in ("loss", "accuracy", "preferenceAccuracy")}
        return mean | reward_metrics(totals, count)
    return {name: value / count for name, value in totals.items()}


def score_pairs(model, tokenizer, pairs: list[data.PreferencePair], device: str, beta: float) -> dict[str, float]:
    """A trained model's DPO metrics on preference pairs (`evaluate_metrics`), its reference being its base
    (adapter off): the DPO loss, the reward accuracy, the rewards, and the preference accuracy (pairs whose
    preferred reply the model itself finds likelier; for a base model, the only one that means anything)."""
    encoded = [encode(tokenizer, p) for p in pairs]
    return {"pairs": len(pairs), **evaluate_metrics(PreferenceLoss(model, beta), encoded, tokenizer.pad_token_id, device)}


def evaluate(
    model, encoded: list[Encoded], pad_id: int, device: str, batch_size: int = 16, dist: Distributed | None = None
) -> tuple[float, float]:
    """(mean loss, accuracy) of `evaluate_metrics`: for token scoring, over the completion tokens."""
    metrics = evaluate_metrics(model, encoded, pad_id, device, batch_size, dist)
    return metrics["loss"], metrics["accuracy"]


def to_device(batch: dict[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def common_prefix(chunks: list[list[Encoded]], pad_id: int) -> int:
    """Tokens shared by every row of `chunks` (which the ranks run at the same time): each rank runs
    that prefix once for its rows, and all ranks take the same number of decoder passes."""
    return shared_prefix_len(collate([e for chunk in chunks for e in chunk], pad_id))


SHARED_PREFIX_SETTINGS = ("auto", "on", "off")


def use_shared_prefix(setting: str, device: str) -> bool:
    """Whether batches run their rows' shared prefix once (loss.py): the same math on fewer tokens, at
    the price of a second decoder call per pass. auto: on for CPU, where arithmetic bounds the step;
    off for CUDA, where a small batch's step is bound by kernel launches and Python, not FLOPs (the
    H200 run of bench/RESULTS.md: under 1 % MFU), so the second call costs more than the FLOPs it
    saves. The CUDA default is to be confirmed by the device run (bench/gpu_speed_check.sh)."""
    if setting not in SHARED_PREFIX_SETTINGS:
        raise ValueError(f"shared_prefix is {setting}: allowed values are auto, on, off")
    return setting == "on" or (setting == "auto" and not device.startswith("cuda"))


def attach_method(model, method: str, config: TrainingConfig) -> None:
    """The base model's method's adapter ("LORA" or "TFEW"): a DPO config trains the same adapter."""
    if method == "LORA":
        apply_lora(model, config.lora_r, config.lora_alpha, config.lora_dropout)
    else:
        apply_ia3(model)


def adapter_from(run_dir: Path, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A finished run's adapter (RUN_DIR/adapter, PEFT format) as tensors like `params` (device, dtype): the
    same method, rank and layers, or a TuneForgeError naming what differs. One process only (whole tensors)."""
    from safetensors.torch import load_file

    from tuneforge.engine.peft_format import _our_name
    from tuneforge.errors import TuneForgeError

    file = run_dir / "adapter" / "adapter_model.safetensors"
    if not file.is_file():
        raise TuneForgeError(
            f"--from-adapter {run_dir}: no adapter there (a finished `tuneforge train` output folder has adapter/)"
        )
    tensors = {_our_name(k): v for k, v in load_file(file).items()}
    shapes = {n: tuple(t.shape) for n, t in tensors.items()}
    if shapes != {n: tuple(p.shape) for n, p in params.items()}:
        raise TuneForgeError(
            f"--from-adapter {run_dir}: its adapter does not fit this run's (another method, loraR, base model or "
            "layers); start from a run of the same base model and adapter settings"
        )
    return {n: tensors[n].to(p.device, p.dtype) for n, p in params.items()}


class TrainingStopped(Exception):
    """Stopped from outside (SIGTERM / Ctrl-C) after writing a checkpoint; `resume` continues."""

    def __init__(self, step: int, total_steps: int):
        super().__init__(f"stopped at step {step} of {total_steps}")
        self.step, self.total_steps = step, total_steps


def fine_tune(run: RunSpec) -> RunResult:
    """Train, evaluate and save; the run's `RunResult` (also written to model.json). Raises
    TrainingStopped when `run.should_stop()` asked for an early exit (a checkpoint is written).
    Under a launcher (WORLD_SIZE > 1) this process is one rank of the run."""
    dist = Distributed.from_env(pick_device(run.device))
    try:
        return train_loop(run, dist)
    finally:
        dist.close()


def load_model_and_data(run: RunSpec, dist: Distributed, writer, dtype: torch.dtype, share_prefix: bool):
    """1. the base model's weights and tokenizer, the dataset read, split (seeded 80:20), length-checked and
    encoded; 2. the method's adapter attached to the frozen base, sharded over the ranks.
    Returns (scorer, train_set, val_set, pad_id)."""
    cfg = run.config
    examples = data.read_examples(run.dataset, method=data.DPO if cfg.is_dpo else data.SUPERVISED)

    def prepare(model) -> CompletionLoss:
        attach_method(model, run.base_model.method, cfg)
        if run.activation_checkpointing:
            model.activation_checkpointing_enable()
        scorer = PreferenceLoss(model, cfg.beta) if cfg.is_dpo else CompletionLoss(model)
        scorer.share_prefix = share_prefix  # off: every pass, training and evaluation, runs whole rows
        dist.shard(scorer, model)
        return scorer

    scorer, tokenizer = load_for_training(run.weights, dtype, dist, prepare, quantize=run.quantize_base)
    model = scorer.model
    writer.write_progress(Progress(0, None, 0.0, "loading", detail="tokenizing the dataset"))
    context = min(run.base_model.context_tokens, model.config.max_position_embeddings)
    context_source = run.weights.context_note(model.config.max_position_embeddings, run.base_model.context_tokens)

    def encoded(items, path: Path) -> list:
        """Length-checked and encoded, every problem named by its line of `path`, all at once."""
        data.check_token_lengths(
            items,
            lambda text: len(tokenizer(text, add_special_tokens=False).input_ids),
            max_prompt_tokens=run.base_model.max_prompt_tokens,
            max_completion_tokens=run.base_model.max_completion_tokens,
            context_tokens=context,
            path=path,
            context_source=context_source,
        )
        # Conversations are rendered by the chat template here: each one it cannot render or mark, or
        # whose rendering exceeds the context, is named by its line, all at once.
        return encode_all(
            tokenizer,
            items,
            path=str(path),
            context_tokens=context,
            context_source=context_source,
            model=run.weights.description if run.weights.stand_in else run.base_model.id,  # never a server path
        )

    if run.validation_dataset is not None:  # the whole dataset trains; the validation dataset is the split
        validation = data.read_examples(
            run.validation_dataset, min_examples=1, method=data.DPO if cfg.is_dpo else data.SUPERVISED
        )
        return scorer, encoded(examples, run.dataset), encoded(validation, run.validation_dataset), tokenizer.pad_token_id
    all_encoded = encoded(examples, run.dataset)
    train_indices, val_indices = data.split_indices(len(examples), run.seed)  # the seeded 80:20 split (data.split_examples)
    train_set = [all_encoded[i] for i in train_indices]
    val_set = [all_encoded[i] for i in val_indices]
    return scorer, train_set, val_set, tokenizer.pad_token_id


def train_loop(run: RunSpec, dist: Distributed) -> RunResult:
    """Steps 1-7 of the module docstring, in that order, each marked with its number below; what is
    handed back at the end (the adapter, model.json, the report) is assembled in result.py."""
    started = time.time()
    cfg = run.config
    folder = RunFolder(run.output)
    writer = dist.main_only(lambda: folder)  # rank 0 writes the run folder; every rank reads it
    if dist.is_main:
        folder.path.mkdir(parents=True, exist_ok=True)
    writer.clear_error()
    if run.resume and not folder.has_checkpoint() and (finished := folder.read_result()) is not None:
        return finished  # finished before whoever asked to resume noticed (the service died just as it ended)
    writer.write_progress(Progress(0, None, 0.0, "loading", detail="loading the base model's weights"))

    # 1. weights and data; 2. the method's adapter on the frozen base, sharded over the ranks
    torch.manual_seed(run.seed)
    device = dist.device
    dtype = pick_dtype(run.precision, device)
    share_prefix = use_shared_prefix(run.shared_prefix, device)
    if run.quantize_base:
        quantize.require(run.quantize_base, device, dist.world)
    scorer, train_set, val_set, pad_id = load_model_and_data(run, dist, writer, dtype, share_prefix)
    model = scorer.model

    n_train, batch_size, epochs = len(train_set), cfg.training_batch_size, cfg.total_training_epochs
    per_epoch = steps_per_epoch(n_train, batch_size)
    total_steps = total_training_steps(n_train, batch_size, epochs)
    plan = EvalPlan.make(total_steps, cfg.early_stopping_patience, n_train, epochs, len(val_set))
    cycle_set = [val_set[i] for i in epoch_order(len(val_set), run.seed, -1)[: plan.examples]]

    params = adapter_parameters(model)
    for name, value in initial_adapter(model).items():  # drawn whole, then each rank keeps its shard
        dist.fill(params[name], value)
    if run.from_adapter is not None:
        start = adapter_from(run.from_adapter, params)
        with torch.no_grad():  # a resumed run's checkpoint (restored below) replaces it
            for n, p in params.items():
                p.copy_(start[n])
        if cfg.is_dpo:  # DPO's reference is then the model it starts from, as in the DPO paper (pi_ref = pi_SFT)
            scorer.reference_adapter = start
    dist.seed_ranks(run.seed)  # each rank its own dropout masks from here on
    # 3. optimizer and schedule
    # fused: one kernel for all adapter tensors instead of ~8 small ops each (420 tensors for LoRA)
    optimizer = torch.optim.AdamW(params.values(), lr=cfg.learning_rate, weight_decay=0.0, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, total_steps, 1.0))
    state = restore_checkpoint(folder, model, optimizer, scheduler, dist, run.seed) if run.resume else None
    if state is None:
        state = TrainState(
            EarlyStopping(cfg.early_stopping_patience, cfg.early_stopping_threshold),
            best_adapter={n: p.detach().clone() for n, p in params.items()},
        )
    log = dist.main_only(MetricsLog, folder, run.listeners, keep_until_step=state.step if run.resume else None)
    stop_asked = lambda: dist.any(run.should_stop())  # every rank stops at the same step

    def progress(phase: str, detail: str | None = None, eta: float | None = None) -> None:
        log.progress(Progress(state.step, total_steps, state.step / per_epoch, phase, eta, detail))

    def evaluation_cycle() -> bool:
        """5. Score the cycle subset; update early stopping and the best adapter; checkpoint.
        True when early stopping says to stop."""
        progress("evaluating", f"evaluation cycle on {len(cycle_set)} validation examples")
        t0 = time.time()
        metrics = evaluate_metrics(scorer, cycle_set, pad_id, device, dist=dist)
        val_loss, val_acc = metrics["loss"], metrics["accuracy"]
        state.eval_seconds += time.time() - t0
        state.evals += 1
        is_best = state.early_stopping.update(val_loss)
        if is_best:
            state.best_adapter, state.best_step = {n: p.detach().clone() for n, p in params.items()}, state.step
        log.record(
            {
                "kind": "eval",
                "step": state.step,
                "totalTrainingSteps": total_steps,
                "epoch": round(state.step / per_epoch, 4),
                "validationLoss": val_loss,
                "validationAccuracy": val_acc,
                "isBest": is_best,
                "patienceCounter": state.early_stopping.counter,
                "elapsedSeconds": time.time() - started,
            }
            | (reward_metrics(metrics, 1, prefix="validation") if cfg.is_dpo else {})
        )
        state.eval_due = False
        save_checkpoint(folder, state, model, optimizer, scheduler, dist)
        cycle_adapter = dist.full_tensors(params)  # collective: every rank takes part
        dist.main_only(keep_cycle_adapter, folder, cycle_adapter, run, state.step)
        return state.early_stopping.should_stop

    # 4. the loop
    scorer.train()
    micro = run.micro_batch_size or batch_size
    window_loss, window_steps, window_tokens, window_start = 0.0, 0, 0, time.time()
    window_correct, window_trained = 0.0, 0.0  # the trained tokens' right argmax predictions, and their count
    window_pairs: dict[str, float] = {}  # DPO: the window's summed rewards and reward accuracy, and its pair count
    # A run stopped between a step and that step's evaluation cycle does the cycle first on resume.
    early_stopped = evaluation_cycle() if state.eval_due else False
    progress("training")
    while state.step < total_steps and not early_stopped:
        epoch, index = divmod(state.step, per_epoch)
        order = epoch_order(n_train, run.seed, epoch)
        batch_examples = [train_set[i] for i in order[index * batch_size : (index + 1) * batch_size]]
        t0 = time.time()
        # What the step's loss is averaged over (every rank knows the batch): its trained tokens, or for
        # DPO its pairs; each rank adds its share's loss sum.
        n_units = sum(e.loss_units for e in batch_examples)
        prefix = common_prefix([batch_examples], pad_id)
        step_loss, step_correct, step_trained = 0.0, 0, 0
        for chunk, counts in dist.micro_batches(batch_examples, micro):
            stats = scorer(to_device(collate(chunk, pad_id), device), prefix)
            if counts and hasattr(stats, "tokens"):  # token accuracy (a preference step's PairStats count pairs)
                step_correct, step_trained = step_correct + stats.correct, step_trained + stats.tokens
            (stats.loss_sum * (1.0 if counts else 0.0) / n_units).backward()
            step_loss += float(stats.loss_sum.detach()) / n_units if counts else 0.0
            if cfg.is_dpo and counts:
                for name, value in {"count": stats.count, **stats.sums()}.items():
                    window_pairs[name] = window_pairs.get(name, 0.0) + value
        step_loss, step_correct, step_trained = dist.all_sum(step_loss, step_correct, step_trained)
        torch.nn.utils.clip_grad_norm_(params.values(), MAX_GRAD_NORM)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.train_seconds += time.time() - t0
        window_loss += step_loss
        window_steps += 1
        window_correct, window_trained = window_correct + step_correct, window_trained + step_trained
        window_tokens += sum(e.n_tokens for e in batch_examples)

        if should_log(state.step, cfg.log_model_metrics_interval_in_steps):
            now = time.time()
            log.record(
                {
                    "kind": "train",
                    "step": state.step,
                    "totalTrainingSteps": total_steps,
                    "epoch": round(state.step / per_epoch, 4),
                    "loss": window_loss / window_steps,
                    **({"accuracy": window_correct / window_trained} if window_trained else {}),
                    "learningRate": lr_at(state.step - 1, total_steps, cfg.learning_rate),
                    "tokensPerSecond": window_tokens / max(now - window_start, 1e-9),
                    "elapsedSeconds": now - started,
                }
                | (reward_metrics(window_pairs, int(window_pairs["count"])) if cfg.is_dpo else {})
            )
            window_loss, window_steps, window_tokens, window_start, window_pairs = 0.0, 0, 0, now, {}
            window_correct, window_trained = 0.0, 0.0

        if plan.due(state.step, total_steps):
            state.eval_due = True
            if not stop_asked():  # a stop asked for now skips the cycle: it would only delay stopping
                early_stopped = evaluation_cycle()
        progress("training", eta=_eta(state, total_steps, plan, batch_size, len(val_set), len(cycle_set)))
        if stop_asked() and (state.step < total_steps or state.eval_due) and not early_stopped:
            progress("stopping", "writing a checkpoint")
            save_checkpoint(folder, state, model, optimizer, scheduler, dist)  # 6. stopped from outside: resumable from here
            progress("stopped")
            log.close()
            raise TrainingStopped(state.step, total_steps)

    # 7. final metrics of the best adapter on the whole validation split; save it in PEFT format.
    # With early stopping disabled (patience 0) the model is the last step's, as when training
    # without validation-based selection ("the final model is the best model found" is part of
    # Cohere's early stopping, not of training).
    if cfg.early_stopping_patience > 0:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(state.best_adapter[n])
    else:
        state.best_step = state.step
    progress("evaluating", f"final evaluation on all {len(val_set)} validation examples")
    t0 = time.time()
    final_loss, final_acc = evaluate(scorer, val_set, pad_id, device, dist=dist)  # DPO: loss and reward accuracy
    state.eval_seconds += time.time() - t0
    progress("saving", "saving the adapter")
    dist.main_only(write_adapter, folder, dist.full_tensors(params), run)
    result = run_result(
        run,
        dist,
        dtype=dtype,
        share_prefix=share_prefix,
        n_train=n_train,
        n_val=len(val_set),
        total_steps=total_steps,
        state=state,
        early_stopped=early_stopped,
        plan=plan,
        total_seconds=time.time() - started,
        final_loss=final_loss,
        final_accuracy=final_acc,
    )
    writer.write_result(result)
    progress("done", eta=0.0)
    log.close()
    dist.main_only(finish_folder, folder, result, log)
    dist.barrier()  # the other ranks return once the run folder is complete
    return result


def _eta(state: TrainState, total_steps: int, plan: EvalPlan, batch_size: int, n_val: int, cycle_examples: int) -> float:
    """Seconds left: the remaining steps and evaluation cycles at this run's own pace, plus the final
    evaluation on the whole validation split (an evaluation cycle's cost scaled by its size)."""
    per_step = state.train_seconds / max(state.step, 1)
    # Before the first cycle: a forward pass costs about a third of a training step, per example.
    per_example = state.eval_seconds / (state.evals * cycle_examples) if state.evals else per_step / batch_size / 3
    cycles_left = sum(1 for s in range(state.step + 1, total_steps + 1) if plan.due(s, total_steps))
    return per_step * (total_steps - state.step) + per_example * (cycles_left * cycle_examples + n_val)
