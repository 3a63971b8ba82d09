"""Console pages for sweeps (TuneForge's own /20231130/sweeps resource): list the tenancy's sweeps,
create one (pre-filled from a model: "sweep from this model"), and read one: its ranked trials (each an
ordinary custom model), their plots, the learning curve's answer, Cancel and "keep the best". Everything
goes through `tuneforge.services.resources.sweeps`, so the console validates and queues exactly as the API does.

A sweep's trials run as many at once as its FINE_TUNING cluster has units: the form's "parallel" is the
choice of cluster (the service has no other knob), shown with its unit count."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from tuneforge import catalog
from tuneforge.errors import DatasetError
from tuneforge.hyperparams import API_FIELDS
from tuneforge.services.context import Caller, Services
from tuneforge.services.errors import ServiceError, validation_message
from tuneforge.services.protocol import DEFAULT_LIMIT
from tuneforge.services.resources import base_models, datasets, models, objects, sweeps
from tuneforge.services.schemas.sweeps import MAX_TRIALS, CreateSweepDetails, KeepBestDetails
from tuneforge.web import cluster_pages, forms, model_pages, queries
from tuneforge.web.deps import ConsoleCaller, ServicesDep, csrf_rejected, form_with_csrf, not_found
from tuneforge.web.render import page, redirect

router = APIRouter(include_in_schema=False)
SWEEPS_PER_PAGE = 50
FINISHED = ("SUCCEEDED", "FAILED", "CANCELED")
CURVE_LIVE = ("ACCEPTED", "IN_PROGRESS")


# ---- list -----------------------------------------------------------------------------------


def _base_name(ref: str, region: str) -> str:
    spec = base_models.find(ref, region)
    return spec.id if spec else ref


@router.get("/console/sweeps")
def sweeps_page(
    request: Request,
    caller: ConsoleCaller,
    svc: ServicesDep,
    state: Annotated[str | None, Query(max_length=16)] = None,
    page_token: Annotated[str | None, Query(alias="page", max_length=32)] = None,
    limit: Annotated[str | None, Query(max_length=8)] = None,
) -> Response:
    state = state if state in sweeps.STATES else None
    size = min(int(limit), DEFAULT_LIMIT) if limit and limit.isdigit() and int(limit) > 0 else SWEEPS_PER_PAGE

    def listed(token: str | None):
        return sweeps.list_sweeps(svc, caller, None, lifecycle_state=state, page=token, limit=size)

    try:
        found = listed(page_token)
    except ServiceError:  # a page token this service never issued: the first page
        page_token, found = None, listed(None)
    filters = {"state": state, "limit": str(size) if limit else None}

    def link(token: str | None) -> str:
        return "/console/sweeps?" + urlencode({k: v for k, v in {**filters, "page": token}.items() if v})

    views = [{**s.model_dump(by_alias=True), "baseModelName": _base_name(s.base_model_id, svc.region)} for s in found.items]
    return page(
        request,
        "sweeps.html",
        sweeps=views,
        states=sweeps.STATES,
        filters=filters,
        live=any(s["lifecycleState"] in sweeps.COORDINATED for s in views),
        next_page=link(found.next_page) if found.next_page else None,
        first_page=link(None) if page_token else None,
    )


# ---- create ---------------------------------------------------------------------------------


def _form_page(request: Request, svc: Services, caller: Caller, form: forms.SweepForm, status: int = 200) -> Response:
    return model_pages.training_form_page(
        request,
        svc,
        caller,
        "sweep_new.html",
        form,
        status,
        form.bases,
        strategies=forms.SWEEP_STRATEGIES,
        pruners=forms.SWEEP_PRUNERS,
        max_trials=MAX_TRIALS,
        range_key=forms.range_key,
    )


def _form_like(svc: Services, caller: Caller, model_id: str | None, base: str | None) -> forms.SweepForm:
    """A blank form, or one that starts from a model: its base model, dataset, cluster and hyperparameters."""
    clusters = cluster_pages.active_clusters(svc, caller, "FINE_TUNING")
    first_cluster = clusters[-1].id if clusters else ""
    try:
        model = models.get_model(svc, caller, model_id).value if model_id else None
    except ServiceError:
        model = None
    bases = base_models.choices(svc, caller)  # the catalog's and the tenancy's ACTIVE imported models
    if model is None or model.type != "CUSTOM":
        default = next((m for m in bases if m.id == base), None) or next(m for m in bases if not m.deprecated)
        return forms.SweepForm(base_model_id=default.id, compartment_id=caller.tenancy_id, cluster=first_cluster, bases=bases)
    ft = model.fine_tune_details
    cluster = ft["dedicatedAiClusterId"] if any(c.id == ft["dedicatedAiClusterId"] for c in clusters) else first_cluster
    return forms.SweepForm(
        base_model_id=queries.model_view(model, svc.region)["baseModelName"],
        compartment_id=model.compartment_id,
        display_name=f"{model.display_name}-sweep",
        cluster=cluster,
        dataset_source="object",
        bucket_name=ft["trainingDataset"]["bucketName"],
        object_name=ft["trainingDataset"]["objectName"],
        hyperparams={k: catalog.format_number(v) for k, v in ft["trainingConfig"].items() if k in API_FIELDS},
        bases=bases,
    )


@router.get("/console/sweeps/new")
def create_page(
    request: Request,
    caller: ConsoleCaller,
    svc: ServicesDep,
    base: Annotated[str | None, Query(max_length=255)] = None,
    like: Annotated[str | None, Query(alias="from", max_length=255)] = None,
) -> Response:
    return _form_page(request, svc, caller, _form_like(svc, caller, like, base))


@router.post("/console/sweeps/new")
async def create(request: Request, caller: ConsoleCaller, svc: ServicesDep) -> Response:
    raw = await form_with_csrf(request)
    if raw is None:
        return csrf_rejected(request)
    form = forms.SweepForm.from_form(raw, await run_in_threadpool(base_models.choices, svc, caller))
    body = form.check()
    upload = raw.get("datasetFile")
    if form.dataset_source == "upload" and isinstance(upload, UploadFile) and upload.filename:
        # Stored first, as the create-model form does, so a form shown again keeps the user's file.
        form.kept_upload = forms.upload_name(form.retry_token, upload.filename)
        try:
            await forms.store_upload(svc, caller, upload, form.kept_upload)
        except ServiceError as err:
            form.kept_upload, form.errors["dataset"] = "", err.message
    if form.dataset_source == "upload":
        if form.kept_upload:
            form.bucket_name, form.object_name = forms.UPLOAD_BUCKET, form.kept_upload
        elif "dataset" not in form.errors:
            form.errors["dataset"] = "Choose a JSONL file to upload (or name an object in Object Storage)."
    return await run_in_threadpool(_create, request, svc, caller, form, body)


def _create(request: Request, svc: Services, caller: Caller, form: forms.SweepForm, body: dict[str, Any] | None) -> Response:
    if form.errors or body is None:
        return _form_page(request, svc, caller, form, status=400)
    body["trainingDataset"] = {
        "datasetType": "OBJECT_STORAGE",
        "namespaceName": objects.namespace_of(caller),
        "bucketName": form.bucket_name,
        "objectName": form.object_name,
    }
    try:
        details = CreateSweepDetails.model_validate({k: v for k, v in body.items() if v is not None})
        created = sweeps.create_sweep(svc, caller, details, form.retry_token)
    except ServiceError as err:
        _show_error(svc, caller, form, err.message)
    except ValidationError as err:
        _show_error(svc, caller, form, validation_message(err))
    else:
        return redirect(f"/console/sweeps/{created.value.id}")
    return _form_page(request, svc, caller, form, status=400)


def _show_error(svc: Services, caller: Caller, form: forms.SweepForm, message: str) -> None:
    name, shown = form.field_of_error(message)
    if name == "dataset" and form.spec is not None:
        # The service's message is one string; the form lists the problems one per line, as create.html does.
        path = objects.object_path(svc, caller, objects.namespace_of(caller), form.bucket_name, form.object_name)
        shown_name = form.kept_file_name if form.dataset_source == "upload" else f"{form.bucket_name}/{form.object_name}"
        try:
            if path is not None:
                # an imported model's own tokenizer counts the tokens
                datasets.check(path, shown_name, form.spec, base_models.training_weights(svc, caller, form.spec.id))
        except DatasetError as err:
            shown, form.dataset_problems = forms.dataset_report(err, shown_name)
    form.errors[name] = shown


# ---- one sweep ------------------------------------------------------------------------------


def _sweep(svc: Services, caller: Caller, sweep_id: str):
    try:
        return sweeps.get_sweep(svc, caller, sweep_id).value
    except ServiceError:
        return None


def _curves(svc: Services, caller: Caller, trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each trial's evaluation records (its model's metrics), for the overlaid validation-loss chart."""
    runs = []
    for trial in sorted(trials, key=lambda t: t["number"]):
        if not trial.get("modelId"):
            continue
        try:
            records = models.training_metrics(svc, caller, trial["modelId"], since=0, limit=10000).items
        except ServiceError:  # a trial model deleted by keepBest keeps its curves; one never stored has none
            records = []
        runs.append({"name": f"trial {trial['number']}", "records": [r for r in records if r.get("kind") == "eval"]})
    return runs


