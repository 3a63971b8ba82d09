"""A sweep's outcome, read back from the Optuna study: the ranked trials, what the search gained over
trial 0 (the defaults), and the training the pruner saved. Written to results.json; the CLI prints
`format_table`, the report and the service read the same `SweepSummary`.

What each trial ran is kept in its Optuna user attributes (set by tuneforge.sweeps.study), so a
study shared by several servers can be summarised where the run folders are not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tuneforge.catalog import format_number

STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}
_ORDER = {"complete": 0, "pruned": 1, "running": 2, "waiting": 3, "failed": 4}


@dataclass(frozen=True)
class TrialRow:
    number: int
    params: dict[str, Any]  # the searched hyperparameters
    state: str  # complete | pruned | running | waiting | failed
    validation_loss: float | None  # complete: finalLoss (whole validation split); pruned: its last evaluation cycle's
    validation_accuracy: float | None
    steps_run: int
    steps_planned: int
    early_stopped: bool
    seconds: float
    run_folder: str | None  # relative to the sweep's folder
    error: str | None = None

    @property
    def is_defaults(self) -> bool:
        return self.number == 0


@dataclass(frozen=True)
class SweepSummary:
    rows: list[TrialRow]  # ranked: complete by validation loss, then pruned, running, failed
    searched: list[str]  # the searched hyperparameters, in catalog order
    trials: int  # the study's planned number of trials
    stopped: bool = False  # interrupted (Ctrl-C): --resume continues
    notes: list[str] = field(default_factory=list)

    @property
    def best(self) -> TrialRow | None:
        return self.rows[0] if self.rows and self.rows[0].state == "complete" else None

    @property
    def defaults(self) -> TrialRow | None:
        return next((r for r in self.rows if r.is_defaults), None)

    @property
    def gain(self) -> float | None:
        """Relative validation-loss reduction of the best trial over trial 0 (the defaults)."""
        best, base = self.best, self.defaults
        if best is None or base is None or base.state != "complete" or not base.validation_loss:
            return None
        return (base.validation_loss - best.validation_loss) / base.validation_loss

    def steps(self) -> dict[str, int | float]:
        """Training steps run against the steps the same trials would have run to the end without
        pruning (early stopping counted apart: it would have cut them short anyway)."""
        done = [r for r in self.rows if r.state in ("complete", "pruned")]
        planned = sum(r.steps_planned for r in done)
        run = sum(r.steps_run for r in done)
        pruned = sum(r.steps_planned - r.steps_run for r in done if r.state == "pruned")
        early = sum(r.steps_planned - r.steps_run for r in done if r.state == "complete")
        return {
            "planned": planned,
            "run": run,
            "savedByPruning": pruned,
            "savedByEarlyStopping": early,
            "prunedShare": pruned / planned if planned else 0.0,
        }

    def to_json(self) -> dict[str, Any]:
        best = self.best
        return {
            "trials": self.trials,
            "searched": self.searched,
            "stopped": self.stopped,
            "bestTrial": best.number if best else None,
            "bestValidationLoss": best.validation_loss if best else None,
            "defaultsValidationLoss": self.defaults.validation_loss if self.defaults else None,
            "gainOverDefaults": self.gain,
            "steps": self.steps(),
            "notes": self.notes,
            "ranked": [_row_json(r) for r in self.rows],
        }


def _row_json(row: TrialRow) -> dict[str, Any]:
    out = {_camel(k): v for k, v in asdict(row).items()}
    out["defaults"] = row.is_defaults
    return out


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.title() for w in rest)


def row_from_trial(trial: Any, searched: list[str]) -> TrialRow:
    """A TrialRow from an Optuna FrozenTrial and the user attributes the sweep set on it."""
    attrs = trial.user_attrs
    state = STATES.get(trial.state.name, trial.state.name.lower())
    loss = trial.value if state == "complete" else attrs.get("lastValidationLoss")
    return TrialRow(
        number=trial.number,
        params={k: trial.params[k] for k in searched if k in trial.params},
        state=state,
        validation_loss=loss,
        validation_accuracy=attrs.get("finalAccuracy") if state == "complete" else attrs.get("lastValidationAccuracy"),
        steps_run=int(attrs.get("stepsRun", 0)),
        steps_planned=int(attrs.get("totalTrainingSteps", 0)),
        early_stopped=bool(attrs.get("earlyStopped", False)),
        seconds=float(attrs.get("seconds", 0.0)),
        run_folder=attrs.get("runFolder"),
        error=attrs.get("error"),
    )


def rank(rows: list[TrialRow]) -> list[TrialRow]:
    def key(r: TrialRow):
        return (_ORDER.get(r.state, 9), r.validation_loss if r.validation_loss is not None else float("inf"), r.number)

    return sorted(rows, key=key)


def format_table(summary: SweepSummary) -> str:
    """The ranked trials as a plain-text table."""
    head = ["rank", "trial", *summary.searched, "valLoss", "valAcc", "steps", "state", "time"]
    lines = [head]
    for i, r in enumerate(summary.rows, 1):
        loss = "-" if r.validation_loss is None else f"{r.validation_loss:.4f}"
        acc = "-" if r.validation_accuracy is None else f"{r.validation_accuracy:.4f}"
        state = r.state + (" (defaults)" if r.is_defaults else "") + (" (early stopped)" if r.early_stopped else "")
        params = [format_number(r.params[n]) if n in r.params else "-" for n in summary.searched]
        lines.append(
            [
                str(i),
                str(r.number),
                *[_short(p) for p in params],
                loss,
                acc,
                f"{r.steps_run}/{r.steps_planned}",
                state,
                f"{r.seconds:.0f} s",
            ]
        )
    widths = [max(len(row[c]) for row in lines) for c in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in lines)


def _short(number_text: str) -> str:
    """0.000123456789 -> 0.000123457: the table needs 6 significant digits, not 17."""
    try:
        value = float(number_text)
    except ValueError:
        return number_text
    return number_text if len(number_text) <= 10 else f"{value:.6g}"
