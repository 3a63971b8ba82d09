"""Console pages for sweeps (TuneForge's own /20231130/sweeps resource): list the tenancy's sweeps,
create one (pre-filled from a model: "sweep from this model"), and read one: its ranked trials (each an
ordinary custom model), their plots, the learning curve's answer, Cancel and "keep the best". Everything
goes through `tuneforge.services.resources.sweeps`, so the console validates and queues exactly as the API does.

A sweep's trials run as many at once as its FINE_TUNING cluster has units: the form's "parallel" is the
choice of cluster (the service has no other knob), shown with its unit count."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from tuneforge import catalog
from tuneforge.catalog import BaseModelSpec
from tuneforge.errors import DatasetError, TuneForgeError
from tuneforge.hyperparams import API_FIELDS
from tuneforge.services import tenancy
from tuneforge.services.context import Caller, Services
from tuneforge.services.errors import ServiceError, validation_message
from tuneforge.services.protocol import DEFAULT_LIMIT
from tuneforge.services.resources import base_models, datasets, models, objects, sweeps
from tuneforge.services.schemas.sweeps import MAX_TRIALS, CreateSweepDetails, KeepBestDetails
from tuneforge.sweeps.space import parse_param, space_to_json
from tuneforge.web import cluster_pages, forms, queries
from tuneforge.web.deps import ConsoleCaller, ServicesDep, csrf_rejected, form_with_csrf, not_found
from tuneforge.web.render import page, redirect

router = APIRouter(include_in_schema=False)
SWEEPS_PER_PAGE = 50
STRATEGIES = {"TPE": "TPE (learns from earlier trials)", "RANDOM": "Random", "GRID": "Grid (every combination, in order)"}
PRUNERS = {"ASHA": "ASHA: stop trials that fall behind", "NONE": "None: run every trial to its end"}
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


def range_key(name: str) -> str:
    """The form's (and the errors') key of a hyperparameter's search range: "learningRateRange"."""
    return f"{name}Range"


