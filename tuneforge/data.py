"""Fine-tuning datasets: OCI's JSONL rules (oci-api.md §5.2) and OpenAI's chat lines, the 80:20 split,
token-length checks. docs/datasets.md states every rule for users.

Stdlib only at module level: `tuneforge plan` imports this and must answer in well under a second.

Rules, beyond OCI's text where it was silent:
- The file is read line by line in binary, so a 1 GB file never sits in memory, and line numbers
  are physical `\\n`-separated lines as an editor shows them.
- Blank or whitespace-only lines are skipped (a trailing newline or an empty last line is common).
- A UTF-8 byte-order mark at the start of the file is tolerated (Windows editors write one).
- Each other line must be a JSON object whose "prompt" and "completion" are non-empty strings
  (whitespace-only counts as empty: a model cannot learn from nothing, and OCI asks for
  "a prompt"). Other keys are ignored, so files exported with ids or metadata still load.
- Every problem in the file is reported at once (up to a cap), each with its line number.

Chat files (a TuneForge extension of OCI's format): each line is OpenAI's fine-tuning line
`{"messages": [...], "tools": [...]}`, checked as OpenAI documents it (`_check_conversation` lists the
rules and where TuneForge decided: "developer" is read as "system", unknown message keys are refused
since a misspelt "weight" would silently train a turn meant to be skipped). A file holds one format,
decided by its first valid line: a mixed file is a mistake (two exports concatenated), not a dataset.

Preference files (DPO, docs/dpo.md): OpenAI's DPO line `{"input": {"messages": [...], "tools": [...]},
"preferred_output": [assistant message], "non_preferred_output": [assistant message]}` or the common
`{"prompt": str, "chosen": str, "rejected": str}`, each checked with field paths like a chat line. A
supervised fine-tune refuses a preference file and a DPO fine-tune every other (`method`).
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from tuneforge.errors import DatasetError, LineProblem

MIN_EXAMPLES = 32  # OCI: "at least 32 prompt/completion pairs"
DEFAULT_SEED = 42  # for the split and training unless --seed is given
FIELDS = ("prompt", "completion")
PROMPT_COMPLETION, CHAT = "prompt_completion", "chat"  # a file's format (`dataset_format`)
PREFERENCE, PROMPT_CHOSEN_REJECTED = "preference", "prompt_chosen_rejected"  # OpenAI's DPO lines; the common pairs
SUPERVISED, DPO = "supervised", "dpo"  # training methods (OpenAI's `method.type`): which formats each takes
METHOD_FORMATS = {SUPERVISED: (PROMPT_COMPLETION, CHAT), DPO: (PREFERENCE, PROMPT_CHOSEN_REJECTED)}
ROLES = ("system", "user", "assistant", "tool")
ROLE_ALIASES = {"developer": "system"}  # OpenAI's newer name for the system role: templates know only "system"

_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean"}
_FORMAT_WORDS = {
    PROMPT_COMPLETION: "prompt/completion",
    CHAT: "chat",
    PREFERENCE: "preference (OpenAI DPO)",
    PROMPT_CHOSEN_REJECTED: "prompt/chosen/rejected",
}
_EXPECTED = {
    PROMPT_COMPLETION: '{"prompt": ..., "completion": ...}',
    CHAT: '{"messages": [...]}',
    PREFERENCE: '{"input": {"messages": [...]}, "preferred_output": [...], "non_preferred_output": [...]}',
    PROMPT_CHOSEN_REJECTED: '{"prompt": ..., "chosen": ..., "rejected": ...}',
}
_METHOD_WANTS = {
    SUPERVISED: "supervised fine-tuning takes prompt/completion or chat lines; preference pairs train with the DPO method",
    DPO: "DPO trains on preference pairs: OpenAI's "
    + _EXPECTED[PREFERENCE]
    + " lines or "
    + _EXPECTED[PROMPT_CHOSEN_REJECTED]
    + " lines",
}
# The keys each role's message may carry (OpenAI's fine-tuning format); any other key is refused.
_MESSAGE_KEYS = {
    "system": ("role", "content", "name"),
    "user": ("role", "content", "name"),
    "assistant": ("role", "content", "name", "tool_calls", "weight"),
    "tool": ("role", "content", "tool_call_id"),
}
_FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # OpenAI's rule for tool/function names
_REFUSED_PARTS = {
    "image_url": "images",
    "input_audio": "audio",
    "file": "files",
}


@dataclass(frozen=True)
class Example:
    prompt: str
    completion: str
    line: int  # 1-based line in the file

    def token_counts(self, count: Callable[[str], int]) -> tuple[int, int]:
        """(untrained, trained) tokens by `count`, before the chat template's own tokens."""
        return count(self.prompt), count(self.completion)


