"""Console routes, served by `tuneforge serve` next to the API: `/` lists models, everything else
lives under /console. Pages are server-rendered; console.js adds live progress and charts.

Every page needs a signed-in console session (`ConsoleCaller`, a dependency: without one a page
redirects to the login page and /console/api answers 401); every POST must carry the session's CSRF
token. Everything is done through the service layer with the session's tenancy as the caller, so the
console validates, queues and deletes exactly as the SDK's calls do.
"""

from __future__ import annotations

import os
import tempfile
import threading
import zipfile
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from pydantic import ValidationError
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from tuneforge import catalog
from tuneforge.errors import DatasetError
from tuneforge.hyperparams import API_FIELDS
from tuneforge.services import clusters, datasets, models, objects, tenancy
from tuneforge.services.context import Caller, Services
from tuneforge.services.errors import ServiceError, validation_message
from tuneforge.services.schemas import CreateDedicatedAiClusterDetails, CreateModelDetails
from tuneforge.web import forms, queries
from tuneforge.web import session as sessions
from tuneforge.web.render import STATIC, page, redirect
from tuneforge.web.users import check_password, new_challenge, user_tenancy, verify_key_signature

router = APIRouter(include_in_schema=False)  # not part of the OCI API document (schemathesis reads it)
MAX_COMPARE = 6
# scrypt costs ~50 ms of CPU per sign-in attempt: at most this many run at once, the rest are told
# to retry, so sign-in attempts cannot take the server's cores away from everyone else.
PASSWORD_CHECKS = threading.BoundedSemaphore(2)


class SignInRequired(Exception):
    """Raised by `console_caller`; pages answer with the login page, /console/api with 401."""


def console_caller(request: Request) -> Caller:
    """The signed-in tenancy as the service layer's caller (a console user who was removed is signed out)."""
    current = sessions.load(request)
    if not current.signed_in:
        raise SignInRequired()
    if current.via == "password" and user_tenancy(request.app.state.config.data_dir, current.user) != current.tenancy:
        raise SignInRequired()
    return Caller(tenancy_id=current.tenancy, user_id=current.user)


ConsoleCaller = Annotated[Caller, Depends(console_caller)]


def _services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(_services)]


def install(app: FastAPI) -> None:
    app.include_router(router)

    @app.exception_handler(SignInRequired)
    async def _sign_in_first(request: Request, exc: SignInRequired) -> Response:
        if request.url.path.startswith("/console/api/"):
            return JSONResponse({"message": "sign in first"}, status_code=401)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return redirect(f"/console/login?next={quote(target, safe='')}")


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
    challenge = new_challenge(sessions.session_key(request))
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


def _checked_password(data_dir, username: str, password: str) -> str | None | bool:
    """The user's tenancy, None for a wrong password, False when too many checks already run."""
    if not PASSWORD_CHECKS.acquire(blocking=False):
        return False
    try:
        return check_password(data_dir, username, password)
    finally:
        PASSWORD_CHECKS.release()


@router.post("/console/login")
async def login(request: Request, svc: ServicesDep) -> Response:
    form = await _form_with_csrf(request)
    if form is None:
        return _csrf_rejected(request)
    target = str(form.get("next") or "/")
    if form.get("method") == "api-key":
        with svc.session() as db:
            holder = await run_in_threadpool(verify_key_signature, db, sessions.session_key(request), str(form.get("challenge") or ""),
                                             str(form.get("signature") or ""))  # fmt: skip
        if holder is None:
            return redirect("/console/login?" + urlencode({"next": target, "error": "The key's signature was not accepted: the key is not registered (tuneforge api-keys add) or the page expired."}))
        return _sign_in(request, holder.tenancy, holder.user, "api-key", target)
    username = str(form.get("username") or "")[:128]
    tenancy = await run_in_threadpool(_checked_password, svc.config.data_dir, username, str(form.get("password") or "")[:1024])
    if tenancy is False:
        return page(request, "error.html", status=429, title="Busy", message="Too many sign-in attempts at once; try again in a moment.")
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
def models_page(request: Request, caller: ConsoleCaller, svc: ServicesDep, state: str | None = None, base: str | None = None,
                compartment: str | None = None) -> Response:  # fmt: skip
    state = state if state in queries.STATES else None
    base = base if queries.spec_of(base or "") is not None else None
    found = models.list_models(svc, caller, compartment or None, lifecycle_state=state, base_model=base, include_base=False, limit=1000)
    return page(request, "models.html", models=[queries.model_view(m, svc.region) for m in found.items],
                base_models=queries.base_model_views(svc.region, base), states=queries.STATES, catalog=catalog.list_models(),
                compartments=tenancy.compartments(svc, caller), filters={"state": state, "base": base, "compartment": compartment})  # fmt: skip


# ---- create ---------------------------------------------------------------------------------


