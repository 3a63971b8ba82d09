"""Start `tuneforge train` so that it gets SIGTERM when the server that started it dies.

A training subprocess that outlived a killed server would keep writing to the job directory
while the restarted server resumes the same job. Linux's PR_SET_PDEATHSIG delivers SIGTERM on the
parent's death (the engine then checkpoints and exits 3); it survives exec, so this module sets it
and then becomes the trainer. Elsewhere the trainer is started without it.

A Ray worker asks for SIGKILL instead (`--signal=KILL`): Ray stops a job by killing its workers, and a
trainer whose peers are already gone could not agree on a checkpoint with them (it resumes from its last
evaluation-cycle checkpoint instead).

Usage: python -m tuneforge.jobs.launch SERVER_PID [--signal=TERM|KILL] -- train ARGS...
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main() -> None:
    parent, args = int(sys.argv[1]), sys.argv[2:]
    death_signal = signal.SIGTERM
    if args[:1] and args[0].startswith("--signal="):
        death_signal, args = signal.Signals["SIG" + args[0].split("=", 1)[1]], args[1:]
    if args[:1] == ["--"]:
        args = args[1:]
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, death_signal)
        if os.getppid() != parent:  # the parent died before prctl took effect
            sys.exit(3)
    os.execv(sys.executable, [sys.executable, "-m", "tuneforge", *args])


if __name__ == "__main__":
    main()