@dataclass(frozen=True)
class Conversation:
    """One chat line, checked, in the form chat templates take: "developer" read as "system", content a
    string (text parts joined) or None (an assistant message with tool calls only), `weight` (0 or 1)
    on every assistant message, `tool_calls` as given (arguments still a JSON string)."""

    messages: tuple[dict, ...]
    tools: tuple[dict, ...] | None  # OpenAI's function tools, or None
    line: int  # 1-based line in the file

    @property
    def trained(self) -> list[int]:
        """Indices of the assistant messages trained on (weight 1)."""
        return [i for i, m in enumerate(self.messages) if m["role"] == "assistant" and m["weight"] == 1]

    def token_counts(self, count: Callable[[str], int]) -> tuple[int, int]:
        """(untrained, trained) tokens of the messages' own text by `count`: a lower bound of the rendered
        conversation, which adds the chat template's own tokens (role headers, end-of-turn tokens)."""
        trained = set(self.trained)
        counts = [count(message_text(m)) for m in self.messages]
        tools = count(json.dumps(list(self.tools))) if self.tools else 0
        in_trained = sum(c for i, c in enumerate(counts) if i in trained)
        return sum(counts) + tools - in_trained, in_trained


@dataclass(frozen=True)
class PreferencePair:
    """One preference line: the conversation before the reply (OpenAI's input; a prompt is one user
    message) and the preferred (chosen) and non-preferred (rejected) assistant replies, checked and in
    template form like a Conversation's messages."""

    messages: tuple[dict, ...]  # the context; its assistant messages are context only (never trained)
    tools: tuple[dict, ...] | None
    chosen: dict  # an assistant message, weight 1
    rejected: dict
    line: int
    fields: tuple[str, str] = ("preferred_output[0]", "non_preferred_output[0]")  # where the replies sit in the line

    def side(self, chosen: bool) -> Conversation:
        """The context followed by one reply, as a conversation whose only trained turn is that reply."""
        context = tuple({**m, "weight": 0} if m["role"] == "assistant" else m for m in self.messages)
        return Conversation(context + (self.chosen if chosen else self.rejected,), self.tools, self.line)

    def token_counts(self, count: Callable[[str], int]) -> tuple[int, int]:
        """(untrained, trained) tokens of both rows a pair trains as (the context then each reply), by `count`:
        what a step processes, the context counted once per row."""
        sides = [self.side(chosen).token_counts(count) for chosen in (True, False)]
        return sides[0][0] + sides[1][0], sides[0][1] + sides[1][1]


DatasetItem = Example | Conversation | PreferencePair  # one valid line of any format


def message_text(message: dict) -> str:
    """A message's own text: its content and its tool calls' names and arguments."""
    calls = "".join(c["function"]["name"] + c["function"]["arguments"] for c in message.get("tool_calls") or ())
    return (message.get("content") or "") + calls


class _Problems:
    """Collects problems up to a cap and counts the rest."""

    def __init__(self, path: str | os.PathLike, cap: int):
        self.path, self.cap, self.shown, self.total = str(path), cap, [], 0

    def add(self, line: int | None, message: str) -> None:
        self.total += 1
        if len(self.shown) < self.cap:
            self.shown.append(LineProblem(line, message))

    def add_first(self, message: str) -> None:
        """A file-level problem, shown ahead of the line problems so the cap never hides it."""
        self.total += 1
        self.shown.insert(0, LineProblem(None, message))

    def raise_if_any(self) -> None:
        if self.total:
            raise DatasetError(self.path, self.shown, self.total)


class _Format:
    """The file's format, set by its first valid line."""

    def __init__(self) -> None:
        self.name: str | None = None
        self.line: int | None = None


def _json_type(value: object) -> str:
    return "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)


