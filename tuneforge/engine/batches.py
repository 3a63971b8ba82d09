"""Dataset lines -> token ids with the base model's chat template -> padded batches.

Prompt/completion pairs: the prompt becomes the user turn and the completion the assistant turn.
Only the assistant turn (completion text plus the template's end-of-turn token) is trained on:
prompt tokens get label -100. Prompt and completion are tokenized separately at the turn boundary,
as TRL does, so masking never depends on finding a response template inside the token stream (a
known source of silently all-masked examples).

Conversations (chat lines) are rendered whole by the chat template (`tools=` passed where the line
has them) and cut at every trained assistant turn the same way: the text up to that turn is what the
template renders for messages[:i] with the generation prompt, the turn is what it adds for
messages[i], up to and including its end-of-turn token. Each piece is tokenized on its own, so a
row has one trained span per assistant turn of weight 1 and everything else is IGNORE. This needs a
template that renders a turn the same way whatever follows it (prefix-stable); where it does not
(it rewrites earlier turns, e.g. drops earlier reasoning, or puts text after the last turn), the
conversation is refused with the reason, never trained on a guessed mask. So is a conversation
whose tools or tool calls the template does not render.

Preference pairs (DPO) become two rows, each the context followed by one reply, encoded as a
conversation whose only trained turn is that reply (`EncodedPair`); a batch of pairs is collated as
its chosen rows, then its rejected rows (TRL's concatenated layout), so one forward pass scores both.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace

import torch

from tuneforge.data import Conversation, DatasetItem, Example, PreferencePair, message_text
from tuneforge.errors import DatasetError, LineProblem

IGNORE = -100


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    spans: tuple[tuple[int, int], ...]  # [start, end) token ranges trained on, ascending, non-overlapping

    @classmethod
    def completion(cls, input_ids: list[int], prompt_len: int) -> Encoded:
        """One trained span: input_ids[prompt_len:], the completion ending with the end-of-turn token."""
        return cls(input_ids, ((prompt_len, len(input_ids)),))

    @property
    def prompt_len(self) -> int:
        """Tokens before the first trained one."""
        return self.spans[0][0]

    @property
    def completion_len(self) -> int:
        """Tokens trained on (the loss of a step is averaged over these)."""
        return sum(end - start for start, end in self.spans)

    @property
    def loss_units(self) -> int:
        """What a step's loss is averaged over: trained tokens."""
        return self.completion_len

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class EncodedPair:
    """A preference pair as two rows: the context then the chosen reply, the context then the rejected one."""

    chosen: Encoded
    rejected: Encoded

    @property
    def loss_units(self) -> int:
        """What a step's loss is averaged over: pairs (DPO's loss is one number per pair)."""
        return 1

    @property
    def n_tokens(self) -> int:
        return len(self.chosen.input_ids) + len(self.rejected.input_ids)


class ChatTemplateError(ValueError):
    """The chat template cannot render or mark this conversation; the message says why (no line number)."""


def prompt_text(tokenizer, prompt: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    return tokenizer(prompt_text(tokenizer, prompt), add_special_tokens=False).input_ids


def completion_text(tokenizer, prompt: str, completion: str) -> str:
    """The assistant turn exactly as the chat template renders it, cut after its end-of-turn token."""
    head = prompt_text(tokenizer, prompt)
    full = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}], tokenize=False
    )
    eos = tokenizer.eos_token or ""
    if not full.startswith(head):  # a template that rewrites earlier turns: fall back to text + EOS
        return completion + eos
    tail = full[len(head) :]
    end = tail.rfind(eos) if eos else -1
    return tail[: end + len(eos)] if end >= 0 else tail + eos


def encode_example(tokenizer, prompt: str, completion: str) -> Encoded:
    head = encode_prompt(tokenizer, prompt)
    tail = tokenizer(completion_text(tokenizer, prompt, completion), add_special_tokens=False).input_ids
    return Encoded.completion(head + tail, len(head))


def template_messages(conv: Conversation) -> list[dict]:
    """The messages as chat templates read them (transformers' convention): no `weight`, no content key
    where there is none, tool call arguments as a dict (OpenAI's lines carry a JSON string)."""
    out = []
    for m in conv.messages:
        message = {k: v for k, v in m.items() if k not in ("weight", "content", "tool_calls")}
        if m.get("content") is not None:
            message["content"] = m["content"]
        if "tool_calls" in m:
            message["tool_calls"] = [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])},
                }
                for c in m["tool_calls"]
            ]
        out.append(message)
    return out


