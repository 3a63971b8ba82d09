"""Console pages for models, served by `tuneforge serve` next to the API: `/` lists models, the rest
lives under /console (create, details with the adapter's download, compare), with the JSON the pages
poll and check with. Pages are server-rendered; console.js adds live progress, the charts, the
create form's checks and the list's refresh. The create form itself is forms.ModelForm.

Every page needs a signed-in console session (`ConsoleCaller`, a dependency: without one a page
redirects to the login page and /console/api answers 401); every POST must carry the session's CSRF
token. Everything is done through the service layer with the session's tenancy as the caller, so the
console validates, queues and deletes exactly as the SDK's calls do.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from pydantic import ValidationError
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from tuneforge import catalog, data
from tuneforge.errors import DatasetError
from tuneforge.hyperparams import API_FIELDS, DPO_TRAINING_CONFIG
from tuneforge.services import tenancy
from tuneforge.services.context import Caller, Services
from tuneforge.services.errors import ServiceError, validation_message
from tuneforge.services.protocol import DEFAULT_LIMIT
from tuneforge.services.resources import base_models, datasets, models, objects
from tuneforge.services.schemas.resources import CreateDedicatedAiClusterDetails, CreateModelDetails
from tuneforge.web import cluster_pages, forms, queries
from tuneforge.web.deps import ConsoleCaller, ServicesDep, csrf_header_ok, csrf_rejected, form_with_csrf, not_found
from tuneforge.web.render import page, redirect

router = APIRouter(include_in_schema=False)  # not part of the OCI API document (schemathesis reads it)
MAX_COMPARE = 6
MODELS_PER_PAGE = 50
# The page's dataset check reads the whole file (and tokenizes it when the tokenizer is on disk):
# as large as the service checks at create time, and at most two at once, the rest told to retry.
MAX_CHECK_BYTES = datasets.MAX_CHECKED_BYTES
DATASET_CHECKS = threading.BoundedSemaphore(2)


# ---- models list ----------------------------------------------------------------------------


@router.get("/")
@router.get("/console")
def models_page(
    request: Request,
    caller: ConsoleCaller,
    svc: ServicesDep,
    state: str | None = None,
    base: str | None = None,
    compartment: str | None = None,
    page_token: Annotated[str | None, Query(alias="page", max_length=32)] = None,
    limit: Annotated[str | None, Query(max_length=8)] = None,
) -> Response:
    state = state if state in queries.STATES else None
    base = base if queries.spec_of(base or "") is not None else None
    size = min(int(limit), DEFAULT_LIMIT) if limit and limit.isdigit() and int(limit) > 0 else None
    filters = {"state": state, "base": base, "compartment": compartment or None, "limit": str(size) if size else None}
    try:
        found = _models_page(svc, caller, filters, page_token)
    except ServiceError:  # a page token this service never issued: the first page
        page_token, found = None, _models_page(svc, caller, filters, None)
    views = [queries.model_view(m, svc.region) for m in found.items]

    def link(token: str | None) -> str:
        return "/?" + urlencode({k: v for k, v in {**filters, "page": token}.items() if v})

    return page(
        request,
        "models.html",
        models=views,
        live=any(m["lifecycleState"] in models.LIVE_STATES for m in views),
        next_page=link(found.next_page) if found.next_page else None,
        first_page=link(None) if page_token else None,
        base_models=queries.base_model_views(svc.region, base),
        states=queries.STATES,
        catalog=catalog.list_models(),
        compartments=tenancy.compartments(svc, caller),
        filters=filters,
    )


def _models_page(svc: Services, caller: Caller, filters: dict, page_token: str | None):
    return models.list_models(
        svc,
        caller,
        filters["compartment"],
        lifecycle_state=filters["state"],
        base_model=filters["base"],
        include_base=False,
        page=page_token,
        limit=int(filters["limit"] or MODELS_PER_PAGE),
    )


def _all_models(svc: Services, caller: Caller) -> list:
    """Every custom model of the tenancy (not DELETED), page by page: the compare page's choices."""
    found, token = [], None
    while True:
        chunk = models.list_models(svc, caller, None, include_base=False, page=token, limit=DEFAULT_LIMIT)
        found += chunk.items
        token = chunk.next_page
        if token is None:
            return found


# ---- create ---------------------------------------------------------------------------------