def _show(value: object) -> str:
    """A JSON value as the user wrote it, shortened: never a Python repr."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def _parse_line(raw: bytes, lineno: int, problems: _Problems, fmt: _Format) -> DatasetItem | None:
    """One line's Example or Conversation, or None after recording what is wrong with it (or if it is blank)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        problems.add(lineno, f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the line)")
        return None
    if lineno == 1:
        text = text.removeprefix("\ufeff")
    if not text.strip():
        return None
    try:
        obj = json.loads(text)
    except RecursionError:
        problems.add(lineno, "not valid JSON (nested too deeply)")
        return None
    except json.JSONDecodeError as e:
        problems.add(lineno, f"not valid JSON ({e.msg} at column {e.colno})")
        return None
    except ValueError:  # Python refuses integer literals of more than 4300 digits
        problems.add(lineno, "not valid JSON (a number with too many digits)")
        return None
    if not isinstance(obj, dict):
        problems.add(lineno, f"not a JSON object (got {_json_type(obj)}); expected {_EXPECTED[fmt.name or PROMPT_COMPLETION]}")
        return None
    kind = _shape(obj, fmt.name)
    if fmt.name is not None and kind != fmt.name:
        problems.add(
            lineno,
            f"a {_FORMAT_WORDS[kind]} line in a {_FORMAT_WORDS[fmt.name]} file (the format is set by the first valid "
            f"line, line {fmt.line}); a file holds one format",
        )
        return None
    check = {
        CHAT: _check_conversation,
        PREFERENCE: _check_preference,
        PROMPT_CHOSEN_REJECTED: _check_prompt_chosen_rejected,
    }.get(kind, _check_prompt_completion)
    item = check(obj, lineno, problems)
    if item is not None and fmt.name is None:
        fmt.name, fmt.line = kind, lineno
    return item


def _shape(obj: dict, decided: str | None) -> str:
    """The format a line is written in: by its keys, else the file's (prompt/completion before any line set it)."""
    found = {CHAT} if "messages" in obj else set()
    if "input" in obj or "preferred_output" in obj or "non_preferred_output" in obj:
        found.add(PREFERENCE)
    if "chosen" in obj or "rejected" in obj:
        found.add(PROMPT_CHOSEN_REJECTED)
    elif "prompt" in obj or "completion" in obj:
        found.add(PROMPT_COMPLETION)
    return found.pop() if len(found) == 1 else decided or PROMPT_COMPLETION


def _check_prompt_completion(obj: dict, lineno: int, problems: _Problems) -> Example | None:
    ok = True
    for key in FIELDS:
        if key not in obj:
            problems.add(lineno, f'missing "{key}"')
            ok = False
            continue
        value = obj[key]
        if not isinstance(value, str):
            problems.add(lineno, f'"{key}" must be a string, got {_json_type(value)}')
            ok = False
        elif not value.strip():
            problems.add(lineno, f'"{key}" is empty' + (" (only whitespace)" if value else ""))
            ok = False
        elif not _is_encodable(value):
            # A lone \ud800-style escape decodes to a str that no tokenizer can encode.
            problems.add(lineno, f'"{key}" contains an unpaired surrogate escape (\\ud800-\\udfff), which is not text')
            ok = False
    return Example(obj["prompt"], obj["completion"], lineno) if ok else None


def _check_conversation(obj: dict, lineno: int, problems: _Problems) -> Conversation | None:
    """OpenAI's chat fine-tuning line, every problem named by its field path (`messages[2].role`):
    - "messages": a non-empty array of message objects; "tools" (optional): function tools; other
      top-level keys are ignored, as in prompt/completion files;
    - "role": system, user, assistant or tool ("developer" is read as system);
    - "content": a non-empty string, or an array of {"type": "text", "text": ...} parts joined as
      written (image, audio and file parts are refused: the models trained here read text only);
      optional on an assistant message that has `tool_calls`;
    - only the keys OpenAI documents for the role (`_MESSAGE_KEYS`); "weight" (0 or 1, default 1)
      on assistant messages only;
    - assistant `tool_calls`: {"id", "type": "function", "function": {"name", "arguments"}} with
      arguments a JSON object encoded as a string; a tool message's `tool_call_id` answers one of them;
    - at least one assistant message with weight 1."""
    bad = _Faults()
    if "functions" in obj:  # ignored, it would train tool calls without the definitions they answer
        bad("functions", 'OpenAI\'s legacy function format is not supported; use "tools" and "tool_calls"')
    tools = _check_tools(obj["tools"], bad) if "tools" in obj else None
    messages = obj.get("messages")
    out: list[dict] = []
    call_ids: set[str] = set()
    if "messages" not in obj:
        bad("messages", 'missing; a chat line is {"messages": [...]}')
        messages = []
    elif not isinstance(messages, list):
        bad("messages", f"must be an array of messages, got {_json_type(messages)}")
        messages = []
    elif not messages:
        bad("messages", "is empty; a conversation needs at least one assistant message")
    for i, m in enumerate(messages):
        message = _check_message(m, f"messages[{i}]", call_ids, bad)
        if message is not None:
            out.append(message)
    if messages and len(out) == len(messages):
        assistants = [m for m in out if m["role"] == "assistant"]
        if not assistants:
            bad("messages", "has no assistant message; at least one is needed to train on")
        elif not any(m["weight"] == 1 for m in assistants):
            bad("messages", "every assistant message has weight 0; at least one must be trained on (weight 1)")
    for message in bad.messages:
        problems.add(lineno, message)
    return None if bad.messages else Conversation(tuple(out), tools, lineno)


