"""Sign in and out of the console.

The login page never shows text taken from its URL: a refused sign-in redirects with an error
*code* (`?error=wrong-password`) that the page maps to one of the fixed texts in `MESSAGES`; an
unknown code shows nothing. Password checks are bounded (scrypt costs CPU); an API-key sign-in
verifies the browser's signature of a one-time challenge (users.py).
"""

from __future__ import annotations

import threading
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from tuneforge.web import session as sessions
from tuneforge.web.deps import ServicesDep, csrf_rejected, form_with_csrf
from tuneforge.web.render import page, redirect
from tuneforge.web.users import KeySignInRefused, check_key_sign_in, check_password, new_challenge, user_tenancy

router = APIRouter(include_in_schema=False)
# scrypt costs ~50 ms of CPU per sign-in attempt: at most this many run at once, the rest are told
# to retry, so sign-in attempts cannot take the server's cores away from everyone else.
PASSWORD_CHECKS = threading.BoundedSemaphore(2)

MESSAGES = {
    "wrong-password": "Wrong username or password.",
    "busy": "Too many sign-in attempts at once; try again in a moment.",
    "session-ended": "Your session has ended (you signed out, your user or key was removed, or 12 hours passed). Sign in again.",
    "key-unknown": "The key signed the challenge, but it is not registered: register its public half with "
    "tuneforge api-keys add, or choose another key.",
    "key-expired": "The sign-in page was open for more than 5 minutes, so its challenge expired. Sign in again.",
    "key-used": "That sign-in challenge was already used. Sign in again from this page.",
    "key-page": "The sign-in form was not one this server issued. Sign in again from this page.",
    "key-signature": "The browser sent no usable signature. Choose your private key file again.",
}


def sign_in_url(target: str, error: str | None = None) -> str:
    query = {"next": target, **({"error": error} if error else {})}
    return "/console/login?" + urlencode(query, quote_via=quote)


def safe_next(target: str | None) -> str:
    """Only paths on this server: "//evil.example" or "https://..." would make an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


@router.get("/console/login")
def login_page(request: Request, next: str = "/", error: str | None = None) -> Response:
    challenge = new_challenge(sessions.session_key(request))
    return page(request, "login.html", next=safe_next(next), error=MESSAGES.get(error or ""), challenge=challenge)


def _sign_in(request: Request, tenancy: str, user: str, via: str, target: str, key_id: str | None = None) -> Response:
    response = redirect(safe_next(target))
    sessions.save(request, response, sessions.start(request, tenancy, user, via, key_id))
    return response


def _checked_password(data_dir, username: str, password: str) -> str | bool | None:
    """The user's tenancy, None for a wrong password, False when too many checks already run."""
    if not PASSWORD_CHECKS.acquire(blocking=False):
        return False
    try:
        return check_password(data_dir, username, password)
    finally:
        PASSWORD_CHECKS.release()


@router.post("/console/login")
async def login(request: Request, svc: ServicesDep) -> Response:
    form = await form_with_csrf(request)
    if form is None:
        return csrf_rejected(request)
    target = safe_next(str(form.get("next") or "/"))
    data_dir = svc.config.data_dir
    if form.get("method") == "api-key":
        challenge, signature = str(form.get("challenge") or "")[:512], str(form.get("signature") or "")[:4096]
        key = sessions.session_key(request)
        try:
            with svc.session() as db:
                holder = await run_in_threadpool(check_key_sign_in, db, data_dir, key, challenge, signature)
        except KeySignInRefused as refused:
            return redirect(sign_in_url(target, refused.code))
        return _sign_in(request, holder.tenancy, holder.user, "api-key", target, holder.key_id)
    username = str(form.get("username") or "")[:128]
    tenancy = await run_in_threadpool(_checked_password, data_dir, username, str(form.get("password") or "")[:1024])
    if tenancy is False:
        return page(request, "error.html", status=429, title="Busy", message=MESSAGES["busy"])
    if tenancy is None:
        return redirect(sign_in_url(target, "wrong-password"))
    response = _sign_in(request, tenancy, username, "password", target)
    if user_tenancy(data_dir, username) != tenancy:  # removed while we checked: its sessions must end, this one too
        sessions.end(request, sessions.load(request))
        return redirect(sign_in_url(target, "wrong-password"))
    return response


@router.post("/console/logout")
async def logout(request: Request) -> Response:
    if await form_with_csrf(request) is None:
        return csrf_rejected(request)
    sessions.end(request, sessions.load(request))
    response = redirect("/console/login")
    response.delete_cookie(sessions.COOKIE, path="/")
    return response
