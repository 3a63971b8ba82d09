"""opc-retry-token: a retried create returns what the first request created, never a second one.

The SDK generates the token once per call, before its retry loop (oci-api.md §1.1), so every retry
of one create carries the same token. Tokens are honoured for 24 hours, as OCI documents."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import timedelta

from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tuneforge.services.errors import ServiceError
from tuneforge.store.tables import RetryToken, utcnow

TTL = timedelta(hours=24)


def body_hash(details: BaseModel) -> str:
    return hashlib.sha256(details.model_dump_json(by_alias=True).encode()).hexdigest()


def lookup(session: Session, tenancy_id: str, token: str | None, operation: str, digest: str) -> RetryToken | None:
    """The earlier request's record, if this is a retry of it; 409 if the token was used for a different body."""
    if not token:
        return None
    row = session.get(RetryToken, (tenancy_id, token, operation))
    if row is None:
        return None
    if utcnow() - row.time_created > TTL:
        session.delete(row)
        session.flush()
        return None
    if row.body_hash != digest:
        raise ServiceError(409, "InvalidatedRetryToken", "opc-retry-token was already used for a different request body.")
    return row


def record(
    session: Session, tenancy_id: str, token: str | None, operation: str, digest: str, resource_id: str, wr_id: str | None
) -> None:
    if token:
        session.add(
            RetryToken(
                tenancy_id=tenancy_id,
                token=token,
                operation=operation,
                body_hash=digest,
                resource_id=resource_id,
                work_request_id=wr_id,
            )
        )


def commit_or_earlier(
    session: Session,
    tenancy_id: str,
    token: str | None,
    operation: str,
    digest: str,
    *,
    commit: Callable[[Session], None] = Session.commit,
    undo: Callable[[], None] | None = None,
) -> RetryToken | None:
    """Commit a create that `record`ed its token. None: it committed. When a concurrent retry with the
    same token committed first (the token's key refuses this one), roll back, `undo` what this attempt
    left outside the database, and return the earlier request's record so the caller answers with what
    it created; any other integrity error is raised as it was."""
    try:
        commit(session)
    except IntegrityError:
        session.rollback()
        if undo is not None:
            undo()
        earlier = lookup(session, tenancy_id, token, operation, digest)
        if earlier is None:
            raise
        return earlier
    return None
