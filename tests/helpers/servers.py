"""Live `tuneforge serve` processes on 127.0.0.1: start, kill (SIGKILL, as a dead machine), stop, and
the CLI against the same store."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from helpers.databases import database
from helpers.identities import Identity
from helpers.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Service:
    data_dir: Path
    database_url: str | None
    weights: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    log: Path | None = None
    args: list[str] = field(default_factory=list)  # more `tuneforge serve` options
    prefix: list[str] = field(default_factory=list)  # a command that runs the server (e.g. in its own UTS namespace)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        store = ["--data-dir", str(self.data_dir)] + (["--database-url", self.database_url] if self.database_url else [])
        return subprocess.run([sys.executable, "-m", "tuneforge", *args, *store], capture_output=True, text=True, cwd=ROOT)

    def register(self, identity: Identity) -> str:
        key_file = self.data_dir.parent / f"{identity.fingerprint.replace(':', '')}.pem"
        key_file.write_bytes(identity.public_pem)
        done = self.cli(
            "api-keys", "add", "--tenancy", identity.tenancy, "--user", identity.user, "--public-key-file", str(key_file)
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def start(self) -> None:
        self.log = self.data_dir.parent / f"server-{self.port}-{int(time.time() * 1000)}.log"
        store = ["--database-url", self.database_url] if self.database_url else []
        cmd = [
            *self.prefix,
            sys.executable,
            "-m",
            "tuneforge",
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--weights",
            str(self.weights),
            *store,
            *self.args,
        ]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        wait_for(self._answers, 60, f"the server on port {self.port} (log: {self.log})")

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when a machine or a worker dies."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


@contextmanager
def running_service(kind: str, root: Path, weights: Path, start: bool = True):
    with database(kind) as url:
        svc = Service(data_dir=root / "data", database_url=url, weights=weights)
        svc.data_dir.mkdir(parents=True)
        try:
            if start:
                svc.start()
            yield svc
        finally:
            svc.stop()


def on_host(name: str) -> list[str]:
    """Run a command with its own host name (`unshare --uts`: the test runs as root, as CI does), so
    two servers on this machine look like servers on two machines (a dead owner is not one of ours)."""
    return ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', name]


@contextmanager
def servers_on_one_database(data: Path, weights: Path, name: str, workers: int, lease_seconds: int):
    """Two `tuneforge serve` processes, each on its own host name, sharing one PostgreSQL database and one data dir."""
    with database("postgresql") as url:
        data.mkdir()
        servers = [
            Service(
                data_dir=data,
                database_url=url,
                weights=weights,
                prefix=on_host(f"{name}-{i}"),
                args=["--workers", str(workers), "--lease-seconds", str(lease_seconds)],
            )
            for i in (1, 2)
        ]
        try:
            for svc in servers:
                svc.start()
            yield servers
        finally:
            for svc in servers:
                svc.stop()
