"""FastAPI dependencies shared by the routers: the verified caller, the service layer, and the
OCI headers and query parameters every operation takes (bounded, so nothing unbounded is parsed)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Depends, Header, Query, Request

from tuneforge.api.auth import caller_of
from tuneforge.services.context import Caller, Services


def _services(request: Request) -> Services:
    return request.app.state.services


CallerDep = Annotated[Caller, Depends(caller_of)]
ServicesDep = Annotated[Services, Depends(_services)]
IfMatch = Annotated[str | None, Header(alias="if-match", max_length=512)]
IfNoneMatch = Annotated[str | None, Header(alias="if-none-match", max_length=512)]
RetryToken = Annotated[str | None, Header(alias="opc-retry-token", max_length=255, pattern=r"^[\x20-\x7e]+$")]
CompartmentId = Annotated[str, Query(min_length=1, max_length=255)]
SortOrder = Literal["ASC", "DESC"] | None
Limit = Annotated[int | None, Query(ge=1, le=1000)]
Page = Annotated[str | None, Query(max_length=64)]
QueryStr = Annotated[str | None, Query(max_length=255)]
