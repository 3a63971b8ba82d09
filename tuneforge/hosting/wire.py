"""The contract between the API server's router and a hosting replica (tuneforge/hosting): what crosses
the process (or Ray) boundary besides `Request`, `Weights` and `Completion`, which pickle as they are.

Errors do not cross as exceptions: the serving errors carry fields their constructors rebuild
(QueueFull's retry_after_s, InvalidParameter's field), which pickling an exception loses. A replica
sends `to_wire(err)`, the router raises `from_wire(...)`: the same class with the same fields, so the
API maps it to the same status and sentence as an error of an engine in its own process.
"""

from __future__ import annotations

from tuneforge import serving
from tuneforge.errors import InvalidParameter

POLL_S = 5.0  # the longest a router's read of a replica's stream waits for a delta before asking again

_QUEUE_ERRORS = {cls.__name__: cls for cls in (serving.QueueFull, serving.WaitTooLong, serving.StartTimeout)}
_PLAIN_ERRORS = {
    cls.__name__: cls
    for cls in (
        serving.ServingError,
        serving.PromptTooLong,
        serving.AdapterUnavailable,
        serving.AdapterInvalid,
        serving.EngineClosed,
        serving.Interrupted,
    )
}


def to_wire(err: Exception) -> dict:
    """A serving error (or InvalidParameter) as plain data; anything else becomes a ServingError
    whose sentence hides what it was (the replica's log has the traceback)."""
    if isinstance(err, InvalidParameter):
        return {"kind": "InvalidParameter", "field": err.field, "value": err.value, "allowed": err.allowed}
    if isinstance(err, serving.QueueFull):
        return {"kind": type(err).__name__, "message": str(err), "waiting": err.waiting, "retry_after_s": err.retry_after_s}
    if isinstance(err, serving.PromptTooLong):
        return {"kind": "PromptTooLong", "prompt_tokens": err.prompt_tokens, "context_tokens": err.context_tokens}
    if type(err).__name__ in _PLAIN_ERRORS:
        return {"kind": type(err).__name__, "message": str(err)}
    return {"kind": "ServingError", "message": "the model failed; the server's log has the details"}


def from_wire(wire: dict) -> Exception:
    kind = wire["kind"]
    if kind == "InvalidParameter":
        return InvalidParameter(wire["field"], wire["value"], wire["allowed"])
    if kind == "PromptTooLong":
        return serving.PromptTooLong(wire["prompt_tokens"], wire["context_tokens"])
    if kind in _QUEUE_ERRORS:  # the subclass, with the replica's own sentence and Retry-After
        err = _QUEUE_ERRORS[kind].__new__(_QUEUE_ERRORS[kind])
        serving.QueueFull.__init__(err, wire["waiting"], wire["retry_after_s"], wire["message"])
        return err
    return _PLAIN_ERRORS.get(kind, serving.ServingError)(wire["message"])
