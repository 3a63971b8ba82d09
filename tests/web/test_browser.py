"""The console in a real browser: headless Chromium (Debian's package) driven by Playwright against
a live `tuneforge serve` on 127.0.0.1 training a tiny random Llama. One user does OCI's loop:
sign in, create a model (the page checks the chosen file with the server's validator and shows
totalTrainingSteps first; a refused submit keeps the upload, lists its errors and leaves no cluster
behind), watch it reach ACTIVE, read "Model performance" and the curves, download the adapter,
create another with another learning rate (the list refreshes itself), compare the two, delete one
(its page keeps the curves and the log). Then every page at a phone's, a tablet's and a desktop's
width, the charts, report.html offline, the cluster pages, sessions (a replayed cookie after sign-out,
an API key's sign-in and removal) on the same server and models; and a cancel on a slower model on a
second server. Screenshots go to $TUNEFORGE_ARTIFACTS/console (else a tmp dir), printed at the start."""

from __future__ import annotations

import json
import os
import re
import time
import zipfile
from pathlib import Path

import pytest
from helpers.browser import (
    CHROMIUM,
    TENANCY,
    TRAIN_TIMEOUT_MS,
    WIDTHS,
    at_every_width,
    choose_dataset,
    create_model,
    expect,
    fits_without_sideways_scrolling,
    playwright_api,
    serve_with_user,
    sign_in,
    signed_in_tab,
    wait_active,
)
from helpers.browser import artifacts as artifacts
from helpers.browser import browser as browser
from helpers.browser import page as page
from helpers.browser import server as server
from helpers.console import dataset_bytes
from helpers.fine_tuning import LORA_MODEL

CHARTS = ("chart-loss", "chart-lr", "chart-val-loss", "chart-val-acc")

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def made() -> dict[str, str]:
    """Model ids the loop test created ("first", "second"), reused by the later tests (see `pair`)."""
    return {}


def chart_points(page, chart_id: str) -> int:
    return int(page.locator(f"#{chart_id}").get_attribute("data-points") or 0)


def chart_series(page, chart_id: str) -> list[str]:
    """The labels of the curves uPlot draws in a chart (its series 0 is the step axis)."""
    expect(page.locator(f"#{chart_id} canvas")).to_be_attached()
    return page.evaluate(f"document.getElementById('{chart_id}').uplot.series.slice(1).map(s => s.label)")


def focused_id(page) -> str:
    return page.evaluate("document.activeElement && document.activeElement.id")


def engine_problems(content: bytes, tmp_path: Path) -> list[str]:
    """The problems tuneforge.data (the engine's and the service's validator) finds in a file."""
    from tuneforge import data
    from tuneforge.errors import DatasetError

    path = tmp_path / "probe.jsonl"
    path.write_bytes(content)
    try:
        data.scan_dataset(path)
    except DatasetError as err:
        return [str(p) for p in err.problems]
    return []


def fine_tuning_clusters(page, server) -> int:
    """Counted in a tab of its own, so that the form in `page` stays as it is."""
    tab = page.context.new_page()
    try:
        tab.goto(server.endpoint + "/console/clusters")
        return tab.locator("#clusters-fine_tuning tbody tr[data-cluster-id]").count()
    finally:
        tab.close()


