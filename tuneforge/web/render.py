"""Jinja2 templates shipped in the package, rendered with the session's CSRF token."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from tuneforge.catalog import format_number
from tuneforge.web import session as sessions

TEMPLATES = Path(__file__).with_name("templates")
STATIC = Path(__file__).with_name("static")


def _number(value, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _when(value: str | None) -> str:
    # RFC 3339 from the API ("2024-09-01T12:00:00.123Z") shown as "2024-09-01 12:00 UTC".
    if not value:
        return "—"
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return value


def _json_script(value) -> Markup:
    # Safe inside <script type="application/json">: no "</" can close the element early.
    return Markup(json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


env = Environment(
    loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True
)
env.filters.update(number=_number, when=_when, json_script=_json_script, spec_number=format_number)


def page(request: Request, template: str, status: int = 200, **context) -> HTMLResponse:
    """Render `template`; the session cookie is (re)sent so an anonymous visitor keeps its CSRF token."""
    current = sessions.load(request)
    html = env.get_template(template).render(request=request, session=current, csrf=current.csrf, **context)
    response = HTMLResponse(html, status_code=status)
    sessions.save(request, response, current)
    return response


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)  # after a POST: the browser GETs the new page
