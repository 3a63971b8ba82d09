"""A one-node Ray cluster on 127.0.0.1 for the tests (`ray start --head --block`), stopped when the
context ends: its job API (the dashboard, for the Ray executor) and its GCS address (for drivers on this
machine: the hosting replicas' actors)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from helpers.servers import free_port
from helpers.waiting import wait_for

RAY = Path(sys.executable).with_name("ray")
LOOPBACK_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # a one-machine cluster: Ray stays on the loopback address
    "RAY_USAGE_STATS_ENABLED": "0",
}


@dataclass(frozen=True)
class RayHead:
    dashboard: str  # http://127.0.0.1:PORT, the job API
    gcs: str  # 127.0.0.1:PORT, what ray.init(address=...) takes on this machine
    root: Path  # its temp dir (logs)


@contextmanager
def ray_head(cpus: int = 2):
    """The head's processes use only the loopback; a driver on this machine (a server whose replicas are
    actors) must be started with LOOPBACK_ENV too, or Ray resolves 127.0.0.1 to the machine's other address."""
    root = Path(tempfile.mkdtemp(prefix="tfray", dir="/tmp"))  # short: Ray's socket paths live under it
    dashboard, gcs = free_port(), free_port()
    env = (
        os.environ
        | LOOPBACK_ENV
        | {
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",  # `python` in the Ray job is this one
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",  # `ray stop` at once, not after a 30 s drain
        }
    )
    ports = {
        "--port": gcs,
        "--ray-client-server-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-port": dashboard,
    }
    cmd = [
        str(RAY),
        "start",
        "--head",
        "--block",
        "--num-cpus",
        str(cpus),
        "--num-gpus",
        "0",
        "--dashboard-host",
        "127.0.0.1",
        "--temp-dir",
        str(root),
        "--disable-usage-stats",
        *[str(x) for kv in ports.items() for x in kv],
    ]
    with open(root / "head.log", "wb") as log:
        # --block: the head's processes live as long as this one, which stops them all when it is terminated
        # (`ray stop` would stop every Ray process of the machine).
        head = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        wait_for(lambda: _answers(head, address, root), 180, f"the Ray head (log: {root / 'head.log'})", 1.0)
        yield RayHead(address, f"127.0.0.1:{gcs}", root)
    finally:
        head.terminate()
        head.wait(120)
        shutil.rmtree(root, ignore_errors=True)


def _answers(head: subprocess.Popen, address: str, root: Path) -> bool:
    from ray.job_submission import JobSubmissionClient

    if head.poll() is not None:
        raise AssertionError(f"ray start exited with {head.returncode}:\n{(root / 'head.log').read_text()[-3000:]}")
    try:
        JobSubmissionClient(address)
        return True
    except ConnectionError:
        return False
