"""The create-model form: fields grouped by training-config type, parsed and checked field by
field (every problem at once), the dataset stored through the service's Object Storage layer, and
the API's own InvalidParameter messages mapped back to the field they name.

Messages read as a person would write them: the value as typed ("learningRate: 5 is not allowed;
allowed: a number from 0 to 1.0"), a dataset's problems one per line ("31 valid examples; at least
32 are needed", "line 3: not valid JSON (...)"), never the API's dotted path of the field."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.datastructures import FormData, UploadFile

from tuneforge import catalog
from tuneforge.catalog import BaseModelSpec
from tuneforge.errors import DatasetError, InvalidParameter
from tuneforge.hyperparams import FIELD_TYPES, check_value, make_plan, parse_text, resolve_training_config
from tuneforge.services.context import Caller, Services
from tuneforge.services.resources import objects

UPLOAD_BUCKET = "datasets"
NEW_CLUSTER = "new"


def group_of(spec: BaseModelSpec) -> str:
    """Models whose hyperparameter tables are identical share one fieldset (keyed by config type)."""
    same_type = [m for m in catalog.list_models() if m.training_config_type == spec.training_config_type]
    if all(m.params == spec.params for m in same_type):
        return spec.training_config_type
    return spec.id


def groups() -> dict[str, BaseModelSpec]:
    """Fieldset key -> a model whose ParamSpecs it shows, in catalog order."""
    out: dict[str, BaseModelSpec] = {}
    for spec in catalog.list_models():
        out.setdefault(group_of(spec), spec)
    return out


def parse_field(name: str, text: str, spec) -> tuple[int | float | None, str]:
    """A hyperparameter as typed: (its value, "") or (None, why not, quoting the text as typed)."""
    allowed = spec.allowed()
    try:
        value = parse_text(name, text)
    except InvalidParameter:
        noun = "an integer" if FIELD_TYPES[name] is int else "a number"
        return None, f"{name}: {text} is not {noun}; allowed: {allowed}"
    try:
        return check_value(spec, value), ""
    except InvalidParameter as err:
        # check_value's own reason when it is more than the range (e.g. "must fit in a 32-bit integer")
        reason = err.allowed if err.allowed.startswith("must") else f"allowed: {allowed}"
        return None, f"{name}: {text} is not allowed; {reason}"


def training_values(spec: BaseModelSpec, raw: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Hyperparameters from form text (blank = default): (camelCase values, field -> error)."""
    values, errors = {}, {}
    for name, param in spec.params.items():
        text = (raw.get(name) or "").strip()[:64]
        if not text:
            continue
        value, message = parse_field(name, text, param)
        if message:
            errors[name] = message
        else:
            values[name] = value
    return values, errors


def plan(spec: BaseModelSpec, values: dict[str, Any], n_examples: int) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """Split and totalTrainingSteps for `n_examples`, by the same function the service and `tuneforge
    plan` use: (the figures, or None; the field -> message of a plan that is refused)."""
    try:
        summary = make_plan(n_examples, resolve_training_config(spec, values))
    except InvalidParameter as err:
        return None, {err.field: str(err)}
    return {
        "n": summary.examples,
        "nTrain": summary.training_examples,
        "nVal": summary.validation_examples,
        "stepsPerEpoch": summary.steps_per_epoch,
        "totalTrainingSteps": summary.total_training_steps,
    }, {}


# Which form field an API error is about: the message starts with the dotted API path.
_FIELD_OF_PATH = {
    "fineTuneDetails.trainingDataset": "dataset",
    "fineTuneDetails.dedicatedAiClusterId": "cluster",
    "baseModelId": "baseModelId",
    "compartmentId": "compartmentId",
    "displayName": "displayName",
    "description": "description",
}


def field_of_error(message: str) -> tuple[str, str]:
    """The form field an API message is about and the message as the form shows it:
    "fineTuneDetails.trainingConfig.loraR: 99 is not allowed; ..." -> ("loraR", "loraR: 99 is not allowed; ...");
    ("form", message) when it names no field of the form."""
    match = re.match(r"^([A-Za-z][A-Za-z0-9.]*): ", message)
    if not match:
        return "form", message
    path, rest = match.group(1), message[match.end() :]
    last = path.rsplit(".", 1)[-1]
    if path.startswith("fineTuneDetails.trainingConfig.") and (last in FIELD_TYPES or last == "trainingConfigType"):
        return last, f"{last}: {rest}"
    field = _FIELD_OF_PATH.get(path)
    return (field, rest[:1].upper() + rest[1:]) if field else ("form", message)


def dataset_report(err: DatasetError, name: str) -> tuple[str, list[str]]:
    """A dataset's problems as the form lists them: ("train.jsonl has 2 problems:", ["line 3: ...", ...])."""
    count = f"{err.total} problem{'' if err.total == 1 else 's'}"
    shown = [str(p) for p in err.problems]
    more = err.total - len(shown)
    if more > 0:
        shown.append(f"... and {more} more")
    return f"{name} has {count}:", shown


