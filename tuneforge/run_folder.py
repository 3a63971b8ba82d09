"""The run folder: the contract between the training engine and everything that reads its output
(the service's job runner, the console, sweeps, serving, export).

`tuneforge train --output DIR` writes these, and nothing else writes them:

    progress.json   `Progress`, rewritten atomically at every step (what the run is doing now)
    metrics.jsonl   one metric record per line, appended and flushed as training runs (see below)
    checkpoint/     resume state (its format is the engine's own), present while a run is unfinished
    adapter/        the adapter in PEFT format, once the run finished
    cycle-adapters/ step-N/: the adapter (PEFT format) as it was at the evaluation cycle of step N, for
                    the last KEPT_CYCLE_ADAPTERS cycles (the OpenAI API's checkpoints, callable as models)
    model.json      `RunResult`, once the run finished (written atomically, after adapter/)
    report.html     a self-contained report, once the run finished
    error.json      `RunError`, when the run failed: a message for the user, never a traceback

and ends with one of the `ExitCode`s. A reader never parses the trainer's stderr.

Metric records (JSON objects, camelCase like the rest of the API):
    {"kind": "train", "step", "totalTrainingSteps", "epoch", "loss", "accuracy", "learningRate",
     "tokensPerSecond", "elapsedSeconds"}  (loss and accuracy: over the trained tokens since the previous
     record; a preference-tuning run records its reward metrics instead of the token accuracy)
    {"kind": "eval", "step", "totalTrainingSteps", "epoch", "validationLoss", "validationAccuracy",
     "isBest", "patienceCounter", "elapsedSeconds"}

Stdlib only: the service and `tuneforge plan` import this without torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, Literal

from tuneforge.errors import DatasetError, InvalidParameter, TuneForgeError, WeightsError

MODEL_JSON = "model.json"
PROGRESS_JSON = "progress.json"
METRICS_JSONL = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoint"
ADAPTER_DIR = "adapter"
CYCLE_ADAPTERS_DIR = "cycle-adapters"
KEPT_CYCLE_ADAPTERS = 3  # OpenAI keeps a job's last 3 checkpoints
REPORT_HTML = "report.html"
ERROR_JSON = "error.json"


class ExitCode(IntEnum):
    """How `tuneforge train` ends."""

    OK = 0  # model.json and adapter/ are written
    CRASHED = 1  # an internal error; error.json says so in words, the log has the traceback
    BAD_INPUT = 2  # the input was rejected; error.json's message tells the user what to fix
    STOPPED = 3  # stopped by SIGTERM/Ctrl-C after writing a checkpoint; `--resume` continues


Phase = Literal["queued", "loading", "training", "evaluating", "saving", "stopping", "stopped", "done"]


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Readers see the old file or the new one, never half of one."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class Progress:
    step: int
    total_training_steps: int | None
    epoch: float
    phase: Phase
    eta_seconds: float | None = None
    detail: str | None = None  # what is happening, in words, e.g. "loading the base model's weights"

    def to_json(self) -> dict[str, Any]:
        out = {
            "step": self.step,
            "totalTrainingSteps": self.total_training_steps,
            "epoch": self.epoch,
            "phase": self.phase,
            "etaSeconds": self.eta_seconds,
        }
        if self.detail is not None:
            out["detail"] = self.detail
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Progress:
        return cls(
            step=int(d.get("step") or 0),
            total_training_steps=d.get("totalTrainingSteps"),
            epoch=float(d.get("epoch") or 0.0),
            phase=d.get("phase", "training"),
            eta_seconds=d.get("etaSeconds"),
            detail=d.get("detail"),
        )

    def percent_complete(self) -> float:
        """Share of optimizer steps done, below 100 (100 is the work request's success)."""
        if not self.total_training_steps or self.total_training_steps <= 0:
            return 0.0
        return round(min(99.0, 100.0 * self.step / self.total_training_steps), 2)


@dataclass(frozen=True)
class RunError:
    """Why a run failed, for the user: `message` names what to fix; it holds no server path,
    traceback or Python repr (the trainer's log keeps those for the operator)."""

    code: str  # InvalidParameter | DatasetInvalid | WeightsUnavailable | TrainingFailed
    message: str
    field: str | None = None  # the API field at fault, when one is

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **({"field": self.field} if self.field else {})}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RunError:
        return cls(code=str(d.get("code") or "TrainingFailed"), message=str(d.get("message") or ""), field=d.get("field"))

    @classmethod
    def from_exception(cls, err: BaseException) -> RunError:
        """What the user of a service is told about an exception that ended a run. Dataset problems
        are described without the path of the server's copy of the file; weights problems without
        the operator's paths (the trainer's log has them); internal errors only as such."""
        if isinstance(err, DatasetError):  # a job folder's validation.jsonl is its validation dataset (jobs/command.py)
            which = "validation" if Path(err.path).name == "validation.jsonl" else "training"
            return cls("DatasetInvalid", err.describe(f"the {which} dataset"))
        if isinstance(err, InvalidParameter):
            return cls("InvalidParameter", str(err), field=err.field)
        if isinstance(err, WeightsError):
            return cls(
                "WeightsUnavailable", "the server could not load the base model's weights; its operator's log has the details"
            )
        if isinstance(err, TuneForgeError):
            return cls("InvalidParameter", str(err))
        return cls("TrainingFailed", "training stopped on an internal error; the server's log has the details")


