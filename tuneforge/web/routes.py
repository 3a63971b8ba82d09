"""Console routes, served by `tuneforge serve` next to the API: `/` lists models, everything else
lives under /console. Pages are server-rendered; console.js adds live progress and charts.

Every page needs a signed-in console session (else: redirect to the login page); every POST must
carry the session's CSRF token. Changes go through the API's own route functions with the session's
tenancy as the caller, so the console validates, queues and deletes exactly as the SDK's calls do.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from pydantic import ValidationError
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from tuneforge import catalog
from tuneforge.api import clusters_routes, models_routes
from tuneforge.api.auth import Caller
from tuneforge.api.errors import ApiError, validation_message
from tuneforge.api.schemas import CreateDedicatedAiClusterDetails, CreateModelDetails
from tuneforge.data import scan_dataset
from tuneforge.errors import DatasetError
from tuneforge.hyperparams import API_FIELDS
from tuneforge.store import objects
from tuneforge.web import forms, queries
from tuneforge.web import session as sessions
from tuneforge.web.render import STATIC, page, redirect, to_login
from tuneforge.web.users import check_password, new_challenge, user_tenancy, verify_key_signature

router = APIRouter(include_in_schema=False)  # not part of the OCI API document (schemathesis reads it)
MAX_COMPARE = 6


def _caller(request: Request) -> Caller | None:
    """The signed-in tenancy as the API's caller; None when not signed in (or the user was removed)."""
    current = sessions.load(request)
    if not current.signed_in:
        return None
    if current.via == "password" and user_tenancy(request.app.state.config.data_dir, current.user) != current.tenancy:
        return None
    return Caller(tenancy_id=current.tenancy, user_id=current.user)


def _db(request: Request):
    return request.app.state.sessions()


def _region(request: Request) -> str:
    return request.app.state.config.region


async def _form_with_csrf(request: Request):
    """The POSTed form, or None when its CSRF token is not this session's."""
    form = await request.form()
    if not sessions.csrf_ok(sessions.load(request), form.get(sessions.CSRF_FIELD)):
        return None
    return form


def _csrf_rejected(request: Request) -> Response:
    return page(request, "error.html", status=403, title="Form expired",
                message="The form was not accepted (missing or stale CSRF token). Reload the page and try again.")  # fmt: skip


def _not_found(request: Request) -> Response:
    return page(request, "error.html", status=404, title="Not found", message="No such model in your tenancy.")


# ---- static assets --------------------------------------------------------------------------


@router.get("/console/static/{name}")
def static(name: str) -> Response:
    # Only files that ship in web/static; the name is never joined into a path unchecked.
    if name not in os.listdir(STATIC):
        return Response(status_code=404)
    media = {"js": "text/javascript", "css": "text/css", "svg": "image/svg+xml"}.get(name.rsplit(".", 1)[-1], "application/octet-stream")
    return FileResponse(STATIC / name, media_type=media, headers={"cache-control": "max-age=300"})


# ---- sign in / out --------------------------------------------------------------------------


@router.get("/console/login")
def login_page(request: Request, next: str = "/", error: str | None = None) -> Response:
    challenge = new_challenge(sessions._key(request))
    return page(request, "login.html", next=_safe_next(next), error=error, challenge=challenge)


def _safe_next(target: str | None) -> str:
    # Only paths on this server: "//evil.example" or "https://..." would make an open redirect.
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _sign_in(request: Request, tenancy: str, user: str, via: str, target: str) -> Response:
    response = redirect(_safe_next(target))
    sessions.save(request, response, sessions.signed_in_as(tenancy, user, via))
    return response


@router.post("/console/login")
async def login(request: Request) -> Response:
    form = await _form_with_csrf(request)
    if form is None:
        return _csrf_rejected(request)
    target = str(form.get("next") or "/")
    data_dir = request.app.state.config.data_dir
    if form.get("method") == "api-key":
        with _db(request) as db:
            holder = await run_in_threadpool(verify_key_signature, db, sessions._key(request), str(form.get("challenge") or ""),
                                             str(form.get("signature") or ""))  # fmt: skip
        if holder is None:
            return redirect("/console/login?" + urlencode({"next": target, "error": "The key's signature was not accepted: the key is not registered (tuneforge api-keys add) or the page expired."}))
        return _sign_in(request, holder.tenancy, holder.user, "api-key", target)
    username = str(form.get("username") or "")
    tenancy = await run_in_threadpool(check_password, data_dir, username, str(form.get("password") or ""))
    if tenancy is None:
        return redirect("/console/login?" + urlencode({"next": target, "error": "Wrong username or password."}))
    return _sign_in(request, tenancy, username, "password", target)


