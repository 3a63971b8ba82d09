"""Who is calling, and what the service functions need to run: `Caller` and `Services`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from tuneforge.services.config import ServiceConfig


@dataclass(frozen=True)
class Caller:
    """The verified identity behind a request: its tenancy is the access boundary."""

    tenancy_id: str
    user_id: str


@dataclass
class Services:
    config: ServiceConfig
    sessions: sessionmaker[Session]
    wake_workers: Callable[[], None] = field(default=lambda: None)  # a job was queued: start it now
    # An endpoint was created: load its model, then call endpoints.finish_creation (None: no serving
    # engine here, so endpoints go ACTIVE at once and load on their first request).
    warm_endpoint: Callable[[str], None] | None = None
    serving: Any = None  # the process's tuneforge.serving.EnginePool, created on first use (services/inference.py)
    hosting: Any = None  # the hosting clusters' replicas, a tuneforge.hosting.Hosting created on first use (same)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions() as session:
            yield session

    @property
    def region(self) -> str:
        return self.config.region
