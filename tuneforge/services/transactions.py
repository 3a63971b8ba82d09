"""Committing a change to a versioned row (models, clusters, endpoints, sweeps: see OciResource in
tuneforge/store/tables.py). The UPDATE matches only the revision that was read, so of two writers
that read the same revision one commits and the other's UPDATE matches no row (StaleDataError).

A lost race is the server's own bookkeeping, not the client's conflict (two requests touching one
row at the same moment, e.g. two endpoint creates both updating their cluster's used capacity), so
`retrying` runs the whole transaction again on what the winner committed: it re-reads, re-checks
every rule and either succeeds or fails with the rule's own error (the loser of a create-endpoint /
delete-model race is told which one it lost to). A client's if-match is checked again on each
round, so when the row the client named is what changed, the answer is OCI's 412 as it should be."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from tuneforge.services.errors import incorrect_state

T = TypeVar("T")

# Each lost round means another request committed. A short random pause before the next round lets
# the requests that collided spread out (4 clients creating endpoints on one cluster otherwise keep
# colliding); after ATTEMPTS rounds the 409 below (which the SDK retries by itself) is the answer.
ATTEMPTS = 30
MAX_PAUSE_S = 0.2


class Conflict(Exception):
    """A versioned row changed under the transaction: run it again (see `retrying`)."""


def commit_versioned(session: Session) -> None:
    """Commit; a lost race raises Conflict, for `retrying` to run the work again."""
    try:
        session.commit()
    except StaleDataError:
        session.rollback()
        raise Conflict from None


def retrying(work: Callable[[], T]) -> T:
    """Run `work` (one transaction, opened inside it, checking the client's if-match first) until it
    commits without losing a race on a versioned row, at most ATTEMPTS times."""
    for attempt in range(ATTEMPTS):
        try:
            return work()
        except (Conflict, StaleDataError):  # StaleDataError: a flush inside `work` (before its commit) lost the race
            time.sleep(random.uniform(0, min(MAX_PAUSE_S, 0.002 * 2**attempt)))
    raise incorrect_state("the resource is being changed by many requests at the same time; retry")