@dataclass(frozen=True)
class RunResult:
    """model.json: what a finished run did and how well the adapter does on the validation split."""

    base_model_id: str
    method: str  # LORA | TFEW
    training_config: dict[str, Any]  # OCI's TrainingConfig wire shape, fully resolved
    weights: dict[str, str]  # {"source", "path", "description"}; path is local to the machine that trained
    stand_in: bool
    device: str
    precision: str
    seed: int
    training_examples: int
    validation_examples: int
    total_training_steps: int
    steps_run: int
    early_stopped: bool
    best_step: int
    evaluation_cycles: int
    evaluation_every_steps: int
    evaluation_cycle_examples: int
    timings: dict[str, float]  # totalSeconds, trainSeconds, evalSeconds
    final_accuracy: float
    final_loss: float
    extra: dict[str, Any] = field(default_factory=dict)  # further keys (e.g. distributed layout), kept as is

    _KEYS = {
        "baseModelId": "base_model_id",
        "method": "method",
        "trainingConfig": "training_config",
        "weights": "weights",
        "standIn": "stand_in",
        "device": "device",
        "precision": "precision",
        "seed": "seed",
        "trainingExamples": "training_examples",
        "validationExamples": "validation_examples",
        "totalTrainingSteps": "total_training_steps",
        "stepsRun": "steps_run",
        "earlyStopped": "early_stopped",
        "bestStep": "best_step",
        "evaluationCycles": "evaluation_cycles",
        "evaluationEverySteps": "evaluation_every_steps",
        "evaluationCycleExamples": "evaluation_cycle_examples",
        "timings": "timings",
    }

    @property
    def model_metrics(self) -> dict[str, Any]:
        """OCI's ModelMetrics object."""
        return {
            "modelMetricsType": "TEXT_GENERATION_MODEL_METRICS",
            "finalAccuracy": self.final_accuracy,
            "finalLoss": self.final_loss,
        }

    def to_json(self) -> dict[str, Any]:
        out = {key: getattr(self, attr) for key, attr in self._KEYS.items()}
        out["modelMetrics"] = self.model_metrics
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RunResult:
        metrics = d.get("modelMetrics") or {}
        known = {attr: d[key] for key, attr in cls._KEYS.items()}
        extra = {k: v for k, v in d.items() if k not in cls._KEYS and k != "modelMetrics"}
        return cls(**known, final_accuracy=float(metrics["finalAccuracy"]), final_loss=float(metrics["finalLoss"]), extra=extra)


class RunFolder:
    """Typed access to one run folder. Reading never raises for a missing or half-written file."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    model_json = property(lambda self: self.path / MODEL_JSON)
    progress_json = property(lambda self: self.path / PROGRESS_JSON)
    metrics_jsonl = property(lambda self: self.path / METRICS_JSONL)
    checkpoint_dir = property(lambda self: self.path / CHECKPOINT_DIR)
    adapter_dir = property(lambda self: self.path / ADAPTER_DIR)
    cycle_adapters_dir = property(lambda self: self.path / CYCLE_ADAPTERS_DIR)
    report_html = property(lambda self: self.path / REPORT_HTML)
    error_json = property(lambda self: self.path / ERROR_JSON)

    # -- written by the engine ---------------------------------------------------------------

    def write_progress(self, progress: Progress) -> None:
        write_json_atomic(self.progress_json, progress.to_json())

    def write_result(self, result: RunResult) -> None:
        write_json_atomic(self.model_json, result.to_json())

    def write_error(self, error: RunError) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.error_json, error.to_json())

    def clear_error(self) -> None:
        self.error_json.unlink(missing_ok=True)

    # -- read by everyone --------------------------------------------------------------------

    def read_progress(self) -> Progress | None:
        data = _read_json(self.progress_json)
        return Progress.from_json(data) if data is not None else None

    def read_result(self) -> RunResult | None:
        data = _read_json(self.model_json)
        try:
            return RunResult.from_json(data) if data is not None else None
        except (KeyError, TypeError, ValueError):
            return None

    def read_error(self) -> RunError | None:
        data = _read_json(self.error_json)
        return RunError.from_json(data) if data is not None else None

    def has_checkpoint(self) -> bool:
        return self.checkpoint_dir.is_dir() and any(self.checkpoint_dir.iterdir())

    def is_finished(self) -> bool:
        return self.model_json.is_file() and (self.adapter_dir / "adapter_config.json").is_file()

    def cycle_adapter_dir(self, step: int) -> Path:
        return self.cycle_adapters_dir / f"step-{step}"

    def cycle_adapter_steps(self) -> list[int]:
        """The steps whose evaluation cycle's adapter is kept (complete ones only), oldest first."""
        if not self.cycle_adapters_dir.is_dir():
            return []
        return sorted(
            int(d.name[5:])
            for d in self.cycle_adapters_dir.iterdir()
            if d.name.startswith("step-") and d.name[5:].isdigit() and (d / "adapter_config.json").is_file()
        )

    def can_resume(self) -> bool:
        """A previous attempt left a checkpoint, or finished before whoever started it saw it exit
        (`train --resume` then returns that result)."""
        return self.has_checkpoint() or self.model_json.is_file()

    def read_metrics(self, offset: int = 0) -> tuple[list[dict[str, Any]], int, bool]:
        """(records after byte `offset`, the new offset, whether the file was rewritten from scratch).
        Only complete lines are taken: a half-written record is read on the next call."""
        try:
            size = self.metrics_jsonl.stat().st_size
        except OSError:
            return [], offset, False
        restarted = size < offset
        if restarted:
            offset = 0
        with open(self.metrics_jsonl, "rb") as f:
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

    def all_metrics(self) -> list[dict[str, Any]]:
        return self.read_metrics(0)[0]