def _detail_page(request: Request, svc: Services, caller: Caller, sweep, kept: dict | None = None, status: int = 200) -> Response:
    view = sweep.model_dump(by_alias=True, exclude_none=True)
    view["baseModelName"] = _base_name(sweep.base_model_id, svc.region)
    curve = view.get("learningCurve") or {}
    live = sweep.lifecycle_state in sweeps.COORDINATED or curve.get("status") in CURVE_LIVE
    searched = list(view.get("searchSpace", {}))
    data = {
        "live": live,
        "searched": searched,
        "space": view.get("searchSpace", {}),
        "trials": [
            {"number": t["number"], "params": t["params"], "validationLoss": t.get("validationLoss"), "state": t["state"]}
            for t in view.get("trials", [])
        ],
        "runs": _curves(svc, caller, view.get("trials", [])),
    }
    return page(
        request,
        "sweep.html",
        status=status,
        sweep=view,
        searched=searched,
        curve=curve,
        live=live,
        finished=sweep.lifecycle_state in FINISHED,
        data=data,
        kept=kept,
        duration=queries.duration_words,
    )


@router.get("/console/sweeps/{sweep_id}")
def sweep_page(request: Request, sweep_id: str, caller: ConsoleCaller, svc: ServicesDep) -> Response:
    sweep = _sweep(svc, caller, sweep_id)
    if sweep is None:
        return not_found(request, "sweep")
    return _detail_page(request, svc, caller, sweep)


