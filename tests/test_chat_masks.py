"""Conversations through real chat templates: the trained tokens are exactly the assistant turns of
weight 1 (content or tool call, plus the end-of-turn token), checked against masks built by hand
from the text each template renders; conversations a template cannot render or mark are refused
with the reason; a short training run's loss counts only those tokens.

The templates are the stand-in's own (SmolLM2-135M-Instruct, read from its bundled GGUF) and the
published chat templates of Llama 3.1 8B Instruct, Qwen 2.5 7B Instruct and Command R 08-2024, kept
as fixture files (tests/fixtures/chat_templates/README.md says where each comes from) and set on the
stand-in's tokenizer with their turn markers added as special tokens, as their own tokenizers have them.
"""

import copy
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from tuneforge.data import Conversation, Example, read_examples, split_indices
from tuneforge.engine.batches import (
    IGNORE,
    ChatTemplateError,
    Encoded,
    collate,
    encode,
    encode_all,
    encode_conversation,
    encode_example,
)
from tuneforge.engine.loss import completion_stats, shared_prefix_len
from tuneforge.errors import DatasetError

TEMPLATES = Path(__file__).parent / "fixtures" / "chat_templates"
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_date", "arguments": '{"city": "Oslo"}'}}
TOOLS = (
    {
        "type": "function",
        "function": {"name": "get_date", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
    },
)


def user(text):
    return {"role": "user", "content": text}


def assistant(text, weight=1):
    return {"role": "assistant", "content": text, "weight": weight}


# A system prompt, an assistant turn of weight 0, then the trained turn.
CHAT = Conversation(
    (
        {"role": "system", "content": "Be brief."},
        user("Hi there"),
        assistant("Hello!", 0),
        user("Date?"),
        assistant("2021-03-05"),
    ),
    None,
    1,
)
# A tool call (trained), the tool's answer, the final answer (trained).
TOOL_CHAT = Conversation(
    (
        user("What day is it in Oslo?"),
        {"role": "assistant", "content": None, "tool_calls": [CALL], "weight": 1},
        {"role": "tool", "content": "2021-03-05", "tool_call_id": "call_1"},
        assistant("It is 5 March."),
    ),
    TOOLS,
    2,
)


@pytest.fixture(scope="module")
def stand_in():
    from transformers import AutoTokenizer

    from tuneforge.engine.weights import STAND_IN_GGUF, STAND_IN_PACKAGE

    spec = importlib.util.find_spec(STAND_IN_PACKAGE)
    return AutoTokenizer.from_pretrained(spec.submodule_search_locations[0], gguf_file=STAND_IN_GGUF)


def with_template(tokenizer, name: str, bos: str, eos: str, markers: list[str]):
    tok = copy.deepcopy(tokenizer)
    tok.add_special_tokens({"bos_token": bos, "eos_token": eos, "additional_special_tokens": markers})
    tok.chat_template = (TEMPLATES / name).read_text()
    return tok


@pytest.fixture(scope="module")
def llama3(stand_in):
    return with_template(
        stand_in,
        "llama-3.1-8b-instruct.jinja",
        "<|begin_of_text|>",
        "<|eot_id|>",
        ["<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|python_tag|>"],
    )


@pytest.fixture(scope="module")
def qwen(stand_in):
    return with_template(stand_in, "qwen2.5-7b-instruct.jinja", "<|im_start|>", "<|im_end|>", [])


@pytest.fixture(scope="module")
def command_r(stand_in):
    return with_template(
        stand_in,
        "c4ai-command-r-08-2024.jinja",
        "<BOS_TOKEN>",
        "<|END_OF_TURN_TOKEN|>",
        ["<|START_OF_TURN_TOKEN|>", "<|USER_TOKEN|>", "<|CHATBOT_TOKEN|>", "<|SYSTEM_TOKEN|>"],
    )


def hand_built(tok, pieces: list[tuple[str, bool]]) -> tuple[list[int], list[int]]:
    """(ids, labels) from text pieces written out by hand, each tokenized on its own: labels are the
    ids of trained pieces and IGNORE elsewhere."""
    ids, labels = [], []
    for text, trained in pieces:
        piece = tok(text, add_special_tokens=False).input_ids
        ids += piece
        labels += piece if trained else [IGNORE] * len(piece)
    return ids, labels


def assert_mask(tok, e: Encoded, pieces):
    ids, labels = hand_built(tok, pieces)
    assert e.input_ids == ids
    assert collate([e], tok.pad_token_id)["labels"][0].tolist() == labels
    assert e.completion_len == sum(label != IGNORE for label in labels)


CHATML_CHAT = [
    (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
        "Hello!<|im_end|>\n<|im_start|>user\nDate?<|im_end|>\n<|im_start|>assistant\n",
        False,
    ),
    ("2021-03-05<|im_end|>", True),
]


def test_stand_in_template(stand_in):
    assert "SmolLM" in stand_in.chat_template  # the GGUF's own template, not a test's
    assert_mask(stand_in, encode_conversation(stand_in, CHAT), CHATML_CHAT)


def test_stand_in_default_system_prompt_is_context_not_trained(stand_in):
    conv = Conversation((user("Date?"), assistant("2021-03-05")), None, 1)
    pieces = [
        (
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            "<|im_start|>user\nDate?<|im_end|>\n<|im_start|>assistant\n",
            False,
        ),
        ("2021-03-05<|im_end|>", True),
    ]
    assert_mask(stand_in, encode_conversation(stand_in, conv), pieces)


def test_llama3_template(llama3):
    pieces = [
        (
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
            "Today Date: 26 Jul 2024\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
            "Date?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
            False,
        ),
        ("2021-03-05<|eot_id|>", True),
    ]
    assert_mask(llama3, encode_conversation(llama3, CHAT), pieces)


def test_llama3_template_with_tools(llama3):
    tool_json = json.dumps(TOOLS[0], indent=4)
    pieces = [
        (
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\n"
            "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nGiven the following functions, please respond with a JSON for a "
            "function call with its proper arguments that best answers the given prompt.\n\n"
            'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.'
            f"Do not use variables.\n\n{tool_json}\n\nWhat day is it in Oslo?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n",
            False,
        ),
        ('{"name": "get_date", "parameters": {"city": "Oslo"}}<|eot_id|>', True),
        (
            '<|start_header_id|>ipython<|end_header_id|>\n\n"2021-03-05"<|eot_id|>'
            "<|start_header_id|>assistant<|end_header_id|>\n\n",
            False,
        ),
        ("It is 5 March.<|eot_id|>", True),
    ]
    assert_mask(llama3, encode_conversation(llama3, TOOL_CHAT), pieces)


def test_qwen_template(qwen):
    assert_mask(qwen, encode_conversation(qwen, CHAT), CHATML_CHAT)


def test_qwen_template_with_tools(qwen):
    tool_json = json.dumps(TOOLS[0])
    pieces = [
        (
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n# Tools\n\n"
            "You may call one or more functions to assist with the user query.\n\n"
            f"You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tool_json}\n</tools>\n\n"
            "For each function call, return a json object with function name and arguments within <tool_call></tool_call> "
            'XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
            "<|im_start|>user\nWhat day is it in Oslo?<|im_end|>\n<|im_start|>assistant\n",
            False,
        ),
        ('<tool_call>\n{"name": "get_date", "arguments": {"city": "Oslo"}}\n</tool_call><|im_end|>', True),
        ("\n<|im_start|>user\n<tool_response>\n2021-03-05\n</tool_response><|im_end|>\n<|im_start|>assistant\n", False),
        ("It is 5 March.<|im_end|>", True),
    ]
    assert_mask(qwen, encode_conversation(qwen, TOOL_CHAT), pieces)


def test_command_r_template(command_r):
    pieces = [
        (
            "<BOS_TOKEN><|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>Be brief.<|END_OF_TURN_TOKEN|>"
            "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>Hi there<|END_OF_TURN_TOKEN|>"
            "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>Hello!<|END_OF_TURN_TOKEN|>"
            "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>Date?<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>",
            False,
        ),
        ("2021-03-05<|END_OF_TURN_TOKEN|>", True),
    ]
    assert_mask(command_r, encode_conversation(command_r, CHAT), pieces)


@pytest.mark.parametrize("template", ["stand_in", "llama3", "qwen", "command_r"])
def test_weight_0_turns_are_not_trained_and_weight_1_turns_are(template, request):
    tok = request.getfixturevalue(template)
    skipped = encode_conversation(tok, CHAT)
    both = encode_conversation(tok, Conversation((*CHAT.messages[:2], assistant("Hello!", 1), *CHAT.messages[3:]), None, 1))
    assert [tok.decode(both.input_ids[s:e]) for s, e in both.spans] == [
        "Hello!" + tok.eos_token,
        "2021-03-05" + tok.eos_token,
    ]
    assert [tok.decode(skipped.input_ids[s:e]) for s, e in skipped.spans] == ["2021-03-05" + tok.eos_token]
    # the same text (tokenized at other boundaries: every trained turn is a piece of its own)
    assert tok.decode(skipped.input_ids) == tok.decode(both.input_ids)


def test_text_after_the_last_trained_turn_is_left_out(stand_in):
    longer = Conversation((*CHAT.messages, user("Thanks"), assistant("Welcome", 0)), None, 1)
    assert encode_conversation(stand_in, longer) == encode_conversation(stand_in, CHAT)


def test_prompt_completion_rows_keep_todays_tokens(stand_in):
    e = encode(stand_in, Example("Is 3 odd?", "yes", 1))
    assert e == encode_example(stand_in, "Is 3 odd?", "yes")
    assert e.spans == ((e.prompt_len, len(e.input_ids)),)


# Templates made for the refusals below: each breaks one thing a real template can break.
DROPS_EARLIER_REASONING = (  # as reasoning models' templates do with earlier turns' <think> blocks
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.role == 'assistant' and not loop.last %}{{ m.content.split('</think>')[-1] }}{% else %}{{ m.content }}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
PROMPT_NOT_A_PREFIX = (  # the generation prompt opens a thinking block the rendered turn does not have
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)
NO_SYSTEM = (
    "{% for m in messages %}{% if m.role != 'system' %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def custom(tokenizer, template: str):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = template
    return tok


REASONING = Conversation(
    (user("Q1"), assistant("<think>hmm</think>A1"), user("Q2"), assistant("<think>so</think>A2")),
    None,
    1,
)


@pytest.mark.parametrize(
    "template, conv, message",
    [
        (
            "stand_in",
            TOOL_CHAT,
            'tools: the chat template of SmolLM2 does not support tools (it never reads them); remove "tools"',
        ),
        (
            "stand_in",
            Conversation(TOOL_CHAT.messages, None, 2),
            "messages[1].tool_calls: the chat template of SmolLM2 does not support tool calls",
        ),
        ("command_r", TOOL_CHAT, "tools: the chat template of SmolLM2 does not support tools"),
        (
            "command_r",
            Conversation((CHAT.messages[0], user("a"), user("b"), assistant("c")), None, 1),
            "cannot render this conversation: Conversation roles must alternate user/assistant/user/assistant/...",
        ),
        (
            "llama3",
            Conversation(
                (user("Dates?"), {"role": "assistant", "tool_calls": [CALL, {**CALL, "id": "call_2"}], "weight": 1}), TOOLS, 1
            ),
            "cannot render this conversation: This model only supports single tool-calls at once!",
        ),
        (
            "stand_in",
            Conversation((assistant("Hello"), user("Hi")), None, 1),
            "messages[0]: a conversation that opens with an assistant message cannot have it trained on",
        ),
    ],
    ids=["tools", "tool calls", "command-r tools", "command-r roles", "llama parallel calls", "assistant first"],
)
def test_refusals_name_the_template_and_what_is_missing(template, conv, message, request):
    tok = request.getfixturevalue(template)
    with pytest.raises(ChatTemplateError) as err:
        encode_conversation(tok, conv, model="SmolLM2")
    assert message in str(err.value)


def test_a_template_that_rewrites_earlier_turns_is_refused_unless_they_are_not_trained(stand_in):
    tok = custom(stand_in, DROPS_EARLIER_REASONING)
    with pytest.raises(ChatTemplateError, match=r"messages\[1\]: .* rewrites this assistant turn when later messages follow"):
        encode_conversation(tok, REASONING)
    first_skipped = Conversation(
        (*REASONING.messages[:1], assistant("<think>hmm</think>A1", 0), *REASONING.messages[2:]), None, 1
    )
    e = encode_conversation(tok, first_skipped)
    assert [tok.decode(e.input_ids[s:end]) for s, end in e.spans] == ["<think>so</think>A2<|im_end|>"]


def test_a_generation_prompt_that_is_not_the_turns_start_is_refused(stand_in):
    with pytest.raises(ChatTemplateError, match="renders an assistant turn differently from its generation prompt"):
        encode_conversation(custom(stand_in, PROMPT_NOT_A_PREFIX), CHAT)


def test_a_template_that_drops_a_message_is_refused(stand_in):
    with pytest.raises(ChatTemplateError, match=r"messages\[0\]: the chat template of .* leaves this system message out"):
        encode_conversation(custom(stand_in, NO_SYSTEM), CHAT)


def test_encode_all_names_every_bad_line_at_once(stand_in):
    items = [
        Conversation(CHAT.messages, None, 3),
        Conversation(TOOL_CHAT.messages, TOOLS, 5),
        Example("Is 3 odd?", "yes", 6),
        Conversation((*CHAT.messages[:4], assistant("word " * 40)), None, 8),
    ]
    with pytest.raises(DatasetError) as err:
        encode_all(stand_in, items, path="chat.jsonl", context_tokens=60, context_source="the stand-in's limit", model="X")
    problems = [str(p) for p in err.value.problems]
    assert problems[0].startswith(
        'line 5: tools: the chat template of X does not support tools (it never reads them); remove "tools"'
    )
    n = len(encode_conversation(stand_in, items[3]).input_ids)
    assert problems[1] == (
        f"line 8: the conversation is {n} tokens as the chat template renders it; this model's context is 60 (the stand-in's limit)"
    )
    assert len(problems) == 2 and err.value.total == 2
    assert len(encode_all(stand_in, items[:1] + items[2:3], path="chat.jsonl", context_tokens=60)) == 2


def test_shared_prefix_stops_before_the_first_trained_token_of_any_row(stand_in):
    other = Conversation((*CHAT.messages[:3], user("Year?"), assistant("2021")), None, 1)
    rows = [encode_conversation(stand_in, CHAT), encode_conversation(stand_in, other)]
    # "Hello!" has weight 0: the rows share everything up to the second user turn's text
    shared = shared_prefix_len(collate(rows, stand_in.pad_token_id))
    assert shared > len(hand_built(stand_in, [("<|im_start|>system\nBe brief.<|im_end|>\n", False)])[0])
    # "Hello!" trained in one row: the shared prefix stops before it, though the rows share it
    greeted = encode_conversation(stand_in, Conversation((*CHAT.messages[:2], assistant("Hello!"), *CHAT.messages[3:]), None, 1))
    assert shared_prefix_len(collate([greeted, rows[1]], stand_in.pad_token_id)) == greeted.spans[0][0] - 1 < shared


# --- a short training run on a tiny random model: the loss counts the trained turns and nothing else


def chat_dataset(path: Path, n: int = 40) -> Path:
    """Parity questions as conversations: a weight-0 greeting turn, then the trained answer."""
    with path.open("w") as f:
        for i in range(n):
            a = (7 * i + 3) % 100
            messages = [
                {"role": "system", "content": "Answer yes or no."},
                {"role": "user", "content": "Hello"},
                {"role": "assistant", "content": "Hi! Ask away.", "weight": 0},
                {"role": "user", "content": f"Is {a} odd?"},
                {"role": "assistant", "content": "yes" if a % 2 else "no"},
            ]
            f.write(json.dumps({"messages": messages}) + "\n")
    return path


def hand_pieces(conv: Conversation) -> list[tuple[str, bool]]:
    m = conv.messages
    return [
        (
            f"<|im_start|>system\n{m[0]['content']}<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
            f"<|im_start|>assistant\nHi! Ask away.<|im_end|>\n<|im_start|>user\n{m[3]['content']}<|im_end|>\n"
            "<|im_start|>assistant\n",
            False,
        ),
        (f"{m[4]['content']}<|im_end|>", True),
    ]


def test_training_on_conversations_counts_only_assistant_tokens(tiny_llama, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.catalog import get_model
    from tuneforge.engine.train import RunSpec, fine_tune
    from tuneforge.engine.weights import resolve_weights
    from tuneforge.hyperparams import resolve_training_config

    dataset = chat_dataset(tmp_path / "chat.jsonl")
    model = get_model("meta.llama-3.3-70b-instruct")
    run = RunSpec(
        base_model=model,
        config=resolve_training_config(model, {"totalTrainingEpochs": 2, "learningRate": 0.05, "earlyStoppingPatience": 0}),
        dataset=dataset,
        weights=resolve_weights(str(tiny_llama), model_id=model.id, weights_repo=model.weights_repo),
        output=tmp_path / "out",
        precision="fp32",
    )
    result = fine_tune(run)
    assert result.steps_run == 2 * -(-32 // 8)

    # The final loss and accuracy by hand: the trained adapter in plain PEFT, each validation
    # conversation's full rendering through the model, cross-entropy at the hand-built mask only.
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    peft = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32), run.output / "adapter"
    )
    peft.eval()
    conversations = read_examples(dataset)
    _, val = split_indices(len(conversations), run.seed)
    loss_sum, correct, tokens = 0.0, 0, 0
    with torch.no_grad():
        for i in val:
            ids, labels = hand_built(tok, hand_pieces(conversations[i]))
            logits = peft(torch.tensor([ids])).logits[0, :-1]
            targets = torch.tensor(labels[1:])
            where = targets != IGNORE
            loss_sum += float(torch.nn.functional.cross_entropy(logits[where], targets[where], reduction="sum"))
            correct += int((logits[where].argmax(-1) == targets[where]).sum())
            tokens += int(where.sum())
    answers = [conversations[i].messages[4]["content"] + "<|im_end|>" for i in val]
    assert tokens == sum(len(tok(a, add_special_tokens=False).input_ids) for a in answers)  # the greeting turn is not in it
    assert result.final_loss == pytest.approx(loss_sum / tokens, rel=1e-4)
    assert result.final_accuracy == pytest.approx(correct / tokens, abs=1e-6)


def test_completion_stats_over_several_spans_match_a_hand_computation(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    two_turns = Conversation((user("Hello"), assistant("Hi"), user("Is 3 odd?"), assistant("yes")), None, 1)
    rows = [
        encode_conversation(tok, two_turns),
        encode_conversation(tok, Conversation((user("Is 4 odd?"), assistant("no")), None, 2)),
    ]
    assert len(rows[0].spans) == 2
    batch = collate(rows, tok.pad_token_id)
    with torch.no_grad():
        stats = completion_stats(model, batch, share_prefix=False)
        logits = model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    targets = batch["labels"][:, 1:]
    where = targets != IGNORE
    assert stats.tokens == int(where.sum()) == sum(e.completion_len for e in rows)
    want = torch.nn.functional.cross_entropy(logits[where], targets[where], reduction="sum")
    assert float(stats.loss_sum) == pytest.approx(float(want), rel=1e-5)


def test_a_chat_file_the_template_cannot_render_fails_the_run_naming_the_line(tiny_llama, tmp_path):
    from tuneforge.catalog import get_model
    from tuneforge.engine.train import RunSpec, fine_tune
    from tuneforge.engine.weights import resolve_weights
    from tuneforge.hyperparams import resolve_training_config

    dataset = chat_dataset(tmp_path / "chat.jsonl")
    lines = dataset.read_text().splitlines()
    lines[4] = json.dumps({"messages": json.loads(lines[4])["messages"], "tools": list(TOOLS)})
    dataset.write_text("\n".join(lines) + "\n")
    model = get_model("meta.llama-3.3-70b-instruct")
    run = RunSpec(
        base_model=model,
        config=resolve_training_config(model, {"totalTrainingEpochs": 1}),
        dataset=dataset,
        weights=resolve_weights(str(tiny_llama), model_id=model.id, weights_repo=model.weights_repo),
        output=tmp_path / "out",
        precision="fp32",
    )
    with pytest.raises(DatasetError) as err:
        fine_tune(run)
    assert [p.line for p in err.value.problems] == [5]
    assert "line 5: tools: the chat template of meta.llama-3.3-70b-instruct does not support tools" in str(err.value)
    assert str(tiny_llama) not in str(err.value)  # the model's id, never the server's path to its weights
