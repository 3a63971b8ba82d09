"""The API server's side of hosting: each HOSTING cluster's units are replicas (`ReplicaSet`), and every
request to one of its endpoints goes to one of them.

Routing: a request goes to the least loaded replica (requests in flight there) among those where its
adapter is resident, unless a replica without it has SPREAD fewer in flight: then there (which loads it
too). So an adapter stays where it is resident until its traffic is more than one replica should take.
Every replica of a cluster holds the cluster's base (an endpoint's warm-up loads it, and its adapter,
on each).

A replica that dies (killed, crashed) is started again at once. Its requests that had not sent any
text yet are sent again to a live replica, so a client never sees them fail; those already streaming end
with an error that says so (their text cannot be taken back). A replica that dies more than
MAX_RESTARTS times in RESTART_WINDOW_S is left down (its log says why); when none is left, requests are
refused with 503 rather than queued for nothing.

Scaling (`scale`, from a cluster update's unitCount, and checked on every request against the cluster's
row, so every server of a PostgreSQL store follows it): new replicas start and load what the cluster
has warmed; removed ones take no new requests and stop when their last one ends.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass

from tuneforge import serving
from tuneforge.hosting.launchers import ReplicaDied, ReplicaHandle, ReplicaLauncher
from tuneforge.hosting.wire import POLL_S, from_wire
from tuneforge.serving.stream import Stream

log = logging.getLogger("tuneforge.hosting")
SPREAD = 4  # requests in flight by which a replica without the adapter must be less busy to be chosen
MAX_RESTARTS, RESTART_WINDOW_S = 5, 300.0
SUBMIT_TRIES = 3  # replicas a request is offered to when the one chosen dies under it


class Replica:
    """One unit of a cluster: its current launch (`handle`, replaced when it dies) and what the router
    knows of it."""

    def __init__(self, index: int):
        self.index = index
        self.handle: ReplicaHandle | None = None
        self.inflight = 0
        self.adapters: collections.OrderedDict[str, None] = collections.OrderedDict()  # resident, LRU first
        self.retiring = False  # scaled away: no new requests, stopped when idle
        self.failed = False  # died too often: left down
        self.deaths: collections.deque[float] = collections.deque()
        self.lock = threading.Lock()  # one launch at a time


@dataclass(frozen=True)
class ReplicaStatus:
    """One replica of a cluster as its router sees it: `state` is running, starting (not yet or again),
    retiring (scaled away, ending its requests) or down (died more than MAX_RESTARTS times in
    RESTART_WINDOW_S); `restarts` counts its deaths in that window; `adapters`, the ids resident there."""

    index: int
    state: str
    pid: int | None
    host: str | None
    inflight: int
    adapters: list[str]
    restarts: int


@dataclass
class _Call:
    """One request in flight: where it runs now, and whether its client has had text (then it cannot move)."""

    weights: object
    request: serving.Request
    replica: Replica
    handle: ReplicaHandle
    key: str
    prompt_tokens: int
    stream: Stream | None = None
    seen: int = 0  # deltas handed to the stream


class ReplicaSet:
    def __init__(self, name: str, units: int, launcher: ReplicaLauncher, engine_config: dict):
        """`engine_config`: each replica's EngineConfig fields (its max_adapters is the residency the
        router keeps track of)."""
        self.name, self.launcher, self.engine_config = name, launcher, engine_config
        self.replicas: list[Replica] = []
        self._warm: dict[tuple[str, str | None], tuple[object, serving.AdapterRef | None]] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.scale(units)

    # ---- requests ----------------------------------------------------------------------------

    def submit(self, weights, request: serving.Request) -> Stream:
        """As Engine.submit: the engine's errors raised as they are, a Stream of the text."""
        call = self._place(weights, request)
        stream = Stream(call.prompt_tokens, on_cancel=lambda: self._send_cancel(call))
        call.stream = stream
        threading.Thread(target=self._pump, args=(call,), name=f"replica-{self.name[-6:]}", daemon=True).start()
        return stream

    def generate(self, weights, request: serving.Request) -> serving.Completion:
        return self.submit(weights, request).result()

    def _place(self, weights, request: serving.Request, avoid: Replica | None = None) -> _Call:
        """Queue the request on a replica (another if the chosen one dies under it)."""
        for _ in range(SUBMIT_TRIES):
            replica = self._pick(request.adapter, avoid)
            try:
                handle = self._started(replica)
                answer = handle.call("submit", weights, request)
            except ReplicaDied as died:
                self._done(replica)
                self._died(replica, died.handle)
                avoid = replica
                continue
            except BaseException:  # it could not be started: the request goes nowhere
                self._done(replica)
                raise
            if answer[0] == "error":
                self._done(replica)
                raise from_wire(answer[1])
            _, key, prompt_tokens = answer
            return _Call(weights, request, replica, handle, key, prompt_tokens)
        raise serving.EngineClosed(f"the replicas of hosting cluster {self.name} keep stopping; try again shortly")

    def _pump(self, call: _Call) -> None:
        """Hand the replica's text to the caller's stream until the request ends."""
        stream = call.stream
        try:
            while True:
                try:
                    deltas, tokens, end = call.handle.call("events", call.key, call.seen, POLL_S)
                except ReplicaDied as died:
                    self._died(call.replica, died.handle)
                    if call.seen or stream.cancelled:
                        stream.fail(
                            serving.Interrupted(
                                f"the replica serving this request stopped after {stream.completion_tokens} tokens; "
                                "send the request again"
                            )
                        )
                        return
                    self._done(call.replica)
                    try:  # no text reached the client yet: start it again elsewhere
                        moved = self._place(call.weights, call.request, avoid=call.replica)
                    except serving.ServingError as err:
                        call.replica = None
                        stream.fail(err)
                        return
                    call.replica, call.handle, call.key = moved.replica, moved.handle, moved.key
                    if stream.cancelled:
                        self._send_cancel(call)
                    continue
                if deltas:
                    stream.completion_tokens = tokens
                    for delta in deltas:
                        stream.put(delta)
                    call.seen += len(deltas)
                if end is not None:
                    kind, value = end
                    if kind == "done":
                        stream.finish(value)
                    else:
                        stream.fail(from_wire(value))
                    return
        except Exception as err:  # (a bug here must not leave the client waiting for ever)
            log.exception("relaying a hosted request failed")
            stream.fail(serving.ServingError(f"relaying the answer failed: {type(err).__name__}"))
        finally:
            if call.replica is not None:
                self._done(call.replica)

    def _send_cancel(self, call: _Call) -> None:
        """Stream.cancel() may run on the event loop: the call to the replica goes from a thread."""

        def send() -> None:
            with contextlib.suppress(ReplicaDied):  # the pump notices and ends the stream
                call.handle.call("cancel", call.key)

        threading.Thread(target=send, name="replica-cancel", daemon=True).start()

    # ---- placement -------------------------------------------------------------------------------

    def _pick(self, adapter: serving.AdapterRef | None, avoid: Replica | None) -> Replica:
        with self._lock:
            if self._closed:
                raise serving.EngineClosed("the model server is shutting down")
            live = [r for r in self.replicas if not r.retiring and not r.failed]
            if avoid is not None and len(live) > 1:
                live = [r for r in live if r is not avoid]
            if not live:
                raise serving.EngineClosed(
                    f"no replica of hosting cluster {self.name} is running (they kept stopping); the server's log says why"
                )
            key = adapter.id if adapter is not None else None
            least = min(live, key=lambda r: r.inflight)
            holders = [r for r in live if key is None or key in r.adapters]
            chosen = least
            if holders:
                best = min(holders, key=lambda r: r.inflight)
                if best.inflight < least.inflight + SPREAD:
                    chosen = best
            chosen.inflight += 1
            if key is not None:
                chosen.adapters[key] = None
                chosen.adapters.move_to_end(key)
                while len(chosen.adapters) > self.engine_config["max_adapters"]:
                    chosen.adapters.popitem(last=False)
            return chosen

    def _done(self, replica: Replica) -> None:
        stop = None
        with self._lock:
            replica.inflight -= 1
            if replica.retiring and replica.inflight == 0 and replica in self.replicas:
                self.replicas.remove(replica)
                stop = replica.handle
        if stop is not None:
            threading.Thread(target=stop.stop, name="replica-stop", daemon=True).start()

    # ---- lifecycle -------------------------------------------------------------------------------

    def _started(self, replica: Replica) -> ReplicaHandle:
        """The replica's running launch: started (again) if it has none or it died."""
        with replica.lock:
            if replica.handle is not None and replica.handle.alive():
                return replica.handle
            if replica.handle is not None:  # found dead before any call noticed
                self._count_death(replica)
            if replica.failed or self._closed:
                raise ReplicaDied(None)
            replica.adapters.clear()
            try:
                replica.handle = self.launcher.launch(self._config_for_launch())
            except ReplicaDied:
                self._count_death(replica)
                raise
            except serving.ServingError:
                raise
            except Exception:  # (what failed is for the log; the client gets a sentence)
                log.exception("hosting cluster %s: replica %d could not be started", self.name, replica.index)
                self._count_death(replica)
                raise serving.EngineClosed(
                    f"a replica of hosting cluster {self.name} could not be started; the server's log says why"
                ) from None
            if replica.retiring or self._closed:  # scaled away or shut down while it started: not to be used
                replica.handle.stop()
                replica.handle = None
                raise ReplicaDied(None)
            log.info("hosting cluster %s: replica %d started (pid %s)", self.name, replica.index, replica.handle.pid)
            return replica.handle

    def _config_for_launch(self) -> dict:
        """The engine settings of a replica: local replicas of one cluster share the machine's cores
        (each spread over every core, they would wait at each other's barriers) unless threads are set."""
        if self.engine_config.get("threads") is not None or not getattr(self.launcher, "shares_cores", False):
            return self.engine_config
        return {**self.engine_config, "threads": max(1, (os.cpu_count() or 1) // max(1, self.units()))}

    def _died(self, replica: Replica, handle: ReplicaHandle | None) -> None:
        """A call found `handle` dead: start the replica again (once, whoever noticed first), reloading
        what the cluster has warmed."""
        with replica.lock:
            if replica.handle is not handle or handle is None:
                return  # already restarted, or being restarted
            replica.handle = None
            self._count_death(replica)
            log.warning("hosting cluster %s: replica %d (pid %s) stopped", self.name, replica.index, handle.pid)
        if not replica.failed and not replica.retiring:
            threading.Thread(target=self._restart, args=(replica,), name="replica-restart", daemon=True).start()

    def _count_death(self, replica: Replica) -> None:
        now = time.monotonic()
        replica.deaths.append(now)
        while replica.deaths and replica.deaths[0] < now - RESTART_WINDOW_S:
            replica.deaths.popleft()
        if len(replica.deaths) > MAX_RESTARTS:
            replica.failed = True
            log.error(
                "hosting cluster %s: replica %d stopped %d times in %.0f s; it is left down",
                self.name,
                replica.index,
                len(replica.deaths),
                RESTART_WINDOW_S,
            )

    def _restart(self, replica: Replica) -> None:
        try:
            self._warm_one(replica, list(self._warm.values()))
        except (ReplicaDied, serving.ServingError, serving.InvalidParameter) as err:
            if not (replica.retiring or self._closed):
                log.warning("hosting cluster %s: replica %d did not come back: %s", self.name, replica.index, err)

    def warm(self, weights, adapter: serving.AdapterRef | None) -> None:
        """Load the base and adapter on every replica (an endpoint's creation); raises the first
        replica's error. Replicas started later load it too."""
        with self._lock:
            self._warm[(str(getattr(weights, "path", weights)), adapter.id if adapter else None)] = (weights, adapter)
            replicas = [r for r in self.replicas if not r.retiring]
        errors: list[Exception] = []

        def one(replica: Replica) -> None:
            try:
                self._warm_one(replica, [(weights, adapter)])
            except (ReplicaDied, serving.ServingError, serving.InvalidParameter) as err:
                if not replica.retiring:  # one scaled away meanwhile needs nothing
                    errors.append(err)

        threads = [threading.Thread(target=one, args=(r,), daemon=True) for r in replicas]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            err = errors[0]
            raise err if not isinstance(err, ReplicaDied) else serving.EngineClosed("a replica stopped while loading the model")

    def _warm_one(self, replica: Replica, models) -> None:
        handle = self._started(replica)
        for weights, adapter in models:
            request = serving.Request(messages=[{"role": "user", "content": "."}], adapter=adapter, max_tokens=1)
            answer = handle.call("submit", weights, request)
            if answer[0] == "error":
                raise from_wire(answer[1])
            while (end := handle.call("events", answer[1], 0, POLL_S)[2]) is None:
                pass
            if end[0] == "error":
                raise from_wire(end[1])
            if adapter is not None:
                with self._lock:
                    replica.adapters[adapter.id] = None

    def scale(self, units: int) -> None:
        """`units` replicas: new ones start (and warm) in the background; extra ones retire."""
        start, stop = [], []
        with self._lock:
            active = [r for r in self.replicas if not r.retiring]
            if units > len(active):
                used = {r.index for r in self.replicas}
                for _ in range(units - len(active)):
                    index = next(i for i in range(len(used) + 1) if i not in used)
                    used.add(index)
                    replica = Replica(index)
                    self.replicas.append(replica)
                    start.append(replica)
            for replica in active[units:]:
                replica.retiring = True
                if replica.inflight == 0:
                    self.replicas.remove(replica)
                    stop.append(replica.handle)
        for replica in start:
            threading.Thread(target=self._restart, args=(replica,), name="replica-start", daemon=True).start()
        for handle in stop:
            if handle is not None:
                threading.Thread(target=handle.stop, name="replica-stop", daemon=True).start()

    def units(self) -> int:
        with self._lock:
            return len([r for r in self.replicas if not r.retiring])

    def describe(self) -> list[ReplicaStatus]:
        """Each replica as the router knows it (the console's cluster page shows them)."""
        recent = time.monotonic() - RESTART_WINDOW_S
        with self._lock:
            return [
                ReplicaStatus(
                    index=r.index,
                    state="down" if r.failed else "retiring" if r.retiring else "running" if r.handle else "starting",
                    pid=getattr(r.handle, "pid", None),
                    host=getattr(r.handle, "host", None),
                    inflight=r.inflight,
                    adapters=list(r.adapters),
                    restarts=sum(1 for t in r.deaths if t >= recent),
                )
                for r in sorted(self.replicas, key=lambda r: r.index)
            ]

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            replicas, self.replicas = self.replicas, []
        for replica in replicas:
            with replica.lock:
                if replica.handle is not None:
                    replica.handle.stop()
                    replica.handle = None


class Hosting:
    """The hosting clusters' replica sets of this server, by cluster id."""

    def __init__(self, launcher: ReplicaLauncher, engine_config: dict):
        self.launcher, self.engine_config = launcher, engine_config
        self._sets: dict[str, ReplicaSet] = {}
        self._lock = threading.Lock()
        self._closed = False

    def cluster(self, cluster_id: str, units: int) -> ReplicaSet:
        """The cluster's replicas, started on first use and scaled to `units` (its row's unitCount)."""
        with self._lock:
            if self._closed:
                raise serving.EngineClosed("the model server is shutting down")
            replicas = self._sets.get(cluster_id)
            if replicas is None:
                replicas = self._sets[cluster_id] = ReplicaSet(cluster_id, units, self.launcher, self.engine_config)
                return replicas
        if replicas.units() != units:
            replicas.scale(units)
        return replicas

    def scale(self, cluster_id: str, units: int) -> None:
        with self._lock:
            replicas = self._sets.get(cluster_id)
        if replicas is not None:
            replicas.scale(units)

    def describe(self, cluster_id: str) -> list[ReplicaStatus]:
        """The cluster's replicas on this server ([] before its first endpoint starts them)."""
        with self._lock:
            replicas = self._sets.get(cluster_id)
        return replicas.describe() if replicas is not None else []

    def remove(self, cluster_id: str) -> None:
        with self._lock:
            replicas = self._sets.pop(cluster_id, None)
        if replicas is not None:
            replicas.shutdown()

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            sets, self._sets = list(self._sets.values()), {}
        for replicas in sets:
            replicas.shutdown()
