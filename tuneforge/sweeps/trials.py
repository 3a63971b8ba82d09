"""Training runs of a sweep as `tuneforge train` subprocesses, K at a time: their command line, the cores
or GPUs each gets, reading their progress through the run folder, and stopping them.

A run is started exactly as the service starts a job (`python -m tuneforge.jobs.launch PID -- train
...`: it gets SIGTERM if we die), in its own session so that a Ctrl-C meant for the sweep reaches it
only as our SIGTERM (it then checkpoints and exits ExitCode.STOPPED). Its output folder is read
through `tuneforge.run_folder.RunFolder`; its stdout and stderr go to a log file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.run_folder import ExitCode, RunFolder
from tuneforge.sweeps.spec import SweepSpec
from tuneforge.train_command import TERMINATE_GRACE_S, launched, train_args

Number = int | float
POLL_SECONDS = 0.5


def never() -> bool:
    return False


@dataclass(frozen=True)
class Slot:
    """One of the K places a run can take: its CPU threads and, on GPUs, the devices it sees."""

    index: int
    threads: int | None
    cuda_devices: str | None  # CUDA_VISIBLE_DEVICES for the run; None: leave the environment as it is


def visible_gpus(device: str) -> list[str]:
    """The GPU ids runs may use: CUDA_VISIBLE_DEVICES when set, else every GPU torch sees (none on --device cpu)."""
    if device == "cpu":
        return []
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        return [g for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    import torch  # only here: a CPU sweep never pays for it

    return [str(i) for i in range(torch.cuda.device_count())]


def make_slots(parallel: int, threads: int | None, gpus: list[str]) -> list[Slot]:
    """Cores split evenly between the K runs (unless --threads says how many each gets); GPUs dealt
    round-robin: with at least K GPUs each run gets its own share, with fewer they are shared."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_run = threads or max(1, cores // parallel)
    slots = []
    for i in range(parallel):
        if not gpus:
            devices = None
        elif len(gpus) >= parallel:
            devices = ",".join(gpus[i::parallel])
        else:
            devices = gpus[i % len(gpus)]
        slots.append(Slot(i, per_run, devices))
    return slots


@dataclass
class TrainJob:
    """One `tuneforge train` run: a trial, or a learning-curve point."""

    name: str  # e.g. "trial-003": the log file's name
    folder: RunFolder
    dataset: Path
    config: dict[str, Number]  # every hyperparameter, camelCase
    env: dict[str, str] = field(default_factory=dict)  # extra environment (e.g. the MLflow run to log into)
    tag: Any = None  # the caller's own handle (e.g. the Optuna trial)


def train_command(spec: SweepSpec, job: TrainJob, slot: Slot, resume: bool) -> list[str]:
    args = train_args(
        base_model_id=str(spec.base_weights) if spec.base_weights is not None else spec.base_model_id,
        base_model_name=spec.base_model_id if spec.base_weights is not None else None,
        dataset=job.dataset,
        output=job.folder.path,
        training_config=job.config,
        seed=spec.seed,
        weights=spec.weights,
        resume=resume,
        device=spec.device,
        precision=spec.precision,
        micro_batch_size=spec.micro_batch_size,
        threads=slot.threads,
        mlflow_tracking_uri=spec.mlflow_tracking_uri,
    )
    return launched(args, os.getpid())


class TrainProcess:
    """A started run. `new_records` returns the metric records written since the last call."""

    def __init__(self, spec: SweepSpec, job: TrainJob, slot: Slot, log_path: Path):
        self.job, self.slot = job, slot
        self.resumed = job.folder.can_resume()
        self.started = time.monotonic()
        self.stop_reason: str | None = None  # why we stopped it: "pruned" | "interrupted"
        self._kill_at: float | None = None
        self._offset = 0
        env = {**os.environ, **job.env}
        if slot.cuda_devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot.cuda_devices
        job.folder.path.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                train_command(spec, job, slot, self.resumed),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )

    def new_records(self) -> list[dict[str, Any]]:
        records, self._offset, _ = self.job.folder.read_metrics(self._offset)
        return records

    def stop(self, reason: str) -> None:
        """SIGTERM once (the trainer checkpoints and exits 3); SIGKILL if it has not exited by the grace time."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self._kill_at = time.monotonic() + TERMINATE_GRACE_S
            self._signal(signal.SIGTERM)
        elif self._kill_at is not None and time.monotonic() > self._kill_at:
            self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):  # it has already exited
            self.proc.send_signal(signum)

    def poll(self) -> int | None:
        if self.stop_reason is not None:
            self.stop(self.stop_reason)  # escalates to SIGKILL past the grace time
        return self.proc.poll()

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    @property
    def stopped(self) -> bool:
        return self.proc.returncode == ExitCode.STOPPED


def run_jobs(
    spec: SweepSpec,
    slots: list[Slot],
    jobs: Iterator[TrainJob],
    *,
    on_records: Callable[[TrainProcess, list[dict[str, Any]]], None],
    on_exit: Callable[[TrainProcess], None],
    should_stop: Callable[[], bool],
    log_path: Callable[[TrainJob], Path],
) -> bool:
    """Run `jobs` on `slots` until the iterator is exhausted and every run has exited. `on_records`
    sees each run's new metric records (it may `stop("pruned")` the run); `on_exit` sees each run
    once it has exited. When `should_stop()` turns true, every running run is stopped (it writes a
    checkpoint) and waited for; returns whether that happened."""
    running: dict[int, TrainProcess] = {}
    more = True
    interrupted = False
    while True:
        if should_stop() and not interrupted:
            interrupted, more = True, False
            for proc in running.values():
                proc.stop("interrupted")
        while more and len(running) < len(slots):
            job = next(jobs, None)
            if job is None:
                more = False
                break
            slot = next(s for s in slots if s.index not in running)
            running[slot.index] = TrainProcess(spec, job, slot, log_path(job))
        if not running:
            return interrupted
        for index, proc in list(running.items()):
            code = proc.poll()
            records = proc.new_records()
            if records:
                on_records(proc, records)
            if code is not None:
                del running[index]
                on_exit(proc)
        time.sleep(POLL_SECONDS)