def check_the_dataset_before_and_after_submit(page, server, artifacts, tmp_path) -> None:
    """The page shows what the server's validator says about the chosen file; a refused submit
    keeps the upload, lists the errors at the top, moves the focus and creates no cluster. The
    form is left as the server sent it back."""
    few, broken = tmp_path / "few.jsonl", tmp_path / "broken.jsonl"
    few.write_bytes(dataset_bytes(31))
    lines = dataset_bytes(40).splitlines(keepends=True)
    lines[2] = b'{"prompt": "Is 3 odd?", "completion" "yes"}\n'
    lines[6] = b'{"prompt": "caf\xe9", "completion": "yes"}\n'
    broken.write_bytes(b"".join(lines))
    assert fine_tuning_clusters(page, server) == 0

    page.goto(server.endpoint + "/console/models/new")
    choose_dataset(page, broken)
    expect(page.locator("#err-dataset")).to_have_text("broken.jsonl has 2 problems:")
    expect(page.locator("#dataset-problems li")).to_have_text(engine_problems(broken.read_bytes(), tmp_path))
    expect(page.locator("#dataset-problems li").first).to_have_text(
        "line 3: not valid JSON (Expecting ':' delimiter at column 38)"
    )
    choose_dataset(page, few)
    expect(page.locator("#dataset-problems li")).to_have_text(["31 valid examples; at least 32 are needed"])
    expect(page.locator("#datasetFile")).to_have_attribute("aria-invalid", "true")
    at_every_width(page, "create-dataset-check", artifacts)

    # Submitted anyway: the server refuses it, the form keeps the upload and focuses the field.
    page.click("#create-button")
    page.wait_for_url(server.endpoint + "/console/models/new")
    expect(page.locator("#error-summary")).to_be_visible()
    expect(page.locator("#error-summary li")).to_have_text(["few.jsonl has 1 problem: 31 valid examples; at least 32 are needed"])
    expect(page.locator("#kept-upload")).to_contain_text("Uploaded: few.jsonl")
    expect(page.locator('input[name="datasetSource"][value="upload"]')).to_be_checked()
    expect(page.locator("#dataset-problems li")).to_have_text(["31 valid examples; at least 32 are needed"])
    assert focused_id(page) == "datasetFile"
    assert "err-dataset" in page.locator("#datasetFile").get_attribute("aria-describedby")
    expect(page.locator("#plan-text")).to_contain_text("fix the fields")  # planned from the kept object, which is refused
    at_every_width(page, "create-refused", artifacts)
    assert fine_tuning_clusters(page, server) == 0  # "a new fine-tuning cluster" was chosen: none was made


def create_from_the_refused_form(page, dataset: Path) -> str:
    """Another file replaces the kept one; a field the page rules out blocks the submit (the
    summary lists it, the focus moves to it, its description is on screen); fixed, it is created."""
    choose_dataset(page, dataset)
    expect(page.locator("#dataset-check")).to_contain_text("40 examples, checked by the server")
    expect(page.locator("#dataset-problems li")).to_have_count(0)
    page.fill('input[name="displayName"]', "parity-lr-2e-4")
    group = page.locator('fieldset[data-group="LORA_TRAINING_CONFIG"]')
    group.locator('input[data-field="totalTrainingEpochs"]').fill("3")
    group.locator('input[data-field="learningRate"]').fill("0.0002")
    lora_r = group.locator('input[data-field="loraR"]')
    lora_r.fill("99")
    page.click("#create-button")
    expect(page.locator("#error-summary li a")).to_have_text(["loraR: 99 is not allowed; allowed: an integer from 1 to 64"])
    assert focused_id(page) == "LORA_TRAINING_CONFIG.loraR"
    expect(lora_r).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#desc-LORA_TRAINING_CONFIG\\.loraR")).to_be_visible()  # the description, without hovering
    lora_r.fill("8")
    expect(lora_r).not_to_have_attribute("aria-invalid", "true")
    expect(page.locator("#plan-text")).to_contain_text("32 training + 8 validation; 4 steps per epoch; totalTrainingSteps = 12")
    page.click("#create-button")
    page.wait_for_url(re.compile(r"/console/models/ocid1\.generativeaimodel\."))
    return page.url.rsplit("/", 1)[-1]


def check_the_adapter_zip(archive: Path, server, name: str) -> None:
    """Self-contained: adapter, tokenizer, model.json and a README; no path of this server inside."""
    from tuneforge.catalog import get_model

    folder = f"{name}-adapter"
    with zipfile.ZipFile(archive) as zipped:
        names = set(zipped.namelist())
        expected = {
            "adapter_config.json",
            "adapter_model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
            "model.json",
            "README.md",
        }
        assert {f"{folder}/{n}" for n in expected} <= names, names
        config = json.loads(zipped.read(f"{folder}/adapter_config.json"))
        assert config["base_model_name_or_path"] == get_model(LORA_MODEL).weights_repo
        readme = zipped.read(f"{folder}/README.md").decode()
        assert "PeftModel.from_pretrained" in readme and get_model(LORA_MODEL).weights_repo in readme
        for member in names - {f"{folder}/adapter_model.safetensors"}:
            text = zipped.read(member).decode()
            assert str(server.data_dir) not in text and str(server.weights) not in text, member


