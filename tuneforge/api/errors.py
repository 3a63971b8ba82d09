"""OCI-shaped errors: every failure is `{"code", "message"}` with OCI's status and code, and no
client input can produce a 500 (FastAPI's own 422 becomes 400 InvalidParameter)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from tuneforge.errors import TuneForgeError

log = logging.getLogger("tuneforge.api")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def invalid(message: str) -> ApiError:
    return ApiError(400, "InvalidParameter", message)


def not_found(what: str = "resource") -> ApiError:
    # OCI never says whether the resource exists in someone else's tenancy.
    return ApiError(404, "NotAuthorizedOrNotFound", f"Authorization failed or requested {what} not found.")


def not_authenticated(why: str) -> ApiError:
    return ApiError(401, "NotAuthenticated", f"The required information to complete authentication was not provided or was incorrect: {why}")


def incorrect_state(message: str) -> ApiError:
    return ApiError(409, "IncorrectState", message)


def precondition_failed() -> ApiError:
    return ApiError(412, "PreconditionFailed", "The resource has changed: the if-match etag does not match its current etag.")


def too_many_requests(message: str) -> ApiError:
    return ApiError(429, "TooManyRequests", message)


def error_response(request: Request, status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    headers = dict(headers or {})
    request_id = getattr(request.state, "request_id", None)
    if request_id:
        headers["opc-request-id"] = request_id
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


def _location(loc: tuple) -> str:
    # ("body", "fineTuneDetails", "trainingConfig", "loraR") -> "fineTuneDetails.trainingConfig.loraR"
    parts = [str(p) for p in loc if p not in ("body", "query", "header", "path", "cookie")]
    return ".".join(parts) or str(loc[0] if loc else "request")


def validation_message(exc: RequestValidationError) -> str:
    problems = []
    for err in exc.errors()[:10]:
        where = _location(tuple(err.get("loc", ())))
        if err.get("type") == "missing":
            problems.append(f"{where}: is required")
        else:
            problems.append(f"{where}: {err.get('msg', 'is not valid')}")
    return "; ".join(problems) or "The request is not valid."


STATUS_CODES = {404: "NotAuthorizedOrNotFound", 405: "MethodNotAllowed", 413: "PayloadTooLarge", 401: "NotAuthenticated"}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_response(request, exc.status, exc.code, exc.message)

    @app.exception_handler(TuneForgeError)
    async def _user_error(request: Request, exc: TuneForgeError):
        return error_response(request, 400, "InvalidParameter", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return error_response(request, 400, "InvalidParameter", validation_message(exc))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        code = STATUS_CODES.get(exc.status_code, "InvalidParameter" if exc.status_code < 500 else "InternalServerError")
        message = "Authorization failed or requested resource not found." if exc.status_code == 404 else str(exc.detail)
        return error_response(request, exc.status_code, code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(request, 500, "InternalServerError", "Internal error; the server log has the details.")