@router.post("/console/logout")
async def logout(request: Request) -> Response:
    if await _form_with_csrf(request) is None:
        return _csrf_rejected(request)
    response = redirect("/console/login")
    response.delete_cookie(sessions.COOKIE, path="/")
    return response


# ---- models list ----------------------------------------------------------------------------


@router.get("/")
@router.get("/console")
def models_page(request: Request, state: str | None = None, base: str | None = None, compartment: str | None = None) -> Response:
    caller = _caller(request)
    if caller is None:
        return to_login(request)
    state = state if state in queries.STATES else None
    base = base if any(m.id == base for m in catalog.list_models()) else None
    with _db(request) as db:
        custom = queries.custom_models(db, caller, _region(request), state, base, compartment or None)
        compartments = queries.compartments(db, caller)
    return page(request, "models.html", models=custom, base_models=queries.base_model_views(_region(request), base),
                states=queries.STATES, catalog=catalog.list_models(), compartments=compartments,
                filters={"state": state, "base": base, "compartment": compartment})  # fmt: skip


# ---- create ---------------------------------------------------------------------------------


def _form_page(request: Request, db, caller: Caller, form: forms.CreateForm, status: int = 200) -> Response:
    return page(request, "create.html", status=status, form=form, catalog=catalog.list_models(), groups=forms.groups(),
                group_of=forms.group_of, clusters=queries.fine_tuning_clusters(db, caller),
                compartments=queries.compartments(db, caller), namespace=objects.namespace_for(caller.tenancy_id))  # fmt: skip


def _form_like(db, caller: Caller, model_id: str | None, base: str | None) -> forms.CreateForm:
    """A blank form, or one pre-filled from an earlier model: OCI's loop is "try again with other
    hyperparameters or more data", so the details page offers exactly that."""
    row = queries.owned_model(db, caller, model_id) if model_id else None
    if row is None:
        default = next((m.id for m in catalog.list_models() if m.id == base), None) or next(m.id for m in catalog.list_models() if not m.deprecated)
        return forms.CreateForm(base_model_id=default, compartment_id=caller.tenancy_id)
    ft = row.fine_tune_details
    config = {k: catalog.format_number(v) for k, v in ft["trainingConfig"].items() if k in API_FIELDS}
    return forms.CreateForm(
        base_model_id=row.base_model_id, compartment_id=row.compartment_id, display_name=f"{row.display_name}-retry",
        cluster=ft["dedicatedAiClusterId"], dataset_source="object", bucket_name=ft["trainingDataset"]["bucketName"],
        object_name=ft["trainingDataset"]["objectName"], hyperparams=config,
    )  # fmt: skip


@router.get("/console/models/new")
def create_page(request: Request, base: str | None = None, like: Annotated[str | None, Query(alias="from")] = None) -> Response:
    caller = _caller(request)
    if caller is None:
        return to_login(request)
    with _db(request) as db:
        return _form_page(request, db, caller, _form_like(db, caller, like, base))


@router.post("/console/models/new")
async def create(request: Request) -> Response:
    caller = _caller(request)
    if caller is None:
        return to_login(request)
    raw = await _form_with_csrf(request)
    if raw is None:
        return _csrf_rejected(request)
    form = forms.CreateForm.from_form(raw)
    values = form.check()
    upload = raw.get("datasetFile")
    has_file = isinstance(upload, UploadFile) and bool(upload.filename)
    if form.dataset_source == "upload" and not has_file:
        form.errors["dataset"] = "Choose a JSONL file to upload (or name an object)."
    if has_file and form.dataset_source == "upload":
        # Stored before anything else is checked, so a form shown again with an error refers to the
        # uploaded object instead of asking for the file a second time.
        form.bucket_name, form.object_name = forms.UPLOAD_BUCKET, forms.upload_name(form.retry_token, upload.filename)
        try:
            await forms.store_upload(request.app.state, caller, upload, form.object_name)
        except ApiError as err:
            form.errors["dataset"] = err.message
        form.dataset_source = "object"
    return await run_in_threadpool(_create, request, caller, form, values)


