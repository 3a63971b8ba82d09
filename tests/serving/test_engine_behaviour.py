"""The engine's contract besides parity: seeded sampling, stop sequences, the bounded queue,
cancellation, the context limit, adapter errors and the LRU, async consumption, the pool."""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest
from helpers.serving import chat, random_peft_adapter, reference_greedy, run_until_done, serving_engine
from helpers.waiting import wait_for

from tuneforge.errors import InvalidParameter
from tuneforge.serving import AdapterInvalid, AdapterRef, AdapterUnavailable, PromptTooLong, QueueFull, Request
from tuneforge.serving.text import TextAssembler


@pytest.fixture(scope="module")
def llama_engine(tiny_llama):
    engine = serving_engine(tiny_llama, start=False)
    yield engine
    engine.shutdown()


def test_seeded_sampling_gives_the_same_text_whatever_the_batch(llama_engine, adapters):
    lora = AdapterRef("lora-a", adapters["llama"]["lora-a"])
    sampled = dict(temperature=0.9, top_p=0.9, top_k=40, frequency_penalty=0.5, presence_penalty=0.3, max_tokens=16)
    alone = llama_engine.submit(chat("the quick brown fox", lora, seed=5, **sampled))
    run_until_done(llama_engine, [alone])
    others = [("yes or no?", None, 1.2, 1), ("lazy dog", lora, 0.0, None), ("March", lora, 0.7, 2)]
    crowd = [llama_engine.submit(chat(p, a, temperature=t, seed=s, max_tokens=20)) for p, a, t, s in others]
    llama_engine.step()
    again = llama_engine.submit(chat("the quick brown fox", lora, seed=5, **sampled))
    other_seed = llama_engine.submit(chat("the quick brown fox", lora, seed=6, **sampled))
    run_until_done(llama_engine, [again, other_seed, *crowd])
    assert again.result().token_ids == alone.result().token_ids
    assert other_seed.result().token_ids != alone.result().token_ids


def test_stop_sequences_cut_the_text_exactly_and_never_stream_in_part(llama_engine, adapters):
    lora = AdapterRef("lora-a", adapters["llama"]["lora-a"])
    full = llama_engine.submit(chat("January February", lora, max_tokens=24))
    run_until_done(llama_engine, [full])
    text = full.result().text
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    cut = llama_engine.submit(chat("January February", lora, max_tokens=24, stop=["never there", stop]))
    run_until_done(llama_engine, [cut])
    result = cut.result()
    assert result.finish_reason == "stop"
    assert result.text == text[: text.index(stop)]
    assert "".join(cut) == result.text  # the deltas streamed add up to the text: no part of the stop was shown


def test_ignore_eos_runs_to_max_tokens_and_never_picks_an_end_of_turn_token(llama_engine, monkeypatch):
    plain = llama_engine.submit(chat("the quick brown fox", max_tokens=6))
    run_until_done(llama_engine, [plain])
    ids = plain.result().token_ids
    # The greedy answer's first token made an end-of-turn token: a plain request stops at it, an
    # ignore_eos one runs on with the next-best tokens to its max_tokens.
    monkeypatch.setattr(llama_engine, "_eos", {ids[0]})
    stopped = llama_engine.submit(chat("the quick brown fox", max_tokens=6))
    running = llama_engine.submit(chat("the quick brown fox", max_tokens=6, ignore_eos=True))
    run_until_done(llama_engine, [stopped, running])
    assert stopped.result().finish_reason == "stop" and stopped.result().token_ids == ids[:1]
    assert running.result().finish_reason == "length" and len(running.result().token_ids) == 6
    assert ids[0] not in running.result().token_ids
    with pytest.raises(InvalidParameter, match="ignoreEos"):
        chat("x", ignore_eos=True).validate()  # no max_tokens: it would run to the end of the context


def test_text_assembler_holds_back_a_possible_stop_until_it_is_decided(tiny_llama):
    from transformers import AutoTokenizer

    backend = AutoTokenizer.from_pretrained(tiny_llama).backend_tokenizer
    ids = backend.encode("quick brown fox jumps").ids
    assembler = TextAssembler(backend, stop=("fox j", "brown dog"))
    shown, states = "", []
    for token in ids:
        delta, stopped = assembler.add(token)
        shown += delta
        states.append((assembler.text, shown))
        if stopped:
            break
    assert stopped and shown == assembler.text == "quick brown "
    # "brown " was held back while "brown dog" was still possible
    assert any(text.endswith("brown ") and "brown" not in so_far for text, so_far in states)


def test_bounded_queue_refuses_with_a_typed_error(tiny_llama):
    engine = serving_engine(tiny_llama, start=False, max_queue=2)
    waiting = [engine.submit(chat("yes", max_tokens=2)) for _ in range(2)]
    with pytest.raises(QueueFull) as err:
        engine.submit(chat("yes", max_tokens=2))
    assert err.value.waiting == 2 and "busy" in str(err.value)
    waiting[0].cancel()
    engine.step()  # the cancelled request leaves the queue; the other runs
    assert waiting[0].result().finish_reason == "cancelled" and waiting[0].result().completion_tokens == 0
    engine.submit(chat("yes", max_tokens=2))  # room again
    engine.shutdown()
    assert all(s.done for s in waiting)


def test_prompt_longer_than_the_context_is_a_typed_error_with_the_counts(tiny_llama):
    engine = serving_engine(tiny_llama, start=False, max_context=32)
    prompt = "the quick brown fox jumps over the lazy dog " * 3
    n = engine.count_tokens(Request(prompt=prompt))
    with pytest.raises(PromptTooLong) as err:
        engine.submit(Request(prompt=prompt))
    assert (err.value.prompt_tokens, err.value.context_tokens) == (n, 32)
    assert f"{n} tokens" in str(err.value) and "32" in str(err.value)
    fits = engine.submit(Request(prompt="the quick brown", max_tokens=1000))  # runs to the end of the context
    run_until_done(engine, [fits])
    assert fits.result().finish_reason == "length"
    assert fits.result().prompt_tokens + fits.result().completion_tokens == 32
    engine.shutdown()