def render(tokenizer, messages: list[dict], tools: list[dict] | None, *, add_generation_prompt: bool, model: str) -> str:
    from jinja2 import TemplateError

    try:
        return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=add_generation_prompt)
    # A template is foreign code: whatever it raises on this data (its own raise_exception, or a
    # missing key it expected) is this conversation's problem, reported with the template's words.
    except (TemplateError, TypeError, ValueError, KeyError, IndexError, AttributeError) as err:
        raise ChatTemplateError(f"the chat template of {model} cannot render this conversation: {err}") from None


def _model(tokenizer) -> str:
    name = str(getattr(tokenizer, "name_or_path", "") or "")
    return name.rstrip("/").rsplit("/", 1)[-1] or "the base model"


def _check_template(tokenizer, conv: Conversation, model: str) -> None:
    """Refuse tools and tool calls the template has no place for, before rendering (a template that
    does not expect tool calls often fails on them with a message about something else)."""
    from jinja2 import Environment, meta

    source = tokenizer.get_chat_template(tools=list(conv.tools) if conv.tools else None)
    if conv.tools and "tools" not in meta.find_undeclared_variables(Environment().parse(source)):
        raise ChatTemplateError(
            f'tools: the chat template of {model} does not support tools (it never reads them); remove "tools" '
            "or fine-tune a base model whose template renders them"
        )
    for i, m in enumerate(conv.messages):
        if "tool_calls" in m and "tool_calls" not in source:
            raise ChatTemplateError(
                f"messages[{i}].tool_calls: the chat template of {model} does not support tool calls (it never reads "
                "them); fine-tune a base model whose template renders them"
            )


def _appears(text: str, rendered: str) -> bool:
    """Whether `text` is in the rendering as written, trimmed, or JSON-escaped (templates do all three)."""
    text = text.strip()
    return text in rendered or json.dumps(text, ensure_ascii=False)[1:-1] in rendered or json.dumps(text)[1:-1] in rendered


def _check_rendered(conv: Conversation, rendered: str, model: str) -> None:
    """Refuse a conversation whose tool calls or system, user or tool messages the template leaves out:
    training on the rendering would teach the model a conversation other than the one in the file."""
    for i, m in enumerate(conv.messages):
        for j, call in enumerate(m.get("tool_calls") or ()):
            if call["function"]["name"] not in rendered:
                raise ChatTemplateError(
                    f"messages[{i}].tool_calls[{j}]: the chat template of {model} does not render tool calls "
                    "(the call is not in its output); fine-tune a base model whose template renders them"
                )
        # An assistant turn may be rewritten as history (earlier reasoning dropped): a trained one is
        # checked where it is cut out, an untrained one is context as the model will see it.
        if m["role"] != "assistant" and m.get("content") is not None and not _appears(m["content"], rendered):
            raise ChatTemplateError(
                f"messages[{i}]: the chat template of {model} leaves this {m['role']} message out of its output"
            )


def encode_conversation(tokenizer, conv: Conversation, model: str | None = None) -> Encoded:
    """The conversation rendered by the chat template, every assistant turn of weight 1 trained on
    (its content or tool calls and its end-of-turn token) and nothing else; text after the last
    trained turn is left out (it would only cost compute). ChatTemplateError says why a conversation
    cannot be encoded; `model` names the weights in its messages (default: the tokenizer's name)."""
    model = model or _model(tokenizer)
    _check_template(tokenizer, conv, model)
    messages = template_messages(conv)
    tools = list(conv.tools) if conv.tools else None
    full = render(tokenizer, messages, tools, add_generation_prompt=False, model=model)
    _check_rendered(conv, full, model)
    eos = tokenizer.eos_token or ""
    pieces: list[tuple[str, bool]] = []  # (text, trained), in order
    done = 0  # characters of `full` already in pieces
    for i in conv.trained:
        if i == 0:
            raise ChatTemplateError(
                "messages[0]: a conversation that opens with an assistant message cannot have it trained on (there is "
                "no prompt before it); give it weight 0 or start with a system or user message"
            )
        head = render(tokenizer, messages[:i], tools, add_generation_prompt=True, model=model)
        turn = render(tokenizer, messages[: i + 1], tools, add_generation_prompt=False, model=model)
        if not turn.startswith(head):
            raise ChatTemplateError(
                f"messages[{i}]: the chat template of {model} renders an assistant turn differently from its generation "
                "prompt (it changes the text before the turn once the turn is there), so the turn's tokens cannot be told "
                "apart; fine-tune a base model whose template is prefix-stable"
            )
        tail = turn[len(head) :]
        end = tail.rfind(eos) if eos else -1
        trained = tail[: end + len(eos)] if end >= 0 else tail
        if len(head) < done or not full.startswith(head + trained):
            raise ChatTemplateError(
                f"messages[{i}]: the chat template of {model} rewrites this assistant turn when later messages follow "
                "(e.g. it drops earlier reasoning), so it cannot be trained in place; give it weight 0, or end a "
                "conversation with it (one line per trained turn)"
            )
        pieces += [(full[done : len(head)], False), (trained, True)]
        done = len(head) + len(trained)
    ids: list[int] = []
    spans: list[tuple[int, int]] = []
    for text, is_trained in pieces:
        piece = tokenizer(text, add_special_tokens=False).input_ids if text else []
        if is_trained:
            if not piece:
                raise ChatTemplateError(f"the chat template of {model} renders a trained assistant turn as no text")
            spans.append((len(ids), len(ids) + len(piece)))
        ids += piece
    return Encoded(ids, tuple(spans))


