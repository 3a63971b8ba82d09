"""Chat datasets (OpenAI's {"messages": [...]} lines): every rule named with its line and field path,
all problems at once, one format per file, and the split and length checks on conversations."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tuneforge.data import (
    CHAT,
    PROMPT_COMPLETION,
    Conversation,
    Example,
    check_dataset,
    check_token_lengths,
    dataset_format,
    read_examples,
    scan_dataset,
    split_examples,
)
from tuneforge.errors import DatasetError

CALL = {"id": "call_1", "type": "function", "function": {"name": "get_date", "arguments": '{"city": "Oslo"}'}}
TOOLS = [{"type": "function", "function": {"name": "get_date", "description": "Today's date", "parameters": {"type": "object"}}}]


def conversation(i: int = 0) -> dict:
    return {
        "messages": [
            {"role": "system", "content": "You convert dates."},
            {"role": "user", "content": f"March {i + 1}, 2021"},
            {"role": "assistant", "content": f"2021-03-{i + 1:02d}"},
        ]
    }


GOOD = [json.dumps(conversation(i)).encode() for i in range(40)]


def write(tmp_path, lines, name="chat.jsonl"):
    path = tmp_path / name
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def problems_of(path, **kw):
    with pytest.raises(DatasetError) as e:
        scan_dataset(path, **kw)
    return e.value


def messages(*ms, **top) -> bytes:
    return json.dumps({"messages": list(ms), **top}).encode()


USER = {"role": "user", "content": "hi"}
ASSISTANT = {"role": "assistant", "content": "hello"}


def test_good_chat_file(tmp_path):
    path = write(tmp_path, GOOD)
    assert scan_dataset(path) == 40
    assert check_dataset(path).format == CHAT and dataset_format(path) == CHAT
    first = read_examples(path)[0]
    assert isinstance(first, Conversation) and first.line == 1 and first.tools is None
    assert [m["role"] for m in first.messages] == ["system", "user", "assistant"]
    assert first.messages[2] == {"role": "assistant", "content": "2021-03-01", "weight": 1}
    assert first.trained == [2]


def test_prompt_completion_file_keeps_its_format(tmp_path):
    lines = [json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}).encode() for i in range(32)]
    path = write(tmp_path, lines)
    assert dataset_format(path) == PROMPT_COMPLETION
    assert all(isinstance(e, Example) for e in read_examples(path))


def test_everything_openai_allows_is_read(tmp_path):
    line = messages(
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What day "}, {"type": "text", "text": "is it?"}], "name": "ann"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "content": "2021-03-05", "tool_call_id": "call_1"},
        {"role": "assistant", "content": "Draft", "weight": 0},
        {"role": "user", "content": "Again"},
        {"role": "assistant", "tool_calls": [{**CALL, "id": "call_2"}], "weight": 1},
        {"role": "tool", "content": "2021-03-06", "tool_call_id": "call_2"},
        {"role": "assistant", "content": "It is 5 March."},
        tools=TOOLS,
        parallel_tool_calls=False,  # other top-level keys are ignored, as in prompt/completion files
    )
    conv = read_examples(write(tmp_path, [line, *GOOD[:31]]))[0]
    assert conv.messages[0] == {"role": "system", "content": "Be brief."}  # developer is read as system
    assert conv.messages[1]["content"] == "What day is it?"  # text parts joined as written
    assert conv.messages[2]["content"] is None and conv.messages[2]["tool_calls"] == [CALL]
    assert conv.messages[6]["content"] is None
    assert conv.tools == tuple(TOOLS)
    assert conv.trained == [2, 6, 8]  # the weight-0 draft is not trained


# (line, expected field path and words) for each rule; every case sits at line 6 of a good file.
BAD = {
    "role unknown": (messages({"role": "bot", "content": "x"}, ASSISTANT), 'messages[0].role: "bot" is not a role'),
    "role missing": (messages({"content": "x"}, ASSISTANT), "messages[0].role: missing"),
    "role not a string": (messages({"role": 1, "content": "x"}, ASSISTANT), "messages[0].role: 1 is not a role"),
    "legacy function role": (messages(USER, {"role": "function", "content": "x"}, ASSISTANT), 'messages[1].role: "function"'),
    "no assistant": (messages(USER, {"role": "system", "content": "s"}), "messages: has no assistant message"),
    "all weight 0": (messages(USER, {**ASSISTANT, "weight": 0}), "messages: every assistant message has weight 0"),
    "weight 2": (messages(USER, {**ASSISTANT, "weight": 2}), "messages[1].weight: must be 0 or 1, got 2"),
    "weight true": (messages(USER, {**ASSISTANT, "weight": True}), "messages[1].weight: must be 0 or 1, got true"),
    "weight 1.0": (messages(USER, {**ASSISTANT, "weight": 1.0}), "messages[1].weight: must be 0 or 1, got 1.0"),
    "weight on user": (messages({**USER, "weight": 0}, ASSISTANT), "messages[0].weight: is allowed on assistant messages only"),
    "unknown key": (messages(USER, {**ASSISTANT, "wieght": 0}), "messages[1].wieght: is not allowed on an assistant message"),
    "tool_calls on user": (
        messages({**USER, "tool_calls": [CALL]}, ASSISTANT),
        "messages[0].tool_calls: is not allowed on a user",
    ),
    "empty content": (messages({"role": "user", "content": ""}, ASSISTANT), "messages[0].content: is empty"),
    "blank content": (messages(USER, {"role": "assistant", "content": " \n"}), "messages[1].content: is empty (only whitespace)"),
    "content missing": (messages({"role": "user"}, ASSISTANT), "messages[0].content: missing"),
    "content null": (messages(USER, {"role": "assistant", "content": None}), "messages[1].content: must be a string, got null"),
    "content number": (messages({"role": "user", "content": 3}, ASSISTANT), "messages[0].content: must be a string or an array"),
    "content empty parts": (messages({"role": "user", "content": []}, ASSISTANT), "messages[0].content: is an empty array"),
    "image part": (
        messages({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}, ASSISTANT),
        'messages[0].content[0].type: "image_url": images are not supported',
    ),
    "audio part": (
        messages({"role": "user", "content": [{"type": "input_audio"}]}, ASSISTANT),
        'messages[0].content[0].type: "input_audio": audio are not supported',
    ),
    "unknown part": (
        messages({"role": "user", "content": [{"type": "x"}]}, ASSISTANT),
        'messages[0].content[0].type: "x" is not',
    ),
    "part text not a string": (
        messages({"role": "user", "content": [{"type": "text", "text": 5}]}, ASSISTANT),
        "messages[0].content[0].text: must be a string, got number",
    ),
    "surrogate": (
        messages({"role": "user", "content": "\ud800"}, ASSISTANT),
        "messages[0].content: contains an unpaired surrogate",
    ),
    "message not an object": (messages("hi", ASSISTANT), "messages[0]: must be an object, got string"),
    "messages not an array": (b'{"messages": {"role": "user"}}', "messages: must be an array of messages, got object"),
    "messages empty": (b'{"messages": []}', "messages: is empty"),
    "tool without call id": (
        messages(USER, {"role": "assistant", "tool_calls": [CALL]}, {"role": "tool", "content": "r"}, ASSISTANT),
        "messages[2].tool_call_id: missing",
    ),
    "tool answers nothing": (
        messages(USER, {"role": "tool", "content": "r", "tool_call_id": "call_9"}, ASSISTANT),
        'messages[1].tool_call_id: "call_9" answers no tool call of an earlier assistant message',
    ),
    "tool content empty": (
        messages(USER, {"role": "assistant", "tool_calls": [CALL]}, {"role": "tool", "content": "", "tool_call_id": "call_1"}),
        "messages[2].content: is empty",
    ),
    "tool_calls empty": (
        messages(USER, {"role": "assistant", "tool_calls": []}),
        "messages[1].tool_calls: must be a non-empty array",
    ),
    "tool call arguments not JSON": (
        messages(USER, {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "f", "arguments": "{oops"}}]}),
        "messages[1].tool_calls[0].function.arguments: must be a JSON object encoded as a string",
    ),
    "tool call arguments an object": (
        messages(USER, {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "f", "arguments": {}}}]}),
        "messages[1].tool_calls[0].function.arguments: must be a JSON object encoded as a string (got object)",
    ),
    "tool call without id": (
        messages(USER, {"role": "assistant", "tool_calls": [{"type": "function", "function": CALL["function"]}]}),
        "messages[1].tool_calls[0].id: missing",
    ),
    "tool call id reused": (
        messages(USER, {"role": "assistant", "tool_calls": [CALL, CALL]}),
        'messages[1].tool_calls[1].id: "call_1" is already the id of an earlier tool call',
    ),
    "tool call type": (
        messages(USER, {"role": "assistant", "tool_calls": [{**CALL, "type": "code"}]}),
        'messages[1].tool_calls[0].type: "code" is not allowed; allowed: "function"',
    ),
    "tool call name": (
        messages(USER, {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "a b", "arguments": "{}"}}]}),
        'messages[1].tool_calls[0].function.name: "a b" is not a function name',
    ),
    "tools not an array": (messages(USER, ASSISTANT, tools={}), "tools: must be an array of tools, got object"),
    "tool type": (
        messages(USER, ASSISTANT, tools=[{"type": "retrieval", "function": {"name": "f"}}]),
        'tools[0].type: "retrieval" is not allowed',
    ),
    "tool function missing": (messages(USER, ASSISTANT, tools=[{"type": "function"}]), "tools[0].function: missing"),
    "tool name missing": (
        messages(USER, ASSISTANT, tools=[{"type": "function", "function": {}}]),
        "tools[0].function.name: missing",
    ),
    "tool parameters": (
        messages(USER, ASSISTANT, tools=[{"type": "function", "function": {"name": "f", "parameters": "x"}}]),
        "tools[0].function.parameters: must be a JSON Schema object, got string",
    ),
    "legacy functions": (
        messages(USER, ASSISTANT, functions=[{"name": "f"}]),
        'functions: OpenAI\'s legacy function format is not supported; use "tools" and "tool_calls"',
    ),
    "legacy function_call": (
        messages(USER, {**ASSISTANT, "function_call": {"name": "f"}}),
        "messages[1].function_call: is not allowed on an assistant message",
    ),
    "not an object": (b"[1, 2]", 'not a JSON object (got array); expected {"messages": [...]}'),
    "missing messages": (b'{"id": 3}', 'messages: missing; a chat line is {"messages": [...]}'),
    "prompt/completion line": (
        b'{"prompt": "a", "completion": "b"}',
        "a prompt/completion line in a chat file (the format is set by the first valid line, line 1)",
    ),
}


@pytest.mark.parametrize("bad, message", list(BAD.values()), ids=list(BAD))
def test_each_problem_is_named_with_its_line_and_field(tmp_path, bad, message):
    err = problems_of(write(tmp_path, [*GOOD[:5], bad, *GOOD[5:]]))
    assert [p.line for p in err.problems] == [6], str(err)
    assert message in err.problems[0].message
    assert f"  line 6: {err.problems[0].message}" in str(err)


def test_all_problems_reported_together(tmp_path):
    lines = list(GOOD)
    lines[3] = messages({"role": "bot", "content": "x"}, {**ASSISTANT, "weight": 3, "extra": 1})  # three on one line
    lines[9] = messages(USER)
    lines[20] = b'{"prompt": "a", "completion": "b"}'
    lines[30] = b"not json"
    err = problems_of(write(tmp_path, lines))
    assert [p.line for p in err.problems] == [4, 4, 4, 10, 21, 31]
    text = str(err)
    assert 'line 4: messages[0].role: "bot" is not a role' in text
    assert "line 4: messages[1].extra: is not allowed" in text
    assert "line 4: messages[1].weight: must be 0 or 1, got 3" in text
    assert "line 10: messages: has no assistant message" in text
    assert err.total == 6


def test_problem_cap_counts_the_rest(tmp_path):
    err = problems_of(write(tmp_path, [*GOOD, *([messages(USER)] * 60)]), max_problems=10)
    assert len(err.problems) == 10 and err.total == 60 and "... and 50 more" in str(err)


def test_a_chat_line_in_a_prompt_completion_file(tmp_path):
    lines = [json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}).encode() for i in range(33)]
    lines[7] = GOOD[0]
    err = problems_of(write(tmp_path, lines))
    assert [p.line for p in err.problems] == [8]
    assert "a chat line in a prompt/completion file (the format is set by the first valid line, line 1)" in str(err)


def test_the_first_valid_line_sets_the_format(tmp_path):
    # Line 1 is a broken chat line, line 2 a valid prompt/completion line: the file is prompt/completion,
    # and line 1 is reported in the words of the format it is written in.
    pairs = [json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}).encode() for i in range(32)]
    err = problems_of(write(tmp_path, [messages(USER), *pairs, GOOD[0]]))
    assert [p.line for p in err.problems] == [1, 34]
    assert "line 1: messages: has no assistant message" in str(err)
    assert "line 34: a chat line in a prompt/completion file (the format is set by the first valid line, line 2)" in str(err)


def test_too_few_conversations(tmp_path):
    err = problems_of(write(tmp_path, GOOD[:31]))
    assert err.problems[0].line is None and "31 valid examples; at least 32 are needed" in str(err)
    assert scan_dataset(write(tmp_path, GOOD[:1]), min_examples=1) == 1


def test_split_takes_conversations(tmp_path):
    examples = read_examples(write(tmp_path, GOOD))
    train, val = split_examples(examples, 42)
    assert len(train) == 32 and len(val) == 8
    assert sorted(e.line for e in train + val) == list(range(1, 41))


def test_token_lengths_of_conversations(tmp_path):
    long_turn = {"role": "assistant", "content": "x " * 30}
    lines = [*GOOD[:32], messages(USER, long_turn), messages({"role": "user", "content": "y " * 80}, ASSISTANT)]
    examples = read_examples(write(tmp_path, lines))
    words = lambda text: len(text.split())
    with pytest.raises(DatasetError) as e:
        check_token_lengths(
            examples,
            words,
            max_prompt_tokens=5,
            max_completion_tokens=20,
            context_tokens=50,
            path="chat.jsonl",
            context_source="weights",
        )
    problems = [str(p) for p in e.value.problems]
    assert problems == [
        "line 33: messages[1] (assistant) is 30 tokens; this model allows at most 20",
        "line 34: the conversation's messages alone are 81 tokens (before the chat template's own); "
        "this model's context is 50 (weights)",
    ]


def test_token_counts_split_trained_and_untrained(tmp_path):
    line = messages(
        USER, {**ASSISTANT, "weight": 0}, {"role": "user", "content": "again"}, {"role": "assistant", "tool_calls": [CALL]}
    )
    conv = read_examples(write(tmp_path, [line]), min_examples=1)[0]
    # hi + hello + again untrained; the tool call's name and arguments trained
    assert conv.token_counts(len) == (2 + 5 + 5, len("get_date") + len('{"city": "Oslo"}'))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.sampled_from(["role", "content", "type", "text", "id"]), kids, max_size=3)
    ),
    max_leaves=12,
)
MESSAGE = st.dictionaries(
    st.sampled_from(["role", "content", "weight", "tool_calls", "tool_call_id", "name", "x"]),
    st.sampled_from(["user", "assistant", "tool", "system", "developer"]) | JSON,
    max_size=5,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(MESSAGE | JSON, max_size=4), st.none() | JSON)
def test_no_conversation_crashes_the_reader(tmp_path, ms, tools):
    line = {"messages": ms} if tools is None else {"messages": ms, "tools": tools}
    path = write(tmp_path, [GOOD[0], json.dumps(line).encode()])
    try:
        assert scan_dataset(path, min_examples=1) == 2
    except DatasetError as err:
        assert all(p.line in (None, 2) for p in err.problems)


def plan(*args, model="meta.llama-3.3-70b-instruct"):
    from click.testing import CliRunner

    from tuneforge.cli import main

    return CliRunner().invoke(main, ["plan", "--base-model", model, *map(str, args)])


def test_plan_takes_a_chat_file_and_names_its_bad_lines(tmp_path):
    result = plan("--dataset", write(tmp_path, GOOD), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["trainingExamples"] == 32
    lines = list(GOOD)
    lines[2] = messages({"role": "bot", "content": "x"}, ASSISTANT)
    lines[5] = messages(USER, {**ASSISTANT, "weight": 0})
    result = plan("--dataset", write(tmp_path, lines))
    assert result.exit_code == 2
    assert 'line 3: messages[0].role: "bot" is not a role' in result.output
    assert "line 6: messages: every assistant message has weight 0" in result.output


def test_plan_checks_conversation_lengths_with_the_weights_tokenizer(tiny_llama, tmp_path):
    # Command R 08-2024: at most 4,000 completion tokens; Llama 3: an 8,192-token context (9,000 + "hi" and "hello": 5)
    long_answer = {"role": "assistant", "content": " March" * 5000}
    path = write(tmp_path, [*GOOD, messages(USER, long_answer)])
    result = plan("--dataset", path, "--weights", tiny_llama, model="cohere.command-r-08-2024")
    assert result.exit_code == 2
    assert "line 41: messages[1] (assistant) is 5,000 tokens; this model allows at most 4,000" in result.output
    long_question = {"role": "user", "content": " March" * 9000}
    path = write(tmp_path, [*GOOD, messages(long_question, ASSISTANT)])
    result = plan("--dataset", path, "--weights", tiny_llama, model="meta.llama-3-70b-instruct")
    assert result.exit_code == 2
    assert "line 41: the conversation's messages alone are 9,005 tokens (before the chat template's own)" in result.output
    assert "this model's context is 8,192" in result.output


def test_the_services_create_check_takes_chat_files(tiny_llama, tmp_path):
    from tuneforge.catalog import get_model
    from tuneforge.services.resources import datasets

    spec = get_model("meta.llama-3.3-70b-instruct")
    assert datasets.check(write(tmp_path, GOOD), "chat.jsonl", spec, str(tiny_llama)) == 40
    with pytest.raises(DatasetError) as err:
        datasets.check(write(tmp_path, [*GOOD, messages(USER)]), "bucket/chat.jsonl", spec, str(tiny_llama))
    assert str(err.value).startswith("dataset bucket/chat.jsonl: 1 problem(s)\n  line 41: messages: has no assistant message")