def training_form_page(
    request: Request,
    svc: Services,
    caller: Caller,
    template: str,
    form: Any,
    status: int = 200,
    bases: list | None = None,
    **extra: Any,
) -> Response:
    """A form that starts a fine-tuning (create.html's model, sweep_new.html's sweep): the base models
    (`bases`, default the catalog's), their hyperparameter groups, the fine-tuning clusters,
    compartments and dataset upload they share."""
    return page(
        request,
        template,
        status=status,
        form=form,
        catalog=bases if bases is not None else catalog.list_models(),
        groups=forms.groups(),
        group_of=forms.group_of,
        clusters=cluster_pages.active_clusters(svc, caller, "FINE_TUNING"),
        compartments=tenancy.compartments(svc, caller),
        namespace=objects.namespace_of(caller),
        **extra,
    )


def _form_page(request: Request, svc: Services, caller: Caller, form: forms.ModelForm, status: int = 200) -> Response:
    return training_form_page(
        request,
        svc,
        caller,
        "create.html",
        form,
        status,
        form.bases,
        max_check_bytes=MAX_CHECK_BYTES,
        methods=forms.METHODS,
        dpo_group=forms.DPO_GROUP,
        dpo_params=catalog.dpo_params(),
    )


def _form_like(svc: Services, caller: Caller, model_id: str | None, base: str | None) -> forms.ModelForm:
    """A blank form, or one pre-filled from an earlier model: OCI's loop is "try again with other
    hyperparameters or more data", so the details page offers exactly that."""
    try:
        model = models.get_model(svc, caller, model_id).value if model_id else None
    except ServiceError:
        model = None
    bases = base_models.choices(svc, caller)  # the catalog's and the tenancy's ACTIVE imported models
    if model is None or model.type != "CUSTOM":
        default = next((m.id for m in bases if m.id == base), None) or next(m.id for m in bases if not m.deprecated)
        return forms.ModelForm(base_model_id=default, compartment_id=caller.tenancy_id, bases=bases)
    ft = model.fine_tune_details
    config = {k: catalog.format_number(v) for k, v in ft["trainingConfig"].items() if k in API_FIELDS}
    dpo = ft["trainingConfig"].get("trainingConfigType") == DPO_TRAINING_CONFIG
    return forms.ModelForm(
        method=data.DPO if dpo else data.SUPERVISED,
        dpo_fields={name: config.pop(name) for name in catalog.dpo_params() if name in config},
        bases=bases,
        base_model_id=queries.model_view(model, svc.region)["baseModelName"],
        compartment_id=model.compartment_id,
        display_name=f"{model.display_name}-retry",
        cluster=ft["dedicatedAiClusterId"],
        dataset_source="object",
        bucket_name=ft["trainingDataset"]["bucketName"],
        object_name=ft["trainingDataset"]["objectName"],
        hyperparams=config,
    )


@router.get("/console/models/new")
def create_page(
    request: Request,
    caller: ConsoleCaller,
    svc: ServicesDep,
    base: str | None = None,
    like: Annotated[str | None, Query(alias="from", max_length=255)] = None,
) -> Response:
    return _form_page(request, svc, caller, _form_like(svc, caller, like, base))


@router.post("/console/models/new")
async def create(request: Request, caller: ConsoleCaller, svc: ServicesDep) -> Response:
    raw = await form_with_csrf(request)  # read only now that the session is known to be signed in
    if raw is None:
        return csrf_rejected(request)
    form = forms.ModelForm.from_form(raw, await run_in_threadpool(base_models.choices, svc, caller))
    values = form.check()
    upload = raw.get("datasetFile")
    has_file = isinstance(upload, UploadFile) and bool(upload.filename)
    if form.dataset_source == "upload" and has_file:
        # Stored before anything else is checked, so a form shown again with an error keeps the
        # user's choice (the stored object) instead of asking for the file a second time.
        form.kept_upload = forms.upload_name(form.retry_token, upload.filename)
        try:
            await forms.store_upload(svc, caller, upload, form.kept_upload)
        except ServiceError as err:
            form.kept_upload, form.errors["dataset"] = "", err.message
    if form.dataset_source == "upload":
        if form.kept_upload:
            form.use_kept_upload()
        elif "dataset" not in form.errors:
            form.errors["dataset"] = "Choose a JSONL file to upload (or name an object in Object Storage)."
    return await run_in_threadpool(_create, request, svc, caller, form, values)


