"""The console as one piece: `install(app)` mounts every page module's routes and the redirect to the
login page that a page without a signed-in session gets, and the static assets (web/static) are
served here, whichever page asks for them."""

from __future__ import annotations

import os

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import FileResponse, JSONResponse

from tuneforge.web import cluster_pages, model_pages, signin_pages, sweep_pages, try_it_pages
from tuneforge.web import session as sessions
from tuneforge.web.deps import SignInRequired
from tuneforge.web.render import STATIC, redirect

router = APIRouter(include_in_schema=False)  # not part of the OCI API document (schemathesis reads it)


def install(app: FastAPI) -> None:
    for module in (signin_pages, cluster_pages, try_it_pages, sweep_pages):
        app.include_router(module.router)
    app.include_router(router)
    app.include_router(model_pages.router)

    @app.exception_handler(SignInRequired)
    async def _sign_in_first(request: Request, exc: SignInRequired) -> Response:
        if request.url.path.startswith("/console/api/"):
            return JSONResponse({"message": "sign in first"}, status_code=401)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        response = redirect(signin_pages.sign_in_url(target, "session-ended" if sessions.load(request).ended else None))
        sessions.save(request, response, sessions.load(request))  # the dead session's cookie is replaced
        return response


@router.get("/console/static/{name}")
def static(name: str) -> Response:
    # Only files that ship in web/static; the name is never joined into a path unchecked.
    if name not in os.listdir(STATIC):
        return Response(status_code=404)
    media = {"js": "text/javascript", "css": "text/css", "svg": "image/svg+xml"}.get(
        name.rsplit(".", 1)[-1], "application/octet-stream"
    )
    return FileResponse(STATIC / name, media_type=media, headers={"cache-control": "max-age=300"})
