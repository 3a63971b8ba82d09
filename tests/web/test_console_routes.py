"""Console routes through FastAPI's TestClient: sign-in required, CSRF checked on every POST,
server-side validation shown next to the field (and in the summary), the dataset check, a refused
create that leaves nothing behind, the list's pages, the progress line, tenancy isolation, the CLI.
Sessions and sign-in are test_console_sessions.py, clusters test_console_clusters.py."""

from __future__ import annotations

import re
from html import unescape

import pytest
from click.testing import CliRunner
from helpers.console import PASSWORD, TENANCY_A, create_form, create_model, dataset_bytes, dataset_problems, field_errors
from helpers.fine_tuning import LORA_MODEL

from tuneforge.store.tables import ModelRow, ObjectRow

PAGES = [
    "/",
    "/console",
    "/console/models/new",
    "/console/compare",
    "/console/models/ocid1.generativeaimodel.oc1.local.x",
    "/console/models/ocid1.generativeaimodel.oc1.local.x/adapter.zip",
]


# ---- sign-in required -----------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_pages_redirect_to_login(anonymous, path):
    answer = anonymous.client.get(path, follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/console/login?next=")


@pytest.mark.parametrize("path", ["/console/api/plan?baseModelId=x&n=40", "/console/api/models/x/live"])
def test_json_helpers_need_a_session(anonymous, path):
    assert anonymous.client.get(path).status_code == 401


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


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("loraR", "99", "loraR: 99 is not allowed; allowed: an integer from 1 to 64"),
        ("loraDropout", "1", "loraDropout: 1 is not allowed; allowed: a decimal from 0 up to (not including) 1"),
        ("totalTrainingEpochs", "2.5", "totalTrainingEpochs: 2.5 is not an integer; allowed: an integer of 1 or more"),
        ("learningRate", "5", "learningRate: 5 is not allowed; allowed: a number from 0 to 1.0"),
        ("learningRate", "fast", "learningRate: fast is not a number"),
    ],
)
def test_server_rejects_bad_hyperparameters_next_to_the_field(alice, field, value, message):
    form = create_form(alice, **{f"LORA_TRAINING_CONFIG.{field}": value})
    done = alice.client.post(
        "/console/models/new", data=form, files={"datasetFile": ("train.jsonl", dataset_bytes(), "text/plain")}
    )
    assert done.status_code == 400
    assert field_errors(done.text)[field].startswith(message)
    # Tied to its field, and listed in the summary at the top as a link to the field.
    field_input = re.search(rf'<input id="LORA_TRAINING_CONFIG\.{field}"[^>]*>', done.text).group(0)
    assert 'aria-invalid="true"' in field_input and f"err-LORA_TRAINING_CONFIG.{field}" in field_input
    assert re.search(
        rf'id="error-summary" role="alert"[^>]*>\s*<h2>There is a problem with this form</h2>\s*<ul>\s*<li><a href="#LORA_TRAINING_CONFIG\.{field}">',
        done.text,
    )
    # The user's choice of upload is kept (stored as an object) and shown, not asked for again.
    kept = re.search(r'name="keptUpload" value="(console/[^"]+/train.jsonl)"', done.text).group(1)
    assert 'value="upload" checked' in done.text and "Uploaded: <b>train.jsonl</b>" in done.text
    # Submitted again with the field fixed and no file chosen: the kept upload is the dataset.
    fixed = {**form, f"LORA_TRAINING_CONFIG.{field}": "", "keptUpload": kept}
    again = alice.client.post("/console/models/new", data=fixed, follow_redirects=False)
    assert again.status_code == 303, field_errors(again.text)