def _check_preference(obj: dict, lineno: int, problems: _Problems) -> PreferencePair | None:
    """OpenAI's DPO line, every problem named by its field path: "input" an object whose "messages" (a
    non-empty array) and "tools" (optional) are checked as a chat line's; "preferred_output" and
    "non_preferred_output" each an array of exactly one assistant message (content, or tool calls), the
    two different. Other keys are ignored, as in every format."""
    bad = _Faults()
    context = obj.get("input")
    messages: list[dict] = []
    tools = None
    call_ids: set[str] = set()
    if not isinstance(context, dict):
        bad("input", "missing" if "input" not in obj else f'must be an object {{"messages": [...]}}, got {_json_type(context)}')
    else:
        tools = _check_tools(context["tools"], bad, "input.tools") if "tools" in context else None
        given = context.get("messages")
        if not isinstance(given, list) or not given:
            got = "missing" if "messages" not in context else "an empty array" if given == [] else _json_type(given)
            bad("input.messages", f"must be a non-empty array of messages (the conversation before the reply), got {got}")
            given = []
        for i, m in enumerate(given):
            message = _check_message(m, f"input.messages[{i}]", call_ids, bad)
            if message is not None:
                messages.append(message)
    replies = [_check_reply(obj, key, set(call_ids), bad) for key in ("preferred_output", "non_preferred_output")]
    if None not in replies and _same_reply(*replies):
        bad("non_preferred_output", "is the same reply as preferred_output; a preference pair needs two different replies")
    for message in bad.messages:
        problems.add(lineno, message)
    return None if bad.messages else PreferencePair(tuple(messages), tools, replies[0], replies[1], lineno)


def _check_reply(obj: dict, key: str, call_ids: set[str], bad: _Faults) -> dict | None:
    """One side of an OpenAI DPO pair: an array holding one assistant message (weight 1 on it)."""
    value = obj.get(key)
    if not isinstance(value, list) or len(value) != 1:
        got = "missing" if key not in obj else f"{len(value)} messages" if isinstance(value, list) else _json_type(value)
        bad(key, f"must be an array of exactly one assistant message, got {got}")
        return None
    message = _check_message(value[0], f"{key}[0]", call_ids, bad)
    if message is None:
        return None
    if message["role"] != "assistant":
        bad(f"{key}[0].role", f"{_show(value[0]['role'])} is not allowed; the reply of a pair is an assistant message")
        return None
    if message.get("content") is None and "tool_calls" not in message:
        bad(f"{key}[0].content", "is empty; a reply needs content or tool calls")
        return None
    return {**message, "weight": 1}


def _same_reply(a: dict, b: dict) -> bool:
    return (a.get("content") or "").strip() == (b.get("content") or "").strip() and a.get("tool_calls") == b.get("tool_calls")


def _check_prompt_chosen_rejected(obj: dict, lineno: int, problems: _Problems) -> PreferencePair | None:
    """{"prompt", "chosen", "rejected"}: three non-empty strings, the prompt a user message and chosen and
    rejected two different assistant replies to it."""
    ok = True
    for key in ("prompt", "chosen", "rejected"):
        value = obj.get(key)
        if key not in obj:
            problems.add(lineno, f'missing "{key}"')
        elif not isinstance(value, str):
            problems.add(lineno, f'"{key}" must be a string, got {_json_type(value)}')
        elif not value.strip():
            problems.add(lineno, f'"{key}" is empty' + (" (only whitespace)" if value else ""))
        elif not _is_encodable(value):
            problems.add(lineno, f'"{key}" contains an unpaired surrogate escape (\\ud800-\\udfff), which is not text')
        else:
            continue
        ok = False
    if ok and obj["chosen"].strip() == obj["rejected"].strip():
        problems.add(lineno, '"rejected" is the same reply as "chosen"; a preference pair needs two different replies')
        ok = False
    if not ok:
        return None
    reply = lambda text: {"role": "assistant", "content": text, "weight": 1}
    user = {"role": "user", "content": obj["prompt"]}
    return PreferencePair((user,), None, reply(obj["chosen"]), reply(obj["rejected"]), lineno, ("chosen", "rejected"))


