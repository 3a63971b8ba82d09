"""The console in headless Chromium (Debian's package) through Playwright: a live `tuneforge serve` with
one console user, a signed-in tab, the create-model form, screenshots at every width. Module-scoped
fixtures (artifacts, server, browser, page) for the browser tests to import by name."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from helpers.console import PASSWORD
from helpers.fine_tuning import LORA_MODEL
from helpers.servers import running_service

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TENANCY = "ocid1.tenancy.oc1..aaaabrowser"
TRAIN_TIMEOUT_MS = 300_000  # a bound, not a timing: training on a loaded 2-core machine can take minutes
WIDTHS = (390, 768, 1280)

playwright_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    root = os.environ.get("TUNEFORGE_ARTIFACTS")
    folder = Path(root) / "console" if root else tmp_path_factory.mktemp("console-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nconsole screenshots: {folder}")
    return folder


def serve_with_user(tmp_path_factory, weights: Path, name: str):
    with running_service("sqlite", tmp_path_factory.mktemp(name), weights) as svc:
        password_file = svc.data_dir.parent / "password"
        password_file.write_text(PASSWORD)
        added = svc.cli("console-users", "add", "--tenancy", TENANCY, "--username", "ada", "--password-file", str(password_file))
        assert added.returncode == 0, added.stderr
        yield svc


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_llama):
    yield from serve_with_user(tmp_path_factory, tiny_llama, "console")


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


def signed_in_tab(browser, server, errors: list[str]):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.set_default_timeout(15_000)
    tab = context.new_page()
    tab.on("pageerror", lambda err: errors.append(str(err)))
    tab.on("dialog", lambda dialog: dialog.accept())  # the delete/cancel confirmations
    tab.goto(server.endpoint + "/")
    tab.wait_for_url(re.compile(r"/console/login"))
    sign_in(tab)
    tab.wait_for_url(server.endpoint + "/")
    return context, tab


def sign_in(tab, password: str = PASSWORD) -> None:
    tab.fill('#password-login input[name="username"]', "ada")
    tab.fill('#password-login input[name="password"]', password)
    tab.click('#password-login button[type="submit"]')


@pytest.fixture(scope="module")
def page(browser, server):
    errors: list[str] = []
    context, tab = signed_in_tab(browser, server, errors)
    yield tab
    assert not errors, f"JavaScript errors: {errors}"
    context.close()


def expect(locator):
    return playwright_api.expect(locator)


def at_every_width(page, name: str, artifacts: Path, check=None) -> None:
    """Screenshots of the page as it is at a phone's, a tablet's and a desktop's width (nothing
    scrolls sideways at any), then back to the desktop's."""
    try:
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 900})
            fits_without_sideways_scrolling(page)
            if check:
                check()
            page.screenshot(path=str(artifacts / f"{name}-{width}.png"), full_page=True)
    finally:
        page.set_viewport_size({"width": 1280, "height": 900})


def fits_without_sideways_scrolling(page) -> None:
    scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll <= inner, f"{page.url} scrolls sideways at {inner} px: {scroll} px wide"


def choose_dataset(page, dataset: Path) -> None:
    page.set_input_files('input[name="datasetFile"]', str(dataset))


def create_model(page, server, dataset: Path, name: str, artifacts: Path | None = None, **hyper) -> str:
    page.goto(server.endpoint + "/console/models/new")
    page.select_option("#baseModelId", LORA_MODEL)
    page.fill('input[name="displayName"]', name)
    choose_dataset(page, dataset)
    group = page.locator('fieldset[data-group="LORA_TRAINING_CONFIG"]')
    for field, value in hyper.items():
        group.locator(f'input[data-field="{field}"]').fill(str(value))
    epochs = int(hyper.get("totalTrainingEpochs", 3))
    # 40 examples -> 32 training + 8 validation, batch 8 -> 4 steps per epoch.
    expect(page.locator("#plan-text")).to_contain_text(
        f"32 training + 8 validation; 4 steps per epoch; totalTrainingSteps = {4 * epochs}"
    )
    if artifacts:
        page.screenshot(path=str(artifacts / "create.png"), full_page=True)
    page.click("#create-button")
    page.wait_for_url(re.compile(r"/console/models/ocid1\.generativeaimodel\."))
    return page.url.rsplit("/", 1)[-1]


def wait_active(page):
    # The page polls while CREATING and reloads itself when the state changes.
    expect(page.locator("#state")).to_have_text("ACTIVE", timeout=TRAIN_TIMEOUT_MS)
