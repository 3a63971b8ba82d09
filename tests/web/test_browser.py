"""The console in a real browser: headless Chromium (Debian's package) driven by Playwright against
a live `tuneforge serve` on 127.0.0.1 training a tiny random Llama. One user does OCI's loop:
sign in, create a model (the page shows totalTrainingSteps first), watch it reach ACTIVE, read
"Model performance" and the curves, create another with another learning rate, compare the two,
download the adapter, delete. Then every page at a phone's, a tablet's and a desktop's width, the
charts' hover, zoom, log scale and smoothing, and report.html opened from disk offline, on the same
server and models. Screenshots go to $TUNEFORGE_ARTIFACTS/console (else a tmp dir), printed at the
start."""

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
WIDTHS = (390, 768, 1280)
CHARTS = ("chart-loss", "chart-lr", "chart-val-loss", "chart-val-acc")

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


@pytest.fixture(scope="module")
def made() -> dict[str, str]:
    """Model ids the loop test created ("first", "second"), reused by the later tests (see `pair`)."""
    return {}


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


def chart_points(page, chart_id: str) -> int:
    return int(page.locator(f"#{chart_id}").get_attribute("data-points") or 0)


def chart_series(page, chart_id: str) -> list[str]:
    """The labels of the curves uPlot draws in a chart (its series 0 is the step axis)."""
    expect(page.locator(f"#{chart_id} canvas")).to_be_attached()
    return page.evaluate(f"document.getElementById('{chart_id}').uplot.series.slice(1).map(s => s.label)")


def test_the_whole_loop_in_a_browser(page, server, artifacts, made, tmp_path):
    chart_names = {"chart-loss": "training loss", "chart-lr": "learning rate", "chart-val-loss": "validation loss",
                   "chart-val-acc": "validation accuracy"}  # fmt: skip
    dataset = tmp_path / "parity.jsonl"
    dataset.write_bytes(dataset_bytes(40))

    # The create form checks fields in the page before anything is sent.
    page.goto(server.endpoint + "/console/models/new")
    expect(page.locator("#baseModelId option", has_text="(deprecated)").first).to_be_attached()
    lora_r = page.locator('fieldset[data-group="LORA_TRAINING_CONFIG"] input[data-field="loraR"]')
    expect(lora_r).to_have_value("8")  # the default, pre-filled
    lora_r.fill("99")
    expect(page.locator('fieldset[data-group="LORA_TRAINING_CONFIG"] [data-error-for="loraR"]')).to_contain_text(
        "an integer from 1 to 64"
    )

    live_answers: list[str] = []
    # The URL, not the body: a body is gone once the page reloads itself.
    page.on("response", lambda r: "/live?" in r.url and r.ok and live_answers.append(r.url))
    first = create_model(page, server, dataset, "parity-lr-2e-4", artifacts, totalTrainingEpochs=3, learningRate="0.0002")
    expect(page.locator("#progress")).to_be_visible()
    page.screenshot(path=str(artifacts / "details-training.png"), full_page=True)
    wait_active(page)
    assert live_answers, "the details page never polled for progress"

    accuracy = float(page.locator("#final-accuracy").inner_text())
    loss = float(page.locator("#final-loss").inner_text())
    assert 0.0 <= accuracy <= 1.0 and loss > 0
    expect(page.locator("#early-stopping")).to_contain_text("of 12 steps")
    for chart in CHARTS:
        assert chart_series(page, chart) == [chart_names[chart]], chart
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
    page.locator('fieldset[data-group="LORA_TRAINING_CONFIG"] input[data-field="learningRate"]').fill("0.01")
    expect(page.locator("#plan-text")).to_contain_text("totalTrainingSteps = 12")  # planned from the stored object
    page.click("#create-button")
    page.wait_for_url(re.compile(r"/console/models/ocid1\."))
    second = page.url.rsplit("/", 1)[-1]
    wait_active(page)
    made.update(first=first, second=second)

    page.goto(server.endpoint + "/?base=" + LORA_MODEL)
    rows = page.locator("#custom-models tbody tr")
    expect(rows).to_have_count(2)
    page.screenshot(path=str(artifacts / "models.png"), full_page=True)
    page.check(f'input[name="id"][value="{first}"]')
    page.check(f'input[name="id"][value="{second}"]')
    page.click("text=Compare selected")
    expect(page.locator("#compare-table tr.diff", has_text="learningRate")).to_have_count(1)
    expect(page.locator("#compare-table tr.diff", has_text="loraR")).to_have_count(0)
    for chart in CHARTS:
        assert sorted(chart_series(page, chart)) == ["parity-lr-2e-4", "parity-lr-2e-4-retry"], chart  # the legend names each run
    page.screenshot(path=str(artifacts / "compare.png"), full_page=True)


