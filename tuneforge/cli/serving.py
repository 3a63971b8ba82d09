"""`tuneforge chat` and `tuneforge export` (tuneforge/serving; docs/serving.md)."""

from __future__ import annotations

from pathlib import Path

import click

from tuneforge.cli.options import device_options, precision_notice, stand_in_notice, weights_option

_EXPORT_FORMATS = "peft: adapter + tokenizer + README; merged: a Hugging Face folder with the adapter folded in; gguf: one file for llama.cpp/Ollama."


@click.command()
@click.option(
    "--model",
    "model_dir",
    default=None,
    help="A `tuneforge train` output folder; or, with --endpoint, a custom model id, an endpoint id or a base model name.",
)
@click.option("--base-model", "base_model", default=None, metavar="ID", help="Chat with a base model instead (with --weights).")
@click.option(
    "--endpoint",
    "server",
    default=None,
    metavar="URL",
    help="A running `tuneforge serve` (e.g. http://127.0.0.1:8080): chat through its OpenAI-compatible API.",
)
@click.option(
    "--api-key",
    envvar="TUNEFORGE_API_KEY",
    default=None,
    help="With --endpoint: a bearer key from `tuneforge api-keys create-bearer` (or $TUNEFORGE_API_KEY).",
)
@weights_option(required=False)
@click.option("--system", default=None, help="A system message that opens the conversation.")
@click.option("--max-new-tokens", type=click.IntRange(1, 4096), default=512, show_default=True, help="Per reply.")
@click.option("--temperature", type=click.FloatRange(0, 5), default=0.0, show_default=True, help="0 = greedy.")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed.")
@device_options
def chat(
    model_dir, base_model, server, api_key, weights, system, max_new_tokens, temperature, top_p, seed, device, precision
) -> None:
    """Chat in the terminal, replies streamed: /reset clears the history, /exit or Ctrl-D ends."""
    from tuneforge.serving.terminal import COMMANDS, RemoteEngine, chat_loop, open_engine

    remote = None
    if server is not None:
        if model_dir is None or base_model is not None:
            raise click.UsageError("with --endpoint, give --model MODEL_ID (a custom model, an endpoint or a base model name)")
        if not api_key:
            raise click.UsageError("--endpoint needs --api-key KEY (or $TUNEFORGE_API_KEY): `tuneforge api-keys create-bearer`")
        remote = _CountingRefusals(RemoteEngine(server, model_dir, api_key))
        engine, adapter, what = remote, None, f"{model_dir} at {server}"
    else:
        if (model_dir is None) == (base_model is None):
            raise click.UsageError("give either --model DIR or --base-model ID (with --weights), or --model ID --endpoint URL")
        precision_notice(device, precision)
        engine, adapter, what, stand_in = open_engine(
            None if model_dir is None else Path(model_dir), base_model, weights, device, precision
        )
        stand_in_notice(stand_in, "chatting with")
    if click.get_text_stream("stdin").isatty():
        click.echo(f"Chatting with {what}. {COMMANDS}.", err=True)
    sampling = dict(max_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    try:
        chat_loop(engine, adapter, sampling, system)
    finally:
        engine.shutdown()
    if remote is not None and remote.refused:
        # chat_loop has printed the server's sentence for each refused turn (and read on: a long prompt
        # refused is not the end of a conversation); the exit status says the session did not go well.
        raise SystemExit(1)


class _CountingRefusals:
    """A RemoteEngine that counts the turns the server refused or could not be reached for (RemoteError,
    when the request is sent or while the reply streams), so that `chat --endpoint` can exit non-zero."""

    def __init__(self, engine):
        self.engine, self.refused = engine, 0

    def submit(self, request):
        from tuneforge.serving.terminal import RemoteError

        try:
            return _CountedStream(self.engine.submit(request), self)
        except RemoteError:
            self.refused += 1
            raise

    def shutdown(self) -> None:
        self.engine.shutdown()


class _CountedStream:
    def __init__(self, stream, counter: _CountingRefusals):
        self.stream, self.counter = stream, counter

    def __iter__(self):
        from tuneforge.serving.terminal import RemoteError

        try:
            yield from self.stream
        except RemoteError:
            self.counter.refused += 1
            raise

    def cancel(self) -> None:
        self.stream.cancel()

    def result(self):
        return self.stream.result()


@click.command()
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path), help="A `tuneforge train` output folder.")
@click.option("--format", "fmt", required=True, type=click.Choice(["peft", "merged", "gguf"]), help=_EXPORT_FORMATS)
@click.option(
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="The folder (peft, merged) or .gguf file to write; must not exist.",
)
@click.option(
    "--gguf-type",
    type=click.Choice(["f16", "q8_0"]),
    default="f16",
    show_default=True,
    help="GGUF tensor type (1-D tensors stay f32).",
)
def export(model_dir: Path, fmt: str, output: Path, gguf_type: str) -> None:
    """Export a fine-tuned model for PEFT, vLLM, llama.cpp or Ollama (docs/serving.md)."""
    from tuneforge.serving import export as exports

    if fmt == "peft":
        written = exports.export_peft(model_dir, output)
    elif fmt == "merged":
        written = exports.export_merged(model_dir, output)
    else:
        written = exports.export_gguf(model_dir, output, gguf_type)
    click.echo(f"{fmt} export written to {written}")
