"""What a caller hands the serving engine and what it gets back: `Request`, `AdapterRef`,
`Completion` and the typed errors. Stdlib only, so the HTTP layer can import it without torch.

Field names in error messages are the API's camelCase ones (maxTokens, topP, ...), as
`InvalidParameter` does everywhere else, so the HTTP layer can pass a message through unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tuneforge.errors import InvalidParameter, TuneForgeError

FinishReason = Literal["stop", "length", "cancelled"]
ROLES = ("system", "user", "assistant")
PENALTY_RANGE = (-2.0, 2.0)  # OpenAI's range; OCI's narrower ranges are the API layer's to enforce


class ServingError(TuneForgeError):
    """Base class of the engine's errors; `str(err)` is a sentence for the user."""


class QueueFull(ServingError):
    """Too many requests wait for a decode slot (HTTP 429). `retry_after_s`: when to try again
    (the HTTP layer's Retry-After), from the engine's estimate of when a slot frees up."""

    def __init__(self, waiting: int, retry_after_s: int = 1, message: str | None = None):
        self.waiting, self.retry_after_s = waiting, max(1, retry_after_s)
        super().__init__(message or f"the model is busy: {waiting} requests are already waiting; retry in {self.retry_after_s} s")


class WaitTooLong(QueueFull):
    """A row is not expected to free up for this request within the engine's `max_wait_s` (HTTP 429):
    refused at once rather than left waiting longer than the documented bound."""

    def __init__(self, waiting: int, expected_wait_s: float, max_wait_s: float):
        self.expected_wait_s, self.max_wait_s = expected_wait_s, max_wait_s
        super().__init__(
            waiting,
            math.ceil(expected_wait_s - max_wait_s),
            f"the model is busy: this request would wait about {math.ceil(expected_wait_s)} s for a decode slot "
            f"({waiting} requests are already waiting), longer than this server's bound of {max_wait_s:g} s; "
            f"retry in {max(1, math.ceil(expected_wait_s - max_wait_s))} s",
        )


class StartTimeout(QueueFull):
    """A queued request did not get a decode slot within twice `max_wait_s` (the admission estimate was
    wrong): it is ended instead of waiting on (HTTP 429, or an error event when its stream had started)."""

    def __init__(self, waited_s: float):
        self.waited_s = waited_s
        super().__init__(0, 1, f"the model is busy: this request waited {waited_s:.0f} s without starting; retry later")


class PromptTooLong(ServingError):
    """The prompt leaves no room to generate within the context window (HTTP 400)."""

    def __init__(self, prompt_tokens: int, context_tokens: int):
        self.prompt_tokens, self.context_tokens = prompt_tokens, context_tokens
        super().__init__(
            f"the prompt is {prompt_tokens} tokens long; this model's context holds {context_tokens} tokens, "
            f"prompt and completion together, so the prompt may have at most {context_tokens - 1}"
        )


class AdapterUnavailable(ServingError):
    """The adapter's folder is missing or unreadable, or its training run has not finished (HTTP 404/409)."""


class AdapterInvalid(ServingError):
    """The folder holds something that cannot be served on this base model (HTTP 400/422)."""


class Interrupted(ServingError):
    """The process decoding a request stopped after part of its answer was sent (a hosting replica
    killed mid-answer): the text cannot be taken back, so the request ends; sending it again works
    (HTTP 503 before any text, an error event in a stream)."""


class EngineClosed(ServingError):
    """The engine was shut down, or failed; the message says which (HTTP 503)."""


@dataclass(frozen=True)
class AdapterRef:
    """An adapter to serve, by the caller's id (e.g. the model's OCID) and its folder: a PEFT
    adapter folder (adapter_config.json + adapter_model.safetensors) or a `tuneforge train` run
    folder holding one in adapter/. One id names one adapter: the engine caches by id."""

    id: str
    path: Path

    def adapter_dir(self) -> Path:
        path = Path(self.path)
        return path if (path / "adapter_config.json").is_file() else path / "adapter"


