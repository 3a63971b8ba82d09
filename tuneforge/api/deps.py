"""FastAPI dependencies shared by the routers: the verified caller, a database session, config."""

from __future__ import annotations

from typing import Annotated, Iterator, Literal, TypeVar

from fastapi import Depends, Header, Query, Request
from sqlalchemy.orm import Session

from tuneforge.api.auth import Caller, authenticate
from tuneforge.api.config import ServiceConfig
from tuneforge.api.errors import not_found

Row = TypeVar("Row")


def owned(session: Session, caller: Caller, table: type[Row], resource_id: str, what: str) -> Row:
    """The caller's tenancy's row, else 404 (never saying whether it exists elsewhere)."""
    row = session.get(table, resource_id)
    if row is None or row.tenancy_id != caller.tenancy_id:
        raise not_found(what)
    return row


def _session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


def _config(request: Request) -> ServiceConfig:
    return request.app.state.config


CallerDep = Annotated[Caller, Depends(authenticate)]
SessionDep = Annotated[Session, Depends(_session)]
ConfigDep = Annotated[ServiceConfig, Depends(_config)]
IfMatch = Annotated[str | None, Header(alias="if-match", max_length=512)]
RetryToken = Annotated[str | None, Header(alias="opc-retry-token", max_length=255, pattern=r"^[\x20-\x7e]+$")]
CompartmentId = Annotated[str, Query(min_length=1, max_length=255)]
SortOrder = Literal["ASC", "DESC"] | None
Limit = Annotated[int | None, Query(ge=1, le=1000)]
Page = Annotated[str | None, Query(max_length=64)]
QueryStr = Annotated[str | None, Query(max_length=255)]
