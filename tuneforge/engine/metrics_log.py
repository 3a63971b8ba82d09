"""Metric records as they happen: appended to metrics.jsonl (flushed per record) and handed to
listeners (the service subscribes); progress.json is rewritten atomically every step.

Schedule (OCI's `logModelMetricsIntervalInSteps`): every step for the first 20 steps, then every
`interval` steps; 0 disables the training records. Evaluation records are always written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

EVERY_STEP_UNTIL = 20


def should_log(step: int, interval: int) -> bool:
    if interval <= 0:
        return False
    return step <= EVERY_STEP_UNTIL or step % interval == 0


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


class MetricsLog:
    def __init__(self, directory: Path, listeners: list[Callable[[dict], None]] = (), keep_until_step: int | None = None):
        self.path = directory / "metrics.jsonl"
        self.progress_path = directory / "progress.json"
        self.listeners = list(listeners)
        if keep_until_step is None:
            self.path.write_text("")
        else:  # resuming: drop records past the checkpoint, they will be produced again
            kept = [l for l in self.path.read_text().splitlines() if l and json.loads(l)["step"] <= keep_until_step]
            self.path.write_text("".join(l + "\n" for l in kept))
        self._file = self.path.open("a")

    def record(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        for listener in self.listeners:
            listener(record)

    def progress(self, **fields) -> None:
        write_json_atomic(self.progress_path, fields)

    def records(self) -> list[dict]:
        return [json.loads(l) for l in self.path.read_text().splitlines() if l]

    def close(self) -> None:
        self._file.close()
