"""Where a hosting replica runs: a process of this machine (`ProcessLauncher`, the default) or an actor on
a Ray cluster (`RayLauncher`, `tuneforge serve --executor ray`). Each launch is one `ReplicaCore` behind a
`ReplicaHandle`, whose `call(method, *args)` runs one of the core's methods there and raises
`ReplicaDied` when the replica is gone, whatever the transport.

A local replica is `python -m tuneforge.hosting` (a fresh interpreter: the server has threads, a forked
copy of them is unsafe, and multiprocessing's "spawn" would import the caller's main module again),
served by the standard library's `multiprocessing.managers` (one connection per calling thread, so a
long poll of one stream never holds up another). It leaves when this process does: it blocks reading
its stdin, which ends when we end, SIGKILL included.

A replica that is alive but does not answer (stopped, deadlocked, its machine cut off) would leave its
requests waiting: each launch has a `Heartbeat` that pings it every HEARTBEAT_S and kills it after
`hung_s` without an answer, which ends the calls waiting on it with `ReplicaDied`, as any death does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.managers import BaseManager
from typing import Protocol

from tuneforge.hosting.replica import ReplicaCore
from tuneforge.serving.requests import EngineClosed

log = logging.getLogger("tuneforge.hosting")
START_TIMEOUT_S = 120.0  # a replica process that has not started serving by then is counted as dead
EXIT_GRACE_S = 2.0  # after a broken connection, how long a replica process has to be seen gone
HEARTBEAT_S = 2.0  # how often each replica is asked whether it still answers
HUNG_S = 30.0  # a replica that has not answered a ping for this long is killed (and so started again)


class ReplicaDied(Exception):
    """The replica behind a handle is gone (killed, crashed, its machine lost)."""

    def __init__(self, handle: ReplicaHandle):
        super().__init__("the replica stopped")
        self.handle = handle


class Heartbeat:
    """Pings a replica every HEARTBEAT_S from a thread of its own; another thread kills the replica once no
    ping has been answered for `hung_s`. The pinging thread blocks on a replica that does not answer
    (neither transport bounds a call), so the watching one is apart."""

    def __init__(self, pid, ping: Callable[[], object], kill: Callable[[], None], hung_s: float):
        self.pid, self._ping, self._kill, self.hung_s = pid, ping, kill, hung_s
        self._answered = time.monotonic()
        self._stopped = threading.Event()
        threading.Thread(target=self._pings, name=f"replica-ping-{pid}", daemon=True).start()
        threading.Thread(target=self._watch, name=f"replica-watch-{pid}", daemon=True).start()

    def _pings(self) -> None:
        while not self._stopped.wait(HEARTBEAT_S):
            try:
                self._ping()
            except Exception:  # gone (the calls waiting on it notice): nothing left to watch
                self._stopped.set()
                return
            self._answered = time.monotonic()

    def _watch(self) -> None:
        while not self._stopped.wait(min(HEARTBEAT_S, self.hung_s / 2)):
            silent = time.monotonic() - self._answered
            if silent > self.hung_s:
                log.warning("replica %s has not answered for %.0f s; it is killed and started again", self.pid, silent)
                self._stopped.set()
                self._kill()

    def stop(self) -> None:
        self._stopped.set()


class ReplicaHandle(Protocol):
    pid: int  # the replica's process, and the machine it runs on
    host: str

    def call(self, method: str, *args): ...

    def alive(self) -> bool: ...

    def stop(self) -> None: ...


class ReplicaLauncher(Protocol):
    def launch(self, engine_config: dict) -> ReplicaHandle: ...


# ---- local processes ----------------------------------------------------------------------------


class ReplicaManager(BaseManager):
    """Serves a process's one `ReplicaCore` as "replica" (the child registers the core, we the name)."""


ReplicaManager.register("replica")