@dataclass
class SweepForm:
    """What the new-sweep form shows: values as typed, errors by field (create.html's conventions)."""

    base_model_id: str
    compartment_id: str
    display_name: str = ""
    description: str = ""
    cluster: str = ""
    dataset_source: str = "upload"  # "upload" | "object"
    bucket_name: str = forms.UPLOAD_BUCKET
    object_name: str = ""
    kept_upload: str = ""
    dataset_problems: list[str] = field(default_factory=list)
    trial_count: str = "4"
    search_strategy: str = "TPE"
    pruner: str = "ASHA"
    learning_curve: bool = False
    hyperparams: dict[str, str] = field(default_factory=dict)  # fixed values, as typed
    ranges: dict[str, str] = field(default_factory=dict)  # search ranges, as typed ("1e-5:1e-3:log", "8,16")
    errors: dict[str, str] = field(default_factory=dict)
    retry_token: str = field(default_factory=lambda: secrets.token_urlsafe(18))

    @property
    def spec(self) -> BaseModelSpec | None:
        return queries.spec_of(self.base_model_id)

    @property
    def kept_file_name(self) -> str:
        return self.kept_upload.rsplit("/", 1)[-1]

    def value(self, group: str, spec: BaseModelSpec, name: str) -> str:
        if self.spec is not None and forms.group_of(self.spec) == group and name in self.hyperparams:
            return self.hyperparams[name]
        return catalog.format_number(spec.params[name].default)

    def range_value(self, group: str, name: str) -> str:
        chosen = self.spec is not None and forms.group_of(self.spec) == group
        return self.ranges.get(name, "") if chosen else ""

    def error_targets(self) -> dict[str, str]:
        names = (
            "displayName",
            "description",
            "compartmentId",
            "baseModelId",
            "cluster",
            "trialCount",
            "searchStrategy",
            "pruner",
        )
        targets = {name: name for name in names}
        targets["isLearningCurveEnabled"] = "isLearningCurveEnabled"
        targets["dataset"] = "datasetFile" if self.dataset_source == "upload" else "objectName"
        if self.spec is not None:
            group = forms.group_of(self.spec)
            for name in self.spec.params:
                targets[name] = f"{group}.{name}"
                targets[range_key(name)] = f"{group}.{range_key(name)}"
        return targets

    def summary_messages(self) -> dict[str, str]:
        messages = dict(self.errors)
        if "dataset" in messages and self.dataset_problems:
            more = " …" if len(self.dataset_problems) > 1 else ""
            messages["dataset"] = f"{messages['dataset']} {self.dataset_problems[0]}{more}"
        return messages

    @classmethod
    def from_form(cls, form: FormData) -> SweepForm:
        def text(key: str, default: str = "") -> str:
            return str(form.get(key) or default).strip()[:4000]

        made = cls(
            base_model_id=text("baseModelId"),
            compartment_id=text("compartmentId"),
            display_name=text("displayName"),
            description=text("description"),
            cluster=text("cluster"),
            dataset_source=text("datasetSource", "upload"),
            bucket_name=text("bucketName", forms.UPLOAD_BUCKET),
            object_name=text("objectName"),
            kept_upload=text("keptUpload"),
            trial_count=text("trialCount"),
            search_strategy=text("searchStrategy", "TPE"),
            pruner=text("pruner", "ASHA"),
            learning_curve=text("isLearningCurveEnabled") in ("on", "true", "1"),
            retry_token=text("retryToken") or secrets.token_urlsafe(18),
        )
        if made.spec is not None:
            prefix = forms.group_of(made.spec) + "."
            for key, value in form.multi_items():
                if not (key.startswith(prefix) and isinstance(value, str)):
                    continue
                name = key.removeprefix(prefix)
                if name.endswith("Range") and name.removesuffix("Range") in made.spec.params:
                    made.ranges[name.removesuffix("Range")] = value.strip()[:200]
                elif name in made.spec.params:
                    made.hyperparams[name] = value
        return made

    def check(self) -> dict[str, Any] | None:
        """Every field the page can check (all problems at once): the CreateSweepDetails body's fields
        that depend on the form alone, or None when something is wrong (see `errors`)."""
        spec = self.spec
        if spec is None:
            self.errors["baseModelId"] = "Choose a base model."
            return None
        if not self.compartment_id:
            self.errors["compartmentId"] = "Name a compartment (any label; the tenancy OCID is the root compartment)."
        if not self.cluster:
            self.errors["cluster"] = "Choose a fine-tuning cluster (create one under Clusters first)."
        if self.dataset_source == "object" and not self.object_name:
            self.errors["dataset"] = "Name the dataset object (or upload a file)."
        if not re.fullmatch(r"\d{1,4}", self.trial_count) or int(self.trial_count) > MAX_TRIALS:
            shown = self.trial_count[:20] or "an empty count"
            self.errors["trialCount"] = f"trials: {shown} is not allowed; allowed: an integer from 0 to {MAX_TRIALS}"
        elif int(self.trial_count) == 0 and not self.learning_curve:
            self.errors["trialCount"] = "trials: 0 runs nothing; give 1 or more, or tick the learning curve"
        if self.search_strategy not in STRATEGIES:
            self.errors["searchStrategy"] = (
                f"search method: {self.search_strategy[:20]} is not allowed; allowed: TPE, RANDOM, GRID"
            )
        if self.pruner not in PRUNERS:
            self.errors["pruner"] = f"pruner: {self.pruner[:20]} is not allowed; allowed: ASHA, NONE"
        values, errors = forms.training_values(spec, self.hyperparams)
        self.errors.update(errors)
        space = self._space(spec)
        if self.errors:
            return None
        # A value equal to the catalog's default fixes nothing: the field stays in the default search space.
        fixed = {k: v for k, v in values.items() if v != spec.params[k].default and k not in space}
        return {
            "compartmentId": self.compartment_id,
            "baseModelId": self.base_model_id,
            "dedicatedAiClusterId": self.cluster,
            "trainingConfig": {"trainingConfigType": spec.training_config_type, **fixed},
            "searchSpace": space or None,
            "trialCount": int(self.trial_count),
            "searchStrategy": self.search_strategy,
            "pruner": self.pruner,
            "isLearningCurveEnabled": self.learning_curve,
            "displayName": self.display_name or None,
            "description": self.description or None,
        }

    def _space(self, spec: BaseModelSpec) -> dict[str, Any]:
        """The typed ranges as the API's searchSpace, checked by the CLI's own --param parser (its words)."""
        texts = [f"{name}={text}" for name, text in self.ranges.items() if text]
        space: dict[str, Any] = {}
        for text in texts:
            name = text.split("=", 1)[0]
            try:
                space.update(space_to_json({name: parse_param(text, spec)}))
            except TuneForgeError as err:
                # "--param 'loraR=3:1': LOW must be below HIGH ..." reads here as "loraR range 3:1: ..."
                message = re.sub(r"^--param '[^']*': ", "", str(err))
                message = re.sub(r"; expected NAME=.*$", "; write LOW:HIGH, LOW:HIGH:log or A,B,C", message)
                head = f"{name} range {self.ranges[name]}: "
                self.errors[range_key(name)] = message if message.startswith(f"{name}: ") else head + message
        return space


# Which form field a service message is about: the message starts with the API's field path.
_FIELD_OF_PATH = {
    "trainingDataset": "dataset",
    "dedicatedAiClusterId": "cluster",
    "baseModelId": "baseModelId",
    "compartmentId": "compartmentId",
    "displayName": "displayName",
    "description": "description",
    "trialCount": "trialCount",
    "searchStrategy": "searchStrategy",
    "pruner": "pruner",
    "isLearningCurveEnabled": "isLearningCurveEnabled",
    "trainingConfig.trainingConfigType": "baseModelId",
}


