"""Tenancy isolation, once: a caller's tenancy owns what it created and nothing else."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneforge.services.context import Caller, Services
from tuneforge.services.errors import incorrect_state, not_found
from tuneforge.services.protocol import check_if_match, etag
from tuneforge.services.transactions import commit_versioned, retrying
from tuneforge.store.tables import BucketRow, ClusterRow, ModelRow, WorkRequestRow, utcnow

Row = TypeVar("Row")


def owned(session: Session, caller: Caller, table: type[Row], resource_id: str, what: str, *, lock: bool = False) -> Row:
    """The caller's tenancy's row, else 404 (never saying whether it exists elsewhere)."""
    row = session.get(table, resource_id, with_for_update=lock or None)
    if row is None or row.tenancy_id != caller.tenancy_id:
        raise not_found(what)
    return row


def find_owned(session: Session, caller: Caller, table: type[Row], resource_id: str) -> Row | None:
    row = session.get(table, resource_id)
    return row if row is not None and row.tenancy_id == caller.tenancy_id else None


def owned_active(session: Session, caller: Caller, table: type[Row], resource_id: str, what: str, when: str) -> Row:
    """The caller's tenancy's ACTIVE row: 404 if it is not the tenancy's or is DELETED, 409 in any other
    state, `when` saying what only an ACTIVE one does ("it answers once it is ACTIVE")."""
    row = owned(session, caller, table, resource_id, what)
    if row.lifecycle_state == "DELETED":
        raise not_found(what)
    if row.lifecycle_state != "ACTIVE":
        raise incorrect_state(f"{what} {resource_id} is {row.lifecycle_state}; {when}")
    return row


def change_compartment(
    svc: Services,
    caller: Caller,
    table: type[Row],
    resource_id: str,
    what: str,
    compartment_id: str,
    if_match: str | None,
    *,
    movable: Callable[[str], bool] = lambda state: state not in ("DELETING", "DELETED"),
) -> None:
    """Move an owned row to another compartment (OCI's changeCompartment), for every resource that has one:
    `what` names it in errors, `movable(lifecycle_state)` says whether its state allows the move."""

    def move() -> None:
        with svc.session() as session:
            row = owned(session, caller, table, resource_id, what)
            check_if_match(if_match, etag(row.id, row.revision))
            if not movable(row.lifecycle_state):
                raise incorrect_state(f"{what} {row.id} is {row.lifecycle_state}")
            row.compartment_id, row.time_updated = compartment_id, utcnow()  # the UPDATE bumps the revision (the etag)
            commit_versioned(session)

    retrying(move)


def compartments(svc: Services, caller: Caller) -> list[str]:
    """Compartments the tenancy has used (they are free-form labels), the tenancy (root) first."""
    found: set[str] = set()
    with svc.session() as session:
        for table in (ModelRow, ClusterRow, WorkRequestRow, BucketRow):
            found.update(session.scalars(select(table.compartment_id).where(table.tenancy_id == caller.tenancy_id).distinct()))
    found.discard(caller.tenancy_id)
    return [caller.tenancy_id, *sorted(found)]
