"""Read what a running trainer writes: progress.json (rewritten atomically) and metrics.jsonl
(appended; only complete lines are taken, so a half-written record is read on the next pass)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_progress(output_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((output_dir / "progress.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def percent_complete(progress: dict[str, Any]) -> float:
    """Share of optimizer steps done; 100 is reserved for the work request's success."""
    total = progress.get("totalTrainingSteps") or 0
    step = progress.get("step") or 0
    if not isinstance(total, (int, float)) or not isinstance(step, (int, float)) or total <= 0:
        return 0.0
    return round(min(99.0, 100.0 * step / total), 2)


def read_new_metrics(output_dir: Path, offset: int) -> tuple[list[dict[str, Any]], int, bool]:
    """(records after byte `offset`, the new offset, whether the file was rewritten from scratch)."""
    path = output_dir / "metrics.jsonl"
    try:
        size = path.stat().st_size
    except OSError:
        return [], offset, False
    restarted = size < offset
    if restarted:
        offset = 0
    with open(path, "rb") as f:
        f.seek(offset)
        chunk = f.read()
    end = chunk.rfind(b"\n") + 1
    records = []
    for line in chunk[:end].splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records, offset + end, restarted