def test_bad_fields_are_named(llama_engine):
    bad = [
        (dict(temperature=-1), "temperature"),
        (dict(top_p=0), "topP"),
        (dict(top_k=-2), "topK"),
        (dict(max_tokens=0), "maxTokens"),
        (dict(presence_penalty=3), "presencePenalty"),
        (dict(stop=[""]), "stop"),
    ]
    for kwargs, field in bad:
        with pytest.raises(InvalidParameter) as err:
            llama_engine.submit(chat("hi", **kwargs))
        assert err.value.field == field
    with pytest.raises(InvalidParameter) as err:
        llama_engine.submit(Request(messages=[{"role": "robot", "content": "hi"}]))
    assert err.value.field == "messages[0].role"


def test_leaving_the_stream_cancels_the_request(tiny_llama):
    engine = serving_engine(tiny_llama)  # with its decode thread
    stream = engine.submit(chat("the quick brown fox", max_tokens=400))
    for _ in stream:
        break  # the client went away
    result = stream.result(timeout=30)
    assert result.finish_reason == "cancelled" and result.completion_tokens < 400
    wait_for(lambda: engine.stats().running == 0, 30, "the cancelled request to leave the batch", interval=0.001)

    async def consume():
        deltas = [d async for d in engine.submit(chat("lazy dog", max_tokens=12))]
        return deltas

    deltas = asyncio.run(consume())
    assert deltas and len("".join(deltas)) > 0
    engine.shutdown()


def test_adapter_errors_are_typed_and_name_no_path(llama_engine, adapters, tiny_llama, tmp_path):
    with pytest.raises(AdapterUnavailable) as err:
        llama_engine.submit(chat("hi", AdapterRef("gone", tmp_path / "nothing")))
    assert str(tmp_path) not in str(err.value) and "gone" in str(err.value)
    dora = tmp_path / "dora"
    shutil.copytree(adapters["llama"]["lora-a"], dora)
    config = json.loads((dora / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(AdapterInvalid, match="DoRA"):
        llama_engine.submit(chat("hi", AdapterRef("dora", dora)))
    from helpers.tiny_models import save_tiny_checkpoint

    wider = save_tiny_checkpoint(tmp_path / "wider", "llama", hidden=64)
    other = random_peft_adapter(wider, tmp_path / "other-base", "LORA", seed=4)
    with pytest.raises(AdapterInvalid, match="another base model"):
        llama_engine.submit(chat("hi", AdapterRef("other", other)))


def test_lru_evicts_idle_adapters_and_queues_when_every_slot_is_busy(tiny_llama, adapters):
    engine = serving_engine(tiny_llama, start=False, max_adapters=2)
    names = ["lora-a", "lora-b", "ia3"]
    refs = {n: AdapterRef(n, adapters["llama"][n]) for n in names}
    streams = [engine.submit(chat("the quick brown fox", refs[n], max_tokens=8)) for n in names]
    engine.step()
    assert engine.stats().running == 2 and engine.stats().waiting == 1  # two slots, both pinned: ia3 waits
    run_until_done(engine, streams)
    assert set(engine.stats().adapters) == {"lora-b", "ia3"}  # lora-a, least recently used, was evicted
    again = engine.submit(chat("the quick brown fox", refs["lora-a"], max_tokens=8))  # read back from disk
    run_until_done(engine, [again])
    for name, stream in zip(names + ["lora-a"], streams + [again]):
        assert list(stream.result().token_ids) == reference_greedy(tiny_llama, adapters["llama"][name], "the quick brown fox", 8)
    engine.shutdown()


def test_pool_shares_one_engine_per_base_and_finds_a_runs_base(tiny_llama, trained_runs, tmp_path):
    from tuneforge.serving.engine import EngineConfig
    from tuneforge.serving.pool import EnginePool

    pool = EnginePool(EngineConfig(device="cpu"))
    engine, ref = pool.for_run(trained_runs["lora"], adapter_id="ocid1.generativeaimodel.x")
    assert pool.get(tiny_llama) is engine and ref.id == "ocid1.generativeaimodel.x"
    result = engine.generate(chat("Is 7 odd?", ref, max_tokens=6))
    assert list(result.token_ids) == reference_greedy(tiny_llama, trained_runs["lora"] / "adapter", "Is 7 odd?", 6)
    with pytest.raises(AdapterUnavailable):
        pool.for_run(tmp_path / "no-run")
    pool.shutdown()


def test_rows_finishing_while_others_wait_for_their_prefill_keep_every_request(tiny_llama, adapters):
    """A decoding row that ends moves the last row into its cache slot; that last row may be one
    admitted since the last forward (its prefill not yet run, its slot past the cache's storage).
    Found by the loopback load test: IndexError in the decode thread, every request in flight failed."""
    engine = serving_engine(tiny_llama, start=False, max_batch=32, prefill_tokens=16)
    refs = [AdapterRef(name, adapters["llama"][name]) for name in ("lora-a", "ia3")]
    streams = []
    for wave in range(4):  # new rows keep arriving while earlier ones decode and end at different steps
        streams += [engine.submit(chat(f"is {wave * 8 + i} odd?", adapter=refs[i % 2], max_tokens=1 + i % 4)) for i in range(8)]
        for _ in range(3):
            engine.step()
    run_until_done(engine, streams)
    assert all(s.result().finish_reason in ("length", "stop") for s in streams)
    engine.shutdown()
