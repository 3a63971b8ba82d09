"""The details page's "Try it" panel (web/try_it_pages.py, services/try_it.py, static/try_it.js).

Route level, in process (TestClient; no worker, so a created model stays CREATING): sign-in, CSRF,
another tenancy, a model that is not ACTIVE, bad inputs named by field. Cancellation: closing the
events' iterator cancels the engine's streams. Then against a live `tuneforge serve` with a tiny
model trained through the console: the route streams a reply (and the base model's beside it), is
refused without CSRF and for another tenancy; and in Chromium the panel streams an answer, keeps the
conversation, resets it, compares with the base model, at 390, 768 and 1280 px (screenshots in the
artifacts folder). Tiny random models answer gibberish: the tests look at streaming and completion,
never at the words."""

from __future__ import annotations

import asyncio
import json
import os
import re

import httpx
import pytest
from helpers.browser import CHROMIUM, WIDTHS, at_every_width, expect, wait_active
from helpers.browser import artifacts as artifacts
from helpers.browser import browser as browser
from helpers.browser import create_model as create_in_browser
from helpers.browser import page as page
from helpers.browser import server as server
from helpers.console import PASSWORD, create_model, csrf_of, dataset_bytes

# artifacts, browser, page and server are helpers.browser's module-scoped fixtures, imported by
# name: this module gets a live server (and a trained model) of its own.
API = "/console/api/models/{}/try-it"
HELLO = {"messages": [{"role": "user", "content": "Is 7 odd?"}], "maxTokens": 8, "temperature": 0.0}


def post(console, model_id: str, body=HELLO, csrf: str | None = "page"):
    token = console.csrf() if csrf == "page" else csrf
    headers = {"x-csrf-token": token} if token else {}
    return console.client.post(API.format(model_id), json=body, headers=headers)


# ---- route level, in process ----------------------------------------------------------------


def test_sign_in_and_csrf_are_required(alice, anonymous):
    model_id = create_model(alice)
    assert post(anonymous, model_id, csrf=None).status_code == 401
    refused = post(alice, model_id, csrf=None)
    assert refused.status_code == 403 and "CSRF" in refused.json()["message"]
    assert post(alice, model_id, csrf="not-the-token").status_code == 403


def test_another_tenancy_is_refused(alice, bob):
    model_id = create_model(alice)
    refused = post(bob, model_id)
    assert refused.status_code == 404 and refused.json()["code"] == "NotAuthorizedOrNotFound"
    assert model_id not in refused.text


def test_a_model_that_is_not_active_gets_a_named_error(alice):
    model_id = create_model(alice)  # no worker: it stays CREATING
    refused = post(alice, model_id)
    assert refused.status_code == 409 and refused.json()["code"] == "IncorrectState"
    assert refused.json()["message"] == f"model {model_id} is CREATING; only an ACTIVE model answers"
    page = alice.client.get(f"/console/models/{model_id}").text
    assert 'id="try-it"' not in page and "try_it.js" not in page  # the panel is for ACTIVE models only


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"maxTokens": 5000}, "maxTokens: 5000 is not allowed; allowed: an integer from 1 to 4096"),
        ({"maxTokens": "many"}, 'maxTokens: "many" is not allowed; allowed: an integer from 1 to 4096'),
        ({"temperature": 3}, "temperature: 3 is not allowed; allowed: a number from 0 to 2"),
        ({"messages": []}, "messages: a non-empty list of {role, content} messages is required"),
        (
            {"messages": [{"role": "system", "content": "x"}]},
            'messages[0].role: "system" is not allowed; allowed: user, assistant',
        ),
        ({"messages": [{"role": "user", "content": "  "}]}, "messages[0].content: must be a non-empty string"),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, "messages: the last"),
        ({"baseMessages": "x"}, "baseMessages: a non-empty list"),
        ({"temperature": None}, "temperature: null is not allowed; allowed: a number from 0 to 2"),
        ({"messages": ["hi"]}, 'messages[0]: "hi" is not allowed; allowed: an object with role and content'),
    ],
)
def test_bad_inputs_are_named(alice, change, message):
    model_id = create_model(alice)
    refused = post(alice, model_id, {**HELLO, **change})
    assert refused.status_code == 400 and refused.json()["message"].startswith(message), refused.json()


def test_a_body_that_is_not_json_is_refused_in_words(alice):
    model_id = create_model(alice)
    refused = alice.client.post(
        API.format(model_id), content=b"{", headers={"x-csrf-token": alice.csrf(), "content-type": "application/json"}
    )
    assert refused.status_code == 400 and refused.json()["message"] == "The request must be a JSON object."


