"""OCI-shaped errors: every failure is `{"code", "message"}` with OCI's status and code, and no
client input can produce a 500 (FastAPI's own 422 becomes 400 InvalidParameter). An API path that
matches no operation is 501 NotImplemented, never a misleading 404."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import Scope, Send

from tuneforge.api.auth import is_signed_path
from tuneforge.errors import TuneForgeError
from tuneforge.services.errors import ServiceError, not_implemented, validation_message

log = logging.getLogger("tuneforge.api")
STATUS_CODES = {404: "NotAuthorizedOrNotFound", 405: "MethodNotAllowed", 413: "PayloadTooLarge", 401: "NotAuthenticated"}


OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


def error_json(path: str, status: int, code: str, message: str) -> dict:
    """OCI's `{"code", "message"}`; on the OpenAI API (/openai/...) OpenAI's `{"error": {...}}`,
    which the `openai` SDK reads into its exceptions."""
    if path.startswith("/openai/"):
        kind = OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return {"code": code, "message": message}


def error_response(request: Request, status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    headers = dict(headers or {})
    request_id = getattr(request.state, "request_id", None)
    if request_id:
        headers["opc-request-id"] = request_id
    return JSONResponse(error_json(request.url.path, status, code, message), status_code=status, headers=headers)


async def send_error(scope: Scope, send: Send, err: ServiceError) -> None:
    """The same answer from an ASGI middleware, before any route ran (the request id is added by
    the request-id middleware around it)."""
    body = json.dumps(error_json(scope["path"], err.status, err.code, err.message)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _json_problem(exc: RequestValidationError) -> str | None:
    """A body that is not JSON at all, in words (FastAPI reports it as a field named by the character's offset)."""
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            where = next((p for p in err.get("loc", ()) if isinstance(p, int)), None)
            why = str((err.get("ctx") or {}).get("error") or "it cannot be parsed")
            at = f" at character {where}" if where is not None else ""
            return f"The request body is not valid JSON: {why[:1].lower() + why[1:]}{at}."
    return None


def install(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError):
        retry_after = getattr(exc, "retry_after_s", None)  # a busy model says when to come back
        headers = {"retry-after": str(retry_after)} if retry_after is not None else None
        return error_response(request, exc.status, exc.code, exc.message, headers=headers)

    @app.exception_handler(TuneForgeError)
    async def _user_error(request: Request, exc: TuneForgeError):
        return error_response(request, 400, "InvalidParameter", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return error_response(request, 400, "InvalidParameter", _json_problem(exc) or validation_message(exc))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        if exc.status_code in (404, 405) and is_signed_path(request.url.path):
            # No route matched: an OCI operation TuneForge does not implement (or a wrong path).
            err = not_implemented(f"{request.method} {request.url.path[:200]}")
            return error_response(request, err.status, err.code, err.message)
        code = STATUS_CODES.get(exc.status_code, "InvalidParameter" if exc.status_code < 500 else "InternalServerError")
        message = "Authorization failed or requested resource not found." if exc.status_code == 404 else str(exc.detail)
        return error_response(request, exc.status_code, code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(request, 500, "InternalServerError", "Internal error; the server log has the details.")
