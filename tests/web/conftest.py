"""Console fixtures: an in-process app for TestClient tests, and helpers shared with the browser
tests (which reuse tests/service's live-server fixtures, imported from there, not copied)."""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass
from html import unescape
from pathlib import Path

import pytest

TENANCY_A = "ocid1.tenancy.oc1..aaaaconsolea"
TENANCY_B = "ocid1.tenancy.oc1..aaaaconsoleb"
PASSWORD = "correct horse battery"
LORA_MODEL = "meta.llama-3.3-70b-instruct"


def service_helpers():
    """tests/service/conftest.py as a module of its own name (both folders have a conftest.py)."""
    name = "tuneforge_service_test_helpers"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "service" / "conftest.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the class is defined
        spec.loader.exec_module(module)
    return sys.modules[name]


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "the page has no CSRF field"
    return match.group(1)


@dataclass
class Console:
    client: object  # starlette TestClient
    data_dir: Path

    def login(self, username: str, password: str = PASSWORD):
        token = csrf_of(self.client.get("/console/login").text)
        return self.client.post(
            "/console/login",
            data={"csrf": token, "username": username, "password": password, "next": "/"},
            follow_redirects=False,
        )

    def csrf(self, path: str = "/") -> str:
        return csrf_of(self.client.get(path).text)


@pytest.fixture
def console_app(tmp_path):
    """The service app (no workers: jobs stay queued) over a fresh SQLite store, with two console
    users in two tenancies."""
    from tuneforge.api.app import create_app
    from tuneforge.services.config import ServiceConfig
    from tuneforge.services.context import Services
    from tuneforge.store.db import default_url, open_store
    from tuneforge.web.users import add_user

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    config = ServiceConfig(data_dir=data_dir, workers=0)
    app = create_app(Services(config, open_store(default_url(data_dir))))
    add_user(data_dir, TENANCY_A, "alice", PASSWORD)
    add_user(data_dir, TENANCY_B, "bob", PASSWORD)
    return app, data_dir


def _signed_in(console_app, username: str | None) -> Console:
    from fastapi.testclient import TestClient

    app, data_dir = console_app
    console = Console(TestClient(app), data_dir)
    if username:
        assert console.login(username).status_code == 303
    return console


@pytest.fixture
def alice(console_app) -> Console:
    return _signed_in(console_app, "alice")


@pytest.fixture
def bob(console_app) -> Console:
    return _signed_in(console_app, "bob")


@pytest.fixture
def anonymous(console_app) -> Console:
    return _signed_in(console_app, None)


def dataset_bytes(n: int = 40) -> bytes:
    import json
    import random

    rng = random.Random(0)
    return "".join(
        json.dumps({"prompt": f"Is {a} odd?", "completion": "yes" if a % 2 else "no"}) + "\n"
        for a in (rng.randint(0, 99) for _ in range(n))
    ).encode()


# ---- the create form, as a browser would post it ----------------------------------------------


def field_errors(html: str) -> dict[str, str]:
    return {k: unescape(v) for k, v in re.findall(r'data-error-for="(\w+)">([^<]+)<', html)}


def dataset_problems(html: str) -> list[str]:
    """The dataset's problems as the form lists them under its error."""
    found = re.search(r'<ul class="error problems" id="dataset-problems">(.*?)</ul>', html, re.S)
    return [unescape(p) for p in re.findall(r"<li>([^<]*)</li>", found.group(1))] if found else []


def create_form(console, **fields) -> dict:
    page = console.client.get("/console/models/new").text
    form = {
        "csrf": csrf_of(page),
        "retryToken": re.search(r'name="retryToken" value="([^"]+)"', page).group(1),
        "compartmentId": "ocid1.compartment.oc1..aaaaweb",
        "baseModelId": LORA_MODEL,
        "cluster": "new",
        "datasetSource": "upload",
        "displayName": "web-model",
        "LORA_TRAINING_CONFIG.totalTrainingEpochs": "1",
    }
    form.update(fields)
    return form


def create_model(console, **fields) -> str:
    form = create_form(console, **fields)
    done = console.client.post(
        "/console/models/new",
        data=form,
        files={"datasetFile": ("train.jsonl", dataset_bytes(), "application/jsonl")},
        follow_redirects=False,
    )
    assert done.status_code == 303, field_errors(done.text)
    return done.headers["location"].rsplit("/", 1)[-1]