def logged_numbers_are_rounded(page) -> None:
    for line in page.locator("#log li").all_inner_texts():
        for number in re.findall(r"=(-?\d+\.\d+)", line):
            assert len(number.replace("-", "").replace(".", "").lstrip("0")) <= 5, line


def test_the_whole_loop_in_a_browser(page, server, artifacts, made, tmp_path):
    chart_names = {
        "chart-loss": "training loss",
        "chart-lr": "learning rate",
        "chart-val-loss": "validation loss",
        "chart-val-acc": "validation accuracy",
    }
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
    check_the_dataset_before_and_after_submit(page, server, artifacts, tmp_path)

    live_answers: list[str] = []
    # The URL, not the body: a body is gone once the page reloads itself.
    page.on("response", lambda r: "/live?" in r.url and r.ok and live_answers.append(r.url))
    first = create_from_the_refused_form(page, dataset)
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
    expect(page.locator("#log li", has_text="Evaluation at step").first).to_be_attached()
    logged_numbers_are_rounded(page)
    expect(page.locator("#training-config")).to_contain_text("loraDropout")
    page.screenshot(path=str(artifacts / "details.png"), full_page=True)

    with page.expect_download() as download:
        page.click("#download-adapter")
    archive = tmp_path / "adapter.zip"
    download.value.save_as(archive)
    check_the_adapter_zip(archive, server, "parity-lr-2e-4")

    # Not satisfied? Create another like this one, with another learning rate (the form is pre-filled).
    page.click("text=Create another like this")
    expect(page.locator('input[name="objectName"]')).not_to_have_value("")
    page.locator('fieldset[data-group="LORA_TRAINING_CONFIG"] input[data-field="learningRate"]').fill("0.01")
    expect(page.locator("#plan-text")).to_contain_text("totalTrainingSteps = 12")  # planned from the stored object
    page.click("#create-button")
    page.wait_for_url(re.compile(r"/console/models/ocid1\."))
    second = page.url.rsplit("/", 1)[-1]
    made.update(first=first, second=second)

    # The list refreshes itself while the second one trains: its row turns ACTIVE, no reload.
    page.goto(server.endpoint + "/?base=" + LORA_MODEL)
    row = page.locator(f'#custom-models tr[data-model-id="{second}"]')
    expect(row.locator(".state")).to_have_text("CREATING")
    expect(page.locator("#refresh-note")).to_be_visible()
    page.evaluate("window.sameDocument = true")
    expect(row.locator(".state")).to_have_text("ACTIVE", timeout=TRAIN_TIMEOUT_MS)
    expect(row.locator('[data-label="finalAccuracy"]')).not_to_have_text("—")
    assert page.evaluate("window.sameDocument === true"), "the list reloaded itself instead of refreshing its rows"
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


def sign_out_reachable(page) -> None:
    """Sign out is on screen, or one click away in the account menu."""
    if not page.locator(".sign-out:visible").count():
        page.click(".account-menu summary")
    expect(page.locator(".sign-out:visible")).to_have_count(1)
    expect(page.locator(".sign-out:visible")).to_be_in_viewport()
    if page.locator(".account-menu[open]").count():
        page.keyboard.press("Escape")  # closed again for the screenshot, as a menu closes
        expect(page.locator(".account-menu[open]")).to_have_count(0)


def cluster_of(page, server, model_id: str) -> str:
    page.goto(f"{server.endpoint}/console/models/{model_id}")
    return page.locator("#cluster-link").inner_text()


def test_every_page_at_every_width(page, browser, server, pair, artifacts):
    first, second = pair
    pages = {
        "models": "/",
        "models-paged": "/?limit=1",
        "create": "/console/models/new",
        "details": f"/console/models/{first}",
        "compare": f"/console/compare?id={first}&id={second}",
        "clusters": "/console/clusters",
        "cluster": f"/console/clusters/{cluster_of(page, server, first)}",
        "error": "/console/models/ocid1.generativeaimodel.oc1..nosuch",
    }
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
        # A page of one model has a link to the next, which shows the other one.
        page.goto(server.endpoint + "/?limit=1")
        shown = page.locator("#custom-models tbody tr[data-model-id]").get_attribute("data-model-id")
        page.click("#next-page")
        expect(page.locator("#custom-models tbody tr[data-model-id]")).to_have_attribute(
            "data-model-id", ({first, second} - {shown}).pop()
        )
        expect(page.locator("#first-page")).to_be_visible()
        # On a phone: sign in, and sign out from the account menu.
        anonymous.set_viewport_size({"width": 390, "height": 800})
        sign_in(anonymous)
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


