"""Greedy output of the engine equals PEFT's own `generate`, for every row of mixed batches:
LoRA adapters of different ranks, (IA)^3 and the plain base decode together and join at different steps."""

from __future__ import annotations

import pytest
from conftest import base_dir, chat, reference_greedy, run_until_done, serving_engine

from tuneforge.serving import AdapterRef, Request
from tuneforge.serving import adapter_layers

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
        assert got.text == engine.tokenizer.decode(expected, skip_special_tokens=True)
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
