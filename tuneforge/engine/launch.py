"""Start the worker processes of a distributed `tuneforge train` on this machine and wait for them.

`tuneforge train ... --nproc-per-node N [--nnodes M --node-rank R --master-addr A --master-port P]` runs
this on every machine (node); each starts N copies of the same `tuneforge train` command with RANK,
LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set (the variables torchrun sets, so a worker does
not care which launcher started it; `torchrun ... -m tuneforge train ...` works too).

Why not torchrun itself: the run folder contract has exit codes (`run_folder.ExitCode`: 3 = stopped
with a checkpoint) and torchrun reports a SIGTERM as its own failure (and SIGKILLs workers that take
longer than its grace period to checkpoint). Here SIGTERM/SIGINT are passed to the workers, which
agree on a step, write one checkpoint together and exit 3, and the launcher exits with their code.
When a worker fails the others are stuck in a collective: they are stopped (SIGTERM, then SIGKILL).

Stdlib only: the launcher never imports torch.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

from tuneforge.run_folder import ExitCode

KILL_AFTER_SECONDS = 60  # a failed run's surviving workers get this long to exit after SIGTERM


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_env(local_rank: int, nproc: int, nnodes: int, node_rank: int, master_addr: str, master_port: int) -> dict[str, str]:
    return {
        "RANK": str(node_rank * nproc + local_rank),
        "LOCAL_RANK": str(local_rank),
        "WORLD_SIZE": str(nproc * nnodes),
        "LOCAL_WORLD_SIZE": str(nproc),
        "GROUP_RANK": str(node_rank),
        "MASTER_ADDR": master_addr,
        "MASTER_PORT": str(master_port),
    }


def combined_exit_code(codes: list[int]) -> int:
    """All workers' exit statuses as one: BAD_INPUT when a worker rejected the input, CRASHED for any other
    failure, else STOPPED when any stopped (the ranks agree on the step they stop at), else OK."""
    failures = [c for c in codes if c not in (ExitCode.OK, ExitCode.STOPPED)]
    if failures:
        bad_input = [c for c in failures if c == ExitCode.BAD_INPUT]
        return bad_input[0] if bad_input else ExitCode.CRASHED
    return ExitCode.STOPPED if ExitCode.STOPPED in codes else ExitCode.OK


def launch(
    argv: list[str],
    nproc: int,
    nnodes: int = 1,
    node_rank: int = 0,
    master_addr: str = "127.0.0.1",
    master_port: int | None = None,
) -> int:
    """Run `python -m tuneforge <argv>` as this node's `nproc` workers; their combined exit code."""
    port = master_port or free_port()
    # CPU workers share the cores (torch would start one thread per core in each of them).
    threads = {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // nproc))} if "OMP_NUM_THREADS" not in os.environ else {}
    running = {}
    for local_rank in range(nproc):
        env = os.environ | threads | worker_env(local_rank, nproc, nnodes, node_rank, master_addr, port)
        proc = subprocess.Popen([sys.executable, "-m", "tuneforge", *argv], env=env)
        running[proc.pid] = proc

    def signal_all(signum, frame=None):
        for pid in running:  # os.kill, not Popen.send_signal: that polls, and could reap a worker os.wait is waiting for
            os.kill(pid, signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal_all)
    codes, failed = [], False
    while running:
        pid, status = os.wait()  # blocks until a worker exits; signals are handled meanwhile (PEP 475)
        if running.pop(pid, None) is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        codes.append(code if code >= 0 else ExitCode.CRASHED)  # negative: killed by a signal
        if codes[-1] not in (ExitCode.OK, ExitCode.STOPPED) and not failed:
            failed = True  # the other workers wait in a collective that will never complete
            signal_all(signal.SIGTERM)
            signal.signal(signal.SIGALRM, lambda *_: signal_all(signal.SIGKILL))
            signal.alarm(KILL_AFTER_SECONDS)
    signal.alarm(0)
    return combined_exit_code(codes)