@pytest.fixture
def pair(page, server, made, tmp_path) -> tuple[str, str]:
    """Two ACTIVE models that differ in learning rate (2e-4 and 1e-2: one compare chart must show
    both): the loop test's, or made here when that test did not run first."""
    dataset = tmp_path / "parity.jsonl"
    dataset.write_bytes(dataset_bytes(40))
    for key, rate in (("first", "0.0002"), ("second", "0.01")):
        if key not in made:
            made[key] = create_model(page, server, dataset, f"parity-lr-{rate}", totalTrainingEpochs=3, learningRate=rate)
            wait_active(page)
    return made["first"], made["second"]


def fits_without_sideways_scrolling(page) -> None:
    scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll <= inner, f"{page.url} scrolls sideways at {inner} px: {scroll} px wide"


def sign_out_reachable(page) -> None:
    """Sign out is on screen, or one click away in the account menu."""
    if not page.locator(".sign-out:visible").count():
        page.click(".account-menu summary")
    expect(page.locator(".sign-out:visible")).to_have_count(1)
    expect(page.locator(".sign-out:visible")).to_be_in_viewport()
    if page.locator(".account-menu[open]").count():
        page.keyboard.press("Escape")  # closed again for the screenshot, as a menu closes
        expect(page.locator(".account-menu[open]")).to_have_count(0)


def test_every_page_at_every_width(page, browser, server, pair, artifacts):
    first, second = pair
    pages = {"models": "/", "create": "/console/models/new", "details": f"/console/models/{first}",
             "compare": f"/console/compare?id={first}&id={second}",
             "error": "/console/models/ocid1.generativeaimodel.oc1..nosuch"}  # fmt: skip
    anonymous = browser.new_page()
    try:
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 900})
            for name, path in pages.items():
                page.goto(server.endpoint + path)
                if name in ("details", "compare"):
                    charts_fill_their_cards(page)
                fits_without_sideways_scrolling(page)
                sign_out_reachable(page)
                expect(page.locator(".top nav a", has_text="Models")).to_be_in_viewport()
                page.screenshot(path=str(artifacts / f"{name}-{width}.png"), full_page=True)
            anonymous.set_viewport_size({"width": width, "height": 900})
            anonymous.goto(server.endpoint + "/console/login")
            fits_without_sideways_scrolling(anonymous)
            expect(anonymous.locator('#password-login button[type="submit"]')).to_be_in_viewport()
            anonymous.screenshot(path=str(artifacts / f"login-{width}.png"), full_page=True)
        # On a phone: sign in, and sign out from the account menu.
        anonymous.set_viewport_size({"width": 390, "height": 800})
        anonymous.fill('#password-login input[name="username"]', "ada")
        anonymous.fill('#password-login input[name="password"]', PASSWORD)
        anonymous.click('#password-login button[type="submit"]')
        anonymous.click(".account-menu summary")
        anonymous.click(".account-menu .sign-out")
        anonymous.wait_for_url(re.compile(r"/console/login$"))
        anonymous.goto(server.endpoint + "/")
        anonymous.wait_for_url(re.compile(r"/console/login\?next="))
    finally:
        anonymous.close()
        page.set_viewport_size({"width": 1280, "height": 900})


# [uPlot's width, its card's inner width] of a chart's <figure>
CHART_WIDTHS = """(f) => {
    const s = getComputedStyle(f);
    return [f.uplot.root.clientWidth, f.clientWidth - parseFloat(s.paddingLeft) - parseFloat(s.paddingRight)];
}"""


def chart_state(page, chart_id: str) -> dict:
    """What uPlot really draws: the step range, the y scale's distribution (1 linear, 3 log), its width
    beside its card's inner width, and the steps it has points at."""
    return page.evaluate(f"""(() => {{
        const figure = document.getElementById('{chart_id}'), u = figure.uplot, [width, card] = ({CHART_WIDTHS})(figure);
        return {{xMin: u.scales.x.min, xMax: u.scales.x.max, distr: u.scales.y.distr, width, card, steps: u.data[0]}};
    }})()""")


def charts_fill_their_cards(page) -> None:
    expect(page.locator("#chart-val-acc canvas")).to_be_attached()
    fills = f"(figure) => {{ const [width, card] = ({CHART_WIDTHS})(figure); return Math.abs(width - card) <= 2; }}"
    try:  # a resize is followed a frame later (ResizeObserver)
        page.wait_for_function(f"[...document.querySelectorAll('figure.chart')].every({fills})", timeout=5_000)
    except playwright_api.TimeoutError:
        pytest.fail(f"{page.url}: a chart does not fill its card: {[chart_state(page, chart) for chart in CHARTS]}")


def y_fraction(page, chart_id: str, value: float) -> float:
    """Where `value` sits on a chart's y axis: 0 at the bottom of the plot, 1 at its top."""
    return page.evaluate(f"""(() => {{
        const u = document.getElementById('{chart_id}').uplot;
        return 1 - u.valToPos({value}, 'y') / u.bbox.height * devicePixelRatio;
    }})()""")


