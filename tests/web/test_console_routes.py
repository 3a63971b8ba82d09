"""Console routes through FastAPI's TestClient: sign-in required, CSRF checked on every POST,
server-side validation shown next to the field, tenancy isolation, API-key sign-in, the CLI."""

from __future__ import annotations

import base64
import re

import pytest
from click.testing import CliRunner
from conftest import LORA_MODEL, PASSWORD, TENANCY_A, csrf_of, dataset_bytes

from tuneforge.store.tables import ModelRow, ObjectRow

PAGES = ["/", "/console", "/console/models/new", "/console/compare", "/console/models/ocid1.generativeaimodel.oc1.local.x",
         "/console/models/ocid1.generativeaimodel.oc1.local.x/adapter.zip"]  # fmt: skip


def field_errors(html: str) -> dict[str, str]:
    return {k: v for k, v in re.findall(r'data-error-for="(\w+)">([^<]+)<', html)}


def create_form(console, **fields) -> dict:
    page = console.client.get("/console/models/new").text
    form = {
        "csrf": csrf_of(page), "retryToken": re.search(r'name="retryToken" value="([^"]+)"', page).group(1),
        "compartmentId": "ocid1.compartment.oc1..aaaaweb", "baseModelId": LORA_MODEL, "cluster": "new",
        "datasetSource": "upload", "displayName": "web-model", "LORA_TRAINING_CONFIG.totalTrainingEpochs": "1",
    }  # fmt: skip
    form.update(fields)
    return form


def create_model(console, **fields) -> str:
    form = create_form(console, **fields)
    done = console.client.post("/console/models/new", data=form, files={"datasetFile": ("train.jsonl", dataset_bytes(), "application/jsonl")},
                               follow_redirects=False)  # fmt: skip
    assert done.status_code == 303, field_errors(done.text)
    return done.headers["location"].rsplit("/", 1)[-1]


