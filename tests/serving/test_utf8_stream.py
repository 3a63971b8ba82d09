"""A reply cut by max_tokens inside a multi-byte UTF-8 character: the engine drops the incomplete
bytes instead of ending the text with U+FFFD (issue 19, item 5). Seeded sampling gives the same
tokens whatever max_tokens is, so the shorter reply of a seed must be a prefix of the longer one."""

from __future__ import annotations

import pytest
from helpers.serving import chat, run_until_done, serving_engine

from tuneforge.serving.text import TextAssembler

REPLACEMENT = "\ufffd"


@pytest.fixture(scope="module")
def engine(tiny_llama):
    engine = serving_engine(tiny_llama, start=False)
    yield engine
    engine.shutdown()


def _generate(engine, seed: int, max_tokens: int):
    stream = engine.submit(chat("Is 7 odd?", temperature=1.0, seed=seed, max_tokens=max_tokens))
    run_until_done(engine, [stream])
    return "".join(stream), stream.result()


def test_the_assembler_holds_back_a_partial_character_and_drops_it_at_the_end(engine):
    tokenizer = engine.tokenizer.backend_tokenizer
    ids = tokenizer.encode("ok 👌", add_special_tokens=False).ids
    assert len(ids) > 2  # the tiny byte-level BPE spells the emoji in several byte tokens
    whole = TextAssembler(tokenizer)
    assert "".join(whole.add(i)[0] for i in ids) + whole.flush() == "ok 👌"
    cut = TextAssembler(tokenizer)
    streamed = "".join(cut.add(i)[0] for i in ids[:-1])
    assert REPLACEMENT not in streamed  # the emoji's first bytes wait for the rest
    assert streamed + cut.flush() == cut.text == "ok "  # and are dropped when the rest never comes


def test_a_reply_cut_inside_a_character_ends_before_it(engine):
    """Seeds whose sampled bytes form a whole multi-byte character, cut at every token inside it."""
    cuts = 0
    for seed in range(40):
        _, longer = _generate(engine, seed, 24)
        ids = list(longer.token_ids)
        for k in range(1, len(ids)):
            plain = engine.tokenizer.decode(ids[:k], skip_special_tokens=True)
            if not (plain.endswith(REPLACEMENT) and not longer.text.startswith(plain)):
                continue  # not inside a character that the next tokens complete
            streamed, short = _generate(engine, seed, k)
            assert short.finish_reason == "length" and list(short.token_ids) == ids[:k]
            assert not short.text.endswith(REPLACEMENT), (seed, k, short.text)
            assert longer.text.startswith(short.text) and streamed == short.text, (seed, k, short.text, longer.text)
            cuts += 1
        if cuts >= 3:
            break
    assert cuts >= 3  # the seeds above do cut replies inside characters
