"""The console's sweep pages: through FastAPI's TestClient (no coordinator: a sweep stays ACCEPTED) the
list and its pages, the new-sweep form (errors next to their fields, the summary, a refused create that
leaves nothing behind, the form pre-filled from a model), a sweep's page and its actions, CSRF and
tenancy isolation; then one small sweep in headless Chromium against a live server on the tiny model,
watched until it has results, its ranking and plots checked, screenshots at 390, 768 and 1280 px."""

from __future__ import annotations

import os
import re
from html import unescape

import pytest
from helpers.console import PASSWORD, create_model, csrf_of, dataset_bytes, field_errors
from helpers.databases import database
from helpers.fine_tuning import LORA_MODEL
from helpers.servers import Service

COMPARTMENT = "ocid1.compartment.oc1..aaaaweb"
GROUP = "LORA_TRAINING_CONFIG"


@pytest.fixture
def console_app(console_app, tiny_llama):
    """conftest's app, with weights: a sweep's create checks the dataset with the model's tokenizer."""
    import dataclasses

    app, data_dir = console_app
    svc = app.state.services
    svc.config = dataclasses.replace(svc.config, weights=str(tiny_llama))
    return app, data_dir


def new_cluster(console, units: str = "2") -> str:
    page = console.client.get("/console/clusters/new").text
    form = {
        "csrf": csrf_of(page),
        "retryToken": re.search(r'name="retryToken" value="([^"]+)"', page).group(1),
        "type": "FINE_TUNING",
        "compartmentId": COMPARTMENT,
        "unitCount": units,
        "unitShape": "LARGE_GENERIC",
        "displayName": "sweep-pool",
    }
    done = console.client.post("/console/clusters/new", data=form, follow_redirects=False)
    assert done.status_code == 303
    return done.headers["location"].rsplit("/", 1)[-1]


def sweep_form(console, cluster_id: str, **fields) -> dict:
    page = console.client.get("/console/sweeps/new").text
    form = {
        "csrf": csrf_of(page),
        "retryToken": re.search(r'name="retryToken" value="([^"]+)"', page).group(1),
        "compartmentId": COMPARTMENT,
        "baseModelId": LORA_MODEL,
        "cluster": cluster_id,
        "datasetSource": "upload",
        "displayName": "web-sweep",
        "trialCount": "3",
        "searchStrategy": "TPE",
        "pruner": "NONE",
        f"{GROUP}.totalTrainingEpochs": "1",
        f"{GROUP}.learningRateRange": "0.0001:0.01:log",
    }
    form.update(fields)
    return form


def post_sweep(console, form: dict, with_file: bool = True, content: bytes | None = None):
    files = {"datasetFile": ("train.jsonl", content or dataset_bytes(), "application/jsonl")} if with_file else None
    return console.client.post("/console/sweeps/new", data=form, files=files, follow_redirects=False)


def create_sweep(console, cluster_id: str, **fields) -> str:
    done = post_sweep(console, sweep_form(console, cluster_id, **fields))
    assert done.status_code == 303, field_errors(done.text)
    return done.headers["location"].rsplit("/", 1)[-1]


def sweep_ids(console) -> list[str]:
    return re.findall(r'data-sweep-id="([^"]+)"', console.client.get("/console/sweeps").text)