def test_api_errors_are_mapped_to_their_field(alice):
    missing = create_form(alice, datasetSource="object", bucketName="datasets", objectName="nope.jsonl")
    done = alice.client.post("/console/models/new", data=missing)
    assert done.status_code == 400
    assert (
        field_errors(done.text)["dataset"].startswith("Object ")
        and "datasets/nope.jsonl not found" in field_errors(done.text)["dataset"]
    )
    few = alice.client.post(
        "/console/models/new", data=create_form(alice), files={"datasetFile": ("t.jsonl", dataset_bytes(31), "text/plain")}
    )
    assert field_errors(few.text)["dataset"] == "t.jsonl has 1 problem:"
    assert dataset_problems(few.text) == ["31 valid examples; at least 32 are needed"]
    broken = dataset_bytes(40).replace(b'"completion": "no"}', b'"completion": no}', 1).replace(b"}\n", b"}\xff\n", 1)
    done = alice.client.post(
        "/console/models/new", data=create_form(alice), files={"datasetFile": ("b.jsonl", broken, "text/plain")}
    )
    assert dataset_problems(done.text) == dataset_problems_by_the_engine(broken)
    bad_cluster = create_form(alice, cluster="ocid1.generativeaidedicatedaicluster.oc1.local.nope")
    done = alice.client.post(
        "/console/models/new", data=bad_cluster, files={"datasetFile": ("t.jsonl", dataset_bytes(), "text/plain")}
    )
    assert field_errors(done.text)["cluster"].startswith("No dedicated AI cluster")


def dataset_problems_by_the_engine(content: bytes, tmp=None) -> list[str]:
    """What tuneforge.data (the engine's and the service's validator) says about a file, one problem per line."""
    import tempfile

    from tuneforge import data
    from tuneforge.errors import DatasetError

    with tempfile.NamedTemporaryFile(suffix=".jsonl") as f:
        f.write(content)
        f.flush()
        try:
            data.scan_dataset(f.name)
        except DatasetError as err:
            return [str(p) for p in err.problems]
    return []


def test_a_refused_create_leaves_no_cluster_behind(alice, console_app):
    """Every rejected submit with "a new fine-tuning cluster" used to create another cluster."""
    from tuneforge.services.context import Caller
    from tuneforge.services.resources import clusters

    app, _ = console_app
    svc, caller = app.state.services, Caller(TENANCY_A, "alice")

    def count() -> int:
        return len(clusters.list_clusters(svc, caller, None, limit=100).items)

    bad_forms = [
        ({"LORA_TRAINING_CONFIG.loraR": "99"}, dataset_bytes()),  # the form's own check
        ({}, dataset_bytes(31)),  # the dataset, checked by the service
        ({"LORA_TRAINING_CONFIG.totalTrainingEpochs": "100000000"}, dataset_bytes()),  # the plan is too long
        ({"datasetSource": "object", "objectName": "missing.jsonl"}, None),  # no such object
        ({"compartmentId": "x" * 300}, dataset_bytes()),  # refused by the API's schema
    ]
    for fields, content in bad_forms:
        files = {"datasetFile": ("t.jsonl", content, "text/plain")} if content is not None else None
        done = alice.client.post("/console/models/new", data=create_form(alice, **fields), files=files)
        assert done.status_code == 400, fields
        assert count() == 0, f"{fields} left a cluster behind"
    create_model(alice)
    assert count() == 1


def test_double_submit_creates_one_model(alice, console_app):
    _app, _ = console_app
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


def test_models_list_pages(alice, monkeypatch):
    from tuneforge.web import model_pages

    made = {create_model(alice, displayName=f"m{i}") for i in range(3)}
    monkeypatch.setattr(model_pages, "MODELS_PER_PAGE", 2)
    first = alice.client.get("/").text
    shown = set(re.findall(r'data-model-id="([^"]+)"', first))
    assert len(shown) == 2 and 'data-live="true"' in first  # they are queued: the list refreshes itself
    next_page = unescape(re.search(r'<a href="([^"]+)" id="next-page">', first).group(1))
    second = alice.client.get(next_page).text
    assert set(re.findall(r'data-model-id="([^"]+)"', second)) == made - shown
    assert 'id="next-page"' not in second and 'id="first-page"' in second
    assert len(re.findall(r'data-model-id="', alice.client.get("/?limit=1").text)) == 1
    assert len(re.findall(r'data-model-id="', alice.client.get("/?page=bogus").text)) == 2  # a token never issued: page one