# ---- sign-in required -----------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_pages_redirect_to_login(anonymous, path):
    answer = anonymous.client.get(path, follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/console/login?next=")


@pytest.mark.parametrize("path", ["/console/api/plan?baseModelId=x&n=40", "/console/api/models/x/live"])
def test_json_helpers_need_a_session(anonymous, path):
    assert anonymous.client.get(path).status_code == 401


def test_wrong_password_is_refused_and_right_one_signs_in(anonymous):
    refused = anonymous.login("alice", "not the password")
    assert refused.status_code == 303 and "Wrong+username+or+password" in refused.headers["location"]
    assert anonymous.client.get("/", follow_redirects=False).status_code == 303
    assert anonymous.login("nobody").status_code == 303
    assert anonymous.login("alice").headers["location"] == "/"
    page = anonymous.client.get("/")
    assert page.status_code == 200 and "Custom models" in page.text
    assert "cohere.command-r-16k" in page.text and "deprecated" in page.text  # base models, deprecated marked


def test_login_redirect_stays_on_this_server(anonymous):
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil"):
        anonymous.client.cookies.clear()
        token = anonymous.csrf("/console/login")
        done = anonymous.client.post("/console/login", data={"csrf": token, "username": "alice", "password": PASSWORD, "next": target},
                                     follow_redirects=False)  # fmt: skip
        assert done.headers["location"] == "/"


def test_removed_user_loses_the_session(alice):
    from tuneforge.web.users import remove_user

    assert alice.client.get("/", follow_redirects=False).status_code == 200
    remove_user(alice.data_dir, "alice")
    assert alice.client.get("/", follow_redirects=False).status_code == 303


def test_forged_cookie_is_not_a_session(anonymous):
    from tuneforge.web.session import COOKIE

    anonymous.client.cookies.set(COOKIE, "eyJ0ZW5hbmN5IjoieCJ9.forged")
    assert anonymous.client.get("/", follow_redirects=False).status_code == 303


# ---- CSRF -----------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "wrong-token-0123456789"])
def test_posts_without_the_session_csrf_token_are_rejected(alice, token):
    model_id = create_model(alice)
    extra = {} if token is None else {"csrf": token}
    form = create_form(alice)
    form.pop("csrf")
    assert alice.client.post("/console/models/new", data={**form, **extra}).status_code == 403
    assert alice.client.post(f"/console/models/{model_id}/delete", data=extra).status_code == 403
    assert alice.client.post("/console/logout", data=extra).status_code == 403
    assert alice.client.get(f"/console/models/{model_id}").status_code == 200  # nothing was deleted, still signed in


def test_login_form_needs_csrf_too(anonymous):
    done = anonymous.client.post("/console/login", data={"username": "alice", "password": PASSWORD}, follow_redirects=False)
    assert done.status_code == 403


def test_csrf_token_changes_at_sign_in(anonymous):
    before = anonymous.csrf("/console/login")
    anonymous.login("alice")
    assert anonymous.csrf("/") != before


# ---- create ---------------------------------------------------------------------------------


def test_create_uploads_through_object_storage_and_queues_the_job(alice, console_app):
    app, _ = console_app
    model_id = create_model(alice, **{"LORA_TRAINING_CONFIG.loraR": "4"})
    with app.state.services.sessions() as db:
        row = db.get(ModelRow, model_id)
        assert row.tenancy_id == TENANCY_A and row.lifecycle_state == "CREATING"
        ds = row.fine_tune_details["trainingDataset"]
        assert ds["bucketName"] == "datasets" and ds["objectName"].endswith("/train.jsonl")
        assert db.get(ObjectRow, (ds["namespaceName"], "datasets", ds["objectName"])).size == len(dataset_bytes())
        assert row.fine_tune_details["trainingConfig"]["loraR"] == 4
    page = alice.client.get(f"/console/models/{model_id}").text
    assert "CREATING" in page and "totalTrainingSteps = 4" in page  # the work request's plan line
    live = alice.client.get(f"/console/api/models/{model_id}/live").json()
    assert live["live"] is True and live["state"] == "CREATING"
    assert live["log"][0]["message"].startswith("Accepted: fine-tune meta.llama-3.3-70b-instruct on 40 examples")


@pytest.mark.parametrize("field, value, message", [
    ("loraR", "99", "loraR: 99 is not allowed; allowed: an integer from 1 to 64"),
    ("loraDropout", "1", "allowed: a decimal from 0 up to (not including) 1"),
    ("totalTrainingEpochs", "2.5", "must be an integer"),
    ("learningRate", "fast", "must be a number"),
])  # fmt: skip
def test_server_rejects_bad_hyperparameters_next_to_the_field(alice, field, value, message):
    form = create_form(alice, **{f"LORA_TRAINING_CONFIG.{field}": value})
    done = alice.client.post("/console/models/new", data=form, files={"datasetFile": ("train.jsonl", dataset_bytes(), "text/plain")})
    assert done.status_code == 400
    assert message in field_errors(done.text)[field]
    # The upload was kept: the form now refers to the stored object instead of asking for the file again.
    assert re.search(r'name="objectName" value="console/[^"]+/train.jsonl"', done.text)
    assert 'value="object" checked' in done.text


def test_api_errors_are_mapped_to_their_field(alice):
    missing = create_form(alice, datasetSource="object", bucketName="datasets", objectName="nope.jsonl")
    done = alice.client.post("/console/models/new", data=missing)
    assert done.status_code == 400
    assert "fineTuneDetails.trainingDataset: object" in field_errors(done.text)["dataset"]
    few = alice.client.post("/console/models/new", data=create_form(alice), files={"datasetFile": ("t.jsonl", dataset_bytes(10), "text/plain")})
    assert "at least 32" in field_errors(few.text)["dataset"]
    bad_cluster = create_form(alice, cluster="ocid1.generativeaidedicatedaicluster.oc1.local.nope")
    done = alice.client.post("/console/models/new", data=bad_cluster, files={"datasetFile": ("t.jsonl", dataset_bytes(), "text/plain")})
    assert "fineTuneDetails.dedicatedAiClusterId" in field_errors(done.text)["cluster"]


def test_double_submit_creates_one_model(alice, console_app):
    app, _ = console_app
    form = create_form(alice)
    files = {"datasetFile": ("train.jsonl", dataset_bytes(), "text/plain")}
    first = alice.client.post("/console/models/new", data=form, files=files, follow_redirects=False)
    second = alice.client.post("/console/models/new", data=form, files=files, follow_redirects=False)
    assert first.status_code == 303, field_errors(first.text)
    assert second.status_code == 303, re.findall(r"role=.alert.[^<]*<", second.text)
    assert first.headers["location"] == second.headers["location"]  # the form's retry token


def test_plan_endpoint_uses_the_service_rules(alice):
    plan = alice.client.get("/console/api/plan", params={"baseModelId": LORA_MODEL, "n": 41, "trainingBatchSize": "16"}).json()
    assert (plan["nTrain"], plan["nVal"], plan["totalTrainingSteps"]) == (33, 8, 3 * 3)  # n_val = floor(41/5 + 0.5)
    tfew = alice.client.get("/console/api/plan", params={"baseModelId": "cohere.command-r-08-2024", "n": 100}).json()
    assert tfew["totalTrainingSteps"] == 1 * 5  # T-Few defaults: 1 epoch, batch 16, 80 training examples
    bad = alice.client.get("/console/api/plan", params={"baseModelId": LORA_MODEL, "n": 40, "trainingBatchSize": "4"}).json()
    assert "trainingBatchSize" in bad["errors"] and "totalTrainingSteps" not in bad


def test_plan_reads_an_object_reference(alice):
    model_id = create_model(alice)
    page = alice.client.get(f"/console/models/new?from={model_id}").text
    obj = re.search(r'name="objectName" value="([^"]+)"', page).group(1)
    assert 'value="web-model-retry"' in page  # "create another like this" pre-fills the form
    plan = alice.client.get("/console/api/plan", params={"baseModelId": LORA_MODEL, "bucketName": "datasets", "objectName": obj}).json()
    assert plan["n"] == 40 and plan["totalTrainingSteps"] == 12


# ---- tenancy isolation ----------------------------------------------------------------------


def test_another_tenancy_sees_nothing(alice, bob):
    model_id = create_model(alice)
    assert model_id in alice.client.get("/").text
    assert model_id not in bob.client.get("/").text
    assert bob.client.get(f"/console/models/{model_id}").status_code == 404
    assert bob.client.get(f"/console/api/models/{model_id}/live").status_code == 404
    assert bob.client.get(f"/console/models/{model_id}/adapter.zip").status_code == 404
    assert model_id not in bob.client.get(f"/console/compare?id={model_id}&id={model_id}").text
    assert bob.client.post(f"/console/models/{model_id}/delete", data={"csrf": bob.csrf()}).status_code == 404
    assert "ocid1.compartment.oc1..aaaaweb" not in bob.client.get("/console/models/new").text  # nor its compartments
    obj = re.search(r'name="objectName" value="([^"]+)"', alice.client.get(f"/console/models/new?from={model_id}").text).group(1)
    plan = bob.client.get("/console/api/plan", params={"baseModelId": LORA_MODEL, "bucketName": "datasets", "objectName": obj}).json()
    assert "dataset" in plan["errors"]
    assert alice.client.get(f"/console/models/{model_id}").status_code == 200


def test_delete_of_a_queued_model(alice):
    model_id = create_model(alice)
    done = alice.client.post(f"/console/models/{model_id}/delete", data={"csrf": alice.csrf()}, follow_redirects=False)
    assert done.status_code == 303
    assert "state-DELETED" in alice.client.get(f"/console/models/{model_id}").text
    assert model_id not in alice.client.get("/").text and model_id in alice.client.get("/?state=DELETED").text


def test_compare_highlights_differences(alice):
    a = create_model(alice, **{"LORA_TRAINING_CONFIG.learningRate": "0.0002"})
    b = create_model(alice, **{"LORA_TRAINING_CONFIG.learningRate": "0.001"})
    page = alice.client.get(f"/console/compare?id={a}&id={b}").text
    assert re.search(r'<tr class="diff"><th>learningRate</th><td>0.0002</td><td>0.001</td>', page)
    assert re.search(r'<tr class=""><th>loraR</th><td>8</td><td>8</td>', page)
    assert 'id="compare-data"' in page


# ---- API-key sign-in ------------------------------------------------------------------------


def test_sign_in_with_a_registered_api_key(anonymous, console_app):
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    from tuneforge.services.keys import add_key

    app, _ = console_app
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    page = anonymous.client.get("/console/login").text
    challenge = re.search(r'name="challenge" value="([^"]+)"', page).group(1)
    signature = base64.b64encode(key.sign(challenge.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()
    form = {"csrf": csrf_of(page), "method": "api-key", "challenge": challenge, "signature": signature, "next": "/"}
    assert "signature+was+not+accepted" in anonymous.client.post("/console/login", data=form, follow_redirects=False).headers["location"]
    with app.state.services.sessions() as db:  # now register it for a tenancy
        add_key(db, "ocid1.tenancy.oc1..aaaakeyholder", "ocid1.user.oc1..aaaakeyuser",
                key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))  # fmt: skip
        db.commit()
    assert anonymous.client.post("/console/login", data=form, follow_redirects=False).headers["location"] == "/"
    assert "ocid1.user.oc1..aaaakeyuser" in anonymous.client.get("/").text
    tampered = {**form, "challenge": challenge.replace("login.", "login.1", 1)}
    anonymous.client.cookies.clear()
    form["csrf"] = tampered["csrf"] = anonymous.csrf("/console/login")
    assert "not+accepted" in anonymous.client.post("/console/login", data=tampered, follow_redirects=False).headers["location"]


# ---- assets and CLI -------------------------------------------------------------------------


def test_static_assets_ship_in_the_package(anonymous):
    js = anonymous.client.get("/console/static/console.js")
    assert js.status_code == 200 and "TuneCharts" in js.text and js.headers["content-type"].startswith("text/javascript")
    assert anonymous.client.get("/console/static/console.css").status_code == 200
    for name in ("charts.js", "charts.css", "uplot-1.6.32.min.js", "uplot-1.6.32.min.css"):  # the charts (vendored uPlot)
        assert anonymous.client.get(f"/console/static/{name}").status_code == 200, name
    assert anonymous.client.get("/console/static/..%2Fsession.py").status_code == 404
    assert anonymous.client.get("/console/static/nope.js").status_code == 404


def test_console_routes_are_not_in_the_api_document(anonymous):
    paths = anonymous.client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith("/console")]


def test_console_users_cli(tmp_path):
    from tuneforge.cli import main
    from tuneforge.web.users import check_password

    runner = CliRunner()
    secret = tmp_path / "pw"
    secret.write_text("s3cret-password\n")
    data = ["--data-dir", str(tmp_path / "d")]
    added = runner.invoke(main, ["console-users", "add", "--tenancy", TENANCY_A, "--username", "carol", "--password-file", str(secret), *data])
    assert added.exit_code == 0, added.output
    assert check_password(tmp_path / "d", "carol", "s3cret-password") == TENANCY_A
    prompted = runner.invoke(main, ["console-users", "add", "--tenancy", TENANCY_A, "--username", "dave", *data], input="pass-word-1\npass-word-1\n")
    assert prompted.exit_code == 0, prompted.output
    assert "carol  " + TENANCY_A in runner.invoke(main, ["console-users", "list", *data]).output
    short = runner.invoke(main, ["console-users", "add", "--tenancy", TENANCY_A, "--username", "eve", *data], input="short\nshort\n")
    assert short.exit_code == 2 and "at least 8" in short.output
    assert runner.invoke(main, ["console-users", "remove", "carol", *data]).exit_code == 0
    assert runner.invoke(main, ["console-users", "remove", "carol", *data]).exit_code == 1
