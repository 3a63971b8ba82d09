"""Tenancy isolation, once: a caller's tenancy owns what it created and nothing else."""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneforge.services.context import Caller, Services
from tuneforge.services.errors import not_found
from tuneforge.store.tables import BucketRow, ClusterRow, ModelRow, WorkRequestRow

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


def compartments(svc: Services, caller: Caller) -> list[str]:
    """Compartments the tenancy has used (they are free-form labels), the tenancy (root) first."""
    found: set[str] = set()
    with svc.session() as session:
        for table in (ModelRow, ClusterRow, WorkRequestRow, BucketRow):
            found.update(session.scalars(select(table.compartment_id).where(table.tenancy_id == caller.tenancy_id).distinct()))
    found.discard(caller.tenancy_id)
    return [caller.tenancy_id, *sorted(found)]