def _fine_tuning_clusters(svc: Services, caller: Caller) -> list:
    return clusters.list_clusters(svc, caller, None, lifecycle_state="ACTIVE", cluster_type="FINE_TUNING", limit=1000,
                                  sort_by="timeCreated", sort_order="ASC").items  # fmt: skip


def _form_page(request: Request, svc: Services, caller: Caller, form: forms.CreateForm, status: int = 200) -> Response:
    return page(request, "create.html", status=status, form=form, catalog=catalog.list_models(), groups=forms.groups(),
                group_of=forms.group_of, clusters=_fine_tuning_clusters(svc, caller), compartments=tenancy.compartments(svc, caller),
                namespace=objects.namespace_of(caller))  # fmt: skip


def _form_like(svc: Services, caller: Caller, model_id: str | None, base: str | None) -> forms.CreateForm:
    """A blank form, or one pre-filled from an earlier model: OCI's loop is "try again with other
    hyperparameters or more data", so the details page offers exactly that."""
    try:
        model = models.get_model(svc, caller, model_id).value if model_id else None
    except ServiceError:
        model = None
    if model is None or model.type != "CUSTOM":
        default = next((m.id for m in catalog.list_models() if m.id == base), None) or next(m.id for m in catalog.list_models() if not m.deprecated)
        return forms.CreateForm(base_model_id=default, compartment_id=caller.tenancy_id)
    ft = model.fine_tune_details
    config = {k: catalog.format_number(v) for k, v in ft["trainingConfig"].items() if k in API_FIELDS}
    return forms.CreateForm(
        base_model_id=queries.model_view(model, svc.region)["baseModelName"], compartment_id=model.compartment_id,
        display_name=f"{model.display_name}-retry", cluster=ft["dedicatedAiClusterId"], dataset_source="object",
        bucket_name=ft["trainingDataset"]["bucketName"], object_name=ft["trainingDataset"]["objectName"], hyperparams=config,
    )  # fmt: skip


@router.get("/console/models/new")
def create_page(request: Request, caller: ConsoleCaller, svc: ServicesDep, base: str | None = None,
                like: Annotated[str | None, Query(alias="from", max_length=255)] = None) -> Response:  # fmt: skip
    return _form_page(request, svc, caller, _form_like(svc, caller, like, base))


@router.post("/console/models/new")
async def create(request: Request, caller: ConsoleCaller, svc: ServicesDep) -> Response:
    raw = await _form_with_csrf(request)  # read only now that the session is known to be signed in
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
            await forms.store_upload(svc, caller, upload, form.object_name)
        except ServiceError as err:
            form.errors["dataset"] = err.message
        form.dataset_source = "object"
    return await run_in_threadpool(_create, request, svc, caller, form, values)


def _create(request: Request, svc: Services, caller: Caller, form: forms.CreateForm, values: dict[str, Any]) -> Response:
    if form.errors:
        return _form_page(request, svc, caller, form, status=400)
    new_cluster = None
    if form.cluster == forms.NEW_CLUSTER:
        new_cluster = CreateDedicatedAiClusterDetails(type="FINE_TUNING", compartment_id=form.compartment_id or caller.tenancy_id,
                                                      unit_count=1, unit_shape="LARGE_GENERIC", display_name="console-fine-tuning")  # fmt: skip
    try:
        details = CreateModelDetails.model_validate(form.api_body(objects.namespace_of(caller), form.cluster, values))
        created = models.create_model(svc, caller, details, form.retry_token, new_cluster=new_cluster)
    except ServiceError as err:
        form.errors[forms.field_of_error(err.message) or "form"] = err.message
    except ValidationError as err:
        message = validation_message(err)
        form.errors[forms.field_of_error(message) or "form"] = message
    else:
        return redirect(f"/console/models/{created.value.id}")
    return _form_page(request, svc, caller, form, status=400)


@router.get("/console/api/plan")
def plan_api(caller: ConsoleCaller, svc: ServicesDep, request: Request, baseModelId: Annotated[str, Query(max_length=255)],
             n: Annotated[int | None, Query(ge=0, le=10**9)] = None, bucketName: Annotated[str | None, Query(max_length=256)] = None,
             objectName: Annotated[str | None, Query(max_length=1024)] = None) -> Response:  # fmt: skip
    """Split and totalTrainingSteps for the form as it stands, with the server's message per field.
    `n` is the example count the page counted in a chosen file; an object reference is read here."""
    spec = queries.spec_of(baseModelId)
    if spec is None:
        return JSONResponse({"errors": {"baseModelId": "Choose a base model."}})
    values, errors = forms.training_values(spec, dict(request.query_params))
    if n is None and bucketName and objectName:
        n, errors = _count_object(svc, caller, spec, bucketName, objectName, errors)
    body: dict[str, Any] = {"errors": errors}
    if n is not None and not errors:
        plan, error = forms.plan(spec, values, n)
        body.update(plan or {})
        if error:
            body["errors"] = {**errors, **error}
    return JSONResponse(body)