class _Faults:
    """One line's problems, each as "field path: what is wrong"."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, path: str, message: str) -> None:
        self.messages.append(f"{path}: {message}")


def _check_message(m: object, path: str, call_ids: set[str], bad: _Faults) -> dict | None:
    """One message in template form, or None after naming its problems (`call_ids`: the tool call ids so far)."""
    if not isinstance(m, dict):
        bad(path, f"must be an object, got {_json_type(m)}")
        return None
    if "role" not in m:
        bad(f"{path}.role", f"missing; allowed: {', '.join(ROLES)}")
        return None
    role = ROLE_ALIASES.get(m["role"], m["role"]) if isinstance(m["role"], str) else None
    if role not in ROLES:
        bad(f"{path}.role", f"{_show(m['role'])} is not a role; allowed: {', '.join(ROLES)} (developer is read as system)")
        return None
    n_errors = len(bad.messages)
    for key in m:
        if key == "weight" and role != "assistant":
            bad(f"{path}.weight", f"is allowed on assistant messages only, not on {_a(m['role'])} message")
        elif key not in _MESSAGE_KEYS[role]:
            bad(f"{path}.{key}", f"is not allowed on {_a(m['role'])} message; allowed keys: {', '.join(_MESSAGE_KEYS[role])}")
    message: dict = {"role": role}
    if "name" in m and not isinstance(m["name"], str):
        bad(f"{path}.name", f"must be a string, got {_json_type(m['name'])}")
    elif "name" in m:
        message["name"] = m["name"]
    has_calls = False
    if role == "assistant":
        weight = m.get("weight", 1)
        if type(weight) is not int or weight not in (0, 1):  # JSON true/false and 1.0 are not OpenAI's 0|1
            bad(f"{path}.weight", f"must be 0 or 1, got {_show(weight)}")
        message["weight"] = weight
        if "tool_calls" in m:
            calls = _check_tool_calls(m["tool_calls"], f"{path}.tool_calls", call_ids, bad)
            has_calls = calls is not None
            if calls is not None:
                message["tool_calls"] = calls
    message["content"] = _check_content(m, path, bad, optional=has_calls or "tool_calls" in m)
    if role == "tool":
        call_id = m.get("tool_call_id")
        if "tool_call_id" not in m:
            bad(f"{path}.tool_call_id", "missing; a tool message answers a tool call of an earlier assistant message")
        elif not isinstance(call_id, str) or not call_id:
            bad(f"{path}.tool_call_id", f"must be a non-empty string, got {_show(call_id)}")
        elif call_id not in call_ids:
            bad(f"{path}.tool_call_id", f"{_show(call_id)} answers no tool call of an earlier assistant message")
        else:
            message["tool_call_id"] = call_id
    return message if len(bad.messages) == n_errors else None


def _a(role: str) -> str:
    return ("an " if role == "assistant" else "a ") + role


def _check_content(m: dict, path: str, bad: _Faults, *, optional: bool) -> str | None:
    """The content as one string; None where it may be absent (an assistant message with tool calls)."""
    where = f"{path}.content"
    if m.get("content") is None:
        if not optional:
            bad(where, "missing" if "content" not in m else "must be a string, got null")
        return None
    content = m["content"]
    if isinstance(content, list):
        content = _join_parts(content, where, bad)
        if content is None:
            return None
    elif not isinstance(content, str):
        bad(where, f"must be a string or an array of text parts, got {_json_type(content)}")
        return None
    if not content.strip():
        if optional:  # an assistant message may carry only its tool calls
            return None
        bad(where, "is empty" + (" (only whitespace)" if content else ""))
        return None
    if not _is_encodable(content):
        bad(where, "contains an unpaired surrogate escape (\\ud800-\\udfff), which is not text")
        return None
    return content


def _join_parts(parts: list, where: str, bad: _Faults) -> str | None:
    """OpenAI's content parts: text parts joined as written (nothing added between them); others refused."""
    if not parts:
        bad(where, "is an empty array")
        return None
    texts, ok = [], True
    for j, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(part, dict):
            bad(f"{where}[{j}]", f'must be an object {{"type": "text", "text": ...}}, got {_json_type(part)}')
        elif isinstance(kind, str) and kind in _REFUSED_PARTS:
            bad(
                f"{where}[{j}].type",
                f'"{kind}": {_REFUSED_PARTS[kind]} are not supported; the models fine-tuned here read text only',
            )
        elif kind != "text":
            bad(f"{where}[{j}].type", "missing" if "type" not in part else f'{_show(kind)} is not a part type; allowed: "text"')
        elif not isinstance(part.get("text"), str):
            bad(f"{where}[{j}].text", "missing" if "text" not in part else f"must be a string, got {_json_type(part['text'])}")
        else:
            texts.append(part["text"])
            continue
        ok = False
    return "".join(texts) if ok else None


