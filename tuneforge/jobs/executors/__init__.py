"""Executors: where a job's trainer runs. The runner (tuneforge.jobs.runner) claims, watches and finishes a
job the same way whichever executor runs it; an executor starts an attempt, finds one started earlier
again, and says how it is going. The trainer is always `python -m tuneforge train ...` writing the job's
run folder (tuneforge/run_folder.py), which the runner reads wherever the trainer runs.

    local   a subprocess of this server (executors/local.py): the embedded default
    ray     a Ray job on a Ray cluster (executors/ray.py): a Ray Train TorchTrainer whose workers are the
            ranks of one distributed `tuneforge train` (executors/ray_job.py); it outlives the server
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Launch:
    """One attempt of a job to start."""

    job_id: str
    job_dir: Path
    attempt: int
    args: list[str]  # `tuneforge train ...` (tuneforge.train_command.train_args)
    units: int  # units of its cluster the job holds
    unit_shape: str  # the cluster's unitShape, e.g. LARGE_GENERIC or H100_X8
    previous_ref: str | None  # the ref of the job's previous attempt, if one was started


class Attempt(Protocol):
    """A trainer started, or found again, by an executor."""

    ref: str  # kept in the job row (jobs.executor_ref): what finds it again, and what the operator looks for
    where: str  # appended to the work request's log lines about it, e.g. " as Ray job tuneforge-1a2b3c-1"

    def poll(self) -> int | None:
        """Its exit code (run_folder.ExitCode) once it ended, else None."""

    def stop(self) -> None:
        """Ask it to stop (a local trainer checkpoints first; a Ray job is stopped)."""

    def kill(self) -> None:
        """It did not stop in time."""


class Executor(Protocol):
    # Its attempts outlive this server: a shutdown or a lost lease leaves them running, and the next server
    # to claim the job finds them (`find`) instead of starting another.
    detached: bool

    def units_per_job(self, unit_count: int) -> int:
        """The units of its cluster (of `unit_count`) a job holds while it runs."""

    def start(self, launch: Launch) -> Attempt: ...

    def find(self, job_id: str, ref: str | None) -> Attempt | None:
        """An attempt of the job that no server has seen end (`ref`: the one the job row names), if any."""
