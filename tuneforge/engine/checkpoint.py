"""Checkpoints for --resume: adapter, best adapter, optimizer, scheduler, RNG, early-stopping state
and the step (the data position follows from it: each epoch's order is a pure function of the seed).

Written into a fresh folder, then swapped in by rename, so a crash mid-write never leaves a
half-written checkpoint: there is always the previous complete one or the new complete one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

NAME = "checkpoint"


def save_checkpoint(output: Path, state: dict) -> None:
    final, tmp, old = output / NAME, output / f"{NAME}.tmp", output / f"{NAME}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    torch.save(state, tmp / "state.pt")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(output: Path) -> dict | None:
    for candidate in (output / NAME, output / f"{NAME}.old"):  # .old: killed between the two renames
        if (candidate / "state.pt").is_file():
            return torch.load(candidate / "state.pt", weights_only=False)
    return None


def remove_checkpoint(output: Path) -> None:
    for name in (NAME, f"{NAME}.tmp", f"{NAME}.old"):
        shutil.rmtree(output / name, ignore_errors=True)