def _create(request: Request, caller: Caller, form: forms.CreateForm, values: dict[str, Any]) -> Response:
    config = request.app.state.config
    with _db(request) as db:
        if form.errors:
            return _form_page(request, db, caller, form, status=400)
        try:
            cluster_id = form.cluster if form.cluster != forms.NEW_CLUSTER else _new_cluster(db, caller, config, form)
            details = CreateModelDetails.model_validate(form.api_body(objects.namespace_for(caller.tenancy_id), cluster_id, values))
            model = models_routes.create_model(details, caller, db, config, request, Response(), retry_token=form.retry_token)
        except ApiError as err:
            form.errors[forms.field_of_error(err.message) or "form"] = err.message
        except ValidationError as err:
            message = validation_message(err)
            form.errors[forms.field_of_error(message) or "form"] = message
        else:
            return redirect(f"/console/models/{model.id}")
        return _form_page(request, db, caller, form, status=400)


def _new_cluster(db, caller: Caller, config, form: forms.CreateForm) -> str:
    # The form's retry token makes this idempotent too: a resubmitted form reuses the cluster it made.
    details = CreateDedicatedAiClusterDetails(type="FINE_TUNING", compartment_id=form.compartment_id, unit_count=1,
                                              unit_shape="LARGE_GENERIC", display_name="console-fine-tuning")  # fmt: skip
    return clusters_routes.create_dedicated_ai_cluster(details, caller, db, config, Response(), retry_token=form.retry_token).id


@router.get("/console/api/plan")
def plan_api(request: Request, baseModelId: str, n: Annotated[int | None, Query(ge=0, le=10**9)] = None,
             bucketName: str | None = None, objectName: str | None = None) -> Response:  # fmt: skip
    """Split and totalTrainingSteps for the form as it stands, with the server's message per field.
    `n` is the example count the page counted in a chosen file; an object reference is read here."""
    caller = _caller(request)
    if caller is None:
        return JSONResponse({"message": "sign in first"}, status_code=401)
    spec = next((m for m in catalog.list_models() if m.id == baseModelId), None)
    if spec is None:
        return JSONResponse({"errors": {"baseModelId": "Choose a base model."}})
    values, errors = forms.training_values(spec, dict(request.query_params))
    if n is None and bucketName and objectName:
        n, errors = _count_object(request, caller, bucketName, objectName, errors)
    body: dict[str, Any] = {"errors": errors}
    if n is not None and not errors:
        body.update(forms.plan(spec, values, n))
    return JSONResponse(body)


def _count_object(request: Request, caller: Caller, bucket: str, name: str, errors: dict) -> tuple[int | None, dict]:
    with _db(request) as db:
        row = objects.find(db, objects.namespace_for(caller.tenancy_id), bucket, name)
    if row is None:
        return None, {**errors, "dataset": f"No object {bucket}/{name} in your namespace."}
    try:
        return scan_dataset(objects.blob_path(request.app.state.config.objects_dir, row.storage_key)), errors
    except DatasetError as err:
        return None, {**errors, "dataset": str(err).split(": ", 1)[-1]}


# ---- details --------------------------------------------------------------------------------


def _live(db, caller: Caller, row, since: int = 0, after: int = 0) -> dict[str, Any]:
    """What the details page polls: state, progress, new curve points and new log lines."""
    metrics = models_routes.get_model_metrics(row.id, caller, db, since=since, limit=10000)
    return {"state": row.lifecycle_state, "progress": metrics.progress, "records": metrics.items, "next": metrics.next,
            "log": queries.work_request_log(db, row.id, after), "live": row.lifecycle_state in queries.LIVE_STATES}  # fmt: skip


@router.get("/console/models/{model_id}")
def details_page(request: Request, model_id: str) -> Response:
    caller = _caller(request)
    if caller is None:
        return to_login(request)
    with _db(request) as db:
        row = queries.owned_model(db, caller, model_id)
        if row is None:
            return _not_found(request)
        job = queries.latest_job(db, row.id)
        live = _live(db, caller, row)
        return page(request, "details.html", model=queries.model_view(row, _region(request)), live=live,
                    result=queries.run_result(job), has_adapter=queries.adapter_dir(job) is not None)  # fmt: skip


@router.get("/console/api/models/{model_id}/live")
def live_api(request: Request, model_id: str, since: Annotated[int, Query(ge=0)] = 0, after: Annotated[int, Query(ge=0)] = 0) -> Response:
    caller = _caller(request)
    if caller is None:
        return JSONResponse({"message": "sign in first"}, status_code=401)
    with _db(request) as db:
        row = queries.owned_model(db, caller, model_id)
        if row is None:
            return JSONResponse({"message": "no such model in your tenancy"}, status_code=404)
        return JSONResponse(_live(db, caller, row, since, after))


