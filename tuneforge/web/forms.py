"""Every console form: what a person typed, parsed and checked field by field (every problem at
once), turned into the API's request body, and the API's own messages mapped back to the field they
name. ModelForm is the create-model form, ClusterForm the new-cluster form, SweepForm the new-sweep
form; the pages that show them (model_pages.py, cluster_pages.py, sweep_pages.py) hold no parsing.
A model's and a sweep's form share the hyperparameter fields (grouped by training-config type) and
the dataset upload, stored through the service's Object Storage layer.

Messages read as a person would write them: the value as typed ("learningRate: 5 is not allowed;
allowed: a number from 0 to 1.0"), a dataset's problems one per line ("31 valid examples; at least
32 are needed", "line 3: not valid JSON (...)"), never the API's dotted path of the field."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile

from tuneforge import catalog, data
from tuneforge.catalog import BaseModelSpec, ParamSpec
from tuneforge.errors import DatasetError, InvalidParameter, TuneForgeError
from tuneforge.hyperparams import (
    DPO_TRAINING_CONFIG,
    FIELD_TYPES,
    check_value,
    make_plan,
    parse_text,
    resolve_training_config,
)
from tuneforge.services.context import Caller, Services
from tuneforge.services.errors import validation_message
from tuneforge.services.resources import objects
from tuneforge.services.schemas.resources import CreateDedicatedAiClusterDetails
from tuneforge.services.schemas.sweeps import MAX_TRIALS
from tuneforge.sweeps.space import parse_param, space_to_json

# ---- shared by the model and sweep forms ---------------------------------------------------

UPLOAD_BUCKET = "datasets"
NEW_CLUSTER = "new"
# The create form's training methods (data.SUPERVISED, data.DPO) as it offers them; DPO's own fields
# (beta) sit in a fieldset of their own, keyed DPO_GROUP, next to the base model's table.
METHODS = {data.SUPERVISED: "Supervised fine-tuning", data.DPO: "Preference tuning (DPO)"}
DPO_GROUP = "dpo"


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
    return _parsed(spec.params, raw)


def dpo_values(raw: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """DPO's own fields (catalog.dpo_params: beta) from form text, as training_values reads the model's."""
    return _parsed(catalog.dpo_params(), raw)


def _parsed(params: dict[str, ParamSpec], raw: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The fields of `params` typed in `raw` (blank = left out), each parsed by parse_field: (values, field -> error)."""
    values, errors = {}, {}
    for name, param in params.items():
        text = (raw.get(name) or "").strip()[:64]
        if not text:
            continue
        value, message = parse_field(name, text, param)
        if message:
            errors[name] = message
        else:
            values[name] = value
    return values, errors


def method_of(text: str) -> str:
    """A submitted method (data.SUPERVISED or data.DPO); anything else is the default, supervised."""
    return text if text in METHODS else data.SUPERVISED


def plan(
    spec: BaseModelSpec, values: dict[str, Any], n_examples: int, method: str = data.SUPERVISED
) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """Split and totalTrainingSteps for `n_examples`, by the same function the service and `tuneforge
    plan` use: (the figures, or None; the field -> message of a plan that is refused)."""
    config = {"trainingConfigType": DPO_TRAINING_CONFIG, **values} if method == data.DPO else values
    try:
        summary = make_plan(n_examples, resolve_training_config(spec, config))
    except InvalidParameter as err:
        return None, {err.field: str(err)}
    return {
        "n": summary.examples,
        "nTrain": summary.training_examples,
        "nVal": summary.validation_examples,
        "stepsPerEpoch": summary.steps_per_epoch,
        "totalTrainingSteps": summary.total_training_steps,
    }, {}


def dataset_report(err: DatasetError, name: str) -> tuple[str, list[str]]:
    """A dataset's problems as the form lists them: ("train.jsonl has 2 problems:", ["line 3: ...", ...])."""
    count = f"{err.total} problem{'' if err.total == 1 else 's'}"
    shown = [str(p) for p in err.problems]
    more = err.total - len(shown)
    if more > 0:
        shown.append(f"... and {more} more")
    return f"{name} has {count}:", shown


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


