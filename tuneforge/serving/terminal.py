"""`tuneforge chat`: a conversation with a model in the terminal, each reply streamed as it is decoded.

The history is kept across turns and sent with each new message (through the base model's chat
template); `/reset` clears it, `/exit` or end of input (Ctrl-D) ends, Ctrl-C stops the reply being
written. Read from a pipe, it prints only the replies, one per input line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import TextIO

from tuneforge.serving.requests import AdapterRef, PromptTooLong, Request

COMMANDS = "/reset clears the conversation, /exit or Ctrl-D ends, Ctrl-C stops a reply"


def open_engine(model_dir: Path | None, base_model: str | None, weights: str | None, device: str, precision: str):
    """(engine, adapter or None, what answers) for `--model RUN_DIR` or `--base-model ID [--weights ...]`."""
    from tuneforge.catalog import get_model
    from tuneforge.engine.generate import trained_base_weights
    from tuneforge.engine.weights import resolve_weights
    from tuneforge.run_folder import RunFolder
    from tuneforge.serving.engine import Engine, EngineConfig

    config = EngineConfig(device=device, precision=precision, max_batch=1)
    if model_dir is not None:
        base = trained_base_weights(model_dir)
        result = RunFolder(model_dir).read_result()
        what = f"{result.base_model_id} fine-tuned ({result.method}) in {model_dir.name}"
        return Engine(base, config), AdapterRef(model_dir.name, model_dir), what, base.stand_in
    spec = get_model(base_model)
    base = resolve_weights(weights, model_id=spec.id, weights_repo=spec.weights_repo)
    return Engine(base, config), None, f"{spec.id} (base model)", base.stand_in


class RemoteEngine:
    """The `engine.submit(Request)` of chat_loop over a running `tuneforge serve`: the OpenAI-compatible
    /openai/v1/chat/completions route, streamed, with a bearer key (`tuneforge api-keys create-bearer`).
    `model` is a custom model id, an endpoint id or a base model name, as the route takes them."""

    def __init__(self, url: str, model: str, api_key: str, timeout: float = 600.0):
        self.url, self.model, self.api_key, self.timeout = url.rstrip("/"), model, api_key, timeout

    def submit(self, request: Request) -> RemoteStream:
        import urllib.error
        import urllib.request

        body = {
            "model": self.model,
            "messages": request.messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "seed": request.seed,
            "stream": True,
        }
        http = urllib.request.Request(
            f"{self.url}/openai/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json", "authorization": f"Bearer {self.api_key}"},
        )
        try:
            return RemoteStream(urllib.request.urlopen(http, timeout=self.timeout))
        except urllib.error.HTTPError as err:  # OpenAI's error shape: {"error": {"message": ...}}
            raise RemoteError(_error_message(err.read(), err.code)) from None
        except (urllib.error.URLError, OSError) as err:
            raise RemoteError(f"cannot reach {self.url} ({getattr(err, 'reason', err)})") from None

    def shutdown(self) -> None:
        pass


class RemoteError(Exception):
    """The server refused or could not be reached: the message is the server's own sentence."""


class RemoteStream:
    """The deltas of one streamed reply (server-sent events), then `result()` as the local engine's."""

    def __init__(self, response):
        self._response, self._text, self._finish = response, [], "stop"

    def __iter__(self):
        for raw in self._response:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            event = json.loads(data)
            if "error" in event:
                raise RemoteError(event["error"].get("message", "the server failed while generating"))
            for choice in event.get("choices", []):
                delta = (choice.get("delta") or {}).get("content") or ""
                self._finish = choice.get("finish_reason") or self._finish
                if delta:
                    self._text.append(delta)
                    yield delta

    def cancel(self) -> None:
        self._response.close()  # the server sees the client go away and cancels the generation

    def result(self) -> SimpleNamespace:
        return SimpleNamespace(text="".join(self._text), finish_reason=self._finish)


def _error_message(body: bytes, status: int) -> str:
    try:
        return json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return f"the server answered HTTP {status}"


def chat_loop(engine, adapter: AdapterRef | None, sampling: dict, system: str | None = None, stdin: TextIO | None = None) -> None:
    """Read user lines from `stdin` until /exit or its end; replies go to stdout, notes to stderr."""
    stdin, out, note = stdin or sys.stdin, sys.stdout, sys.stderr
    interactive = stdin.isatty()
    history = [{"role": "system", "content": system}] if system else []
    while True:
        line = _read(stdin, interactive)
        if line is None or line.strip() == "/exit":
            break
        text = line.strip()
        if not text:
            continue
        if text == "/reset":
            history = history[:1] if system else []
            print("(conversation cleared)", file=note)
            continue
        if text.startswith("/"):
            print(f"unknown command {text.split()[0]}; {COMMANDS}", file=note)
            continue
        turn = [*history, {"role": "user", "content": text}]
        try:
            stream = engine.submit(Request(messages=turn, adapter=adapter, **sampling))
        except PromptTooLong as err:
            print(f"{err}. /reset starts a new conversation.", file=note)
            continue
        except RemoteError as err:
            print(f"{err}", file=note)
            continue
        try:
            for delta in stream:
                out.write(delta)
                out.flush()
        except KeyboardInterrupt:
            stream.cancel()
            print("\n(stopped)", file=note)
        except RemoteError as err:
            print(f"\n{err}", file=note)
        completion = stream.result()
        out.write("\n")
        out.flush()
        history = [*turn, {"role": "assistant", "content": completion.text}]
        if completion.finish_reason == "length":
            print("(cut at --max-new-tokens)", file=note)


def _read(stdin: TextIO, interactive: bool) -> str | None:
    if not interactive:
        line = stdin.readline()
        return line or None
    try:
        return input("you> ")  # line editing through readline
    except (EOFError, KeyboardInterrupt):
        print(file=sys.stderr)
        return None
