"""`tuneforge chat` driven through a pipe, and `tuneforge export`, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers.serving import reference_greedy


def tuneforge(*args, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuneforge", *args], input=stdin, capture_output=True, text=True, timeout=300)


def test_chat_streams_replies_keeps_history_and_resets(trained_runs, tiny_llama):
    run = trained_runs["lora"]
    # the second line only gets the first reply's answer if the history is sent; /reset drops it
    lines = "Is 7 odd?\nIs 8 odd?\n/reset\nIs 8 odd?\n/exit\nnever read\n"
    done = tuneforge("chat", "--model", str(run), "--max-new-tokens", "6", "--device", "cpu", stdin=lines)
    assert done.returncode == 0, done.stderr
    replies = done.stdout.splitlines()
    assert len(replies) == 3
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    first = tokenizer.decode(reference_greedy(tiny_llama, run / "adapter", "Is 7 odd?", 6), skip_special_tokens=True)
    fresh = tokenizer.decode(reference_greedy(tiny_llama, run / "adapter", "Is 8 odd?", 6), skip_special_tokens=True)
    assert replies[0] == first
    conversation = [
        {"role": "user", "content": "Is 7 odd?"},
        {"role": "assistant", "content": first},
        {"role": "user", "content": "Is 8 odd?"},
    ]
    with_history = reference_greedy(tiny_llama, run / "adapter", conversation, 6)
    assert replies[1] == tokenizer.decode(with_history, skip_special_tokens=True)
    assert replies[2] == fresh  # after /reset: as if the conversation had just begun
    assert "(conversation cleared)" in done.stderr


def test_chat_with_a_base_model_and_sampling_flags(tiny_llama):
    from click.testing import CliRunner

    from tuneforge.cli import main

    args = ["chat", "--base-model", "meta.llama-3.3-70b-instruct", "--weights", str(tiny_llama), "--device", "cpu"]
    args += ["--max-new-tokens", "3", "--temperature", "0.8", "--seed", "3"]
    done = CliRunner().invoke(main, args, input="hello\n/what\n")
    assert done.exit_code == 0, done.output
    assert "unknown command /what" in done.output


def test_export_command(trained_runs, tmp_path):
    """One real `tuneforge export` process (the formats themselves: test_export.py), then the errors in-process."""
    from click.testing import CliRunner

    from tuneforge.cli import main

    run = str(trained_runs["lora"])
    done = tuneforge("export", "--model", run, "--format", "gguf", "--output", str(tmp_path / "m.gguf"), "--gguf-type", "q8_0")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "m.gguf").stat().st_size > 0 and "gguf export written" in done.stdout
    peft = ["export", "--model", run, "--format", "peft", "--output", str(tmp_path / "p")]
    assert CliRunner().invoke(main, peft).exit_code == 0
    assert json.loads((tmp_path / "p" / "adapter_config.json").read_text())["peft_type"] == "LORA"
    again = CliRunner().invoke(main, peft)
    assert again.exit_code == 2 and "already exists" in again.output and "Traceback" not in again.output
    missing = CliRunner().invoke(main, ["export", "--model", str(tmp_path / "nothing"), "--format", "gguf", "--output", "x.gguf"])
    assert missing.exit_code == 2 and "not a finished TuneForge model folder" in missing.output