def test_closing_the_events_cancels_the_generations():
    """What the route does when the browser goes away: its iterator is closed, the streams cancelled."""
    from tuneforge.services.actions import inference, try_it
    from tuneforge.serving.stream import Stream

    cancelled = []
    model, base = Stream(3, lambda: cancelled.append("model")), Stream(3, lambda: cancelled.append("base"))
    chat = try_it.Chat(inference.Generation(None, [model], 0.0), inference.Generation(None, [base], 0.0))

    async def read_one_then_leave():
        events = try_it.events(chat)
        model.put("Hel")
        first = await anext(events)
        await events.aclose()
        return first

    assert asyncio.run(read_one_then_leave()) == {"side": "model", "delta": "Hel"}
    assert sorted(cancelled) == ["base", "model"] and model.cancelled and base.cancelled


# ---- a live server and a browser (the fixtures of test_browser.py) ----------------------------

needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def trained(page, server, tmp_path_factory) -> str:
    """A tiny model trained through the console (1 epoch: 4 steps), ACTIVE."""
    dataset = tmp_path_factory.mktemp("try-it") / "parity.jsonl"
    dataset.write_bytes(dataset_bytes(40))
    model_id = create_in_browser(page, server, dataset, "try-it", totalTrainingEpochs=1)
    wait_active(page)
    return model_id


def sign_in_as(client: httpx.Client, username: str) -> str:
    """Signs the client in with the login form; the CSRF token of its session."""
    token = csrf_of(client.get("/console/login").text)
    done = client.post("/console/login", data={"csrf": token, "username": username, "password": PASSWORD, "next": "/"})
    assert done.status_code == 303, done.text
    return csrf_of(client.get("/").text)


def events_of(client: httpx.Client, model_id: str, body: dict, csrf: str) -> list[dict]:
    events = []
    with client.stream("POST", API.format(model_id), json=body, headers={"x-csrf-token": csrf}) as answer:
        assert answer.status_code == 200, answer.read()
        assert answer.headers["content-type"].startswith("text/event-stream")
        for line in answer.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    return events


@needs_chromium
def test_the_route_streams_a_reply_for_an_active_model(server, trained):
    with httpx.Client(base_url=server.endpoint, timeout=60) as client:
        csrf = sign_in_as(client, "ada")
        # Greedy: the same answer on every run.
        body = {"messages": [{"role": "user", "content": "Is 7 odd?"}], "maxTokens": 24, "temperature": 0.0}
        events = events_of(client, trained, body, csrf)
        deltas = [e for e in events if "delta" in e]
        assert deltas and events[-1]["done"] and events[-1]["side"] == "model", events
        assert events[-1]["finishReason"] in ("stop", "length") and 1 <= events[-1]["completionTokens"] <= 24
        assert all("delta" in e for e in events[:-1])

        # A conversation, with the base model's answers beside: both sides stream and end once each.
        history = [
            {"role": "user", "content": "Is 7 odd?"},
            {"role": "assistant", "content": "".join(e["delta"] for e in deltas)},
        ]
        history = [m for m in history if m["content"].strip()] + [{"role": "user", "content": "And 8?"}]
        both = events_of(client, trained, {**body, "messages": history, "baseMessages": history}, csrf)
        ends = sorted(e["side"] for e in both if e.get("done"))
        assert ends == ["base", "model"], both

        # A conversation longer than the model's context (512 tokens here) is refused by name.
        long = {**body, "messages": [{"role": "user", "content": "Is 7 odd? " * 300}]}
        refused = client.post(API.format(trained), json=long, headers={"x-csrf-token": csrf})
        assert refused.status_code == 400 and refused.json()["message"].startswith("messages: the prompt is "), refused.text

        # Without the CSRF token: refused before anything is generated.
        refused = client.post(API.format(trained), json=body)
        assert refused.status_code == 403


@needs_chromium
def test_the_route_refuses_another_tenancy(server, trained, tmp_path):
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD)
    other = "ocid1.tenancy.oc1..aaaatryitother"
    added = server.cli("console-users", "add", "--tenancy", other, "--username", "eve", "--password-file", str(password_file))
    assert added.returncode == 0, added.stderr
    with httpx.Client(base_url=server.endpoint, timeout=60) as client:
        csrf = sign_in_as(client, "eve")
        refused = client.post(API.format(trained), json=HELLO, headers={"x-csrf-token": csrf})
        assert refused.status_code == 404 and refused.json()["code"] == "NotAuthorizedOrNotFound"
        assert client.get(f"/console/models/{trained}").status_code == 404


def answers(tab, log: str = "#try-log"):
    return tab.locator(f"{log} li.try-answer")


def send(tab, text: str) -> None:
    tab.fill("#try-message", text)
    tab.click("#try-send")