@router.post("/console/models/{model_id}/delete")
async def delete(request: Request, model_id: str) -> Response:
    """Delete; while training runs this cancels the job (the API's delete_model stops it)."""
    caller = _caller(request)
    if caller is None:
        return to_login(request)
    if await _form_with_csrf(request) is None:
        return _csrf_rejected(request)
    return await run_in_threadpool(_delete, request, caller, model_id)


def _delete(request: Request, caller: Caller, model_id: str) -> Response:
    with _db(request) as db:
        if queries.owned_model(db, caller, model_id) is None:
            return _not_found(request)
        try:
            models_routes.delete_model(model_id, caller, db, request.app.state.config, Response())
        except ApiError as err:
            return page(request, "error.html", status=err.status, title="Not deleted", message=err.message)
    return redirect(f"/console/models/{model_id}")


@router.get("/console/models/{model_id}/adapter.zip")
def download_adapter(request: Request, model_id: str) -> Response:
    """The PEFT adapter folder (adapter_config.json + adapter_model.safetensors) as a zip."""
    caller = _caller(request)
    if caller is None:
        return to_login(request)
    with _db(request) as db:
        row = queries.owned_model(db, caller, model_id)
        folder = queries.adapter_dir(queries.latest_job(db, row.id)) if row is not None else None
    if folder is None:
        return _not_found(request)
    # A temporary file rather than memory: real adapters run to hundreds of megabytes.
    fd, tmp = tempfile.mkstemp(suffix=".zip")
    with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for path in sorted(folder.iterdir()):
            if path.is_file():
                archive.write(path, f"adapter/{path.name}")
    name = f"{row.display_name}-adapter.zip".replace('"', "")
    return FileResponse(tmp, media_type="application/zip", filename=name, background=BackgroundTask(os.unlink, tmp))


# ---- compare --------------------------------------------------------------------------------


@router.get("/console/compare")
def compare_page(request: Request, id: Annotated[list[str] | None, Query()] = None) -> Response:
    caller = _caller(request)
    if caller is None:
        return to_login(request)
    chosen = list(dict.fromkeys(id or []))[:MAX_COMPARE]
    with _db(request) as db:
        rows = [r for r in (queries.owned_model(db, caller, i) for i in chosen) if r is not None]
        runs = []
        for row in rows:
            metrics = models_routes.get_model_metrics(row.id, caller, db, since=0, limit=10000)
            runs.append({"model": queries.model_view(row, _region(request)), "result": queries.run_result(queries.latest_job(db, row.id)),
                         "records": metrics.items})  # fmt: skip
        choices = queries.custom_models(db, caller, _region(request))
    return page(request, "compare.html", runs=runs, rows=_config_rows(runs), choices=choices, chosen=[r["model"]["id"] for r in runs])


def _config_rows(runs: list[dict]) -> list[dict[str, Any]]:
    """One row per setting; `differs` marks the rows to highlight."""

    def config(run: dict, name: str):
        return run["model"].get("fineTuneDetails", {}).get("trainingConfig", {}).get(name)

    def dataset(run: dict):
        ds = run["model"].get("fineTuneDetails", {}).get("trainingDataset", {})
        return f"{ds.get('bucketName')}/{ds.get('objectName')}" if ds else None

    def result(run: dict, key: str):
        return (run["result"] or {}).get(key)

    getters = [("Base model", lambda r: r["model"]["baseModelName"]), ("Method", lambda r: r["model"]["method"]),
               ("Dataset", dataset), ("Training examples", lambda r: result(r, "trainingExamples")),
               ("Validation examples", lambda r: result(r, "validationExamples"))]  # fmt: skip
    getters += [(name, lambda r, n=name: config(r, n)) for name in API_FIELDS]
    getters += [("totalTrainingSteps", lambda r: result(r, "totalTrainingSteps")), ("Steps run", lambda r: result(r, "stepsRun")),
                ("Early stopped", lambda r: result(r, "earlyStopped"))]  # fmt: skip
    rows = []
    for label, get in getters:
        values = [get(run) for run in runs]
        if all(v is None for v in values):
            continue  # e.g. LoRA fields when every model is T-Few
        rows.append({"label": label, "cells": [_cell(v) for v in values], "differs": len({repr(v) for v in values}) > 1})
    return rows


def _cell(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return catalog.format_number(value)
    return str(value)
