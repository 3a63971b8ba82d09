"""`Stream`: one request's text as the engine decodes it, readable from a thread or from asyncio.

The engine's decode thread is the only producer (`put`, `finish`, `fail`); any number of threads
or event loops may read. Readers never block the producer: it appends under a short lock and wakes
readers (a condition variable for threads, `call_soon_threadsafe` for event loops), so an async
reader in FastAPI never blocks its event loop and a slow reader never slows the batch.
Deltas that pile up while a reader is busy come out joined, as one string.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

from tuneforge.serving.requests import Completion, EngineClosed


class Stream:
    def __init__(self, prompt_tokens: int, on_cancel: Callable[[], None] = lambda: None):
        self.id = uuid.uuid4().hex
        self.created = time.time()
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = 0  # tokens decoded so far (set by the engine before it puts their text)
        self._on_cancel = on_cancel
        self._cond = threading.Condition()
        self._deltas: list[str] = []
        self._completion: Completion | None = None
        self._error: Exception | None = None
        self._cancelled = False
        self._wakers: set[Callable[[], None]] = set()

    # -- read side ---------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._completion is not None or self._error is not None

    @property
    def cancelled(self) -> bool:
        """cancel() was called (the engine drops the row before its next decode step)."""
        return self._cancelled

    def cancel(self) -> None:
        """Stop generating; the completion ends with finish_reason "cancelled". No-op once done."""
        if self.done or self._cancelled:
            return
        self._cancelled = True
        self._on_cancel()

    def __iter__(self) -> Iterator[str]:
        """Text deltas as they are decoded. Leaving the loop early (break, an exception, the
        generator closed) cancels the request: that is how a client that went away is noticed."""
        seen = 0
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: len(self._deltas) > seen or self.done)  # noqa: B023 (called before `seen` changes)
                    chunk, seen, ended = self._deltas[seen:], len(self._deltas), self.done
                if chunk:
                    yield "".join(chunk)
                if ended:
                    break
            self._raise_if_failed()
        finally:
            self.cancel()

    async def __aiter__(self) -> AsyncIterator[str]:
        """The same deltas for `async for`, without blocking the event loop."""
        event = asyncio.Event()
        waker = self._waker_for(asyncio.get_running_loop(), event)
        seen = 0
        try:
            while True:
                event.clear()
                with self._cond:
                    chunk, seen, ended = self._deltas[seen:], len(self._deltas), self.done
                if chunk:
                    yield "".join(chunk)
                if ended:
                    break
                if not chunk:
                    await event.wait()
            self._raise_if_failed()
        finally:
            with self._cond:
                self._wakers.discard(waker)
            self.cancel()

    def result(self, timeout: float | None = None) -> Completion:
        """Block until the request ends; the Completion, or the engine's error raised."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.done, timeout):
                raise TimeoutError(f"request {self.id} did not finish within {timeout} s")
        self._raise_if_failed()
        return self._completion

    async def aresult(self) -> Completion:
        """result() for asyncio."""
        event = asyncio.Event()
        waker = self._waker_for(asyncio.get_running_loop(), event)
        try:
            while not self.done:
                event.clear()
                if not self.done:
                    await event.wait()
        finally:
            with self._cond:
                self._wakers.discard(waker)
        self._raise_if_failed()
        return self._completion

    def read(self, seen: int, timeout: float) -> tuple[list[str], bool]:
        """The deltas after the first `seen`, waiting up to `timeout` s for one, and whether the request
        has ended (then result() does not block). For a reader in another process that polls
        (tuneforge/hosting: a replica's streams read by the API server)."""
        with self._cond:
            self._cond.wait_for(lambda: len(self._deltas) > seen or self.done, timeout)
            return self._deltas[seen:], self.done

    def _waker_for(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> Callable[[], None]:
        def wake():
            with contextlib.suppress(RuntimeError):  # the reader's loop is closed: nobody is listening any more
                loop.call_soon_threadsafe(event.set)

        with self._cond:
            self._wakers.add(wake)
        return wake

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    # -- write side (the engine's decode thread) ---------------------------------------------------

    def put(self, delta: str) -> None:
        with self._cond:
            self._deltas.append(delta)
            self._wake()

    def finish(self, completion: Completion) -> None:
        with self._cond:
            self._completion = completion
            self._wake()

    def fail(self, error: Exception) -> None:
        with self._cond:
            self._error = error if isinstance(error, Exception) else EngineClosed(str(error))
            self._wake()

    def _wake(self) -> None:
        self._cond.notify_all()
        for wake in list(self._wakers):
            wake()
