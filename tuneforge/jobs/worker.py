"""Worker threads inside the server process: each claims one job at a time from the store's queue
and runs it with tuneforge.jobs.runner through the executor. N threads = at most N jobs watched by
this process (N trainers with the local executor; Ray jobs with the Ray executor)."""

from __future__ import annotations

import logging
import threading

from sqlalchemy.orm import Session, sessionmaker

from tuneforge.jobs import queue
from tuneforge.jobs.executors import Executor
from tuneforge.jobs.runner import RunSettings, run_job

log = logging.getLogger("tuneforge.jobs")


class WorkerPool:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: RunSettings,
        executor: Executor,
        workers: int,
        lease_seconds: float,
        poll_seconds: float = 1.0,
    ):
        self.sessions, self.settings, self.executor = sessions, settings, executor
        self.workers, self.lease_seconds, self.poll_seconds = workers, lease_seconds, poll_seconds
        self.me = queue.this_process()
        self._running: set[str] = set()  # job ids our threads run now
        self._claim_lock = threading.Lock()  # our threads claim one at a time (SQLite has no row locks: queue.py)
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Also resumes jobs left RUNNING by a server that died: they are abandoned and claimed first."""
        for i in range(self.workers):
            thread = threading.Thread(target=self._loop, name=f"tuneforge-worker-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def wake(self) -> None:
        self._wakeup.set()

    def stop(self, timeout: float | None = None) -> None:
        """Stop every local trainer with SIGTERM (they checkpoint) and put the jobs back in the queue (a detached
        executor's attempts train on)."""
        self._stopping.set()
        self._wakeup.set()
        for thread in self._threads:
            thread.join(timeout)

    def _claim(self):
        with self._claim_lock, self.sessions() as session:
            job = queue.claim(
                session, self.me, self._running, self.lease_seconds, self.executor.units_per_job, self.executor.detached
            )
            if job is not None:
                self._running.add(job.id)
                log.info("claimed job %s (start %d, %d unit(s) of cluster %s)", job.id, job.attempts, job.units, job.cluster_id)
            return job

    def _loop(self) -> None:
        while not self._stopping.is_set():
            job = None
            try:
                job = self._claim()
                if job is not None:
                    run_job(self.sessions, job.id, self.me, self.settings, self.executor, self._stopping)
                    continue
            except Exception:  # a database hiccup must not kill the worker; the job is retried
                log.exception("worker error%s", f" on job {job.id}" if job else "")
                self._stopping.wait(self.poll_seconds)
            finally:
                if job is not None:
                    self._running.discard(job.id)
            self._wakeup.wait(self.poll_seconds)
            self._wakeup.clear()