def test_create_list_and_read_a_sweep(alice):
    cluster_id = new_cluster(alice)
    assert "Sweeps</a>" in alice.client.get("/").text  # the navigation links the list
    assert "No sweeps" in alice.client.get("/console/sweeps").text
    sweep_id = create_sweep(alice, cluster_id)
    assert sweep_ids(alice) == [sweep_id]
    page = alice.client.get(f"/console/sweeps/{sweep_id}").text
    assert "web-sweep" in page and "ACCEPTED" in page and 'data-live="true"' in page
    assert "refreshes itself" in page and 'id="cancel"' in page and 'id="ask-learning-curve"' in page
    assert "<code>learningRate</code> 0.0001 to 0.01 (log)" in page
    assert "Fixed</th><td>totalTrainingEpochs = 1" in page  # a value other than the default is fixed
    assert 'id="sweep-data"' in page and "No trials yet" in page

    # Keep the best is refused while the sweep has no best trial, in the service's words.
    csrf = csrf_of(page)
    kept = alice.client.post(f"/console/sweeps/{sweep_id}/keep-best", data={"csrf": csrf}, follow_redirects=False)
    assert kept.status_code == 409 and "keep the best once it has finished" in unescape(kept.text)
    # The learning curve can be asked for; then it is being measured.
    asked = alice.client.post(f"/console/sweeps/{sweep_id}/learning-curve", data={"csrf": csrf}, follow_redirects=False)
    assert asked.status_code == 303
    assert 'id="verdict-pending"' in alice.client.get(f"/console/sweeps/{sweep_id}").text
    # Cancel: CANCELING, and no Cancel button any more.
    canceled = alice.client.post(f"/console/sweeps/{sweep_id}/cancel", data={"csrf": csrf}, follow_redirects=False)
    assert canceled.status_code == 303
    page = alice.client.get(f"/console/sweeps/{sweep_id}").text
    assert "CANCELING" in page and 'id="cancel"' not in page


def test_the_list_is_paged(alice):
    cluster_id = new_cluster(alice)
    made = [create_sweep(alice, cluster_id, displayName=f"s{i}", trialCount="1") for i in range(3)]
    first = alice.client.get("/console/sweeps?limit=2").text
    assert len(re.findall(r'data-sweep-id="', first)) == 2
    next_link = unescape(re.search(r'href="([^"]+)" id="next-page"', first).group(1))
    second = alice.client.get(next_link).text
    shown = re.findall(r'data-sweep-id="([^"]+)"', first) + re.findall(r'data-sweep-id="([^"]+)"', second)
    assert sorted(shown) == sorted(made) and 'id="first-page"' in second
    assert len(re.findall(r'data-sweep-id="', alice.client.get("/console/sweeps?state=SUCCEEDED").text)) == 0


def test_field_errors_a_summary_and_nothing_left_behind(alice):
    cluster_id = new_cluster(alice)
    form = sweep_form(
        alice,
        cluster_id,
        trialCount="500",
        **{f"{GROUP}.learningRateRange": "0.01:0.0001", f"{GROUP}.loraRRange": "8,99", f"{GROUP}.loraDropout": "7"},
    )
    refused = post_sweep(alice, form)
    assert refused.status_code == 400
    errors = field_errors(refused.text)
    assert errors["trialCount"] == "trials: 500 is not allowed; allowed: an integer from 0 to 200"
    assert errors["learningRateRange"].startswith("learningRate range 0.01:0.0001: LOW must be below HIGH")
    assert errors["loraRRange"].startswith("loraR: 99") and "allowed" in errors["loraRRange"]
    assert errors["loraDropout"].startswith("loraDropout: 7 is not allowed; allowed:")
    html = refused.text
    assert 'id="error-summary"' in html and "There are 4 problems with this form" in html
    assert f'href="#{GROUP}.learningRateRange"' in html and 'href="#trialCount"' in html
    assert re.search(r'id="trialCount"[^>]*aria-describedby="desc-trialCount err-trialCount" aria-invalid="true"', html)
    assert 'id="kept-upload"' in html  # the chosen file is kept for the next submit
    assert sweep_ids(alice) == [] and not list((alice.data_dir / "sweeps").glob("*"))

    # A dataset the service's validator refuses: its problems listed under the field, no sweep made.
    short = post_sweep(alice, sweep_form(alice, cluster_id), content=dataset_bytes(10))
    assert short.status_code == 400
    assert "10 valid examples; at least 32 are needed" in unescape(short.text)
    assert field_errors(short.text)["dataset"].startswith("train.jsonl has 1 problem")
    # No file at all, and a cluster that is not the tenancy's.
    nothing = post_sweep(alice, sweep_form(alice, "ocid1.generativeaidedicatedaicluster.oc1..nope"), with_file=False)
    errors = field_errors(nothing.text)
    assert errors["dataset"].startswith("Choose a JSONL file")
    nocluster = post_sweep(alice, sweep_form(alice, "ocid1.generativeaidedicatedaicluster.oc1..nope"))
    assert field_errors(nocluster.text)["cluster"].startswith("No dedicated AI cluster")
    assert sweep_ids(alice) == [] and not list((alice.data_dir / "sweeps").glob("*"))


