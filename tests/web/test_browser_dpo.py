"""The create form's training method in a real browser (Debian's chromium through Playwright, as
test_browser.py): the beta field shows only while preference tuning (DPO) is chosen, and the page's
own dataset check and plan follow the method. Nothing is submitted."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from helpers.console import PASSWORD
from helpers.servers import running_service

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
TENANCY = "ocid1.tenancy.oc1..aaaabrowserdpo"
PAIRS = Path(__file__).parents[2] / "tuneforge" / "examples" / "dates_preferences.jsonl"

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def tab(tmp_path_factory, tiny_llama):
    with running_service("sqlite", tmp_path_factory.mktemp("console-dpo"), tiny_llama) as svc:
        password_file = svc.data_dir.parent / "password"
        password_file.write_text(PASSWORD)
        added = svc.cli("console-users", "add", "--tenancy", TENANCY, "--username", "ada", "--password-file", str(password_file))
        assert added.returncode == 0, added.stderr
        with playwright_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(15_000)
            errors: list[str] = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(svc.endpoint + "/console/login")
            page.fill('#password-login input[name="username"]', "ada")
            page.fill('#password-login input[name="password"]', PASSWORD)
            page.click('#password-login button[type="submit"]')
            page.wait_for_url(svc.endpoint + "/")
            page.goto(svc.endpoint + "/console/models/new")
            yield page
            assert not errors, f"JavaScript errors: {errors}"
            browser.close()


def test_beta_shows_for_dpo_and_the_check_and_plan_follow_the_method(tab):
    beta = tab.locator("#dpo\\.beta")
    assert not beta.is_visible()  # supervised is the default
    tab.set_input_files("#datasetFile", str(PAIRS))
    # The server's validator, for a supervised fine-tune, refuses the pairs and says why.
    tab.wait_for_function("document.getElementById('err-dataset').textContent.includes('problem')")
    assert "preference pairs train with the DPO method" in tab.inner_text("#dataset-problems")
    tab.check('input[name="method"][value="dpo"]')
    assert beta.is_visible()
    tab.wait_for_function("document.getElementById('dataset-check').textContent.includes('240 examples')")
    tab.wait_for_function("document.getElementById('plan-text').textContent.includes('totalTrainingSteps = 72')")
    beta.fill("0")
    assert re.match(r"beta: 0", tab.inner_text("#err-dpo\\.beta"))
    assert beta.get_attribute("aria-invalid") == "true"
    beta.fill("0.3")
    assert tab.inner_text("#err-dpo\\.beta") == ""
    tab.check('input[name="method"][value="supervised"]')
    assert not beta.is_visible()
