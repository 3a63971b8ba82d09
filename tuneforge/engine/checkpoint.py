"""The training loop's state, and checkpoints of it for --resume.

`TrainState` is everything a run carries from one step to the next besides the model's adapter
weights and the optimizer: the step (the data position follows from it: each epoch's order is a
pure function of the seed), the best adapter so far, early stopping, counters and timings.
`save_checkpoint` / `restore_checkpoint` are the one place it is written and read back, together
with the adapter, optimizer, scheduler and every RNG (CPU and CUDA), so a resumed run reaches the
same adapter as an uninterrupted one.

A checkpoint folder holds
    tensors/    on several ranks: the adapter, the best adapter and the optimizer state, by parameter
                name, written with torch.distributed.checkpoint (DCP): each rank writes its own shards,
                and a later run reads them into whatever layout it has (2 ranks -> 1, or -> 4);
    tensors.pt  in one process: the same, whole tensors by name, in one torch.save file, which a
                later run on any number of ranks reads too (each rank keeps its shard). One process
                does not use DCP because DCP writes every tensor as a record of its own: for the
                stand-in's LoRA (1,680 tensors with the optimizer's) 2-3 s a checkpoint against 0.4 s;
    state.pt    TrainState's scalars, the scheduler and each rank's RNG states, written by rank 0 last:
                a folder with state.pt is complete.
With as many ranks as before, the RNGs continue where they were and the resumed run equals an
uninterrupted one. With another number, each rank's RNG (only LoRA dropout draws from it) is seeded
afresh from (seed, step, rank): the same run statistically, not bit for bit.

Written into a fresh folder, then swapped in by rename, so a crash mid-write never leaves a
half-written checkpoint: there is always the previous complete one or the new complete one. Several
machines need --output on a filesystem they share (each rank writes its own shard files there).
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from tuneforge.engine.distributed import Distributed
from tuneforge.engine.early_stopping import EarlyStopping
from tuneforge.run_folder import RunFolder

STATE_FILE = "state.pt"
TENSORS_DIR, TENSORS_FILE = "tensors", "tensors.pt"
# The frozen base is never checkpointed (strict=False: loading the adapter alone leaves the base as it is).
ADAPTER_ONLY = StateDictOptions(ignore_frozen_params=True, strict=False)
WHOLE_ADAPTER = StateDictOptions(ignore_frozen_params=True, strict=False, full_state_dict=True)


@dataclass
class TrainState:
    early_stopping: EarlyStopping
    best_adapter: dict[str, torch.Tensor] = field(default_factory=dict)  # sharded like the adapter under FSDP
    step: int = 0  # optimizer steps done
    start_step: int = 0  # where this process began (0, or the checkpoint's step): for the ETA
    best_step: int = 0
    evals: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    eval_due: bool = False  # the step just done is due an evaluation cycle that has not run yet


def _rng_states() -> dict:
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}


def save_checkpoint(
    folder: RunFolder, state: TrainState, model: torch.nn.Module, optimizer, scheduler, dist: Distributed
) -> None:
    """Collective: every rank calls it. `model` is the module whose trainable parameters are the adapter."""
    final = folder.checkpoint_dir
    tmp, old = final.with_name(final.name + ".tmp"), final.with_name(final.name + ".old")
    if dist.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    dist.barrier()
    adapter, optim = get_state_dict(model, optimizer, options=ADAPTER_ONLY)
    tensors = {"adapter": adapter, "optimizer": optim, "best": state.best_adapter}
    if dist.world == 1:
        torch.save(tensors, tmp / TENSORS_FILE)
    else:
        dist.save(tensors, tmp / TENSORS_DIR)
    rngs = dist.gather(_rng_states())
    if dist.is_main:
        fields = asdict(state) | {"early_stopping": state.early_stopping.state_dict()}
        del fields["best_adapter"]
        torch.save({"state": fields, "scheduler": scheduler.state_dict(), "rng": rngs, "world": dist.world}, tmp / STATE_FILE)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    dist.barrier()


def restore_checkpoint(
    folder: RunFolder, model: torch.nn.Module, optimizer, scheduler, dist: Distributed, seed: int
) -> TrainState | None:
    """Load the newest complete checkpoint into the adapter, `optimizer`, `scheduler` and the RNGs; its
    TrainState, or None when there is none. Collective."""
    final = folder.checkpoint_dir
    for candidate in (final, final.with_name(final.name + ".old")):  # .old: killed between the two renames
        if (candidate / STATE_FILE).is_file():
            break
    else:
        return None
    saved = torch.load(candidate / STATE_FILE, weights_only=False)
    best = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}  # laid out as this run's adapter
    whole = (candidate / TENSORS_FILE).is_file()
    if whole:  # written by one process: every rank takes its shard of each tensor
        tensors = torch.load(candidate / TENSORS_FILE, weights_only=True)
        for name, value in tensors["best"].items():
            dist.fill(best[name], value)
    else:  # DCP: each rank reads the parts of the saved shards that make up its own
        adapter, optim = get_state_dict(model, optimizer, options=ADAPTER_ONLY)  # this run's layout: the targets
        tensors = {"adapter": adapter, "optimizer": optim, "best": best}
        dist.load(tensors, candidate / TENSORS_DIR)
    set_state_dict(
        model,
        optimizer,
        model_state_dict=tensors["adapter"],
        optim_state_dict=tensors["optimizer"],
        options=WHOLE_ADAPTER if whole else ADAPTER_ONLY,
    )
    scheduler.load_state_dict(saved["scheduler"])
    fields = dict(saved["state"])
    if saved["world"] == dist.world:
        rng = saved["rng"][dist.rank]
        torch.set_rng_state(rng["cpu"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    else:
        torch.manual_seed(seed * 1_000_003 + fields["step"] * 1_009 + dist.rank)
    fields["early_stopping"] = EarlyStopping(**fields["early_stopping"])
    fields["start_step"] = fields["step"]
    return TrainState(**fields, best_adapter=best)


def remove_checkpoint(folder: RunFolder) -> None:
    final = folder.checkpoint_dir
    for path in (final, final.with_name(final.name + ".tmp"), final.with_name(final.name + ".old")):
        shutil.rmtree(path, ignore_errors=True)
