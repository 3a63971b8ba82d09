"""The training loop's state, and checkpoints of it for --resume.

`TrainState` is everything a run carries from one step to the next besides the model's adapter
weights and the optimizer: the step (the data position follows from it: each epoch's order is a
pure function of the seed), the best adapter so far, early stopping, counters and timings.
`save_checkpoint` / `restore_checkpoint` are the one place it is written and read back, together
with the adapter, optimizer, scheduler and every RNG (CPU and CUDA), so a resumed run reaches the
same adapter as an uninterrupted one.

Written into a fresh folder, then swapped in by rename, so a crash mid-write never leaves a
half-written checkpoint: there is always the previous complete one or the new complete one.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field

import torch

from tuneforge.engine.early_stopping import EarlyStopping
from tuneforge.run_folder import RunFolder

STATE_FILE = "state.pt"


@dataclass
class TrainState:
    early_stopping: EarlyStopping
    best_adapter: dict[str, torch.Tensor] = field(default_factory=dict)
    step: int = 0  # optimizer steps done
    start_step: int = 0  # where this process began (0, or the checkpoint's step): for the ETA
    best_step: int = 0
    evals: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    eval_due: bool = False  # the step just done is due an evaluation cycle that has not run yet


def save_checkpoint(folder: RunFolder, state: TrainState, params: dict[str, torch.nn.Parameter], optimizer, scheduler) -> None:
    final = folder.checkpoint_dir
    tmp, old = final.with_name(final.name + ".tmp"), final.with_name(final.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    fields = asdict(state) | {"early_stopping": state.early_stopping.state_dict()}
    blob = {
        "state": fields,
        "adapter": {n: p.detach().clone() for n, p in params.items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    torch.save(blob, tmp / STATE_FILE)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def restore_checkpoint(folder: RunFolder, params: dict[str, torch.nn.Parameter], optimizer, scheduler) -> TrainState | None:
    """Load the newest complete checkpoint into `params`, `optimizer`, `scheduler` and the RNGs; its
    TrainState, or None when there is none."""
    final = folder.checkpoint_dir
    for candidate in (final, final.with_name(final.name + ".old")):  # .old: killed between the two renames
        if (candidate / STATE_FILE).is_file():
            blob = torch.load(candidate / STATE_FILE, weights_only=False)
            break
    else:
        return None
    for name, p in params.items():
        p.data.copy_(blob["adapter"][name])
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    torch.set_rng_state(blob["rng"])
    if blob.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(blob["cuda_rng"])
    fields = dict(blob["state"])
    fields["early_stopping"] = EarlyStopping(**fields["early_stopping"])
    fields["start_step"] = fields["step"]
    return TrainState(**fields)


def remove_checkpoint(folder: RunFolder) -> None:
    final = folder.checkpoint_dir
    for path in (final, final.with_name(final.name + ".tmp"), final.with_name(final.name + ".old")):
        shutil.rmtree(path, ignore_errors=True)