def test_clusters_in_a_browser(page, server, pair, artifacts):
    first, _ = pair
    cluster = cluster_of(page, server, first)
    page.goto(f"{server.endpoint}/console/clusters/{cluster}")
    expect(page.locator(f'#cluster-models tr[data-model-id="{first}"]')).to_have_count(1)

    # A hosting cluster, created through the form: its errors are tied to the fields.
    page.goto(server.endpoint + "/console/clusters")
    page.click("text=Create hosting cluster")
    expect(page.locator("#type")).to_have_value("HOSTING")
    page.fill("#displayName", "chat-host")
    page.fill("#unitCount", "0")
    page.fill("#unitShape", "large generic")
    page.click("#create-cluster-button")
    expect(page.locator("#error-summary li")).to_have_count(2)
    assert focused_id(page) == "unitCount"
    expect(page.locator("#unitCount")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#err-unitCount")).to_have_text("unitCount: 0 is not allowed; allowed: an integer from 1 to 1000")
    at_every_width(page, "cluster-new-errors", artifacts)
    page.fill("#unitCount", "1")
    page.fill("#unitShape", "LARGE_GENERIC")
    page.click("#create-cluster-button")
    page.wait_for_url(re.compile(r"/console/clusters/ocid1\."))
    expect(page.locator("#capacity")).to_have_text("0 of 50 endpoints used")
    at_every_width(page, "cluster-hosting", artifacts)
    hosting = page.url.rsplit("/", 1)[-1]
    page.click("#delete")
    page.wait_for_url(server.endpoint + "/console/clusters")
    expect(page.locator(f'tr[data-cluster-id="{hosting}"]')).to_have_count(0)
    expect(page.locator(f'#clusters-fine_tuning tr[data-cluster-id="{cluster}"]')).to_have_count(1)


def key_files(tmp_path: Path) -> dict[str, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    files = {
        "private": key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        ),
        "public": key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        "garbage": b"not a key at all\n",
    }
    for name, content in files.items():
        (tmp_path / f"{name}.pem").write_bytes(content)
    return {name: tmp_path / f"{name}.pem" for name in files}


def test_sessions_in_a_browser(browser, server, artifacts, tmp_path):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda err: errors.append(str(err)))
    try:
        # The login page shows fixed texts only, never one from its URL.
        tab.goto(server.endpoint + "/console/login?error=%3Cb%3ECall%20555-0100%3C%2Fb%3E")
        expect(tab.locator("#login-error")).to_have_count(0)
        sign_in(tab, "not the password")
        expect(tab.locator("#login-error")).to_have_text("Wrong username or password.")
        at_every_width(tab, "login-error", artifacts)

        # Sign out ends the session on the server: the cookie as it was before is refused.
        sign_in(tab)
        tab.wait_for_url(server.endpoint + "/")
        cookies = context.cookies()
        tab.click(".account-wide .sign-out")
        tab.wait_for_url(re.compile(r"/console/login$"))
        context.add_cookies(cookies)
        tab.goto(server.endpoint + "/")
        tab.wait_for_url(re.compile(r"/console/login\?next=%2F&error=session-ended"))
        expect(tab.locator("#login-error")).to_contain_text("Your session has ended")

        # An API key: readable errors for the wrong file; signed in with the right one; its removal ends the session.
        keys = key_files(tmp_path)
        registered = server.cli(
            "api-keys",
            "add",
            "--tenancy",
            TENANCY,
            "--user",
            "ocid1.user.oc1..aaaabrowserkey",
            "--public-key-file",
            str(keys["public"]),
        )
        assert registered.returncode == 0, registered.stderr
        fingerprint = registered.stdout.strip().split()[-1]
        for name, message in (("public", "this is a public key"), ("garbage", "this is not a PEM private key")):
            tab.set_input_files("#keyFile", str(keys[name]))
            tab.click("#key-login button[type=submit]")
            expect(tab.locator("#err-keyFile")).to_contain_text(message)
            expect(tab.locator("#keyFile")).to_have_attribute("aria-invalid", "true")
            assert focused_id(tab) == "keyFile"
        at_every_width(tab, "login-key-error", artifacts)
        tab.set_input_files("#keyFile", str(keys["private"]))
        tab.click("#key-login button[type=submit]")
        tab.wait_for_url(server.endpoint + "/")
        expect(tab.locator(".account-wide .who")).to_contain_text("ocid1.user.oc1..aaaabrowserkey")
        removed = server.cli("api-keys", "remove", fingerprint)
        assert removed.returncode == 0, removed.stderr
        tab.goto(server.endpoint + "/console/clusters")
        tab.wait_for_url(re.compile(r"error=session-ended"))
    finally:
        context.close()
    assert not errors, f"JavaScript errors: {errors}"