def encode(tokenizer, item: DatasetItem, model: str | None = None) -> Encoded | EncodedPair:
    """One dataset line as token ids and trained spans (a preference pair: both its rows)."""
    if isinstance(item, PreferencePair):
        return EncodedPair(*(encode_conversation(tokenizer, item.side(chosen), model) for chosen in (True, False)))
    if isinstance(item, Conversation):
        return encode_conversation(tokenizer, item, model)
    return encode_example(tokenizer, item.prompt, item.completion)


def encode_all(
    tokenizer,
    items: Iterable[DatasetItem],
    *,
    path: str,
    context_tokens: int | None = None,
    context_source: str | None = None,
    model: str | None = None,
    max_problems: int = 50,
) -> list[Encoded | EncodedPair]:
    """Every line encoded; DatasetError naming, by line, each conversation the chat template cannot
    render or mark and each whose rendering is longer than `context_tokens` (a conversation's length
    is known only once rendered: the data checks before this count its messages' own tokens)."""
    encoded: list[Encoded] = []
    problems: list[LineProblem] = []
    total = 0
    why = f" ({context_source})" if context_source else ""
    for item in items:
        try:
            e = encode(tokenizer, item, model)
        except ChatTemplateError as err:
            problem = str(err)
        else:
            encoded.append(e)
            n = max(len(row.input_ids) for row in (e.chosen, e.rejected)) if isinstance(e, EncodedPair) else len(e.input_ids)
            if isinstance(item, Example) or context_tokens is None or n <= context_tokens:
                continue
            what = "with its longer reply " if isinstance(e, EncodedPair) else ""
            problem = f"the conversation {what}is {n:,} tokens as the chat template renders it; this model's context is {context_tokens:,}{why}"
        total += 1
        if len(problems) < max_problems:
            problems.append(LineProblem(item.line, problem))
    if total:
        raise DatasetError(path, problems, total)
    return encoded


def reply_prompt(tokenizer, item: DatasetItem, model: str | None = None) -> tuple[list[int], str, str]:
    """What a model is asked and should answer when a line is scored by generation: (prompt ids, the
    prompt's last message, the expected reply). A pair's prompt and completion; a conversation up to
    its last trained assistant turn (generation prompt added) and that turn's text."""
    if not isinstance(item, Conversation):
        return encode_prompt(tokenizer, item.prompt), item.prompt, item.completion
    last = item.trained[-1]
    head = replace(item, messages=item.messages[:last])
    tools = list(item.tools) if item.tools else None
    text = render(tokenizer, template_messages(head), tools, add_generation_prompt=True, model=model or _model(tokenizer))
    shown = next((message_text(m) for m in reversed(head.messages) if m["role"] != "assistant"), "")
    return tokenizer(text, add_special_tokens=False).input_ids, shown, message_text(item.messages[last])


def trained_text(tokenizer, e: Encoded) -> list[str]:
    """The decoded text of each trained span (for reports and tests)."""
    return [tokenizer.decode(e.input_ids[start:end]) for start, end in e.spans]


def rows_of(examples: list[Encoded | EncodedPair]) -> list[Encoded]:
    """The batch's rows: the examples themselves, or a batch of pairs' chosen rows then its rejected rows."""
    if examples and isinstance(examples[0], EncodedPair):
        return [p.chosen for p in examples] + [p.rejected for p in examples]
    return examples


def collate(examples: list[Encoded | EncodedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch; labels are the input ids at trained positions and IGNORE elsewhere. A batch of
    pairs is laid out as `rows_of` says (n chosen rows, then n rejected rows)."""
    examples = rows_of(examples)
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        for start, end in e.spans:
            labels[row, start:end] = ids[row, start:end]
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
