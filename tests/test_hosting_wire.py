"""The serving errors cross the replica boundary (tuneforge/hosting/wire.py) as the same class with the
same fields, so the API answers a replica's refusal exactly as an in-process engine's."""

from __future__ import annotations

import pickle

from tuneforge import serving
from tuneforge.errors import InvalidParameter
from tuneforge.hosting.wire import from_wire, to_wire


def _across(err: Exception) -> Exception:
    return from_wire(pickle.loads(pickle.dumps(to_wire(err))))


def test_each_serving_error_comes_back_as_itself():
    errors = [
        InvalidParameter("topP", 3, "a number in (0, 1]"),
        serving.PromptTooLong(900, 512),
        serving.QueueFull(7, 3),
        serving.WaitTooLong(4, 45.2, 30.0),
        serving.StartTimeout(61.0),
        serving.AdapterUnavailable("adapter a: its training has not finished"),
        serving.AdapterInvalid("adapter a: DoRA is not served"),
        serving.EngineClosed("the model server is shutting down"),
        serving.Interrupted("the replica serving this request stopped after 3 tokens; send the request again"),
        serving.ServingError("the model failed"),
    ]
    for err in errors:
        back = _across(err)
        assert type(back) is type(err) and str(back) == str(err)
    back = _across(errors[0])
    assert (back.field, back.value, back.allowed) == ("topP", 3, "a number in (0, 1]")
    back = _across(errors[3])
    assert (back.waiting, back.retry_after_s) == (errors[3].waiting, errors[3].retry_after_s)
    assert (_across(errors[1]).prompt_tokens, _across(errors[1]).context_tokens) == (900, 512)


def test_anything_else_becomes_a_sentence_without_its_details():
    back = _across(RuntimeError("CUDA out of memory at /srv/models/secret/path"))
    assert type(back) is serving.ServingError and "/srv" not in str(back) and "log" in str(back)