def test_delete_keeps_the_curves_and_the_log(page, server, made, pair, artifacts):
    first, second = pair
    page.goto(f"{server.endpoint}/console/models/{second}")
    points = chart_points(page, "chart-loss")
    page.click("#delete")
    expect(page.locator("#state")).to_have_text("DELETED")
    expect(page.locator("#deleted-note")).to_be_visible()
    expect(page.locator("#chart-loss")).to_have_attribute("data-points", str(points))
    expect(page.locator("#log li", has_text="Training succeeded")).to_have_count(1)
    expect(page.locator("#log li", has_text="Model deleted")).to_have_count(1)
    at_every_width(page, "details-deleted", artifacts)
    page.goto(server.endpoint + "/")
    expect(page.locator(f'#custom-models tr[data-model-id="{second}"]')).to_have_count(0)
    expect(page.locator(f'#custom-models tr[data-model-id="{first}"]')).to_have_count(1)
    del made["second"]  # a later test asking for `pair` gets a live one


@pytest.fixture(scope="module")
def slower_server(tmp_path_factory):
    """A second server whose model's steps take a visible fraction of a second (tests/service's
    slower model), so that a cancel lands mid-training on any machine."""
    from helpers.tiny_models import save_tiny_checkpoint

    weights = save_tiny_checkpoint(tmp_path_factory.mktemp("slower") / "llama", "llama", hidden=128, layers=4)
    yield from serve_with_user(tmp_path_factory, weights, "console-slower")


def test_cancel_while_training(browser, slower_server, artifacts, tmp_path):
    errors: list[str] = []
    context, tab = signed_in_tab(browser, slower_server, errors)
    dataset = tmp_path / "parity.jsonl"
    dataset.write_bytes(dataset_bytes(40))
    try:
        # 200 steps, an evaluation cycle every 25 (early stopping off: it would end the run early).
        create_model(tab, slower_server, dataset, "to-cancel", totalTrainingEpochs=50, earlyStoppingPatience=0)
        progress = tab.locator("#progress-text")
        expect(progress).to_have_text(
            re.compile(r"^step \d+ of 200 · epoch [\d.]+ · (about .+|a few seconds) left$"), timeout=TRAIN_TIMEOUT_MS
        )
        at_every_width(tab, "details-training", artifacts)
        clicked = time.monotonic()
        tab.click("#cancel")  # = delete while running, as the API does
        expect(tab.locator("#state")).to_have_text(re.compile("DELETING|DELETED"))
        expect(tab.locator("#state")).to_have_text("DELETED", timeout=TRAIN_TIMEOUT_MS)
        print(f"\ncancel: DELETED {time.monotonic() - clicked:.1f} s after the click")
        log = tab.locator("#log li").all_inner_texts()
        assert any("Canceled" in line for line in log) and not any("Training succeeded" in line for line in log), log
        # No evaluation after the trainer was told to stop: at most the cycle already running when
        # the worker's SIGTERM arrived (within its 0.5 s poll; cycles are 25 steps apart).
        stopping = next(i for i, line in enumerate(log) if "Stopping the running training job" in line)
        assert len([line for line in log[stopping:] if "Evaluation at step" in line]) <= 1, log
        expect(tab.locator("#deleted-note")).to_be_visible()
        assert chart_points(tab, "chart-loss") >= 1  # a cancelled model keeps its curves
    finally:
        context.close()
    assert not errors, f"JavaScript errors: {errors}"
