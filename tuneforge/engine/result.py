"""What a finished run leaves behind: the adapter in PEFT format, its `RunResult` (model.json), the
report, and no checkpoint. The training loop (train.py) calls these once, at its end; rank 0 alone
writes (`dist.main_only` at the call site)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from tuneforge.engine.checkpoint import TrainState, remove_checkpoint
from tuneforge.engine.distributed import Distributed
from tuneforge.engine.eval_plan import EvalPlan
from tuneforge.engine.metrics_log import MetricsLog
from tuneforge.engine.peft_format import peft_config, save_adapter
from tuneforge.run_folder import KEPT_CYCLE_ADAPTERS, RunFolder, RunResult


def write_adapter(folder: RunFolder, adapter: dict[str, torch.Tensor], run) -> None:
    """The adapter in PEFT format, swapped in whole (a reader never sees half of one). `run`: the RunSpec."""
    _swap_in(adapter, folder.adapter_dir, run)


def keep_cycle_adapter(folder: RunFolder, adapter: dict[str, torch.Tensor], run, step: int) -> None:
    """The adapter of step `step`'s evaluation cycle, in PEFT format (adapter tensors only, small), and
    only the last KEPT_CYCLE_ADAPTERS cycles' left: the OpenAI API's checkpoints, each callable as a model."""
    _swap_in(adapter, folder.cycle_adapter_dir(step), run)
    for old in folder.cycle_adapter_steps()[:-KEPT_CYCLE_ADAPTERS]:
        shutil.rmtree(folder.cycle_adapter_dir(old), ignore_errors=True)


def _swap_in(adapter: dict[str, torch.Tensor], target: Path, run) -> None:
    cfg = run.config
    config = peft_config(
        run.base_model.method, base_model=str(run.weights.path), r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout
    )
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_adapter(adapter, tmp, config)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def run_result(
    run,
    dist: Distributed,
    *,
    dtype: torch.dtype,
    share_prefix: bool,
    n_train: int,
    n_val: int,
    total_steps: int,
    state: TrainState,
    early_stopped: bool,
    plan: EvalPlan,
    total_seconds: float,
    final_loss: float,
    final_accuracy: float,
) -> RunResult:
    """model.json of the run `run` (the RunSpec), from the loop's final state and the final evaluation."""
    return RunResult(
        base_model_id=run.base_model.id,
        method=run.base_model.method,
        training_config=run.config.to_api(),
        weights={"source": run.weights.source, "path": str(run.weights.path), "description": run.weights.description},
        stand_in=run.weights.stand_in,
        device=dist.device.split(":")[0],
        precision=str(dtype).removeprefix("torch."),
        seed=run.seed,
        training_examples=n_train,
        validation_examples=n_val,
        total_training_steps=total_steps,
        steps_run=state.step,
        early_stopped=early_stopped,
        best_step=state.best_step,
        evaluation_cycles=state.evals,
        evaluation_every_steps=plan.every,
        evaluation_cycle_examples=plan.examples,
        timings={"totalSeconds": total_seconds, "trainSeconds": state.train_seconds, "evalSeconds": state.eval_seconds},
        final_accuracy=final_accuracy,
        final_loss=final_loss,
        extra={
            "distributed": dist.describe(),
            "activationCheckpointing": run.activation_checkpointing,
            "quantizeBase": run.quantize_base,
            "sharedPrefix": share_prefix,
            # finalLoss / finalAccuracy are the DPO loss and reward accuracy of a "dpo" run (docs/dpo.md)
            "trainingMethod": "dpo" if run.config.is_dpo else "supervised",
        },
    )


def finish_folder(folder: RunFolder, result: RunResult, log: MetricsLog) -> None:
    """After model.json: the report, and the checkpoint goes (a finished run is not resumed)."""
    from tuneforge.report import write_report

    write_report(folder.path, result.to_json(), log.records())
    remove_checkpoint(folder)