@needs_chromium
def test_try_it_in_a_browser(page, server, trained, artifacts):
    page.goto(f"{server.endpoint}/console/models/{trained}")
    panel = page.locator("#try-it")
    expect(panel).to_be_visible()
    expect(page.locator("#try-max-tokens")).to_have_value("256")
    expect(page.locator("#try-temperature")).to_have_value("0.7")

    # A bad setting is said in words, in the page, before anything is sent.
    page.fill("#try-max-tokens", "0")
    send(page, "Is 7 odd?")
    expect(page.locator("#try-error")).to_have_text('Max tokens: "0" is not allowed; allowed: a whole number from 1 to 4096.')
    expect(answers(page)).to_have_count(0)
    page.fill("#try-max-tokens", "48")
    page.fill("#try-temperature", "0")  # greedy: the same answer on every run

    # The answer streams in: text appears, then the answer ends with its finish reason.
    statuses = []
    page.on("response", lambda r: "/try-it" in r.url and statuses.append(r.status))
    send(page, "Is 7 odd?")
    expect(page.locator("#try-error")).to_be_hidden()
    first = answers(page).first
    expect(first).to_have_attribute("data-chars", re.compile(r"^[1-9]\d*$"), timeout=60_000)
    expect(first).to_have_attribute("data-finish", re.compile(r"^(stop|length)$"), timeout=60_000)
    expect(first.locator(".try-meta")).to_have_text(re.compile(r"^(finished|stopped at max tokens), \d+ tokens?$"))
    expect(panel).to_have_attribute("data-state", "idle")
    assert statuses == [200]
    expect(page.locator("#try-compare")).to_be_disabled()  # fixed for the conversation, until Reset

    # The conversation goes on: the second Send carries the first turn.
    sent = []
    page.on("request", lambda r: "/try-it" in r.url and sent.append(json.loads(r.post_data)))
    send(page, "And 8?")
    expect(answers(page)).to_have_count(2)
    expect(answers(page).nth(1)).to_have_attribute("data-finish", re.compile(r"^(stop|length)$"), timeout=60_000)
    roles = [m["role"] for m in sent[-1]["messages"]]
    assert roles[0] == "user" and roles[-1] == "user" and len(roles) in (2, 3), sent[-1]
    assert sent[-1]["maxTokens"] == 48 and sent[-1]["temperature"] == 0 and "baseMessages" not in sent[-1]
    at_every_width(page, "try-it", artifacts)

    # Reset forgets it; compare shows the base model's answer beside this model's.
    page.click("#try-reset")
    expect(page.locator("#try-log li")).to_have_count(0)
    expect(page.locator("#try-compare")).to_be_enabled()
    page.check("#try-compare")
    expect(page.locator("#try-base-side")).to_be_visible()
    send(page, "Is 9 odd?")
    for log in ("#try-log", "#try-base-log"):
        expect(answers(page, log)).to_have_count(1)
        expect(answers(page, log).first).to_have_attribute("data-finish", re.compile(r"^(stop|length)$"), timeout=60_000)
    assert sent[-1]["baseMessages"] == sent[-1]["messages"] == [{"role": "user", "content": "Is 9 odd?"}]
    for width in WIDTHS:  # side by side on a desktop, one above the other on a phone
        page.set_viewport_size({"width": width, "height": 900})
        model_box = page.locator("#try-log").bounding_box()
        base_box = page.locator("#try-base-log").bounding_box()
        assert (base_box["x"] > model_box["x"]) if width >= 720 else (base_box["y"] > model_box["y"]), width
    at_every_width(page, "try-it-compare", artifacts)


@needs_chromium
def test_stop_ends_an_answer_and_the_next_one_is_answered(page, server, trained):
    """Stop aborts the page's fetch (the server sees the browser go away and cancels). Pressed in the
    same task as Send, so that it comes before the answer however fast the model is."""
    page.goto(f"{server.endpoint}/console/models/{trained}")
    page.fill("#try-message", "Count to a thousand.")
    page.evaluate("document.getElementById('try-send').click(); document.getElementById('try-stop').click()")
    expect(page.locator("#try-it")).to_have_attribute("data-state", "idle")
    expect(answers(page).first).to_have_attribute("data-finish", "cancelled")
    expect(answers(page).first.locator(".try-meta")).to_have_text("stopped")
    expect(page.locator("#try-error")).to_be_hidden()
    sent = []
    page.on("request", lambda r: "/try-it" in r.url and sent.append(json.loads(r.post_data)))
    page.fill("#try-max-tokens", "8")
    send(page, "Is 7 odd?")
    expect(answers(page)).to_have_count(2)
    expect(answers(page).nth(1)).to_have_attribute("data-finish", re.compile(r"^(stop|length)$"), timeout=60_000)
    # The stopped turn had no answer to keep: the history goes on with the user's two messages.
    assert [m["content"] for m in sent[-1]["messages"]] == ["Count to a thousand.", "Is 7 odd?"]
