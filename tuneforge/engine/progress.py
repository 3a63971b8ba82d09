"""A live progress bar on stderr (step, epoch, loss, validation loss, ETA), fed by metric records."""

from __future__ import annotations

import sys


class ProgressBar:
    def __init__(self):
        self.bar = None
        self.postfix: dict[str, str] = {}

    def on_record(self, record: dict) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(
                total=record["totalTrainingSteps"],
                initial=record["step"] - 1,
                unit="step",
                file=sys.stderr,
                dynamic_ncols=True,
                disable=None,
            )
        self.bar.update(record["step"] - self.bar.n)
        self.postfix["epoch"] = f"{record['epoch']:.2f}"
        if record["kind"] == "train":
            self.postfix["loss"] = f"{record['loss']:.4f}"
        else:
            self.postfix["val_loss"] = f"{record['validationLoss']:.4f}"
        self.bar.set_postfix(self.postfix, refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
