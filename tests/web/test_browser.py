"""The console in a real browser: headless Chromium (Debian's package) driven by Playwright against
a live `tuneforge serve` on 127.0.0.1 training a tiny random Llama. One user does OCI's loop:
sign in, create a model (the page shows totalTrainingSteps first), watch it reach ACTIVE, read
"Model performance" and the curves, create another with another learning rate, compare the two,
download the adapter, delete. Screenshots go to $TUNEFORGE_ARTIFACTS/console (else a tmp dir),
printed at the start."""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import pytest
from conftest import LORA_MODEL, PASSWORD, dataset_bytes, service_helpers

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]  # fmt: skip
TENANCY = "ocid1.tenancy.oc1..aaaabrowser"
TRAIN_TIMEOUT_MS = 120_000

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    root = os.environ.get("TUNEFORGE_ARTIFACTS")
    folder = Path(root) / "console" if root else tmp_path_factory.mktemp("console-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nconsole screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_llama):
    helpers = service_helpers()
    with helpers.running_service("sqlite", tmp_path_factory.mktemp("console"), tiny_llama) as svc:
        password_file = svc.data_dir.parent / "password"
        password_file.write_text(PASSWORD)
        added = svc.cli("console-users", "add", "--tenancy", TENANCY, "--username", "ada", "--password-file", str(password_file))
        assert added.returncode == 0, added.stderr
        yield svc


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.set_default_timeout(15_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda err: errors.append(str(err)))
    tab.on("dialog", lambda dialog: dialog.accept())  # the delete/cancel confirmations
    tab.goto(server.endpoint + "/")
    tab.wait_for_url(re.compile(r"/console/login"))
    tab.fill('#password-login input[name="username"]', "ada")
    tab.fill('#password-login input[name="password"]', PASSWORD)
    tab.click('#password-login button[type="submit"]')
    tab.wait_for_url(server.endpoint + "/")
    yield tab
    assert not errors, f"JavaScript errors: {errors}"
    context.close()


def expect(locator):
    return playwright_api.expect(locator)


def create_model(page, server, dataset: Path, name: str, artifacts: Path | None = None, **hyper) -> str:
    page.goto(server.endpoint + "/console/models/new")
    page.select_option("#baseModelId", LORA_MODEL)
    page.fill('input[name="displayName"]', name)
    page.set_input_files('input[name="datasetFile"]', str(dataset))
    group = page.locator('fieldset[data-group="LORA_TRAINING_CONFIG"]')
    for field, value in hyper.items():
        group.locator(f'input[data-field="{field}"]').fill(str(value))
    epochs = int(hyper.get("totalTrainingEpochs", 3))
    # 40 examples -> 32 training + 8 validation, batch 8 -> 4 steps per epoch.
    expect(page.locator("#plan-text")).to_contain_text(f"32 training + 8 validation; 4 steps per epoch; totalTrainingSteps = {4 * epochs}")
    if artifacts:
        page.screenshot(path=str(artifacts / "create.png"), full_page=True)
    page.click("#create-button")
    page.wait_for_url(re.compile(r"/console/models/ocid1\.generativeaimodel\."))
    return page.url.rsplit("/", 1)[-1]


def wait_active(page):
    # The page polls while CREATING and reloads itself when the state changes.
    expect(page.locator("#state")).to_have_text("ACTIVE", timeout=TRAIN_TIMEOUT_MS)


def chart_points(page, chart_id: str) -> int:
    return int(page.locator(f"#{chart_id}").get_attribute("data-points") or 0)


def test_the_whole_loop_in_a_browser(page, server, artifacts, tmp_path):
    dataset = tmp_path / "parity.jsonl"
    dataset.write_bytes(dataset_bytes(40))

    # The create form checks fields in the page before anything is sent.
    page.goto(server.endpoint + "/console/models/new")
    expect(page.locator("#baseModelId option", has_text="(deprecated)").first).to_be_attached()
    lora_r = page.locator('fieldset[data-group="LORA_TRAINING_CONFIG"] input[data-field="loraR"]')
    expect(lora_r).to_have_value("8")  # the default, pre-filled
    lora_r.fill("99")
    expect(page.locator('fieldset[data-group="LORA_TRAINING_CONFIG"] [data-error-for="loraR"]')).to_contain_text("an integer from 1 to 64")

    live_answers: list[dict] = []
    page.on("response", lambda r: "/live?" in r.url and r.ok and live_answers.append(r.json()))
    first = create_model(page, server, dataset, "parity-lr-2e-4", artifacts, totalTrainingEpochs=3, learningRate="0.0002")
    expect(page.locator("#progress")).to_be_visible()
    page.screenshot(path=str(artifacts / "details-training.png"), full_page=True)
    wait_active(page)
    assert live_answers, "the details page never polled for progress"

    accuracy = float(page.locator("#final-accuracy").inner_text())
    loss = float(page.locator("#final-loss").inner_text())
    assert 0.0 <= accuracy <= 1.0 and loss > 0
    expect(page.locator("#early-stopping")).to_contain_text("of 12 steps")
    for chart in ("chart-loss", "chart-lr", "chart-val-loss", "chart-val-acc"):
        expect(page.locator(f"#{chart} svg polyline.series")).to_have_count(1)
        assert chart_points(page, chart) >= 1, chart
    assert chart_points(page, "chart-loss") == 12  # every step is logged for the first 20
    expect(page.locator("#log li").last).to_contain_text("Training succeeded")
    expect(page.locator("#training-config")).to_contain_text("loraDropout")
    page.screenshot(path=str(artifacts / "details.png"), full_page=True)

    with page.expect_download() as download:
        page.click("#download-adapter")
    archive = tmp_path / "adapter.zip"
    download.value.save_as(archive)
    assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors"} <= set(zipfile.ZipFile(archive).namelist())

    # Not satisfied? Create another like this one, with another learning rate (the form is pre-filled).
    page.click("text=Create another like this")
    expect(page.locator('input[name="objectName"]')).not_to_have_value("")
    page.locator('fieldset[data-group="LORA_TRAINING_CONFIG"] input[data-field="learningRate"]').fill("0.002")
    expect(page.locator("#plan-text")).to_contain_text("totalTrainingSteps = 12")  # planned from the stored object
    page.click("#create-button")
    page.wait_for_url(re.compile(r"/console/models/ocid1\."))
    second = page.url.rsplit("/", 1)[-1]
    wait_active(page)

    page.goto(server.endpoint + "/?base=" + LORA_MODEL)
    rows = page.locator("#custom-models tbody tr")
    expect(rows).to_have_count(2)
    page.screenshot(path=str(artifacts / "models.png"), full_page=True)
    page.check(f'input[name="id"][value="{first}"]')
    page.check(f'input[name="id"][value="{second}"]')
    page.click("text=Compare selected")
    expect(page.locator("#compare-table tr.diff", has_text="learningRate")).to_have_count(1)
    expect(page.locator("#compare-table tr.diff", has_text="loraR")).to_have_count(0)
    for chart in ("chart-loss", "chart-lr", "chart-val-loss"):
        expect(page.locator(f"#{chart} svg polyline.series")).to_have_count(2)
    page.screenshot(path=str(artifacts / "compare.png"), full_page=True)

    page.goto(f"{server.endpoint}/console/models/{second}")
    page.click("#delete")
    expect(page.locator("#state")).to_have_text("DELETED")
    page.goto(server.endpoint + "/")
    expect(page.locator("#custom-models tbody tr")).to_have_count(1)


def test_cancel_while_training(page, server, tmp_path):
    dataset = tmp_path / "big.jsonl"
    dataset.write_bytes(dataset_bytes(40))
    create_model(page, server, dataset, "to-cancel", totalTrainingEpochs=10)
    page.click("#cancel")  # = delete while running, as the API does
    expect(page.locator("#state")).to_have_text(re.compile("DELETING|DELETED"))
    expect(page.locator("#state")).to_have_text("DELETED", timeout=TRAIN_TIMEOUT_MS)
    expect(page.locator("#log")).to_contain_text("Canceled")