# ---- a model ------------------------------------------------------------------------------


# Which form field an API error is about: the message starts with the dotted API path.
_MODEL_FIELD_OF_PATH = {
    "fineTuneDetails.trainingDataset": "dataset",
    "fineTuneDetails.dedicatedAiClusterId": "cluster",
    "baseModelId": "baseModelId",
    "compartmentId": "compartmentId",
    "displayName": "displayName",
    "description": "description",
}


class DatasetSummary:
    """The summary at the top of a form with a dataset upload (ModelForm, SweepForm)."""

    errors: dict[str, str]
    dataset_problems: list[str]

    def summary_messages(self) -> dict[str, str]:
        """The errors as the summary at the top lists them: a dataset's with its first problem."""
        messages = dict(self.errors)
        if "dataset" in messages and self.dataset_problems:
            more = " …" if len(self.dataset_problems) > 1 else ""
            messages["dataset"] = f"{messages['dataset']} {self.dataset_problems[0]}{more}"
        return messages


@dataclass
class ModelForm(DatasetSummary):
    """The create-model form: values (as typed), errors by field, the chosen options."""

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
    # The base models offered: the catalog's, then the tenancy's ACTIVE imported models (base_models.choices).
    bases: list[BaseModelSpec] = field(default_factory=catalog.list_models)
    method: str = data.SUPERVISED  # a key of METHODS
    dpo_fields: dict[str, str] = field(default_factory=dict)  # DPO's own fields (beta) as typed

    @property
    def is_dpo(self) -> bool:
        return self.method == data.DPO

    def dpo_value(self, name: str) -> str:
        """What a DPO field's input shows: the user's text, else the catalog's default."""
        if name in self.dpo_fields:
            return self.dpo_fields[name]
        return catalog.format_number(catalog.dpo_params()[name].default)

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
        targets.update({name: f"{DPO_GROUP}.{name}" for name in catalog.dpo_params()})
        return targets

    def use_kept_upload(self) -> None:
        """No new file chosen: the dataset is the object an earlier submit stored."""
        self.bucket_name, self.object_name = UPLOAD_BUCKET, self.kept_upload

    @property
    def spec(self) -> BaseModelSpec | None:
        return next((m for m in self.bases if m.id == self.base_model_id), None)

    def value(self, group: str, spec: BaseModelSpec, name: str) -> str:
        """What a hyperparameter input shows: the user's text for the chosen group, else the default."""
        if self.spec is not None and group_of(self.spec) == group and name in self.hyperparams:
            return self.hyperparams[name]
        return catalog.format_number(spec.params[name].default)

    @classmethod
    def from_form(cls, form: FormData, bases: list[BaseModelSpec] | None = None) -> ModelForm:
        text = lambda k, d="": str(form.get(k) or d).strip()
        made = cls(
            bases=bases if bases is not None else catalog.list_models(),
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
            method=method_of(text("method")),
        )
        if made.spec is not None:
            prefix = group_of(made.spec) + "."
            made.hyperparams = {
                k.removeprefix(prefix): str(v) for k, v in form.multi_items() if k.startswith(prefix) and isinstance(v, str)
            }
        made.dpo_fields = {name: text(f"{DPO_GROUP}.{name}") for name in catalog.dpo_params() if f"{DPO_GROUP}.{name}" in form}
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
        if self.is_dpo:
            dpo, errors = dpo_values(self.dpo_fields)
            values.update(dpo)
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
                "trainingConfig": {
                    "trainingConfigType": DPO_TRAINING_CONFIG if self.is_dpo else self.spec.training_config_type,
                    **values,
                },
            },
        }
        if self.display_name:
            body["displayName"] = self.display_name
        if self.description:
            body["description"] = self.description
        return body

    def field_of_error(self, message: str) -> tuple[str, str]:
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
        field = _MODEL_FIELD_OF_PATH.get(path)
        return (field, rest[:1].upper() + rest[1:]) if field else ("form", message)


