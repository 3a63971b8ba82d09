"""Errors whose message is meant for the user: the CLI prints them without a traceback (exit 2)
and the API maps them to 400 InvalidParameter."""

from __future__ import annotations

from dataclasses import dataclass


class TuneForgeError(Exception):
    """Base class: `str(err)` is a complete, user-facing sentence."""


class InvalidParameter(TuneForgeError):
    """A single input value is outside what is allowed. Names the field (API camelCase name)."""

    def __init__(self, field: str, value: object, allowed: str):
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"{field}: {value!r} is not allowed; {allowed}")


@dataclass(frozen=True)
class LineProblem:
    line: int | None  # 1-based line number in the dataset file; None for file-level problems
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line is not None else self.message


class DatasetError(TuneForgeError):
    """Everything wrong with a dataset file, reported together (up to a cap)."""

    def __init__(self, path: str, problems: list[LineProblem], total: int | None = None):
        self.path, self.problems = path, problems
        self.total = total if total is not None else len(problems)
        super().__init__(self.describe(f"dataset {path}"))

    def describe(self, name: str) -> str:
        """The report under another name for the file (e.g. the object the user uploaded, not the
        server's copy of it)."""
        shown = "\n".join(f"  {p}" for p in self.problems)
        more = f"\n  ... and {self.total - len(self.problems)} more" if self.total > len(self.problems) else ""
        return f"{name}: {self.total} problem(s)\n{shown}{more}"


class WeightsError(TuneForgeError):
    """Model weights could not be found or loaded; the message says how to provide them."""
