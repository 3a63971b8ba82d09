"""Greedy output of the engine equals PEFT's own `generate`, for every row of mixed batches:
LoRA adapters of different ranks, (IA)^3 and the plain base decode together and join at different steps."""

from __future__ import annotations

import pytest
from helpers.serving import base_dir, chat, reference_greedy, run_until_done, serving_engine

from tuneforge.serving import AdapterRef, Request, adapter_layers

PROMPTS = ["the quick brown fox", "March 5th, 2021", "yes or no?", "January February", "lazy dog 0123"]
# (adapter name or None, prompt, max tokens, step at which the request is submitted)
SCHEDULE = [
    ("lora-a", PROMPTS[0], 14, 0),
    (None, PROMPTS[1], 10, 0),
    ("ia3", PROMPTS[2], 12, 0),
    ("lora-b", PROMPTS[3], 9, 3),
    ("lora-a", PROMPTS[4], 12, 3),
    ("ia3", PROMPTS[0], 6, 5),
    (None, PROMPTS[3], 7, 8),
]


@pytest.mark.parametrize("arch", ["llama", "cohere"])
@pytest.mark.parametrize("lora_path", ["dense", "gathered"])
def test_mixed_batch_greedy_equals_peft_generate(arch, lora_path, tiny_llama, tiny_cohere, adapters, monkeypatch):
    if lora_path == "gathered":
        monkeypatch.setattr(adapter_layers, "DENSE_MAX_SLOTS", 0)
    base = base_dir(arch, tiny_llama, tiny_cohere)
    engine = serving_engine(base, start=False)
    streams, step = [], 0
    for name, prompt, max_tokens, join_at in SCHEDULE:
        while step < join_at:
            engine.step()
            step += 1
        ref = None if name is None else AdapterRef(name, adapters[arch][name])
        streams.append(engine.submit(chat(prompt, ref, max_tokens=max_tokens)))
    run_until_done(engine, streams)
    assert engine.stats().peak_running >= 5  # rows of all four kinds really decoded together
    for (name, prompt, max_tokens, _), stream in zip(SCHEDULE, streams):
        expected = reference_greedy(base, None if name is None else adapters[arch][name], prompt, max_tokens)
        got = stream.result()
        assert list(got.token_ids) == expected, (name, prompt)
        assert got.finish_reason == ("stop" if len(expected) < max_tokens else "length")
        # a reply cut inside a multi-byte character drops its incomplete bytes (a plain decode ends with U+FFFD)
        assert got.text == engine.tokenizer.decode(expected, skip_special_tokens=True).rstrip("\ufffd")
    engine.shutdown()


@pytest.mark.parametrize("arrival", ["one per step", "together"])  # together: one prefill mixes cached and uncached rows
def test_prompts_that_share_a_prefix_reuse_its_cache_and_still_equal_peft(arrival, tiny_llama, adapters):
    system = "the quick brown fox jumps over the lazy dog 0123456789 " * 2  # several 16-token blocks
    conversations = [
        ("lora-a", "yes or no?"),
        ("lora-a", "March 5th, 2021"),  # same adapter, same system prompt: hits
        ("lora-b", "yes or no?"),  # another adapter: its keys differ, no hit
        (None, "January February"),
        ("lora-a", "yes or no?"),  # the whole prompt but its last token cached
    ]
    engine = serving_engine(tiny_llama, start=False)
    streams = []
    for name, user in conversations:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        ref = None if name is None else AdapterRef(name, adapters["llama"][name])
        streams.append(engine.submit(Request(messages=messages, adapter=ref, max_tokens=8)))
        if arrival == "one per step" or len(streams) == 1:
            engine.step()
    run_until_done(engine, streams)
    assert engine.stats().prefix_hit_tokens >= (3 if arrival == "one per step" else 2) * 16
    for (name, user), stream in zip(conversations, streams):
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        expected = reference_greedy(tiny_llama, None if name is None else adapters["llama"][name], messages, 8)
        assert list(stream.result().token_ids) == expected, (name, user)
    engine.shutdown()


LONG_SYSTEM = "the quick brown fox jumps over the lazy dog 0123456789 " * 2  # ~80 tokens of the tiny byte-level tokenizer


def system_chat(user: str, adapter=None, **kw):
    return Request(
        messages=[{"role": "system", "content": LONG_SYSTEM}, {"role": "user", "content": user}], adapter=adapter, **kw
    )


