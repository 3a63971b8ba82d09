"""The OpenAI API's files and fine-tuning objects as the `openai` SDK reads them (types/file_object.py,
types/fine_tuning/*.py), and the error that carries OpenAI's `param`.

Requests are read field by field here rather than by a pydantic model: OpenAI's errors name the one
field at fault in `param` (`method.supervised.hyperparameters.n_epochs`), which is what the SDK's
users look at, and FastAPI's validation error names no single field."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tuneforge.services.errors import ServiceError

# OpenAI's error `type` for each status (what the SDK's exception classes are chosen by is the status).
_TYPES = {401: "authentication_error", 403: "permission_error", 404: "invalid_request_error", 429: "rate_limit_error"}


class OpenAIError(ServiceError):
    """A ServiceError answered in OpenAI's shape with `param` naming the field (api/openai_fine_tuning_routes.py)."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(status, code or "invalid_request_error", message)
        self.param = param
        self.kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None, code: str = "invalid_value") -> OpenAIError:
    return OpenAIError(400, message, param, code)


def not_found(message: str, param: str | None = None) -> OpenAIError:
    return OpenAIError(404, message, param, "not_found")


def shown(value: Any) -> str:
    """A rejected value as JSON would write it, cut short."""
    import json

    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = type(value).__name__
    return text if len(text) <= 80 else text[:77] + "..."


# ---- requests -------------------------------------------------------------------------------------

SUFFIX = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
METADATA_PAIRS, METADATA_KEY, METADATA_VALUE = 16, 64, 512
HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier")
# OpenAI's method types TuneForge trains, and the hyperparameters each takes (DPO adds beta: docs/dpo.md).
METHODS = {"supervised": HYPERPARAMETERS, "dpo": (*HYPERPARAMETERS, "beta")}
CREATE_FIELDS = (
    "model",
    "training_file",
    "validation_file",
    "hyperparameters",
    "method",
    "suffix",
    "seed",
    "metadata",
    "integrations",
)


@dataclass(frozen=True)
class JobRequest:
    model: str
    training_file: str
    validation_file: str | None
    hyperparameters: dict[str, Any]  # each of METHODS[method]: "auto" or a number, as sent
    hyperparameters_param: str  # where they were sent: "hyperparameters" or "method.<type>.hyperparameters"
    suffix: str | None
    seed: int | None
    metadata: dict[str, str] | None
    method: str = "supervised"  # a key of METHODS


def _string(body: dict, name: str, required: bool) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise bad_request(f"Missing required parameter: '{name}'.", name, "missing_required_parameter")
        return None
    if not isinstance(value, str) or not value.strip():
        raise bad_request(f"Invalid value for '{name}': expected a non-empty string, got {shown(value)}.", name)
    if len(value) > 512:
        raise bad_request(f"Invalid value for '{name}': longer than 512 characters.", name)
    return value


def _hyperparameters(value: Any, param: str, names: tuple[str, ...] = HYPERPARAMETERS) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request(f"Invalid type for '{param}': expected an object, got {shown(value)}.", param, "invalid_type")
    for name in value:
        if name not in names:
            allowed = ", ".join(names)
            raise bad_request(f"Unrecognized hyperparameter '{name}'; allowed: {allowed}.", f"{param}.{name}")
    for name, given in value.items():
        ok = given == "auto" or (isinstance(given, (int, float)) and not isinstance(given, bool))
        if not ok:
            raise bad_request(
                f"Invalid value for '{name}': expected \"auto\" or a number, got {shown(given)}.",
                f"{param}.{name}",
                "invalid_type",
            )
    return {k: v for k, v in value.items() if v is not None}