def test_progress_line_and_rounded_log(alice, console_app):
    from sqlalchemy import select

    from tuneforge.store import workrequests
    from tuneforge.store.tables import JobRow

    app, _ = console_app
    model_id = create_model(alice)
    live = alice.client.get(f"/console/api/models/{model_id}/live").json()
    assert live["progressText"] == "waiting for a worker…"
    steps = [
        (
            {
                "phase": "loading",
                "detail": "loading the base model's weights",
                "step": 0,
                "totalTrainingSteps": None,
                "epoch": 0.0,
            },
            "loading the base model's weights",
        ),
        (
            {"phase": "training", "step": 3, "totalTrainingSteps": 12, "epoch": 0.75, "etaSeconds": 150.4},
            "step 3 of 12 · epoch 0.75 · about 2 min 30 s left",
        ),
        (
            {
                "phase": "evaluating",
                "detail": "final evaluation on all 8 validation examples",
                "step": 12,
                "totalTrainingSteps": 12,
                "epoch": 3.0,
                "etaSeconds": 4,
            },
            "step 12 of 12 · epoch 3.00 · final evaluation on all 8 validation examples · a few seconds left",
        ),
    ]
    with app.state.services.sessions() as db:
        job = db.scalars(select(JobRow).where(JobRow.model_id == model_id)).one()
        workrequests.log(
            db, job.id, "Evaluation at step 4 (epoch 1.0): validationLoss=2.302585092994046, validationAccuracy=0.123456789"
        )
        db.commit()
    for progress, text in steps:
        with app.state.services.sessions() as db:
            db.scalars(select(JobRow).where(JobRow.model_id == model_id)).one().progress = progress
            db.commit()
        assert alice.client.get(f"/console/api/models/{model_id}/live").json()["progressText"] == text
    assert "step 12 of 12 · epoch 3.00" in alice.client.get(f"/console/models/{model_id}").text  # rendered before any script runs
    log = alice.client.get(f"/console/api/models/{model_id}/live").json()["log"]
    assert log[-1]["message"] == "Evaluation at step 4 (epoch 1.0): validationLoss=2.3026, validationAccuracy=0.12346"


def test_a_deleted_model_keeps_its_curves_and_log(alice, console_app):
    from tuneforge.store.tables import MetricRecord

    app, _ = console_app
    model_id = create_model(alice)
    with app.state.services.sessions() as db:
        db.add(MetricRecord(model_id=model_id, seq=0, record={"kind": "train", "step": 1, "loss": 2.5, "learningRate": 1e-4}))
        db.commit()
    alice.client.post(f"/console/models/{model_id}/delete", data={"csrf": alice.csrf()})
    live = alice.client.get(f"/console/api/models/{model_id}/live").json()
    assert live["state"] == "DELETED" and [r["step"] for r in live["records"]] == [1]
    assert live["log"][0]["message"].startswith("Accepted: fine-tune") and any(
        "Model deleted" in e["message"] for e in live["log"]
    )
    assert 'id="deleted-note"' in alice.client.get(f"/console/models/{model_id}").text


def test_plan_reads_an_object_reference(alice):
    model_id = create_model(alice)
    page = alice.client.get(f"/console/models/new?from={model_id}").text
    obj = re.search(r'name="objectName" value="([^"]+)"', page).group(1)
    assert 'value="web-model-retry"' in page  # "create another like this" pre-fills the form
    plan = alice.client.get(
        "/console/api/plan", params={"baseModelId": LORA_MODEL, "bucketName": "datasets", "objectName": obj}
    ).json()
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
    plan = bob.client.get(
        "/console/api/plan", params={"baseModelId": LORA_MODEL, "bucketName": "datasets", "objectName": obj}
    ).json()
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


