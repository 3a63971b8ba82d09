"""What every console route depends on: the signed-in caller (`ConsoleCaller`), the service layer
(`ServicesDep`) and the CSRF check of a POST."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Response

from tuneforge.services.context import Caller, Services
from tuneforge.services.resources import keys
from tuneforge.web import session as sessions
from tuneforge.web.render import page


class SignInRequired(Exception):
    """Raised by `console_caller`; pages answer with the login page, /console/api with 401."""


def _services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(_services)]


def console_caller(request: Request, svc: ServicesDep) -> Caller:
    """The signed-in tenancy as the service layer's caller. A session whose API key was removed
    ends here (a removed console user's sessions were ended by the removal itself)."""
    current = sessions.load(request)
    if not current.signed_in:
        raise SignInRequired()
    if current.via == "api-key":
        with svc.session() as db:
            registered = current.key_id is not None and keys.get_key(db, current.key_id) is not None
        if not registered:
            sessions.end_current(request)
            raise SignInRequired()
    return Caller(tenancy_id=current.tenancy, user_id=current.user)


ConsoleCaller = Annotated[Caller, Depends(console_caller)]


async def form_with_csrf(request: Request):
    """The POSTed form, or None when its CSRF token is not this session's."""
    form = await request.form()
    if not sessions.csrf_ok(sessions.load(request), form.get(sessions.CSRF_FIELD)):
        return None
    return form


def csrf_header_ok(request: Request) -> bool:
    """For the page's fetch() POSTs, which send the token in a header instead of a form field."""
    return sessions.csrf_ok(sessions.load(request), request.headers.get(sessions.CSRF_HEADER))


def csrf_rejected(request: Request) -> Response:
    message = "The form was not accepted (missing or stale CSRF token). Reload the page and try again."
    return page(request, "error.html", status=403, title="Form expired", message=message)


def not_found(request: Request, what: str = "model") -> Response:
    return page(request, "error.html", status=404, title="Not found", message=f"No such {what} in your tenancy.")