def _create(request: Request, svc: Services, caller: Caller, form: forms.ModelForm, values: dict[str, Any]) -> Response:
    if form.errors:
        return _form_page(request, svc, caller, form, status=400)
    try:
        details = CreateModelDetails.model_validate(form.api_body(objects.namespace_of(caller), form.cluster, values))
        new_cluster = None
        if form.cluster == forms.NEW_CLUSTER:
            # Created by create_model in the model's transaction, only once every check passed: a
            # refused form leaves no cluster behind.
            new_cluster = CreateDedicatedAiClusterDetails(
                type="FINE_TUNING",
                compartment_id=details.compartment_id,
                unit_count=1,
                unit_shape="LARGE_GENERIC",
                display_name="console-fine-tuning",
            )
        created = models.create_model(svc, caller, details, form.retry_token, new_cluster=new_cluster)
    except ServiceError as err:
        _show_error(svc, caller, form, err.message)
    except ValidationError as err:
        _show_error(svc, caller, form, validation_message(err))
    else:
        return redirect(f"/console/models/{created.value.id}")
    return _form_page(request, svc, caller, form, status=400)


def _show_error(svc: Services, caller: Caller, form: forms.ModelForm, message: str) -> None:
    field, shown = form.field_of_error(message)
    if field == "dataset" and form.spec is not None:
        # The service's message is one string; the form lists the problems one per line.
        report = _check_object(svc, caller, form.spec, form.bucket_name, form.object_name, form.method)
        if report is not None:
            shown, form.dataset_problems = report
    form.errors[field] = shown


def _dataset_name(bucket: str, name: str) -> str:
    """How a dataset is named to its user: the file's own name for a console upload."""
    return name.rsplit("/", 1)[-1] if bucket == forms.UPLOAD_BUCKET and name.startswith("console/") else f"{bucket}/{name}"


def _check_object(
    svc: Services, caller: Caller, spec, bucket: str, name: str, method: str = data.SUPERVISED
) -> tuple[str, list[str]] | None:
    """(summary, problems) of a stored dataset object that fails the service's check (for the form's
    training `method`), else None."""
    path = objects.object_path(svc, caller, objects.namespace_of(caller), bucket, name)
    if path is None:
        return None
    try:
        weights = base_models.training_weights(svc, caller, spec.id)  # an imported model's own tokenizer counts
        datasets.check(path, _dataset_name(bucket, name), spec, weights, method)
    except DatasetError as err:
        return forms.dataset_report(err, _dataset_name(bucket, name))
    return None


@router.get("/console/api/plan")
def plan_api(
    caller: ConsoleCaller,
    svc: ServicesDep,
    request: Request,
    baseModelId: Annotated[str, Query(max_length=255)],
    n: Annotated[int | None, Query(ge=0, le=10**9)] = None,
    bucketName: Annotated[str | None, Query(max_length=256)] = None,
    objectName: Annotated[str | None, Query(max_length=1024)] = None,
    method: Annotated[str, Query(max_length=32)] = data.SUPERVISED,
) -> Response:
    """Split and totalTrainingSteps for the form as it stands, with the server's message per field.
    `n` is the example count the dataset check found in a chosen file; an object reference is read here.
    `method` (forms.METHODS) is the form's training method: DPO's fields (beta) are read and checked too."""
    spec = _base_spec(svc, caller, baseModelId)
    if spec is None:
        return JSONResponse({"errors": {"baseModelId": "Choose a base model."}})
    method = forms.method_of(method)
    values, errors = forms.training_values(spec, dict(request.query_params))
    if method == data.DPO:
        dpo, dpo_errors = forms.dpo_values(dict(request.query_params))
        values, errors = {**values, **dpo}, {**errors, **dpo_errors}
    body: dict[str, Any] = {"errors": errors}
    if n is None and bucketName and objectName:
        n, problems = _count_object(svc, caller, spec, bucketName, objectName, method)
        if problems:
            body["errors"] = {**errors, "dataset": problems[0]}
            body["datasetProblems"] = problems[1]
    if n is not None and not body["errors"]:
        plan, error = forms.plan(spec, values, n, method)
        body.update(plan or {})
        if error:
            body["errors"] = {**errors, **error}
    return JSONResponse(body)


