"""OCI protocol details every service answer uses: RFC 3339 times, etags, page tokens, and the
shapes of an answer (`Answer`: a value plus the etag / work request headers; `Page`: a list plus
the next page token)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from tuneforge.services.errors import invalid, precondition_failed

T = TypeVar("T")
DEFAULT_LIMIT = 100


@dataclass(frozen=True)
class Answer(Generic[T]):
    value: T
    etag: str | None = None
    work_request_id: str | None = None


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_page: str | None = None  # the `opc-next-page` header; the SDK pages until it is absent


def rfc3339(dt: datetime | None) -> str | None:
    """2024-09-01T12:00:00.123Z: the SDK's strptime format (milliseconds, Z)."""
    if dt is None:
        return None
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def etag(resource_id: str, revision: int) -> str:
    return hashlib.sha256(f"{resource_id}:{revision}".encode()).hexdigest()[:32]


def check_if_match(if_match: str | None, current: str) -> None:
    """412 unless `if-match` is absent, `*`, or the current etag (a list is accepted, as in HTTP)."""
    if if_match is None:
        return
    candidates = {tag.strip().strip('"').removeprefix("W/").strip('"') for tag in if_match.split(",")}
    if "*" not in candidates and current not in candidates:
        raise precondition_failed()


def encode_page(offset: int) -> str:
    return f"p{offset}"


def decode_page(page: str | None) -> int:
    if page is None:
        return 0
    if not re.fullmatch(r"p\d{1,12}", page):
        raise invalid(f"page: {page[:64]!r} is not a page token returned by this service (opc-next-page)")
    return int(page[1:])


def page_of(items: Sequence[T], page: str | None, limit: int | None) -> Page[T]:
    """One page of an in-memory sequence."""
    start, size = decode_page(page), limit or DEFAULT_LIMIT
    more = start + size < len(items)
    return Page(list(items[start : start + size]), encode_page(start + size) if more else None)


def sql_page(session: Session, stmt: Select, page: str | None, limit: int | None) -> Page:
    """One page of an ordered query, without loading more than one page (plus one row)."""
    start, size = decode_page(page), limit or DEFAULT_LIMIT
    rows = session.scalars(stmt.offset(start).limit(size + 1)).all()
    return Page(list(rows[:size]), encode_page(start + size) if len(rows) > size else None)


def listing(row: type, tenancy_id: str, compartment_id: str | None, lifecycle_state: str | None, filters) -> Select:
    """What a list call selects before ordering and paging: the tenancy's rows, of one compartment
    (None: every compartment, the console's view), in `lifecycle_state` or else in any state but
    DELETED (OCI lists deleted resources only when asked), and equal to each (column, value) of
    `filters` whose value is given."""
    stmt = select(row).where(row.tenancy_id == tenancy_id)
    if compartment_id is not None:
        stmt = stmt.where(row.compartment_id == compartment_id)
    stmt = stmt.where(row.lifecycle_state == lifecycle_state if lifecycle_state else row.lifecycle_state != "DELETED")
    for column, value in filters:
        if value:
            stmt = stmt.where(column == value)
    return stmt


def is_descending(sort_by: str, sort_order: str | None) -> bool:
    """OCI's default order: timeCreated newest first, every other key ascending."""
    return (sort_order or ("DESC" if sort_by == "timeCreated" else "ASC")) == "DESC"


def sorted_by(stmt: Select, columns: dict[str, Any], sort_by: str | None, sort_order: str | None, tie: Any) -> Select:
    """`stmt` ordered by the column of `sort_by` (default timeCreated); `tie` (the id) keeps pages stable."""
    sort_by = sort_by or "timeCreated"
    column = columns[sort_by]
    return stmt.order_by(column.desc() if is_descending(sort_by, sort_order) else column.asc(), tie)