def _count_object(svc: Services, caller: Caller, spec, bucket: str, name: str, errors: dict) -> tuple[int | None, dict]:
    path = objects.object_path(svc, caller, objects.namespace_of(caller), bucket, name)
    if path is None:
        return None, {**errors, "dataset": f"No object {bucket}/{name} in your namespace."}
    try:
        return datasets.check(path, f"{bucket}/{name}", spec, svc.config.weights), errors
    except DatasetError as err:
        return None, {**errors, "dataset": err.describe(f"{bucket}/{name}")}


# ---- details --------------------------------------------------------------------------------


def _live(svc: Services, caller: Caller, model_id: str, since: int = 0, after: int = 0) -> dict[str, Any]:
    """What the details page polls: state, progress, new curve points and new log lines."""
    metrics = models.training_metrics(svc, caller, model_id, since=since, limit=10000)
    return {"state": metrics.lifecycle_state, "progress": metrics.progress, "records": metrics.items, "next": metrics.next,
            "log": models.activity_log(svc, caller, model_id, after), "live": metrics.lifecycle_state in models.LIVE_STATES}  # fmt: skip


def _custom(svc: Services, caller: Caller, model_id: str):
    """The tenancy's custom model, or None (base models have no details page here)."""
    try:
        model = models.get_model(svc, caller, model_id).value
    except ServiceError:
        return None
    return model if model.type == "CUSTOM" else None


@router.get("/console/models/{model_id}")
def details_page(request: Request, model_id: str, caller: ConsoleCaller, svc: ServicesDep) -> Response:
    model = _custom(svc, caller, model_id)
    if model is None:
        return _not_found(request)
    return page(request, "details.html", model=queries.model_view(model, svc.region), live=_live(svc, caller, model_id),
                result=models.run_result(svc, caller, model_id), has_adapter=models.run_dir(svc, caller, model_id) is not None)  # fmt: skip


@router.get("/console/api/models/{model_id}/live")
def live_api(model_id: str, caller: ConsoleCaller, svc: ServicesDep, since: Annotated[int, Query(ge=0, le=2**31)] = 0,
             after: Annotated[int, Query(ge=0, le=2**62)] = 0) -> Response:  # fmt: skip
    if _custom(svc, caller, model_id) is None:
        return JSONResponse({"message": "no such model in your tenancy"}, status_code=404)
    return JSONResponse(_live(svc, caller, model_id, since, after))


@router.post("/console/models/{model_id}/delete")
async def delete(request: Request, model_id: str, caller: ConsoleCaller, svc: ServicesDep) -> Response:
    """Delete; while training runs this cancels the job (the worker stops it)."""
    if await _form_with_csrf(request) is None:
        return _csrf_rejected(request)
    if _custom(svc, caller, model_id) is None:
        return _not_found(request)
    try:
        await run_in_threadpool(models.delete_model, svc, caller, model_id)
    except ServiceError as err:
        return page(request, "error.html", status=err.status, title="Not deleted", message=err.message)
    return redirect(f"/console/models/{model_id}")


@router.get("/console/models/{model_id}/adapter.zip")
def download_adapter(request: Request, model_id: str, caller: ConsoleCaller, svc: ServicesDep) -> Response:
    """The PEFT adapter folder (adapter_config.json + adapter_model.safetensors) as a zip."""
    model = _custom(svc, caller, model_id)
    folder = models.run_dir(svc, caller, model_id) if model is not None else None
    if folder is None:
        return _not_found(request)
    # A temporary file rather than memory: real adapters run to hundreds of megabytes.
    fd, tmp = tempfile.mkstemp(suffix=".zip")
    with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for path in sorted((folder / "adapter").iterdir()):
            if path.is_file():
                archive.write(path, f"adapter/{path.name}")
    name = f"{model.display_name}-adapter.zip".replace('"', "")
    return FileResponse(tmp, media_type="application/zip", filename=name, background=BackgroundTask(os.unlink, tmp))


# ---- compare --------------------------------------------------------------------------------


@router.get("/console/compare")
def compare_page(request: Request, caller: ConsoleCaller, svc: ServicesDep,
                 id: Annotated[list[str] | None, Query(max_length=50)] = None) -> Response:  # fmt: skip
    chosen = list(dict.fromkeys(id or []))[:MAX_COMPARE]
    runs = []
    for model in filter(None, (_custom(svc, caller, i) for i in chosen)):
        records = models.training_metrics(svc, caller, model.id, since=0, limit=10000).items
        runs.append({"model": queries.model_view(model, svc.region), "result": models.run_result(svc, caller, model.id), "records": records})
    found = models.list_models(svc, caller, None, include_base=False, limit=1000)
    choices = [queries.model_view(m, svc.region) for m in found.items]
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