def _base_spec(svc: Services, caller: Caller, base_model_id: str):
    """The create form's base model: a catalog model or one of the tenancy's ACTIVE imported models; None otherwise."""
    if queries.spec_of(base_model_id) is not None:
        return queries.spec_of(base_model_id)
    return next((m for m in base_models.choices(svc, caller) if m.id == base_model_id), None)


def _count_object(
    svc: Services, caller: Caller, spec, bucket: str, name: str, method: str = data.SUPERVISED
) -> tuple[int | None, tuple[str, list[str]] | None]:
    path = objects.object_path(svc, caller, objects.namespace_of(caller), bucket, name)
    if path is None:
        return None, (f"No object {bucket}/{name} in your namespace.", [])
    try:
        weights = base_models.training_weights(svc, caller, spec.id)
        return datasets.check(path, _dataset_name(bucket, name), spec, weights, method), None
    except DatasetError as err:
        return None, forms.dataset_report(err, _dataset_name(bucket, name))


@router.post("/console/api/dataset-check")
async def dataset_check_api(
    request: Request,
    caller: ConsoleCaller,
    svc: ServicesDep,
    baseModelId: Annotated[str, Query(max_length=255)],
    name: Annotated[str, Query(max_length=255)] = "dataset.jsonl",
    method: Annotated[str, Query(max_length=32)] = data.SUPERVISED,
) -> Response:
    """The chosen file checked by the service's own validator before anything is submitted: the
    number of examples, or every problem with its line (and column) as a create would report them;
    for the form's training `method` (a preference file for DPO, another file otherwise).
    The body is the file (at most MAX_CHECK_BYTES); it is spooled to a private temporary file that
    is removed before the answer is sent: nothing is kept."""
    if not csrf_header_ok(request):
        return JSONResponse({"message": "the form expired: reload the page"}, status_code=403)
    spec = await run_in_threadpool(_base_spec, svc, caller, baseModelId)
    if spec is None:
        return JSONResponse({"message": "choose a base model"}, status_code=400)
    declared = request.headers.get("content-length", "")
    if not declared.isdigit():
        return JSONResponse({"message": "the file must be sent with its length"}, status_code=411)
    if int(declared) > MAX_CHECK_BYTES:
        limit = f"{MAX_CHECK_BYTES // 2**20} MiB"
        return JSONResponse({"tooLarge": True, "message": f"larger than {limit}: the server checks it when you create the model"})
    if not DATASET_CHECKS.acquire(blocking=False):
        return JSONResponse({"message": "the server is checking other files; try again in a moment"}, status_code=429)
    try:
        spooled = await objects.spool(svc, request.stream(), expected_size=int(declared), content_md5=None)
        try:
            weights = await run_in_threadpool(base_models.training_weights, svc, caller, spec.id)
            n = await run_in_threadpool(datasets.check, spooled.path, name, spec, weights, forms.method_of(method))
        finally:
            spooled.discard()
    except ServiceError as err:
        return JSONResponse({"message": err.message}, status_code=err.status)
    except DatasetError as err:
        summary, problems = forms.dataset_report(err, name)
        return JSONResponse({"summary": summary, "problems": problems})
    finally:
        DATASET_CHECKS.release()
    return JSONResponse({"n": n})


# ---- details --------------------------------------------------------------------------------


def _live(svc: Services, caller: Caller, model_id: str, since: int = 0, after: int = 0) -> dict[str, Any]:
    """What the details page polls: state, progress (and its line in words), new curve points and new log lines."""
    metrics = models.training_metrics(svc, caller, model_id, since=since, limit=10000)
    log = [{**entry, "message": queries.rounded(entry["message"])} for entry in models.activity_log(svc, caller, model_id, after)]
    return {
        "state": metrics.lifecycle_state,
        "progress": metrics.progress,
        "progressText": queries.progress_text(metrics.progress, metrics.lifecycle_state),
        "records": metrics.items,
        "next": metrics.next,
        "log": log,
        "live": metrics.lifecycle_state in models.LIVE_STATES,
    }


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
        return not_found(request)
    return page(
        request,
        "details.html",
        model=queries.model_view(model, svc.region),
        live=_live(svc, caller, model_id),
        result=models.run_result(svc, caller, model_id),
        has_adapter=models.run_dir(svc, caller, model_id) is not None,
    )