def test_charts_hover_zoom_log_scale_and_smoothing(page, server, pair):
    first, second = pair
    page.goto(f"{server.endpoint}/console/compare?id={first}&id={second}")

    # Each chart fills its card, and follows it when the window narrows and widens again.
    charts_fill_their_cards(page)
    wide = chart_state(page, "chart-loss")["width"]
    page.set_viewport_size({"width": 768, "height": 900})
    charts_fill_their_cards(page)
    assert chart_state(page, "chart-loss")["width"] < wide
    page.set_viewport_size({"width": 1280, "height": 900})
    charts_fill_their_cards(page)

    # Hovering shows the step and each run's value in the legend.
    over = page.locator("#chart-loss .u-over")
    over.hover()
    box = over.bounding_box()
    values = page.locator("#chart-loss .u-legend .u-series .u-value")
    expect(values.nth(0)).to_have_text(re.compile(r"^\d+$"))
    expect(values.nth(1)).to_have_text(re.compile(r"^\d"))

    # Drag across the step axis to zoom in; double-click to zoom out again.
    full = chart_state(page, "chart-loss")
    page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] / 2, steps=5)
    page.mouse.up()
    expect(page.locator("#chart-loss")).to_have_attribute("data-zoomed", "true")
    zoomed = chart_state(page, "chart-loss")
    assert full["xMin"] < zoomed["xMin"] < zoomed["xMax"] < full["xMax"], (full, zoomed)
    over.dblclick()
    expect(page.locator("#chart-loss")).to_have_attribute("data-zoomed", "false")
    assert (chart_state(page, "chart-loss")["xMin"], chart_state(page, "chart-loss")["xMax"]) == (full["xMin"], full["xMax"])

    # Learning rates of 2e-4 and 1e-2 on one chart: linear puts 2e-4 on the floor, log lifts it.
    assert chart_state(page, "chart-lr")["distr"] == 1
    assert y_fraction(page, "chart-lr", 2e-4) < 0.05
    page.check("#chart-lr .log-toggle")
    expect(page.locator("#chart-lr")).to_have_attribute("data-scale", "log")
    assert chart_state(page, "chart-lr")["distr"] == 3
    assert y_fraction(page, "chart-lr", 2e-4) > 0.2
    page.uncheck("#chart-lr .log-toggle")
    assert chart_state(page, "chart-lr")["distr"] == 1

    # Smoothing adds a smoothed curve per run and keeps the raw one faintly.
    names = chart_series(page, "chart-loss")
    page.locator("#chart-loss input[type=range]").fill("0.6")
    assert chart_series(page, "chart-loss") == [f"{name} {kind}" for name in names for kind in ("(smoothed)", "(raw)")]

    # The best evaluation is named under the validation charts; the points are in a table too.
    expect(page.locator("#chart-val-loss .chart-best")).to_contain_text("Best evaluation")
    page.click("#chart-val-loss .chart-data summary")
    expect(page.locator("#chart-val-loss .chart-data tbody tr")).to_have_count(len(chart_state(page, "chart-val-loss")["steps"]))
    assert page.locator("#chart-loss .chart-plot").get_attribute("aria-label").startswith("Training loss by step")


def test_report_html_works_offline(browser, server, pair):
    report = next(server.data_dir.rglob("report.html"))
    context = browser.new_context(offline=True)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda err: errors.append(str(err)))
    requests: list[str] = []
    tab.on("request", lambda r: r.url.startswith("file:") or requests.append(r.url))
    tab.goto(report.as_uri())
    for chart in CHARTS:
        expect(tab.locator(f"#{chart} canvas").first).to_be_attached()
        assert int(tab.locator(f"#{chart}").get_attribute("data-points")) >= 1, chart
    tab.check("#chart-loss .log-toggle")
    expect(tab.locator("#chart-loss")).to_have_attribute("data-scale", "log")
    context.close()
    assert not errors and not requests, (errors, requests)


def test_delete(page, server, made, pair):
    first, second = pair
    page.goto(f"{server.endpoint}/console/models/{second}")
    page.click("#delete")
    expect(page.locator("#state")).to_have_text("DELETED")
    page.goto(server.endpoint + "/")
    expect(page.locator(f'#custom-models tr[data-model-id="{second}"]')).to_have_count(0)
    expect(page.locator(f'#custom-models tr[data-model-id="{first}"]')).to_have_count(1)
    del made["second"]  # a later test asking for `pair` gets a live one


def test_cancel_while_training(page, server, tmp_path):
    dataset = tmp_path / "big.jsonl"
    dataset.write_bytes(dataset_bytes(40))
    create_model(page, server, dataset, "to-cancel", totalTrainingEpochs=10)
    page.click("#cancel")  # = delete while running, as the API does
    expect(page.locator("#state")).to_have_text(re.compile("DELETING|DELETED"))
    expect(page.locator("#state")).to_have_text("DELETED", timeout=TRAIN_TIMEOUT_MS)
    expect(page.locator("#log")).to_contain_text("Canceled")