def _check_tool_calls(calls: object, path: str, call_ids: set[str], bad: _Faults) -> list | None:
    """An assistant message's tool calls as given, or None after naming their problems."""
    if not isinstance(calls, list) or not calls:
        got = "an empty array" if isinstance(calls, list) else _json_type(calls)
        bad(path, f"must be a non-empty array of tool calls, got {got}")
        return None
    n_errors = len(bad.messages)
    for j, call in enumerate(calls):
        where = f"{path}[{j}]"
        if not isinstance(call, dict):
            bad(where, f"must be an object, got {_json_type(call)}")
            continue
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            bad(f"{where}.id", "missing" if "id" not in call else f"must be a non-empty string, got {_show(call_id)}")
        elif call_id in call_ids:
            bad(f"{where}.id", f"{_show(call_id)} is already the id of an earlier tool call of this conversation")
        else:
            call_ids.add(call_id)
        if call.get("type") != "function":
            bad(
                f"{where}.type",
                "missing" if "type" not in call else f'{_show(call.get("type"))} is not allowed; allowed: "function"',
            )
        function = call.get("function")
        if not isinstance(function, dict):
            bad(f"{where}.function", "missing" if "function" not in call else f"must be an object, got {_json_type(function)}")
            continue
        _check_function_name(function, f"{where}.function.name", bad)
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            got = "missing" if "arguments" not in function else f"got {_json_type(arguments)}"
            bad(f"{where}.function.arguments", f"must be a JSON object encoded as a string ({got})")
            continue
        try:
            parsed = json.loads(arguments)
        except (ValueError, RecursionError):
            parsed = None
        if not isinstance(parsed, dict):
            bad(f"{where}.function.arguments", f"must be a JSON object encoded as a string, got {_show(arguments)}")
    return calls if len(bad.messages) == n_errors else None


def _check_function_name(function: dict, where: str, bad: _Faults) -> None:
    name = function.get("name")
    if "name" not in function:
        bad(where, "missing")
    elif not isinstance(name, str) or not _FUNCTION_NAME.fullmatch(name):
        bad(where, f"{_show(name)} is not a function name; allowed: 1 to 64 letters, digits, _ or -")


def _check_tools(tools: object, bad: _Faults, path: str = "tools") -> tuple[dict, ...] | None:
    """OpenAI's `tools`: function tools {"type": "function", "function": {"name", "description"?, "parameters"?}}."""
    if not isinstance(tools, list):
        bad(path, f"must be an array of tools, got {_json_type(tools)}")
        return None
    for j, tool in enumerate(tools):
        where = f"{path}[{j}]"
        if not isinstance(tool, dict):
            bad(where, f"must be an object, got {_json_type(tool)}")
            continue
        if tool.get("type") != "function":
            bad(
                f"{where}.type",
                "missing" if "type" not in tool else f'{_show(tool.get("type"))} is not allowed; allowed: "function"',
            )
        function = tool.get("function")
        if not isinstance(function, dict):
            bad(f"{where}.function", "missing" if "function" not in tool else f"must be an object, got {_json_type(function)}")
            continue
        _check_function_name(function, f"{where}.function.name", bad)
        if "description" in function and not isinstance(function["description"], str):
            bad(f"{where}.function.description", f"must be a string, got {_json_type(function['description'])}")
        if "parameters" in function and not isinstance(function["parameters"], dict):
            bad(f"{where}.function.parameters", f"must be a JSON Schema object, got {_json_type(function['parameters'])}")
    return tuple(tools) or None  # [] is no tools