# ---- a cluster ----------------------------------------------------------------------------

CLUSTER_TYPES = {"FINE_TUNING": "Fine-tuning", "HOSTING": "Hosting"}
# OCI's unit shapes (oci-api.md, DedicatedAiCluster.unitShape), offered as suggestions; any name of
# capital letters, digits and _ is accepted, as the API accepts it.
CLUSTER_SHAPES = (
    "LARGE_GENERIC",
    "LARGE_GENERIC_2",
    "LARGE_GENERIC_4",
    "SMALL_GENERIC_V2",
    "MEDIUM_GENERIC_V1",
    "SMALL_COHERE_V2",
    "SMALL_COHERE",
    "LARGE_COHERE_V2",
    "LARGE_COHERE_V2_2",
)
MAX_CLUSTER_UNITS = 1000


@dataclass
class ClusterForm:
    """The new-cluster form: values as typed, errors by field."""

    type: str = "FINE_TUNING"
    compartment_id: str = ""
    display_name: str = ""
    description: str = ""
    unit_count: str = "1"
    unit_shape: str = "LARGE_GENERIC"
    retry_token: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_form(cls, form) -> ClusterForm:
        def text(key: str, default: str = "") -> str:
            return str(form.get(key) or default).strip()[:4000]

        return cls(
            type=text("type", "FINE_TUNING"),
            compartment_id=text("compartmentId"),
            display_name=text("displayName"),
            description=text("description"),
            unit_count=text("unitCount", "1"),
            unit_shape=text("unitShape"),
            retry_token=text("retryToken") or secrets.token_urlsafe(18),
        )

    def error_targets(self) -> dict[str, str]:
        return {name: name for name in ("type", "compartmentId", "displayName", "description", "unitCount", "unitShape")}

    def details(self) -> CreateDedicatedAiClusterDetails | None:
        """The API request, or None with `errors` naming each field that is wrong, in words."""
        if self.type not in CLUSTER_TYPES:
            self.errors["type"] = "Choose fine-tuning or hosting."
        if not self.compartment_id:
            self.errors["compartmentId"] = "Name a compartment (any label; the tenancy OCID is the root compartment)."
        if len(self.display_name) > 255:
            self.errors["displayName"] = "displayName: at most 255 characters."
        if not re.fullmatch(r"\d{1,4}", self.unit_count) or not 1 <= int(self.unit_count) <= MAX_CLUSTER_UNITS:
            allowed = f"allowed: an integer from 1 to {MAX_CLUSTER_UNITS}"
            self.errors["unitCount"] = f"unitCount: {self.unit_count[:20]} is not allowed; {allowed}"
        if not re.fullmatch(r"[A-Z0-9_]{1,64}", self.unit_shape):
            shown = self.unit_shape[:64] or "an empty shape"
            allowed = "allowed: capital letters, digits and _ (e.g. LARGE_GENERIC)"
            self.errors["unitShape"] = f"unitShape: {shown} is not allowed; {allowed}"
        if self.errors:
            return None
        body = {
            "type": self.type,
            "compartmentId": self.compartment_id,
            "unitCount": int(self.unit_count),
            "unitShape": self.unit_shape,
            "displayName": self.display_name or None,
            "description": self.description or None,
        }
        try:
            return CreateDedicatedAiClusterDetails.model_validate(body)
        except ValidationError as err:
            self.errors["form"] = validation_message(err)
            return None


# ---- a sweep ------------------------------------------------------------------------------

SWEEP_STRATEGIES = {"TPE": "TPE (learns from earlier trials)", "RANDOM": "Random", "GRID": "Grid (every combination, in order)"}
SWEEP_PRUNERS = {"ASHA": "ASHA: stop trials that fall behind", "NONE": "None: run every trial to its end"}