def test_a_model_pre_fills_the_form(alice):
    cluster_id = new_cluster(alice)
    model_id = create_model(alice, cluster=cluster_id, **{f"{GROUP}.learningRate": "0.0005"})
    details = alice.client.get(f"/console/models/{model_id}").text
    assert f'href="/console/sweeps/new?from={model_id}"' in details
    page = alice.client.get(f"/console/sweeps/new?from={model_id}").text
    assert 'value="web-model-sweep"' in page and f'<option value="{cluster_id}" selected' in page
    assert re.search(rf'id="{GROUP}.learningRate" name="{GROUP}.learningRate" data-field="learningRate" value="0.0005"', page)
    assert re.search(r'name="objectName" value="console/[^"]+/train.jsonl"', page)
    assert re.search(r'value="object" checked', page)


def test_csrf_and_tenancy_isolation(alice, bob, anonymous):
    cluster_id = new_cluster(alice)
    sweep_id = create_sweep(alice, cluster_id)
    form = sweep_form(alice, cluster_id, csrf="stale")
    assert post_sweep(alice, form).status_code == 403
    assert alice.client.post(f"/console/sweeps/{sweep_id}/cancel", data={"csrf": "stale"}).status_code == 403
    assert len(sweep_ids(alice)) == 1

    assert sweep_ids(bob) == []
    assert bob.client.get(f"/console/sweeps/{sweep_id}").status_code == 404
    csrf = bob.csrf()
    for action in ("cancel", "keep-best", "learning-curve"):
        assert bob.client.post(f"/console/sweeps/{sweep_id}/{action}", data={"csrf": csrf}).status_code == 404
    # Bob's form does not offer Alice's cluster, and naming it is refused.
    assert cluster_id not in bob.client.get("/console/sweeps/new").text
    refused = post_sweep(bob, sweep_form(bob, cluster_id))
    assert field_errors(refused.text)["cluster"].startswith("No dedicated AI cluster")
    assert "ACCEPTED" in alice.client.get(f"/console/sweeps/{sweep_id}").text

    signed_out = anonymous.client.get("/console/sweeps", follow_redirects=False)
    assert signed_out.status_code == 303 and "/console/login" in signed_out.headers["location"]


# ---- in a browser -----------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
TENANCY = "ocid1.tenancy.oc1..aaaabrowsersweep"
WIDTHS = (390, 768, 1280)
SWEEP_TIMEOUT_MS = 240_000  # a bound, not a timing: three tiny trials on a loaded 2-core machine


