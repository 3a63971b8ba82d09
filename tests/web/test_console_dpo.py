"""The create form's training method (issue 23): supervised fine-tuning or preference tuning (DPO,
DPO_TRAINING_CONFIG), with DPO's beta field from the catalog; through FastAPI's TestClient as
test_console_routes.py drives the form. The job queues (no workers), so nothing trains here: the DPO
run itself is tests/service/test_dpo_doors.py's."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

from helpers.console import create_form, dataset_bytes, dataset_problems, field_errors
from helpers.fine_tuning import LORA_MODEL

from tuneforge import catalog
from tuneforge.store.tables import ModelRow

PAIRS = (Path(__file__).parents[2] / "tuneforge" / "examples" / "dates_preferences.jsonl").read_bytes()
BETA = catalog.dpo_params()["beta"]


def _post(console, dataset: bytes, **fields):
    return console.client.post(
        "/console/models/new",
        data=create_form(console, **fields),
        files={"datasetFile": ("pairs.jsonl", dataset, "application/jsonl")},
        follow_redirects=False,
    )


def test_the_form_offers_the_method_and_dpos_beta_from_the_catalog(alice):
    page = alice.client.get("/console/models/new").text
    assert re.search(r'<input type="radio" name="method" value="supervised" checked>\s*Supervised fine-tuning', page)
    assert re.search(r'<input type="radio" name="method" value="dpo" >\s*Preference tuning \(DPO\)', page)
    beta = re.search(r'<input id="dpo\.beta"[^>]*>', page).group(0)
    assert f'value="{catalog.format_number(BETA.default)}"' in beta and f'data-allowed="{BETA.allowed()}"' in beta
    assert unescape(BETA.description) in unescape(page)


def test_a_dpo_model_is_created_with_its_beta_and_offered_again_as_dpo(alice, console_app):
    app, _ = console_app
    done = _post(alice, PAIRS, method="dpo", **{"dpo.beta": "0.25"})
    assert done.status_code == 303, field_errors(done.text)
    model_id = done.headers["location"].rsplit("/", 1)[-1]
    with app.state.services.sessions() as db:
        config = db.get(ModelRow, model_id).fine_tune_details["trainingConfig"]
    assert (config["trainingConfigType"], config["beta"], config["totalTrainingEpochs"]) == ("DPO_TRAINING_CONFIG", 0.25, 1)
    details = alice.client.get(f"/console/models/{model_id}").text
    assert f"{LORA_MODEL} (LoRA, preference tuning (DPO))" in unescape(details)
    again = alice.client.get(f"/console/models/new?from={model_id}").text  # "try again" keeps the method and beta
    assert '<input type="radio" name="method" value="dpo" checked>' in again
    assert 'value="0.25"' in re.search(r'<input id="dpo\.beta"[^>]*>', again).group(0)


def test_beta_is_checked_next_to_its_field_and_only_for_dpo(alice):
    done = _post(alice, PAIRS, method="dpo", **{"dpo.beta": "0"})
    assert done.status_code == 400
    assert field_errors(done.text)["beta"].startswith(f"beta: 0 is not allowed; allowed: {BETA.allowed()}")
    assert 'href="#dpo.beta"' in done.text  # the summary's link moves to the field
    # A supervised model ignores the (hidden) DPO fieldset: its config has no beta.
    supervised = _post(alice, dataset_bytes(), **{"dpo.beta": "0"})
    assert supervised.status_code == 303, field_errors(supervised.text)


def test_the_dataset_must_fit_the_method(alice):
    done = _post(alice, PAIRS)  # supervised with preference pairs
    assert done.status_code == 400
    assert any("preference pairs train with the DPO method" in p for p in dataset_problems(done.text))
    done = _post(alice, dataset_bytes(), method="dpo")  # DPO with prompt/completion lines
    assert done.status_code == 400
    assert any("DPO trains on preference pairs" in p for p in dataset_problems(done.text))


def test_the_page_checks_and_plans_for_the_chosen_method(alice):
    csrf = alice.csrf("/console/models/new")

    def check(method: str):
        return alice.client.post(
            "/console/api/dataset-check",
            params={"baseModelId": LORA_MODEL, "name": "pairs.jsonl", "method": method},
            content=PAIRS,
            headers={"x-csrf-token": csrf, "content-type": "application/octet-stream"},
        ).json()

    assert check("dpo") == {"n": 240}
    assert "preference pairs train with the DPO method" in check("supervised")["problems"][0]
    plan = alice.client.get("/console/api/plan", params={"baseModelId": LORA_MODEL, "n": 240, "method": "dpo"}).json()
    assert plan["totalTrainingSteps"] == 3 * 24  # the LoRA table's defaults: 3 epochs of 192 pairs in batches of 8
    bad = alice.client.get(
        "/console/api/plan", params={"baseModelId": LORA_MODEL, "n": 240, "method": "dpo", "beta": "-1"}
    ).json()
    assert "beta" in bad["errors"] and "totalTrainingSteps" not in bad