def range_key(name: str) -> str:
    """The form's (and the errors') key of a hyperparameter's search range: "learningRateRange"."""
    return f"{name}Range"


# Which form field a service message is about: the message starts with the API's field path.
_SWEEP_FIELD_OF_PATH = {
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


@dataclass
class SweepForm(DatasetSummary):
    """What the new-sweep form shows: values as typed, errors by field (create.html's conventions)."""

    base_model_id: str
    compartment_id: str
    display_name: str = ""
    description: str = ""
    cluster: str = ""
    dataset_source: str = "upload"  # "upload" | "object"
    bucket_name: str = UPLOAD_BUCKET
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
    # The base models offered: the catalog's, then the tenancy's ACTIVE imported models (base_models.choices).
    bases: list[BaseModelSpec] = field(default_factory=catalog.list_models)

    @property
    def spec(self) -> BaseModelSpec | None:
        return next((m for m in self.bases if m.id == self.base_model_id), None)

    @property
    def kept_file_name(self) -> str:
        return self.kept_upload.rsplit("/", 1)[-1]

    def value(self, group: str, spec: BaseModelSpec, name: str) -> str:
        if self.spec is not None and group_of(self.spec) == group and name in self.hyperparams:
            return self.hyperparams[name]
        return catalog.format_number(spec.params[name].default)

    def range_value(self, group: str, name: str) -> str:
        chosen = self.spec is not None and group_of(self.spec) == group
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
            group = group_of(self.spec)
            for name in self.spec.params:
                targets[name] = f"{group}.{name}"
                targets[range_key(name)] = f"{group}.{range_key(name)}"
        return targets

    @classmethod
    def from_form(cls, form: FormData, bases: list[BaseModelSpec] | None = None) -> SweepForm:
        def text(key: str, default: str = "") -> str:
            return str(form.get(key) or default).strip()[:4000]

        made = cls(
            bases=bases if bases is not None else catalog.list_models(),
            base_model_id=text("baseModelId"),
            compartment_id=text("compartmentId"),
            display_name=text("displayName"),
            description=text("description"),
            cluster=text("cluster"),
            dataset_source=text("datasetSource", "upload"),
            bucket_name=text("bucketName", UPLOAD_BUCKET),
            object_name=text("objectName"),
            kept_upload=text("keptUpload"),
            trial_count=text("trialCount"),
            search_strategy=text("searchStrategy", "TPE"),
            pruner=text("pruner", "ASHA"),
            learning_curve=text("isLearningCurveEnabled") in ("on", "true", "1"),
            retry_token=text("retryToken") or secrets.token_urlsafe(18),
        )
        if made.spec is not None:
            prefix = group_of(made.spec) + "."
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
        if self.search_strategy not in SWEEP_STRATEGIES:
            self.errors["searchStrategy"] = (
                f"search method: {self.search_strategy[:20]} is not allowed; allowed: TPE, RANDOM, GRID"
            )
        if self.pruner not in SWEEP_PRUNERS:
            self.errors["pruner"] = f"pruner: {self.pruner[:20]} is not allowed; allowed: ASHA, NONE"
        values, errors = training_values(spec, self.hyperparams)
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

    def field_of_error(self, message: str) -> tuple[str, str]:
        """("learningRateRange", "learningRate: ...") for "searchSpace.learningRate: ...", ("loraR", ...) for
        "trainingConfig.loraR: ...", the mapped field for the others; ("form", message) otherwise."""
        match = re.match(r"^([A-Za-z][A-Za-z0-9.]*): ", message)
        if not match:
            return "form", message
        path, rest = match.group(1), message[match.end() :]
        head, _, name = path.partition(".")
        params = self.spec.params if self.spec is not None else {}
        if head == "searchSpace" and name in params:
            return range_key(name), f"{name} range: {rest}"
        if head == "trainingConfig" and name in params:
            return name, f"{name}: {rest}"
        found = _SWEEP_FIELD_OF_PATH.get(path)
        return (found, rest[:1].upper() + rest[1:]) if found else ("form", message)