def field_of_error(message: str, spec: BaseModelSpec | None) -> tuple[str, str]:
    """("learningRateRange", "learningRate: ...") for "searchSpace.learningRate: ...", ("loraR", ...) for
    "trainingConfig.loraR: ...", the mapped field for the others; ("form", message) otherwise."""
    match = re.match(r"^([A-Za-z][A-Za-z0-9.]*): ", message)
    if not match:
        return "form", message
    path, rest = match.group(1), message[match.end() :]
    head, _, name = path.partition(".")
    params = spec.params if spec is not None else {}
    if head == "searchSpace" and name in params:
        return range_key(name), f"{name} range: {rest}"
    if head == "trainingConfig" and name in params:
        return name, f"{name}: {rest}"
    found = _FIELD_OF_PATH.get(path)
    return (found, rest[:1].upper() + rest[1:]) if found else ("form", message)


def _form_page(request: Request, svc: Services, caller: Caller, form: SweepForm, status: int = 200) -> Response:
    return page(
        request,
        "sweep_new.html",
        status=status,
        form=form,
        catalog=catalog.list_models(),
        groups=forms.groups(),
        group_of=forms.group_of,
        clusters=cluster_pages.active_clusters(svc, caller, "FINE_TUNING"),
        compartments=tenancy.compartments(svc, caller),
        namespace=objects.namespace_of(caller),
        strategies=STRATEGIES,
        pruners=PRUNERS,
        max_trials=MAX_TRIALS,
        range_key=range_key,
    )


def _form_like(svc: Services, caller: Caller, model_id: str | None, base: str | None) -> SweepForm:
    """A blank form, or one that starts from a model: its base model, dataset, cluster and hyperparameters."""
    clusters = cluster_pages.active_clusters(svc, caller, "FINE_TUNING")
    first_cluster = clusters[-1].id if clusters else ""
    try:
        model = models.get_model(svc, caller, model_id).value if model_id else None
    except ServiceError:
        model = None
    if model is None or model.type != "CUSTOM":
        default = queries.spec_of(base or "") or next(m for m in catalog.list_models() if not m.deprecated)
        return SweepForm(base_model_id=default.id, compartment_id=caller.tenancy_id, cluster=first_cluster)
    ft = model.fine_tune_details
    cluster = ft["dedicatedAiClusterId"] if any(c.id == ft["dedicatedAiClusterId"] for c in clusters) else first_cluster
    return SweepForm(
        base_model_id=queries.model_view(model, svc.region)["baseModelName"],
        compartment_id=model.compartment_id,
        display_name=f"{model.display_name}-sweep",
        cluster=cluster,
        dataset_source="object",
        bucket_name=ft["trainingDataset"]["bucketName"],
        object_name=ft["trainingDataset"]["objectName"],
        hyperparams={k: catalog.format_number(v) for k, v in ft["trainingConfig"].items() if k in API_FIELDS},
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
    form = SweepForm.from_form(raw)
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


def _create(request: Request, svc: Services, caller: Caller, form: SweepForm, body: dict[str, Any] | None) -> Response:
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


def _show_error(svc: Services, caller: Caller, form: SweepForm, message: str) -> None:
    name, shown = field_of_error(message, form.spec)
    if name == "dataset" and form.spec is not None:
        # The service's message is one string; the form lists the problems one per line, as create.html does.
        path = objects.object_path(svc, caller, objects.namespace_of(caller), form.bucket_name, form.object_name)
        shown_name = form.kept_file_name if form.dataset_source == "upload" else f"{form.bucket_name}/{form.object_name}"
        try:
            if path is not None:
                datasets.check(path, shown_name, form.spec, svc.config.weights)
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


@router.post("/console/sweeps/{sweep_id}/cancel")
async def cancel(request: Request, sweep_id: str, caller: ConsoleCaller, svc: ServicesDep) -> Response:
    if await form_with_csrf(request) is None:
        return csrf_rejected(request)
    if _sweep(svc, caller, sweep_id) is None:
        return not_found(request, "sweep")
    try:
        await run_in_threadpool(sweeps.cancel_sweep, svc, caller, sweep_id)
    except ServiceError as err:
        return _refused(request, sweep_id, err, "Not canceled")
    return redirect(f"/console/sweeps/{sweep_id}")


@router.post("/console/sweeps/{sweep_id}/learning-curve")
async def learning_curve(request: Request, sweep_id: str, caller: ConsoleCaller, svc: ServicesDep) -> Response:
    if await form_with_csrf(request) is None:
        return csrf_rejected(request)
    if _sweep(svc, caller, sweep_id) is None:
        return not_found(request, "sweep")
    try:
        await run_in_threadpool(sweeps.request_learning_curve, svc, caller, sweep_id)
    except ServiceError as err:
        return _refused(request, sweep_id, err, "Not asked")
    return redirect(f"/console/sweeps/{sweep_id}")


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