@router.get("/console/api/models/{model_id}/live")
def live_api(
    model_id: str,
    caller: ConsoleCaller,
    svc: ServicesDep,
    since: Annotated[int, Query(ge=0, le=2**31)] = 0,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> Response:
    if _custom(svc, caller, model_id) is None:
        return JSONResponse({"message": "no such model in your tenancy"}, status_code=404)
    return JSONResponse(_live(svc, caller, model_id, since, after))


@router.post("/console/models/{model_id}/delete")
async def delete(request: Request, model_id: str, caller: ConsoleCaller, svc: ServicesDep) -> Response:
    """Delete; while training runs this cancels the job (the worker stops it)."""
    if await form_with_csrf(request) is None:
        return csrf_rejected(request)
    if _custom(svc, caller, model_id) is None:
        return not_found(request)
    try:
        await run_in_threadpool(models.delete_model, svc, caller, model_id)
    except ServiceError as err:
        return page(request, "error.html", status=err.status, title="Not deleted", message=err.message)
    return redirect(f"/console/models/{model_id}")


@router.get("/console/models/{model_id}/adapter.zip")
def download_adapter(request: Request, model_id: str, caller: ConsoleCaller, svc: ServicesDep) -> Response:
    """The adapter as `tuneforge export --format peft` writes it (adapter, tokenizer, model.json,
    README; no path of this server), zipped into one folder named after the model."""
    model = _custom(svc, caller, model_id)
    if model is None:
        return not_found(request)
    folder_name = re.sub(r"[^A-Za-z0-9._-]+", "_", model.display_name or "model")[:100] + "-adapter"
    # Temporary files rather than memory: real adapters run to hundreds of megabytes.
    work = Path(tempfile.mkdtemp(prefix="tuneforge-adapter-"))
    try:
        exported = models.export_adapter(svc, caller, model_id, work / folder_name)
        fd, archive = tempfile.mkstemp(suffix=".zip", dir=work)
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zipped:
            for path in sorted(exported.iterdir()):
                zipped.write(path, f"{folder_name}/{path.name}")
    except ServiceError as err:
        shutil.rmtree(work, ignore_errors=True)
        return page(request, "error.html", status=err.status, title="No adapter to download", message=err.message)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    cleanup = BackgroundTask(shutil.rmtree, work, ignore_errors=True)
    return FileResponse(archive, media_type="application/zip", filename=f"{folder_name}.zip", background=cleanup)


# ---- compare --------------------------------------------------------------------------------


@router.get("/console/compare")
def compare_page(
    request: Request, caller: ConsoleCaller, svc: ServicesDep, id: Annotated[list[str] | None, Query(max_length=50)] = None
) -> Response:
    chosen = list(dict.fromkeys(id or []))[:MAX_COMPARE]
    runs = []
    for model in filter(None, (_custom(svc, caller, i) for i in chosen)):
        records = models.training_metrics(svc, caller, model.id, since=0, limit=10000).items
        runs.append(
            {
                "model": queries.model_view(model, svc.region),
                "result": models.run_result(svc, caller, model.id),
                "records": records,
            }
        )
    choices = [queries.model_view(m, svc.region) for m in _all_models(svc, caller)]
    return page(
        request, "compare.html", runs=runs, rows=_config_rows(runs), choices=choices, chosen=[r["model"]["id"] for r in runs]
    )


def _config_rows(runs: list[dict]) -> list[dict[str, Any]]:
    """One row per setting; `differs` marks the rows to highlight."""

    def config(run: dict, name: str):
        return run["model"].get("fineTuneDetails", {}).get("trainingConfig", {}).get(name)

    def dataset(run: dict):
        ds = run["model"].get("fineTuneDetails", {}).get("trainingDataset", {})
        return f"{ds.get('bucketName')}/{ds.get('objectName')}" if ds else None

    def result(run: dict, key: str):
        return (run["result"] or {}).get(key)

    getters = [
        ("Base model", lambda r: r["model"]["baseModelName"]),
        ("Method", lambda r: r["model"]["method"]),
        ("Dataset", dataset),
        ("Training examples", lambda r: result(r, "trainingExamples")),
        ("Validation examples", lambda r: result(r, "validationExamples")),
    ]
    getters += [(name, lambda r, n=name: config(r, n)) for name in API_FIELDS]
    getters += [
        ("totalTrainingSteps", lambda r: result(r, "totalTrainingSteps")),
        ("Steps run", lambda r: result(r, "stepsRun")),
        ("Early stopped", lambda r: result(r, "earlyStopped")),
    ]
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