def _refused(request: Request, sweep_id: str, err: ServiceError, title: str) -> Response:
    back = (f"/console/sweeps/{sweep_id}", "Back to the sweep")
    return page(request, "error.html", status=err.status, title=title, message=err.message, back=back)


async def _act(
    request: Request, sweep_id: str, caller: Caller, svc: Services, action: Callable[[Services, Caller, str], Any], refused: str
) -> Response:
    """A sweep page's button that takes no fields: check the form's CSRF token and the sweep, run the
    service's `action`, and come back to the sweep (or say why not, under the title `refused`)."""
    if await form_with_csrf(request) is None:
        return csrf_rejected(request)
    if _sweep(svc, caller, sweep_id) is None:
        return not_found(request, "sweep")
    try:
        await run_in_threadpool(action, svc, caller, sweep_id)
    except ServiceError as err:
        return _refused(request, sweep_id, err, refused)
    return redirect(f"/console/sweeps/{sweep_id}")


@router.post("/console/sweeps/{sweep_id}/cancel")
async def cancel(request: Request, sweep_id: str, caller: ConsoleCaller, svc: ServicesDep) -> Response:
    return await _act(request, sweep_id, caller, svc, sweeps.cancel_sweep, "Not canceled")


@router.post("/console/sweeps/{sweep_id}/learning-curve")
async def learning_curve(request: Request, sweep_id: str, caller: ConsoleCaller, svc: ServicesDep) -> Response:
    return await _act(request, sweep_id, caller, svc, sweeps.request_learning_curve, "Not asked")


@router.post("/console/sweeps/{sweep_id}/keep-best")
async def keep_best(request: Request, sweep_id: str, caller: ConsoleCaller, svc: ServicesDep) -> Response:
    raw = await form_with_csrf(request)
    if raw is None:
        return csrf_rejected(request)
    if _sweep(svc, caller, sweep_id) is None:
        return not_found(request, "sweep")
    name = str(raw.get("displayName") or "").strip()
    try:
        details = KeepBestDetails(display_name=name or None, is_delete_others_enabled=raw.get("deleteOthers") == "on")
    except ValidationError as err:
        return page(request, "error.html", status=400, title="Not kept", message=validation_message(err))
    try:
        result = await run_in_threadpool(sweeps.keep_best, svc, caller, sweep_id, details)
    except ServiceError as err:
        return _refused(request, sweep_id, err, "Not kept")
    # Shown on the page itself (not a redirect): the models that could not be deleted come with their reason.
    kept = result.model_dump(by_alias=True)
    return await run_in_threadpool(_detail_page, request, svc, caller, _sweep(svc, caller, sweep_id), kept)
