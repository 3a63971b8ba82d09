"""What the pages show, read through the service layer (the API's own functions and shapes, so the
console shows exactly what the SDK sees) and dressed for people: the base model's name and method,
whether the stand-in was used."""

from __future__ import annotations

import re
from typing import Any

from tuneforge import catalog
from tuneforge.catalog import BaseModelSpec
from tuneforge.hyperparams import DPO_TRAINING_CONFIG, METHOD_NAMES
from tuneforge.services.resources import base_models
from tuneforge.services.schemas.resources import Model

STATES = ("CREATING", "ACTIVE", "FAILED", "DELETING", "DELETED")


def method_name(spec: BaseModelSpec | None) -> str:
    return METHOD_NAMES.get(spec.method, spec.method) if spec else "?"


def spec_of(model_id: str) -> BaseModelSpec | None:
    return next((m for m in catalog.list_models() if m.id == model_id), None)


def model_view(model: Model, region: str) -> dict[str, Any]:
    """The API's Model as the templates read it (camelCase), plus the base model's name and method."""
    view = model.model_dump(by_alias=True, exclude_none=True)
    spec = base_models.find(model.base_model_id or "", region)
    view["baseModelName"] = spec.id if spec else model.base_model_id
    # A fine-tune of an imported base has no catalog entry: its training config says the method.
    config_type = view.get("fineTuneDetails", {}).get("trainingConfig", {}).get("trainingConfigType", "")
    view["method"] = method_name(spec) if spec else METHOD_NAMES.get(config_type.removesuffix("_TRAINING_CONFIG"), "?")
    if config_type == DPO_TRAINING_CONFIG:  # preference tuning of the base model's own adapter (docs/dpo.md)
        view["method"] = f"{method_name(spec)}, preference tuning (DPO)" if spec else "preference tuning (DPO)"
    view["standIn"] = (model.system_tags or {}).get("tuneforge", {}).get("standIn") == "true"
    return view


def base_model_views(region: str, base: str | None = None) -> list[dict[str, Any]]:
    return [
        {"spec": spec, "ocid": base_models.base_ocid(spec, region), "method": method_name(spec)}
        for spec in catalog.list_models()
        if not base or spec.id == base
    ]


# ---- progress and log lines, in words -------------------------------------------------------


def duration_words(seconds: float) -> str:
    """A duration as people say it: "a few seconds", "40 s", "2 min 30 s", "15 min", "1 h 5 min"."""
    s = max(0, round(seconds))
    if s < 10:
        return "a few seconds"
    if s < 60:
        return f"{s} s"
    minutes, rest = divmod(s, 60)
    if minutes < 10:
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    if minutes < 60:
        return f"{minutes + (rest >= 30)} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def progress_text(progress: dict[str, Any] | None, state: str) -> str:
    """The details page's progress line: what the run is doing now, the step, and the time left
    (the engine's etaSeconds, which counts the final evaluation too)."""
    if state == "DELETING":
        return "stopping: the training job was asked to stop"
    if not progress:
        return "waiting for a worker…"
    phase, detail, total = progress.get("phase"), progress.get("detail"), progress.get("totalTrainingSteps")
    parts = []
    if phase == "queued" or (phase == "loading" and not detail):
        parts.append("loading the model…" if phase == "loading" else "waiting for a worker…")
    if total:
        parts.append(f"step {progress.get('step') or 0} of {total}")
        if isinstance(progress.get("epoch"), (int, float)):
            parts.append(f"epoch {progress['epoch']:.2f}")
    if detail:
        parts.append(detail)
    eta = progress.get("etaSeconds")
    if isinstance(eta, (int, float)) and phase in ("training", "evaluating"):
        words = duration_words(eta)
        parts.append(f"{words} left" if words.startswith("a few") else f"about {words} left")
    return " · ".join(parts) or (phase or "")


_LONG_NUMBER = re.compile(r"(?<![\w.])-?\d+\.\d+(?:[eE][-+]?\d+)?(?![\w.])")


def _significant(match: re.Match) -> str:
    text = match.group(0)
    digits = re.sub(r"[eE].*$", "", text).replace("-", "").replace(".", "").lstrip("0")
    return f"{float(text):.5g}" if len(digits) > 5 else text


def rounded(message: str) -> str:
    """Decimals in a log line cut to 5 significant digits ("validationLoss=2.302585092994046" ->
    "2.3026"); shorter numbers (and "3.3" of a model's name) are left as they are."""
    return _LONG_NUMBER.sub(_significant, message)
