"""Admission by expected wait (issue 19, item 2): a request that would wait longer than the engine's
`max_wait_s` for a row is refused at once (WaitTooLong, a QueueFull with a retry delay), and one that
waited past the start deadline anyway is ended (StartTimeout). Driven step by step (start=False), so
what is running and queued at each submit is exact."""

from __future__ import annotations

import pytest
from helpers.serving import chat, run_until_done, serving_engine

from tuneforge.serving import QueueFull
from tuneforge.serving.requests import StartTimeout, WaitTooLong


@pytest.fixture
def engine(tiny_llama, request):
    engine = serving_engine(tiny_llama, start=False, max_batch=1, **request.param)
    yield engine
    engine.shutdown()


@pytest.mark.parametrize("engine", [{"max_wait_s": 0.0}], indirect=True)
def test_a_request_that_would_wait_past_the_bound_is_refused_at_once(engine):
    running = engine.submit(chat("the quick brown fox", max_tokens=64))
    engine.step()  # it holds the only row; the step is timed
    assert not running.done and engine.stats().running == 1
    assert engine.expected_wait_s() > 0
    with pytest.raises(WaitTooLong) as refused:
        engine.submit(chat("yes or no?", max_tokens=4))
    assert isinstance(refused.value, QueueFull) and refused.value.retry_after_s >= 1
    assert "would wait about" in str(refused.value) and "bound of 0 s" in str(refused.value)
    assert engine.stats().waiting == 0  # refused, not queued
    run_until_done(engine, [running])
    assert engine.expected_wait_s() == 0  # the row is free again: admitted
    later = engine.submit(chat("yes or no?", max_tokens=4))
    run_until_done(engine, [later])
    assert later.result().finish_reason in ("stop", "length")


@pytest.mark.parametrize("engine", [{"max_wait_s": None}], indirect=True)
def test_without_a_bound_only_the_queue_length_refuses(engine):
    running = engine.submit(chat("the quick brown fox", max_tokens=64))
    engine.step()
    queued = engine.submit(chat("yes or no?", max_tokens=4))  # waits behind it
    run_until_done(engine, [running, queued])
    assert queued.result().finish_reason in ("stop", "length")


@pytest.mark.parametrize("engine", [{"max_wait_s": 0.0}], indirect=True)
def test_a_queued_request_that_does_not_start_by_its_deadline_is_ended(engine):
    # Both are queued before any step is timed (no estimate yet); the first takes the only row, the
    # second is past its deadline (2 x 0 s) at that same step.
    first = engine.submit(chat("the quick brown fox", max_tokens=8))
    second = engine.submit(chat("yes or no?", max_tokens=4))
    engine.step()
    with pytest.raises(StartTimeout) as ended:
        second.result(timeout=0)
    assert "without starting" in str(ended.value)
    run_until_done(engine, [first])
    assert first.result().finish_reason in ("stop", "length")