@dataclass
class CreateForm:
    """What the form shows: values (as typed), errors by field, the chosen options."""

    base_model_id: str
    compartment_id: str
    display_name: str = ""
    description: str = ""
    cluster: str = NEW_CLUSTER
    dataset_source: str = "upload"  # "upload" | "object"
    bucket_name: str = UPLOAD_BUCKET
    object_name: str = ""
    kept_upload: str = ""  # the object an earlier submit of this form stored the chosen file as
    dataset_problems: list[str] = field(default_factory=list)  # shown under errors["dataset"], one per line
    hyperparams: dict[str, str] = field(default_factory=dict)  # as typed, for the chosen model's group
    errors: dict[str, str] = field(default_factory=dict)
    retry_token: str = field(default_factory=lambda: secrets.token_urlsafe(18))

    @property
    def kept_file_name(self) -> str:
        """The file name the user chose, as kept (console/<token>/<name>)."""
        return self.kept_upload.rsplit("/", 1)[-1]

    def error_targets(self) -> dict[str, str]:
        """Field name -> the id of the input the error summary's link for it moves to."""
        targets = {name: name for name in ("displayName", "description", "compartmentId", "baseModelId", "cluster")}
        targets["dataset"] = "datasetFile" if self.dataset_source == "upload" else "objectName"
        if self.spec is not None:
            group = group_of(self.spec)
            targets.update({name: f"{group}.{name}" for name in self.spec.params})
        return targets

    def summary_messages(self) -> dict[str, str]:
        """The errors as the summary at the top lists them: a dataset's with its first problem."""
        messages = dict(self.errors)
        if "dataset" in messages and self.dataset_problems:
            more = " …" if len(self.dataset_problems) > 1 else ""
            messages["dataset"] = f"{messages['dataset']} {self.dataset_problems[0]}{more}"
        return messages

    def use_kept_upload(self) -> None:
        """No new file chosen: the dataset is the object an earlier submit stored."""
        self.bucket_name, self.object_name = UPLOAD_BUCKET, self.kept_upload

    @property
    def spec(self) -> BaseModelSpec | None:
        return next((m for m in catalog.list_models() if m.id == self.base_model_id), None)

    def value(self, group: str, spec: BaseModelSpec, name: str) -> str:
        """What a hyperparameter input shows: the user's text for the chosen group, else the default."""
        if self.spec is not None and group_of(self.spec) == group and name in self.hyperparams:
            return self.hyperparams[name]
        return catalog.format_number(spec.params[name].default)

    @classmethod
    def from_form(cls, form: FormData) -> CreateForm:
        text = lambda k, d="": str(form.get(k) or d).strip()
        made = cls(
            base_model_id=text("baseModelId"),
            compartment_id=text("compartmentId"),
            display_name=text("displayName"),
            description=text("description"),
            cluster=text("cluster", NEW_CLUSTER),
            dataset_source=text("datasetSource", "upload"),
            bucket_name=text("bucketName", UPLOAD_BUCKET),
            object_name=text("objectName"),
            retry_token=text("retryToken") or secrets.token_urlsafe(18),
            kept_upload=text("keptUpload"),
        )
        if made.spec is not None:
            prefix = group_of(made.spec) + "."
            made.hyperparams = {
                k.removeprefix(prefix): str(v) for k, v in form.multi_items() if k.startswith(prefix) and isinstance(v, str)
            }
        return made

    def check(self) -> dict[str, Any]:
        """Page-independent checks (the browser's are a convenience); returns the parsed hyperparameters."""
        if self.spec is None:
            self.errors["baseModelId"] = "Choose a base model."
            return {}
        if not self.compartment_id:
            self.errors["compartmentId"] = "Name a compartment (any label; the tenancy OCID is the root compartment)."
        if self.dataset_source == "object" and not self.object_name:
            self.errors["dataset"] = "Name the dataset object (or upload a file)."
        values, errors = training_values(self.spec, self.hyperparams)
        self.errors.update(errors)
        return values

    def api_body(self, namespace: str, cluster_id: str, values: dict[str, Any]) -> dict[str, Any]:
        """A CreateModelDetails body, exactly as the SDK would send it."""
        body: dict[str, Any] = {
            "compartmentId": self.compartment_id,
            "baseModelId": self.base_model_id,
            "fineTuneDetails": {
                "trainingDataset": {
                    "datasetType": "OBJECT_STORAGE",
                    "namespaceName": namespace,
                    "bucketName": self.bucket_name,
                    "objectName": self.object_name,
                },
                "dedicatedAiClusterId": cluster_id,
                "trainingConfig": {"trainingConfigType": self.spec.training_config_type, **values},
            },
        }
        if self.display_name:
            body["displayName"] = self.display_name
        if self.description:
            body["description"] = self.description
        return body


async def store_upload(svc: Services, caller: Caller, upload: UploadFile, object_name: str) -> None:
    """Put the uploaded file into the tenancy's namespace through put_object itself (same checks,
    same atomic publish), so the job reads it like an SDK upload."""

    async def chunks():
        while chunk := await upload.read(1 << 20):
            yield chunk

    await objects.put_object(
        svc,
        caller,
        objects.namespace_of(caller),
        UPLOAD_BUCKET,
        object_name,
        chunks(),
        content_length=str(upload.size),
        content_type="application/jsonl",
    )


def upload_name(retry_token: str, filename: str | None) -> str:
    """console/<form token>/<file name>: a double-submitted form stores the same object name."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(filename or "dataset.jsonl").name)[:200] or "dataset.jsonl"
    return f"console/{re.sub(r'[^A-Za-z0-9_-]', '', retry_token)[:32]}/{base}"
