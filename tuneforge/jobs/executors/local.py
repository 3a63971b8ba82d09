"""The local executor: each attempt is a `python -m tuneforge train` subprocess of this server.

It runs in a session of its own (a Ctrl-C meant for the server must not reach it: the server stops it with
SIGTERM, so that it checkpoints first) and dies with the server (the launcher's PR_SET_PDEATHSIG), so a
killed server leaves no trainer behind: the job is resumed from its checkpoint by whoever claims it next.
"""

from __future__ import annotations

import os
import subprocess

import psutil

from tuneforge.jobs import queue
from tuneforge.jobs.command import log_file
from tuneforge.jobs.executors import Launch
from tuneforge.train_command import TERMINATE_GRACE_S, launched


class LocalAttempt:
    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.ref = str(proc.pid)
        self.where = ""  # the default: nothing to say

    def poll(self) -> int | None:
        return self.proc.poll()

    def stop(self) -> None:
        self.proc.terminate()  # the engine checkpoints and exits 3

    def kill(self) -> None:
        self.proc.kill()


class LocalExecutor:
    detached = False
    units_per_job = staticmethod(queue.one_unit)

    def __init__(self, threads: int | None = None):
        self.threads = threads  # torch threads per trainer (None: torch's default, every core)

    def find(self, job_id: str, ref: str | None) -> None:
        return None  # a trainer of ours never outlives the server that started it

    def start(self, launch: Launch) -> LocalAttempt:
        _stop_previous_trainer(launch.previous_ref, launch.job_dir)
        args = [*launch.args, *(["--threads", str(self.threads)] if self.threads else [])]
        stdout, stderr = (log_file(launch.job_dir, launch.attempt, stream) for stream in ("stdout", "stderr"))
        with open(stdout, "wb") as out, open(stderr, "wb") as err:
            cmd = launched(args, os.getpid())
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=launch.job_dir, start_new_session=True
            )
        return LocalAttempt(proc)


def _stop_previous_trainer(ref: str | None, job_dir) -> None:
    """A trainer from an earlier attempt may still be writing its checkpoint (its server was killed and it
    got SIGTERM): wait for it, so that two trainers never share one job directory."""
    if not ref or not ref.isdigit():
        return
    try:
        proc = psutil.Process(int(ref))
        if str(job_dir) not in " ".join(proc.cmdline()):
            return  # the pid was reused by something else
        proc.terminate()
        proc.wait(TERMINATE_GRACE_S)
    except psutil.TimeoutExpired:
        proc.kill()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        pass
