"""The console's "Try it" panel: a chat with one of the tenancy's ACTIVE custom models, streamed,
optionally beside its base model's answer to the same conversation.

Nothing here is new inference: the conversation becomes an OpenAI chat request
(`ChatCompletionRequest`, so its messages are checked as /openai/v1 checks them) and goes through
`inference.openai_chat_requests` and `inference.start`, so the chat template, the request limits,
429 when the engine's queue is full and the named errors (the prompt too long, the model not
ACTIVE, not in this tenancy) are exactly the API's. What the console adds: its own bounds on
maxTokens and temperature (a panel for trying a model out, not for long generations), a
conversation that ends with the user's turn, and both answers merged into one stream of events.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from tuneforge import serving
from tuneforge.services.actions import inference
from tuneforge.services.context import Caller, Services
from tuneforge.services.errors import invalid, not_found, validation_message
from tuneforge.services.resources import endpoints
from tuneforge.services.schemas.inference import ChatCompletionRequest

# What the panel offers (the template shows these, the checks below enforce them).
LIMITS = {
    "maxTokens": {"default": 256, "min": 1, "max": 4096},
    "temperature": {"default": 0.7, "min": 0.0, "max": 2.0},
    "maxMessages": 200,
    "maxMessageChars": 20_000,
}
FAILED = "the model failed while generating; the server's log has the details"


@dataclass
class Chat:
    """The generations of one Send: the model's, and the base model's when compared."""

    model: inference.Generation
    base: inference.Generation | None = None

    def cancel(self) -> None:
        self.model.cancel()
        if self.base is not None:
            self.base.cancel()


def _shown(value: Any) -> str:
    """A rejected value as JSON writes it (never a Python repr), cut short when long."""
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "a list"
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(body: dict, field: str, integer: bool) -> float | int:
    bounds = LIMITS[field]
    value = body.get(field, bounds["default"])
    kind = "an integer" if integer else "a number"
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or not bounds["min"] <= value <= bounds["max"]:
        allowed = f"{kind} from {bounds['min']:g} to {bounds['max']:g}"
        raise invalid(f"{field}: {_shown(value)} is not allowed; allowed: {allowed}")
    return value


def _messages(body: dict, field: str) -> list[dict]:
    messages = body.get(field)
    if not isinstance(messages, list) or not messages:
        raise invalid(f"{field}: a non-empty list of {{role, content}} messages is required")
    if len(messages) > LIMITS["maxMessages"]:
        raise invalid(f"{field}: {len(messages)} messages is not allowed; allowed: at most {LIMITS['maxMessages']} (press Reset)")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise invalid(f"{field}[{i}]: {_shown(message)} is not allowed; allowed: an object with role and content")
        if message.get("role") not in ("user", "assistant"):
            raise invalid(f"{field}[{i}].role: {_shown(message.get('role'))} is not allowed; allowed: user, assistant")
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            raise invalid(f"{field}[{i}].content: must be a non-empty string")
        if len(content) > LIMITS["maxMessageChars"]:
            raise invalid(
                f"{field}[{i}].content: {len(content):,} characters is not allowed; allowed: at most {LIMITS['maxMessageChars']:,}"
            )
    if messages[-1]["role"] != "user":
        raise invalid(f"{field}: the last message must be the user's (the model answers it)")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _requests(model: str, messages: list[dict], max_tokens: int, temperature: float) -> list[serving.Request]:
    try:
        body = ChatCompletionRequest.model_validate(
            {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature, "stream": True}
        )
    except ValidationError as err:
        raise invalid(validation_message(err)) from None
    return inference.openai_chat_requests(body)


def start(svc: Services, caller: Caller, model_id: str, body: Any) -> Chat:
    """Check the panel's request and queue its generation(s); ServiceErrors in the API's words.

    `body`: {"messages": [{role: user|assistant, content}], "maxTokens", "temperature",
    "baseMessages": the base model's side of the conversation, or absent for no comparison}."""
    if not isinstance(body, dict):
        raise invalid("the request must be a JSON object with messages, maxTokens and temperature")
    max_tokens = _number(body, "maxTokens", integer=True)
    temperature = float(_number(body, "temperature", integer=False))
    messages = _messages(body, "messages")
    base_messages = _messages(body, "baseMessages") if body.get("baseMessages") is not None else None

    target = endpoints.model_target(svc, caller, model_id)  # tenancy, ACTIVE, a finished adapter
    if target.run_dir is None:
        raise not_found("model")  # a base model's name: the panel is for custom models
    chat = Chat(inference.start(svc, target, _requests(model_id, messages, max_tokens, temperature)))
    if base_messages is not None:
        base = endpoints.model_target(svc, caller, target.spec.id)
        try:
            chat.base = inference.start(svc, base, _requests(target.spec.id, base_messages, max_tokens, temperature), "base ")
        except BaseException:
            chat.cancel()  # both or neither: a refused base request leaves no orphaned generation
            raise
    return chat


def _end(side: str, completion: serving.Completion) -> dict[str, Any]:
    return {
        "side": side,
        "done": True,
        "finishReason": completion.finish_reason,
        "promptTokens": completion.prompt_tokens,
        "completionTokens": completion.completion_tokens,
    }


async def events(chat: Chat) -> AsyncIterator[dict[str, Any]]:
    """The answers as they are decoded, both sides interleaved: {"side", "delta"} per piece of
    text, then {"side", "done", "finishReason", ...} (or {"side", "error"}) once per side.
    Closing the iterator early (the browser went away) cancels every generation."""
    sides = [("model", chat.model.streams[0])]
    if chat.base is not None:
        sides.append(("base", chat.base.streams[0]))
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def pump(side: str, stream) -> None:
        try:
            async for text in stream:
                await queue.put({"side": side, "delta": text})
            await queue.put(_end(side, await stream.aresult()))
        except serving.Interrupted as err:  # its hosting replica stopped mid-answer: say so
            await queue.put({"side": side, "error": str(err)})
        except serving.ServingError:
            await queue.put({"side": side, "error": FAILED})

    tasks = [asyncio.ensure_future(pump(side, stream)) for side, stream in sides]
    try:
        open_sides = len(tasks)
        while open_sides:
            event = await queue.get()
            open_sides -= "delta" not in event
            yield event
    finally:
        for task in tasks:
            task.cancel()
        chat.cancel()  # no-op for a finished generation