# ---- the dataset check in the page ------------------------------------------------------------


def check_dataset(console, content: bytes, name: str = "train.jsonl", **headers):
    csrf = console.csrf("/console/models/new")
    return console.client.post(
        "/console/api/dataset-check",
        params={"baseModelId": LORA_MODEL, "name": name},
        content=content,
        headers={"x-csrf-token": csrf, "content-type": "application/octet-stream", **headers},
    )


def test_dataset_check_says_what_the_server_would_say(alice):
    assert check_dataset(alice, dataset_bytes(40)).json() == {"n": 40}
    few = check_dataset(alice, dataset_bytes(31)).json()
    assert few == {"summary": "train.jsonl has 1 problem:", "problems": ["31 valid examples; at least 32 are needed"]}
    lines = dataset_bytes(40).splitlines(keepends=True)
    lines[2] = b'{"prompt": "Is 3 odd?", "completion" "yes"}\n'  # a broken line: the ":" is missing at column 38
    lines[6] = b'{"prompt": "caf\xe9", "completion": "yes"}\n'  # Latin-1, not UTF-8: byte 16 is 0xe9
    broken = b"".join(lines)
    answer = check_dataset(alice, broken).json()
    assert answer["summary"] == "train.jsonl has 2 problems:"
    assert answer["problems"] == dataset_problems_by_the_engine(broken)
    assert answer["problems"] == [
        "line 3: not valid JSON (Expecting ':' delimiter at column 38)",
        "line 7: not valid UTF-8 (byte 0xe9 at byte 16 of the line)",
    ]
    # The same report on submit, listed under the field.
    done = alice.client.post(
        "/console/models/new", data=create_form(alice), files={"datasetFile": ("train.jsonl", broken, "text/plain")}
    )
    assert dataset_problems(done.text) == answer["problems"]


def test_dataset_check_is_bounded_and_keeps_nothing(alice, anonymous, monkeypatch):
    from tuneforge.web import model_pages

    assert check_dataset(anonymous, dataset_bytes()).status_code == 401
    assert (
        alice.client.post("/console/api/dataset-check", params={"baseModelId": LORA_MODEL}, content=dataset_bytes()).status_code
        == 403
    )
    monkeypatch.setattr(model_pages, "MAX_CHECK_BYTES", 1000)
    big = check_dataset(alice, dataset_bytes(40)).json()
    assert big["tooLarge"] is True and "checks it when you create the model" in big["message"]
    monkeypatch.undo()
    assert check_dataset(alice, dataset_bytes(40)).json() == {"n": 40}
    assert not [p for p in (alice.data_dir / "objects").rglob("*") if p.is_file()]  # the spooled copy is gone


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
    added = runner.invoke(
        main, ["console-users", "add", "--tenancy", TENANCY_A, "--username", "carol", "--password-file", str(secret), *data]
    )
    assert added.exit_code == 0, added.output
    assert check_password(tmp_path / "d", "carol", "s3cret-password") == TENANCY_A
    prompted = runner.invoke(
        main, ["console-users", "add", "--tenancy", TENANCY_A, "--username", "dave", *data], input="pass-word-1\npass-word-1\n"
    )
    assert prompted.exit_code == 0, prompted.output
    assert "carol  " + TENANCY_A in runner.invoke(main, ["console-users", "list", *data]).output
    short = runner.invoke(
        main, ["console-users", "add", "--tenancy", TENANCY_A, "--username", "eve", *data], input="short\nshort\n"
    )
    assert short.exit_code == 2 and "at least 8" in short.output
    assert runner.invoke(main, ["console-users", "remove", "carol", *data]).exit_code == 0
    assert runner.invoke(main, ["console-users", "remove", "carol", *data]).exit_code == 1
