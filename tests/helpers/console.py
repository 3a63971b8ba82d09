"""The web console as a browser sees it, through starlette's TestClient: sign-in, CSRF tokens, the
create-model form and the errors it shows."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from html import unescape
from pathlib import Path

from helpers.fine_tuning import LORA_MODEL

TENANCY_A = "ocid1.tenancy.oc1..aaaaconsolea"
TENANCY_B = "ocid1.tenancy.oc1..aaaaconsoleb"
PASSWORD = "correct horse battery"


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


def signed_in(app, data_dir: Path, username: str | None) -> Console:
    """A TestClient on `app`, signed in as `username` (None: anonymous)."""
    from fastapi.testclient import TestClient

    console = Console(TestClient(app), data_dir)
    if username:
        assert console.login(username).status_code == 303
    return console


def dataset_bytes(n: int = 40) -> bytes:
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
