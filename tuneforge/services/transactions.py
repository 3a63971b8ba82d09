"""Committing a change to a versioned row (models, clusters, endpoints: see OciResource in
tuneforge/store/tables.py). The UPDATE matches only the revision that was read, so a concurrent
writer that committed first makes it match no row: with an if-match etag that is OCI's 412; without
one it is a 409 IncorrectState, which the SDK retries by itself (and the retry reads the new row)."""

from __future__ import annotations

from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from tuneforge.services.errors import incorrect_state, precondition_failed


def commit_versioned(session: Session, if_match: str | None) -> None:
    try:
        session.commit()
    except StaleDataError:
        session.rollback()
        if if_match is not None:
            raise precondition_failed() from None
        raise incorrect_state("the resource was changed by another request at the same time; retry") from None
