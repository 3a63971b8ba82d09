"""Metric records as they happen: appended to metrics.jsonl (flushed per record) and handed to
listeners (the progress bar, MLflow); progress.json is rewritten atomically every step.
File names and record shapes are the run folder contract's (`tuneforge.run_folder`).

Schedule (OCI's `logModelMetricsIntervalInSteps`): every step for the first 20 steps, then every
`interval` steps; 0 disables the training records. Evaluation records are always written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

from tuneforge.run_folder import Progress, RunFolder

EVERY_STEP_UNTIL = 20


def should_log(step: int, interval: int) -> bool:
    if interval <= 0:
        return False
    return step <= EVERY_STEP_UNTIL or step % interval == 0


class MetricsLog:
    def __init__(self, folder: RunFolder, listeners: list[Callable[[dict], None]] = (), keep_until_step: int | None = None):
        self.folder = folder
        self.path = folder.metrics_jsonl
        self.listeners = list(listeners)
        if keep_until_step is None:
            self.path.write_text("")
        else:  # resuming: drop records past the checkpoint, they will be produced again
            kept = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= keep_until_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        self._file = self.path.open("a")

    def record(self, record: dict) -> None:
        # A diverged run's NaN/inf loss is written as null: JSON has no NaN, and every reader
        # (the service's store, the console, MLflow) would choke on Python's non-standard NaN token.
        record = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        for listener in self.listeners:
            listener(record)

    def progress(self, progress: Progress) -> None:
        self.folder.write_progress(progress)

    def records(self) -> list[dict]:
        return self.folder.all_metrics()

    def close(self) -> None:
        self._file.close()
