"""Errors of the service layer, in OCI's vocabulary: each carries the HTTP status and the error
code OCI uses (the SDK raises `ServiceError(status, code)` from them, and retries 409
IncorrectState and 429 by itself). The message is for the person who made the request: it names
what is wrong and what is allowed, and never holds a server path, a traceback or a Python repr."""

from __future__ import annotations

import json


class ServiceError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def invalid(message: str) -> ServiceError:
    return ServiceError(400, "InvalidParameter", message)


def not_found(what: str = "resource") -> ServiceError:
    # OCI never says whether the resource exists in someone else's tenancy.
    return ServiceError(404, "NotAuthorizedOrNotFound", f"Authorization failed or requested {what} not found.")


def not_authenticated(why: str) -> ServiceError:
    return ServiceError(
        401, "NotAuthenticated", f"The required information to complete authentication was not provided or was incorrect: {why}"
    )


def incorrect_state(message: str) -> ServiceError:
    return ServiceError(409, "IncorrectState", message)


def precondition_failed() -> ServiceError:
    return ServiceError(412, "PreconditionFailed", "The resource has changed: the if-match etag does not match its current etag.")


def too_many_requests(message: str) -> ServiceError:
    return ServiceError(429, "TooManyRequests", message)


def payload_too_large(what: str, limit: int) -> ServiceError:
    return ServiceError(413, "PayloadTooLarge", f"{what} is larger than this service accepts ({limit:,} bytes at most).")


def not_implemented(what: str) -> ServiceError:
    return ServiceError(501, "NotImplemented", f"{what} matches no operation TuneForge implements (docs/service.md lists them).")


def _location(loc: tuple) -> str:
    # ("body", "fineTuneDetails", "trainingConfig", "loraR") -> "fineTuneDetails.trainingConfig.loraR"
    parts = [str(p) for p in loc if p not in ("body", "query", "header", "path", "cookie")]
    return ".".join(parts) or str(loc[0] if loc else "request")


def _shown(value) -> str | None:
    """A rejected scalar as JSON would write it (never a Python repr), cut short when long."""
    if not isinstance(value, (str, int, float)):
        return None
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def validation_message(exc) -> str:
    """A pydantic (or FastAPI request) validation error in words: each field by its API path, the
    rejected value as JSON would write it, and what is allowed."""
    problems = []
    for err in exc.errors()[:10]:
        where = _location(tuple(err.get("loc", ())))
        if err.get("type") == "missing":
            problems.append(f"{where}: is required")
            continue
        shown = _shown(err.get("input"))
        value = f"{shown} is not allowed; " if shown is not None else ""
        msg = str(err.get("msg") or "is not valid")
        problems.append(f"{where}: {value}{msg[:1].lower() + msg[1:]}")
    return "; ".join(problems) or "The request is not valid."
