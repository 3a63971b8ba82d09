"""Chat lines where a run is scored after training: `tuneforge eval`'s score (loss and accuracy on the
trained turns, exact match of the last trained turn generated from the messages before it) and the
learning curve's subset files, which must hold chat lines the dataset checks accept again."""

import json

import torch
from helpers.tiny_models import build_model, build_tokenizer

from tuneforge import data
from tuneforge.engine.batches import encode, encode_prompt, reply_prompt
from tuneforge.engine.generate import Loaded, score
from tuneforge.engine.train import evaluate
from tuneforge.sweeps.learning_curve import jsonl_line as curve_line

CHAT = data.Conversation(
    (
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer", "weight": 1},
        {"role": "user", "content": "second question"},
        {"role": "assistant", "content": "yes", "weight": 1},
        {"role": "user", "content": "unanswered follow-up"},
    ),
    None,
    7,
)


def test_reply_prompt_is_the_conversation_up_to_its_last_trained_turn():
    tok = build_tokenizer()
    ids, shown, expected = reply_prompt(tok, CHAT)
    head = tok.apply_chat_template(
        [{k: v for k, v in m.items() if k != "weight"} for m in CHAT.messages[:4]], tokenize=False, add_generation_prompt=True
    )
    assert ids == tok(head, add_special_tokens=False).input_ids
    assert (shown, expected) == ("second question", "yes")
    pair = data.Example("a prompt", "a completion", 3)
    assert reply_prompt(tok, pair) == (encode_prompt(tok, "a prompt"), "a prompt", "a completion")


def test_score_counts_the_trained_turns_and_matches_the_last_one():
    tok = build_tokenizer()
    model = build_model("llama", vocab_size=len(tok)).eval()
    loaded = Loaded(model, tok, "cpu", "tiny", False)
    result = score(loaded, [CHAT], max_new_tokens=3)
    loss, accuracy = evaluate(model, [encode(tok, CHAT)], tok.pad_token_id, "cpu")
    assert (result["loss"], result["accuracy"]) == (loss, accuracy)
    assert result["samples"][0]["line"] == 7 and result["samples"][0]["expected"] == "yes"
    assert result["exactMatch"] in (0.0, 1.0) and torch.isfinite(torch.tensor(result["loss"]))


def test_learning_curve_subsets_keep_chat_lines(tmp_path):
    tools = ({"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}},)
    with_tools = data.Conversation(CHAT.messages, tools, 1)
    path = tmp_path / "subset.jsonl"
    path.write_text("".join(curve_line(c) for c in [CHAT, with_tools] * 16))
    again = data.read_examples(path)
    assert [(c.messages, c.tools) for c in again[:2]] == [(CHAT.messages, None), (with_tools.messages, tools)]
    assert json.loads(path.read_text().splitlines()[0])["messages"][0] == {"role": "system", "content": "Be brief."}