@pytest.mark.parametrize("arch", ["llama", "cohere"])
def test_chunked_prefill_keeps_running_rows_decoding_and_still_equals_peft(arch, tiny_llama, tiny_cohere, adapters):
    base = base_dir(arch, tiny_llama, tiny_cohere)
    engine = serving_engine(base, start=False, prefill_tokens=7, prefix_cache_mb=0)  # every prompt computed, 7 tokens a step
    ref = {name: AdapterRef(name, path) for name, path in adapters[arch].items()}
    running = engine.submit(chat("the quick brown fox", ref["lora-a"], max_tokens=40))
    while running.completion_tokens == 0:
        engine.step()
    late = [("ia3", "yes or no?"), ("lora-b", "March 5th, 2021"), (None, "January February")]
    streams = [engine.submit(system_chat(user, name and ref[name], max_tokens=8)) for name, user in late]
    before = running.completion_tokens
    for _ in range(5):  # ~100-token prompts at 7 tokens a step: still prefilling, and the running row goes on
        engine.step()
    assert running.completion_tokens == before + 5 and all(s.completion_tokens == 0 for s in streams)
    run_until_done(engine, [running, *streams])
    expected = reference_greedy(base, adapters[arch]["lora-a"], [{"role": "user", "content": "the quick brown fox"}], 40)
    assert list(running.result().token_ids) == expected
    for (name, user), stream in zip(late, streams):
        messages = system_chat(user).messages
        assert list(stream.result().token_ids) == reference_greedy(base, name and adapters[arch][name], messages, 8), (name, user)
    engine.shutdown()


def test_prompts_arriving_together_compute_their_shared_prefix_once(tiny_llama, adapters):
    """The followers wait for the first prompt's blocks, then take the shared 84 tokens (5 blocks and 4
    tokens of a sixth that continues differently) from the prefix cache instead of computing them."""
    engine = serving_engine(tiny_llama, start=False, prefill_tokens=32)
    lora = AdapterRef("lora-a", adapters["llama"]["lora-a"])
    users = ["yes or no?", "March 5th, 2021", "January February", "lazy dog 0123"]
    tok = engine.tokenizer
    prompts = [
        tok(tok.apply_chat_template(system_chat(u).messages, tokenize=False, add_generation_prompt=True)).input_ids for u in users
    ]
    shared = min(next(i for i, (a, b) in enumerate(zip(prompts[0], p)) if a != b) for p in prompts[1:])
    assert shared % 16 != 0  # the test is about partial blocks too
    streams = [engine.submit(system_chat(u, lora, max_tokens=6)) for u in users]
    run_until_done(engine, streams)
    assert engine.stats().prefix_hit_tokens >= 3 * shared
    for user, stream in zip(users, streams):
        assert list(stream.result().token_ids) == reference_greedy(
            tiny_llama, adapters["llama"]["lora-a"], system_chat(user).messages, 6
        )
    engine.shutdown()


def test_cancelling_a_prompt_being_prefilled_frees_its_row_and_its_followers(tiny_llama, adapters):
    engine = serving_engine(tiny_llama, start=False, prefill_tokens=8)
    ref = {name: AdapterRef(name, path) for name, path in adapters["llama"].items()}
    decoding = engine.submit(chat("lazy dog 0123", ref["ia3"], max_tokens=30))
    while decoding.completion_tokens == 0:
        engine.step()
    producer = engine.submit(system_chat("yes or no?", ref["lora-a"], max_tokens=6))
    follower = engine.submit(system_chat("March 5th, 2021", ref["lora-a"], max_tokens=6))  # waits for the producer's blocks
    other = engine.submit(system_chat("January February", None, max_tokens=6))
    for _ in range(3):
        engine.step()
    assert producer.completion_tokens == 0
    producer.cancel()
    run_until_done(engine, [decoding, producer, follower, other])
    assert producer.result().finish_reason == "cancelled"
    assert list(decoding.result().token_ids) == reference_greedy(
        tiny_llama, adapters["llama"]["ia3"], [{"role": "user", "content": "lazy dog 0123"}], 30
    )
    assert list(follower.result().token_ids) == reference_greedy(
        tiny_llama, adapters["llama"]["lora-a"], system_chat("March 5th, 2021").messages, 6
    )
    assert list(other.result().token_ids) == reference_greedy(tiny_llama, None, system_chat("January February").messages, 6)
    assert engine.stats().running == 0 and engine.stats().kv_cache_bytes == 0
    engine.shutdown()
