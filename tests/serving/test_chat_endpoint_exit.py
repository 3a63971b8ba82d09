"""`tuneforge chat --endpoint` ends non-zero when the server refuses (an unknown model) or cannot be reached,
with the sentence that says so and no traceback (it used to exit 0)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from helpers.servers import running_service


def chat(endpoint: str, model: str, key: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tuneforge", "chat", "--model", model, "--endpoint", endpoint],
        input="hello\n",
        capture_output=True,
        text=True,
        env={**os.environ, "TUNEFORGE_API_KEY": key},
        timeout=120,
    )


def test_chat_with_an_endpoint_nobody_listens_on_exits_non_zero():
    # A port bound but not listening: a connection to it is refused at once, and no other process can take it.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{taken.getsockname()[1]}"
        done = chat(endpoint, "meta.llama-3.3-70b-instruct", "tf-key-secret")
    assert done.returncode == 1, done.stderr
    assert f"cannot reach {endpoint}" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout.strip() == ""


def test_chat_with_a_model_the_server_does_not_know_exits_non_zero(tiny_llama, tmp_path):
    with running_service("sqlite", tmp_path, tiny_llama, start=False) as svc:
        svc.args = ["--workers", "0"]
        svc.start()
        bearer = svc.cli(
            "api-keys", "create-bearer", "--tenancy", "ocid1.tenancy.oc1..aaaachat", "--user", "ocid1.user.oc1..aaaachat"
        )
        assert bearer.returncode == 0, bearer.stderr
        done = chat(svc.endpoint, "ocid1.generativeaimodel.oc1.local.nosuch", bearer.stdout.strip())
    assert done.returncode == 1, done.stderr
    assert "not found" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout.strip() == ""
