"""`tuneforge chat --endpoint` ends non-zero when the server cannot be reached, with the sentence that says
so and no traceback (a refusal by a live server, e.g. an unknown model: tests/service/test_inference.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys


def test_chat_with_an_endpoint_nobody_listens_on_exits_non_zero():
    # A port bound but not listening: a connection to it is refused at once, and no other process can take it.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{taken.getsockname()[1]}"
        done = subprocess.run(
            [sys.executable, "-m", "tuneforge", "chat", "--model", "meta.llama-3.3-70b-instruct", "--endpoint", endpoint],
            input="hello\n",
            capture_output=True,
            text=True,
            env={**os.environ, "TUNEFORGE_API_KEY": "tf-key-secret"},
            timeout=120,
        )
    assert done.returncode == 1, done.stderr
    assert f"cannot reach {endpoint}" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout.strip() == ""