@dataclass(frozen=True)
class Request:
    """One generation. Exactly one of `messages` (rendered with the base model's chat template,
    ending with the assistant's turn to speak) or `prompt` (raw text, tokenized as is).

    temperature 0 is greedy decoding; top_k 0 and top_p 1 disable those filters; penalties apply to
    the tokens generated so far (OpenAI's definition: logit -= count * frequency_penalty +
    (count > 0) * presence_penalty). `max_tokens` None generates until the context is full.
    `stop` strings end the completion where they first appear; they are not part of the text.
    `seed` fixes the sampling: the same request with the same seed gives the same text whatever
    else is decoded in the same batch. `adapter` None is the plain base model. `ignore_eos` (vLLM's and
    llama.cpp's name) never picks an end-of-turn token, so a completion runs to `max_tokens`: for
    benchmarks that need every system to generate the same number of tokens."""

    messages: tuple[dict[str, str], ...] | list[dict[str, str]] | None = None
    prompt: str | None = None
    adapter: AdapterRef | None = None
    max_tokens: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    stop: tuple[str, ...] | list[str] = field(default_factory=tuple)
    seed: int | None = None
    ignore_eos: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def validate(self) -> None:
        """Raise InvalidParameter for the first field outside what is allowed."""
        if (self.messages is None) == (self.prompt is None):
            given = "both" if self.messages is not None else None
            raise InvalidParameter("messages", given, "give either messages or a raw prompt, not both and not neither")
        if self.messages is not None:
            _check_messages(self.messages)
        elif not isinstance(self.prompt, str) or not self.prompt:
            raise InvalidParameter("prompt", self.prompt, "must be a non-empty string")
        if self.max_tokens is not None and (not _is_int(self.max_tokens) or self.max_tokens < 1):
            raise InvalidParameter("maxTokens", self.max_tokens, "must be an integer of at least 1")
        if not _is_number(self.temperature) or self.temperature < 0:
            raise InvalidParameter("temperature", self.temperature, "must be a number >= 0 (0 = greedy)")
        if not _is_number(self.top_p) or not 0 < self.top_p <= 1:
            raise InvalidParameter("topP", self.top_p, "must be a number in (0, 1]")
        if not _is_int(self.top_k) or self.top_k < 0:
            raise InvalidParameter("topK", self.top_k, "must be an integer >= 0 (0 = no top-k filter)")
        for name, value in (("frequencyPenalty", self.frequency_penalty), ("presencePenalty", self.presence_penalty)):
            if not _is_number(value) or not PENALTY_RANGE[0] <= value <= PENALTY_RANGE[1]:
                raise InvalidParameter(name, value, f"must be a number in [{PENALTY_RANGE[0]}, {PENALTY_RANGE[1]}]")
        if isinstance(self.stop, str) or not all(isinstance(s, str) and s for s in self.stop):
            raise InvalidParameter("stop", self.stop, "must be a list of non-empty strings")
        if self.seed is not None and not _is_int(self.seed):
            raise InvalidParameter("seed", self.seed, "must be an integer")
        if not isinstance(self.ignore_eos, bool):
            raise InvalidParameter("ignoreEos", self.ignore_eos, "must be true or false")
        if self.ignore_eos and self.max_tokens is None:
            raise InvalidParameter("ignoreEos", True, "needs maxTokens (else the completion runs to the end of the context)")
        if self.adapter is not None and not (isinstance(self.adapter.id, str) and self.adapter.id):
            raise InvalidParameter("adapter.id", self.adapter.id, "must be a non-empty string")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_messages(messages) -> None:
    if not isinstance(messages, (list, tuple)) or not messages:
        raise InvalidParameter("messages", messages, "must be a non-empty list of {role, content} objects")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidParameter(f"messages[{i}]", message, "must be an object with role and content")
        if message.get("role") not in ROLES:
            raise InvalidParameter(f"messages[{i}].role", message.get("role"), f"allowed: {', '.join(ROLES)}")
        if not isinstance(message.get("content"), str):
            raise InvalidParameter(f"messages[{i}].content", message.get("content"), "must be a string")


@dataclass(frozen=True)
class Completion:
    """The end of a stream: the whole text (stop sequences cut off), why it ended, and the usage."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    token_ids: tuple[int, ...]  # every generated token, including an end-of-turn token that ended it

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens
