"""A hosting replica: one serving engine pool in its own process (or Ray actor), driven by the API
server's router (router.py) through a handful of calls that carry only plain data (wire.py).

`ReplicaCore` is the whole replica; the launchers (launchers.py) only put it in a process or an actor.
Streaming is a long poll: `events(key, seen)` answers with the deltas after the first `seen` as soon as
there is one (or after POLL_S with none), so it needs nothing from the transport but calls, and a stream
read this way is the engine's own `Stream`, whose text the router hands to its own.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

from tuneforge import serving
from tuneforge.hosting.wire import POLL_S, to_wire

log = logging.getLogger("tuneforge.hosting")
UNREAD_KEEP_S = 300.0  # a finished stream nobody polls for this long is dropped (its router went away)


class ReplicaCore:
    def __init__(self, engine_config: dict):
        from tuneforge.serving import EngineConfig, EnginePool

        self.pool = EnginePool(EngineConfig(**engine_config))
        self._streams: dict[str, tuple[serving.Stream, float]] = {}  # key -> (stream, when it was last read)
        self._lock = threading.Lock()

    def ping(self) -> dict:
        """Where this replica runs (the router's and the tests' way to tell replicas apart)."""
        return {"pid": os.getpid(), "host": socket.gethostname()}

    def submit(self, weights, request: serving.Request) -> tuple:
        """("ok", key, prompt_tokens), or ("error", wire) for what the engine refused. The first
        request for a base loads it, so this call can take as long as loading does."""
        try:
            stream = self.pool.get(weights).submit(request)
        except (serving.ServingError, serving.InvalidParameter) as err:
            return "error", to_wire(err)
        except Exception as err:  # (a bug or out of memory: logged here, a sentence there)
            log.exception("a hosting replica failed to queue a request")
            return "error", to_wire(err)
        key = uuid.uuid4().hex
        with self._lock:
            self._drop_unread()
            self._streams[key] = (stream, time.monotonic())
        return "ok", key, stream.prompt_tokens

    def events(self, key: str, seen: int, timeout: float = POLL_S) -> tuple:
        """(deltas after the first `seen`, tokens so far, end): end is None while the request runs,
        ("done", Completion) or ("error", wire) when it has ended (the key is then forgotten)."""
        with self._lock:
            stream, _ = self._streams.get(key, (None, 0.0))
        if stream is None:
            return [], 0, ("error", to_wire(serving.ServingError("this request is no longer known to its replica")))
        deltas, done = stream.read(seen, min(timeout, POLL_S))
        end = None
        if done:
            try:
                end = "done", stream.result()
            except Exception as err:  # (the engine's step failed: ServingError, logged by the engine)
                end = "error", to_wire(err)
            with self._lock:
                self._streams.pop(key, None)
        else:
            with self._lock:
                if key in self._streams:
                    self._streams[key] = (stream, time.monotonic())
        return deltas, stream.completion_tokens, end

    def cancel(self, key: str) -> None:
        """Stop the request; its next `events` ends it with finish_reason "cancelled"."""
        with self._lock:
            stream, _ = self._streams.get(key, (None, 0.0))
        if stream is not None:
            stream.cancel()

    def shutdown(self) -> None:
        self.pool.shutdown()

    def _drop_unread(self) -> None:
        old = time.monotonic() - UNREAD_KEEP_S
        for key, (stream, read) in list(self._streams.items()):
            if read < old:
                stream.cancel()
                del self._streams[key]