def _is_encodable(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def iter_examples(
    path: str | os.PathLike, *, max_problems: int = 50, min_examples: int = MIN_EXAMPLES, method: str | None = SUPERVISED
) -> Iterator[DatasetItem]:
    """Stream the valid lines of a dataset file (Example, Conversation or PreferencePair, one format per
    file); after the last one, raise DatasetError if the file had any problem, fewer than `min_examples`
    examples (OCI's 32 for training data; an evaluation file needs only one), or a format `method`
    (SUPERVISED, DPO; None: any) does not train on. Consume it fully before trusting it."""
    return _read(path, max_problems, min_examples, _Format(), method)


def _read(
    path: str | os.PathLike, max_problems: int, min_examples: int, fmt: _Format, method: str | None = SUPERVISED
) -> Iterator[DatasetItem]:
    problems = _Problems(path, max_problems)
    try:
        f = open(path, "rb")  # noqa: SIM115 (opened apart from the `with` so each open error gets its own message)
    except FileNotFoundError:
        raise DatasetError(str(path), [LineProblem(None, "file not found")]) from None
    except IsADirectoryError:
        raise DatasetError(str(path), [LineProblem(None, "is a directory, not a JSONL file")]) from None
    except OSError as e:
        raise DatasetError(str(path), [LineProblem(None, f"cannot be read ({e.strerror})")]) from None
    count = 0
    with f:
        try:
            for lineno, raw in enumerate(f, start=1):
                example = _parse_line(raw, lineno, problems, fmt)
                if example is not None:
                    count += 1
                    yield example
        except OSError as e:  # e.g. a directory on platforms where open() succeeds, or an I/O error
            raise DatasetError(str(path), [LineProblem(None, f"cannot be read ({e.strerror or e})")]) from None
    if count < min_examples:
        needed = f"at least {min_examples} are needed" if min_examples > 1 else "at least one is needed"
        problems.add_first(f"{count} valid example{'' if count == 1 else 's'}; {needed}")
    if method is not None and fmt.name is not None and fmt.name not in METHOD_FORMATS[method]:
        problems.add_first(
            f"a {_FORMAT_WORDS[fmt.name]} file (the format is set by the first valid line, line {fmt.line}); "
            + _METHOD_WANTS[method]
        )
    problems.raise_if_any()


@dataclass(frozen=True)
class DatasetSummary:
    count: int  # valid examples (lines; a preference pair is one)
    format: str  # PROMPT_COMPLETION, CHAT, PREFERENCE or PROMPT_CHOSEN_REJECTED


def check_dataset(
    path: str | os.PathLike, *, max_problems: int = 50, min_examples: int = MIN_EXAMPLES, method: str | None = SUPERVISED
) -> DatasetSummary:
    """Validate the whole file without keeping it in memory: how many examples, in which format.
    `method` (SUPERVISED, DPO) refuses a file of the other family; None accepts any format."""
    fmt = _Format()
    count = sum(1 for _ in _read(path, max_problems, min_examples, fmt, method))
    return DatasetSummary(count, fmt.name or PROMPT_COMPLETION)


def dataset_format(path: str | os.PathLike, *, min_examples: int = MIN_EXAMPLES, method: str | None = SUPERVISED) -> str:
    """The format of a valid file (the whole file is checked: DatasetError if not)."""
    return check_dataset(path, min_examples=min_examples, method=method).format


def scan_dataset(
    path: str | os.PathLike, *, max_problems: int = 50, min_examples: int = MIN_EXAMPLES, method: str | None = SUPERVISED
) -> int:
    """Validate the whole file without keeping it in memory; the number of examples."""
    return check_dataset(path, max_problems=max_problems, min_examples=min_examples, method=method).count


def read_examples(
    path: str | os.PathLike, *, max_problems: int = 50, min_examples: int = MIN_EXAMPLES, method: str | None = SUPERVISED
) -> list[DatasetItem]:
    """Validate the whole file; all its examples, in file order (PreferencePair only with method DPO or None)."""
    return list(iter_examples(path, max_problems=max_problems, min_examples=min_examples, method=method))


def split_sizes(n: int) -> tuple[int, int]:
    """(n_train, n_val) for OCI's 80:20 split: n_val = floor(n / 5 + 0.5), 20 % rounded half up.

    Integer arithmetic so no float rounding can move an example: floor((2n + 5) / 10).
    With n >= 32 both sides are non-empty (n = 32 gives 26 + 6)."""
    n_val = (2 * n + 5) // 10
    return n - n_val, n_val


def split_indices(n: int, seed: int) -> tuple[list[int], list[int]]:
    """(train, val) indices into the dataset, each ascending. random.Random(seed) with an int seed
    does not depend on PYTHONHASHSEED, so the same seed gives the same split in every process."""
    _n_train, n_val = split_sizes(n)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return sorted(order[n_val:]), sorted(order[:n_val])


def split_examples(examples: list[DatasetItem], seed: int) -> tuple[list[DatasetItem], list[DatasetItem]]:
    train, val = split_indices(len(examples), seed)
    return [examples[i] for i in train], [examples[i] for i in val]


def check_token_lengths(
    examples: Iterable[DatasetItem],
    count_tokens: Callable[[str], int],
    *,
    max_prompt_tokens: int | None,
    max_completion_tokens: int | None,
    context_tokens: int | None,
    max_problems: int = 50,
    path: str | os.PathLike = "(dataset)",
    context_source: str | None = None,
) -> None:
    """Raise DatasetError naming each example (by line) whose prompt, completion or the two together
    exceed the model's limits (None = no limit). Counts are the tokenizer's, without special tokens.
    `context_source` says where the context limit comes from when it is not the catalog's own.

    A conversation is checked on its messages' own tokens, a lower bound of its rendered length (the
    chat template adds role headers and end-of-turn tokens; rendering needs the template, which the
    training job has: it checks the rendered length too, `batches.encode_all`): the whole conversation
    against the context, each trained assistant message against the completion limit. The prompt limit
    is OCI's for one prompt: a conversation has none, the context bounds it."""
    problems = _Problems(path, max_problems)
    why = f" ({context_source})" if context_source else ""
    for ex in examples:
        if isinstance(ex, Conversation):
            _check_conversation_lengths(ex, count_tokens, max_completion_tokens, context_tokens, why, problems)
            continue
        if isinstance(ex, PreferencePair):
            _check_pair_lengths(ex, count_tokens, max_completion_tokens, context_tokens, why, problems)
            continue
        p, c = count_tokens(ex.prompt), count_tokens(ex.completion)
        if max_prompt_tokens is not None and p > max_prompt_tokens:
            problems.add(ex.line, f"prompt is {p:,} tokens; this model allows at most {max_prompt_tokens:,}")
        if max_completion_tokens is not None and c > max_completion_tokens:
            problems.add(ex.line, f"completion is {c:,} tokens; this model allows at most {max_completion_tokens:,}")
        if context_tokens is not None and p + c > context_tokens:
            problems.add(ex.line, f"prompt + completion is {p + c:,} tokens; this model's context is {context_tokens:,}{why}")
    problems.raise_if_any()


def _check_conversation_lengths(
    conv: Conversation,
    count_tokens: Callable[[str], int],
    max_completion_tokens: int | None,
    context_tokens: int | None,
    why: str,
    problems: _Problems,
) -> None:
    if max_completion_tokens is not None:
        for i in conv.trained:
            c = count_tokens(message_text(conv.messages[i]))
            if c > max_completion_tokens:
                problems.add(
                    conv.line, f"messages[{i}] (assistant) is {c:,} tokens; this model allows at most {max_completion_tokens:,}"
                )
    if context_tokens is not None:
        total = sum(conv.token_counts(count_tokens))
        if total > context_tokens:
            problems.add(
                conv.line,
                f"the conversation's messages alone are {total:,} tokens (before the chat template's own); "
                f"this model's context is {context_tokens:,}{why}",
            )


def _check_pair_lengths(
    pair: PreferencePair,
    count_tokens: Callable[[str], int],
    max_completion_tokens: int | None,
    context_tokens: int | None,
    why: str,
    problems: _Problems,
) -> None:
    """Each reply against the completion limit; the context with the longer reply against the context
    (messages' own tokens, a lower bound of the rendering, as for a conversation)."""
    replies = [count_tokens(message_text(reply)) for reply in (pair.chosen, pair.rejected)]
    for where, c in zip(pair.fields, replies, strict=True):
        if max_completion_tokens is not None and c > max_completion_tokens:
            problems.add(pair.line, f"{where} is {c:,} tokens; this model allows at most {max_completion_tokens:,}")
    if context_tokens is not None:
        total = sum(pair.side(True).token_counts(count_tokens)) - replies[0] + max(replies)
        if total > context_tokens:
            problems.add(
                pair.line,
                f"the conversation with its longer reply is {total:,} tokens (before the chat template's own); "
                f"this model's context is {context_tokens:,}{why}",
            )