@pytest.fixture(scope="module")
def sweep_server(tmp_path_factory, tiny_llama):
    root = tmp_path_factory.mktemp("console-sweeps")
    # Two workers: the sweep's two trials train at once on its two-unit cluster.
    with database("sqlite") as url:
        svc = Service(data_dir=root / "data", database_url=url, weights=tiny_llama, args=["--workers", "2"])
        svc.data_dir.mkdir(parents=True)
        svc.start()
        password_file = svc.data_dir.parent / "password"
        password_file.write_text(PASSWORD)
        added = svc.cli("console-users", "add", "--tenancy", TENANCY, "--username", "ada", "--password-file", str(password_file))
        try:
            assert added.returncode == 0, added.stderr
            yield svc
        finally:
            svc.stop()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    from pathlib import Path

    root = os.environ.get("TUNEFORGE_ARTIFACTS")
    folder = Path(root) / "console" if root else tmp_path_factory.mktemp("console-sweep-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nconsole screenshots: {folder}")
    return folder


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (apt-get install chromium)")
def test_a_small_sweep_in_a_browser(sweep_server, artifacts, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    dataset = tmp_path / "train.jsonl"
    dataset.write_bytes(dataset_bytes(40))
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(15_000)
        tab = context.new_page()
        tab.on("pageerror", lambda err: errors.append(str(err)))
        tab.on("dialog", lambda dialog: dialog.accept())
        base = sweep_server.endpoint
        tab.goto(base + "/console/login")
        tab.fill('#password-login input[name="username"]', "ada")
        tab.fill('#password-login input[name="password"]', PASSWORD)
        tab.click('#password-login button[type="submit"]')
        tab.wait_for_url(base + "/")

        # A two-unit cluster: both trials train at once.
        tab.goto(base + "/console/clusters/new?type=FINE_TUNING")
        tab.fill("#displayName", "sweeps")
        tab.fill("#unitCount", "2")
        tab.click("#create-cluster-button")
        tab.wait_for_url(re.compile(r"/console/clusters/ocid1"))

        tab.click("nav >> text=Sweeps")
        tab.wait_for_url(base + "/console/sweeps")
        tab.click("text=New sweep")
        tab.select_option("#baseModelId", LORA_MODEL)
        tab.fill("#displayName", "browser-sweep")
        tab.set_input_files("#datasetFile", str(dataset))
        tab.fill("#trialCount", "2")
        tab.select_option("#pruner", "NONE")
        group = tab.locator(f'fieldset[data-group="{GROUP}"]')
        expect(group).to_be_visible()
        # A bad range first: the server's error by its field, the summary, the focus on the field.
        group.locator(f'[id="{GROUP}.learningRateRange"]').fill("0.01:0.001")
        group.locator(f'[id="{GROUP}.totalTrainingEpochs"]').fill("1")
        tab.click("#create-sweep-button")
        expect(tab.locator("#error-summary")).to_be_visible()
        expect(tab.locator(f'[id="{GROUP}.learningRateRange"]')).to_be_focused()
        expect(tab.locator("#kept-upload")).to_contain_text("train.jsonl")
        tab.locator(f'[id="{GROUP}.learningRateRange"]').fill("0.0001:0.01:log")
        tab.click("#create-sweep-button")
        tab.wait_for_url(re.compile(r"/console/sweeps/ocid1"))
        expect(tab.locator("#refresh-note")).to_be_visible()

        # The page refreshes itself until the sweep has finished; then the ranking and the plots.
        expect(tab.locator("#state")).to_have_text("SUCCEEDED", timeout=SWEEP_TIMEOUT_MS)
        rows = tab.locator("#trials tbody tr[data-trial]")
        expect(rows).to_have_count(2)
        expect(rows.first).to_contain_text("best")
        expect(rows.first.locator("a", has_text="open")).to_have_attribute("href", re.compile(r"/console/models/ocid1"))
        expect(tab.locator("#best")).to_contain_text("validation loss")
        scatter = tab.locator("#scatter-learningRate")
        expect(scatter).to_have_attribute("data-points", "2")
        expect(scatter.locator("canvas")).to_have_count(1)
        overlay = tab.locator("#chart-val-loss")
        expect(overlay.locator("canvas")).to_have_count(1)
        assert int(overlay.get_attribute("data-points")) > 0
        legend = overlay.locator(".u-legend .u-series .u-label").all_inner_texts()
        assert "trial 0" in legend and "trial 1" in legend
        expect(tab.locator("#ask-learning-curve")).to_be_visible()

        for width in WIDTHS:
            tab.set_viewport_size({"width": width, "height": 900})
            assert tab.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), f"sideways scroll at {width}px"
            tab.screenshot(path=str(artifacts / f"sweep-{width}.png"), full_page=True)
        tab.set_viewport_size({"width": 1280, "height": 900})

        # Keep the best: renamed, the other trial's model deleted.
        tab.fill("#keep-name", "best-of-sweep")
        tab.check("#delete-others")
        tab.click("#keep-best-button")
        expect(tab.locator("#kept-result")).to_contain_text("deleted 1 other trial model")
        tab.locator("#kept-result a").click()
        expect(tab.locator("h1")).to_contain_text("best-of-sweep")
        for width in WIDTHS:
            tab.goto(base + "/console/sweeps/new")
            tab.set_viewport_size({"width": width, "height": 900})
            assert tab.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), f"sideways scroll at {width}px"
            tab.screenshot(path=str(artifacts / f"sweep-new-{width}.png"), full_page=True)
        context.close()
        browser.close()
    assert not errors, f"JavaScript errors: {errors}"