def _method(value: Any) -> tuple[str, dict[str, Any]] | None:
    """(the method's type, its object: `method.supervised` or `method.dpo`)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad_request(f"Invalid type for 'method': expected an object, got {shown(value)}.", "method", "invalid_type")
    kind = value.get("type")
    if kind not in METHODS:
        why = (
            "TuneForge trains 'supervised' fine-tunes and 'dpo' preference tuning (of the base model's LoRA or "
            "T-Few adapter); 'reinforcement' is not supported"
        )
        raise bad_request(f"Invalid value for 'method.type': {shown(kind)}; {why}.", "method.type")
    for name in value:
        if name not in ("type", kind):
            raise bad_request(f"Unrecognized argument 'method.{name}' for a {kind} method.", f"method.{name}")
    settings = value.get(kind) or {}
    if not isinstance(settings, dict):
        raise bad_request(f"Invalid type for 'method.{kind}': expected an object.", f"method.{kind}", "invalid_type")
    for name in settings:
        if name != "hyperparameters":
            raise bad_request(f"Unrecognized argument 'method.{kind}.{name}'.", f"method.{kind}.{name}")
    return kind, settings


def parse_job_request(body: Any) -> JobRequest:
    """The create request, every field checked for its shape (what it refers to is checked by the service)."""
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.", None, "invalid_type")
    for name in body:
        if name not in CREATE_FIELDS:
            raise bad_request(f"Unrecognized request argument supplied: {name}", name, "unknown_parameter")
    method = _method(body.get("method"))
    kind = method[0] if method is not None else "supervised"
    if method is not None and body.get("hyperparameters") is not None:
        raise bad_request(
            f"Give the hyperparameters in 'method.{kind}.hyperparameters' or in the older 'hyperparameters', not both.",
            "hyperparameters",
        )
    if method is not None:
        param = f"method.{kind}.hyperparameters"
        hyper = _hyperparameters(method[1].get("hyperparameters"), param, METHODS[kind])
    else:
        param = "hyperparameters"
        hyper = _hyperparameters(body.get("hyperparameters"), param)
    suffix = body.get("suffix")
    if suffix is not None and (not isinstance(suffix, str) or not SUFFIX.match(suffix)):
        raise bad_request(
            f"Invalid value for 'suffix': {shown(suffix)}; it must be 1 to 64 letters, digits, '.', '_' or '-'.", "suffix"
        )
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 2**31 - 1):
        raise bad_request(f"Invalid value for 'seed': {shown(seed)}; it must be an integer from 0 to 2147483647.", "seed")
    if body.get("integrations"):
        raise bad_request("Integrations (Weights & Biases) are not supported by TuneForge.", "integrations")
    return JobRequest(
        model=_string(body, "model", True),
        training_file=_string(body, "training_file", True),
        validation_file=_string(body, "validation_file", False),
        hyperparameters=hyper,
        hyperparameters_param=param,
        suffix=suffix,
        seed=seed,
        metadata=check_metadata(body.get("metadata")),
        method=kind,
    )


def check_metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad_request(f"Invalid type for 'metadata': expected an object, got {shown(value)}.", "metadata", "invalid_type")
    if len(value) > METADATA_PAIRS:
        raise bad_request(f"Invalid 'metadata': {len(value)} pairs; at most {METADATA_PAIRS} are allowed.", "metadata")
    for key, item in value.items():
        if len(key) > METADATA_KEY:
            raise bad_request(f"Invalid 'metadata': the key {shown(key)} is longer than {METADATA_KEY} characters.", "metadata")
        if not isinstance(item, str) or len(item) > METADATA_VALUE:
            raise bad_request(
                f"Invalid 'metadata.{key}': values are strings of at most {METADATA_VALUE} characters.", f"metadata.{key}"
            )
    return dict(value)


def page_limit(limit: int | None, default: int, maximum: int, param: str = "limit") -> int:
    if limit is None:
        return default
    if not 1 <= limit <= maximum:
        raise bad_request(f"Invalid value for 'limit': {limit}; it must be from 1 to {maximum}.", param)
    return limit


def cursor_page(items: list[dict[str, Any]], after: str | None, limit: int) -> dict[str, Any]:
    """OpenAI's cursor page over `items` (already in the list's order): those after the one whose id is `after`."""
    if after is not None:
        index = next((i for i, item in enumerate(items) if item["id"] == after), None)
        if index is None:
            raise bad_request(f"Invalid value for 'after': {shown(after)} is not an item of this list.", "after")
        items = items[index + 1 :]
    page = items[:limit]
    return {
        "object": "list",
        "data": page,
        "has_more": len(items) > limit,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
    }
