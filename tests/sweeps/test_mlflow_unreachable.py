"""A tracking URI nobody answers at is refused in a sentence: no urllib3 text with Python reprs
("Caused by NewConnectionError(...)") reaches the user."""

from __future__ import annotations

import socket

import pytest

from tuneforge.errors import TuneForgeError
from tuneforge.tracking.mlflow_runs import check_server


def test_an_unreachable_mlflow_server_is_named_in_a_sentence(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    with pytest.raises(TuneForgeError) as caught:
        check_server(uri)
    message = str(caught.value)
    assert message.startswith(f"--mlflow-tracking-uri {uri}: cannot log to MLflow there")
    assert "is the MLflow server running?" in message
    for leak in ("Caused by", "Error(", "HTTPConnection", "object at 0x", "Max retries"):
        assert leak not in message, message