class ProcessHandle:
    """`python -m tuneforge.hosting` as a child: it reads its settings and a key from its stdin, answers
    with the loopback address it serves on, and exits when its stdin ends (this process ended)."""

    def __init__(self, engine_config: dict, hung_s: float = HUNG_S):
        authkey = secrets.token_bytes(32)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tuneforge.hosting"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=False
        )
        self.pid, self.host = self.process.pid, socket.gethostname()
        self.process.stdin.write(json.dumps({"engine": engine_config, "authkey": authkey.hex()}).encode() + b"\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], START_TIMEOUT_S)
        line = self.process.stdout.readline() if ready else b""
        if not line:
            self.process.kill()
            self.process.wait()
            raise ReplicaDied(self)
        host, port = json.loads(line)
        manager = ReplicaManager(address=(host, port), authkey=authkey)
        manager.connect()
        self._core = manager.replica()
        self.heartbeat = Heartbeat(self.pid, self._core.ping, self.process.kill, hung_s)

    def call(self, method: str, *args):
        try:
            return getattr(self._core, method)(*args)
        except (EOFError, OSError) as err:  # the connection broke: the process is gone, or going
            try:
                self.process.wait(EXIT_GRACE_S)
            except subprocess.TimeoutExpired:  # it lives on, but cannot be reached: it is replaced
                log.warning("a call to replica process %s failed (%s); replacing it", self.pid, type(err).__name__)
                self.process.kill()
                self.process.wait()
            raise ReplicaDied(self) from None

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Its requests end "cancelled", then the process ends."""
        self.heartbeat.stop()
        if self.alive():
            with contextlib.suppress(EOFError, OSError):  # it went meanwhile
                self._core.shutdown()
        self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


class ProcessLauncher:
    shares_cores = True  # its replicas run on this machine: a cluster's replicas divide its cores

    def __init__(self, hung_s: float = HUNG_S):
        self.hung_s = hung_s

    def launch(self, engine_config: dict) -> ReplicaHandle:
        return ProcessHandle(engine_config, self.hung_s)


# ---- Ray actors ---------------------------------------------------------------------------------


class RayHandle:
    def __init__(self, actor, hung_s: float = HUNG_S):
        self.actor = actor
        self._dead = False
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        try:  # the actor is placed and started (the cluster may have no room for it: then it never is)
            where = ray.get(actor.ping.remote(), timeout=START_TIMEOUT_S)
            self.pid, self.host = where["pid"], where["host"]
        except (GetTimeoutError, RayActorError):
            ray.kill(actor)
            self._dead = True
            raise ReplicaDied(self) from None
        self.heartbeat = Heartbeat(self.pid, lambda: ray.get(actor.ping.remote()), self._kill, hung_s)

    def _kill(self) -> None:
        import ray

        self._dead = True
        ray.kill(self.actor)  # the calls waiting on it end with RayActorError

    def call(self, method: str, *args):
        import ray
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        if self._dead:
            raise ReplicaDied(self)
        try:
            return ray.get(getattr(self.actor, method).remote(*args))
        except (RayActorError, ActorDiedError, ActorUnavailableError):
            self._dead = True
            raise ReplicaDied(self) from None

    def alive(self) -> bool:
        return not self._dead

    def stop(self) -> None:
        import ray

        self.heartbeat.stop()
        if not self._dead:
            with contextlib.suppress(Exception):  # stopping: whatever it says, it goes
                ray.get(self.actor.shutdown.remote(), timeout=30)
        self._dead = True
        ray.kill(self.actor)


class RayLauncher:
    """Replicas as Ray actors of the cluster at `address` (its GCS, HEAD:6379, when this machine is one
    of its nodes, or Ray Client's ray://HEAD:10001), each reserving `cpus` CPUs and `gpus` GPUs."""

    MAX_CONCURRENCY = 1024  # calls one actor runs at once: every in-flight request long-polls one

    def __init__(self, address: str, cpus: float, gpus: float, hung_s: float = HUNG_S):
        self.address, self.cpus, self.gpus, self.hung_s = address, cpus, gpus, hung_s
        self._lock = threading.Lock()
        self._actor_class = None
        self._connecting: threading.Thread | None = None

    def launch(self, engine_config: dict) -> ReplicaHandle:
        with self._lock:
            if self._actor_class is None:
                self._actor_class = self._connect()
        actor = self._actor_class.options(
            num_cpus=self.cpus, num_gpus=self.gpus, max_concurrency=self.MAX_CONCURRENCY, max_restarts=0
        ).remote(engine_config)
        return RayHandle(actor, self.hung_s)

    def _connect(self):
        """ray.init, bounded: Ray retries an unreachable cluster for minutes, so it runs in a thread that
        is waited for START_TIMEOUT_S (once: a later launch while it still hangs is refused at once)."""
        import ray

        if self._connecting is None:
            self._connecting = threading.Thread(target=self._init, name="ray-init", daemon=True)
            self._connecting.start()
        self._connecting.join(START_TIMEOUT_S)
        if self._connecting.is_alive() or not ray.is_initialized():
            if not self._connecting.is_alive():
                self._connecting = None  # it failed: the next launch tries again
            raise EngineClosed(
                f"the Ray cluster for hosting replicas ({self.address}) cannot be reached; see --ray-hosting-address"
            )
        if not ray.cluster_resources().get("GPU"):  # a CPU cluster: replicas decode on their CPUs
            self.gpus = 0
        return ray.remote(ReplicaCore)

    def _init(self) -> None:
        import ray

        try:
            ray.init(address=self.address, namespace="tuneforge-hosting", logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as err:
            log.error("connecting to the Ray cluster at %s for hosting replicas failed: %s", self.address, err)
