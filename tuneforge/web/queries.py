"""What the pages show, read through the service layer (the API's own functions and shapes, so the
console shows exactly what the SDK sees) and dressed for people: the base model's name and method,
whether the stand-in was used."""

from __future__ import annotations

from typing import Any

from tuneforge import catalog
from tuneforge.catalog import BaseModelSpec
from tuneforge.hyperparams import METHOD_NAMES
from tuneforge.services import base_models
from tuneforge.services.schemas import Model

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
    view["method"] = method_name(spec)
    view["standIn"] = (model.system_tags or {}).get("tuneforge", {}).get("standIn") == "true"
    return view


def base_model_views(region: str, base: str | None = None) -> list[dict[str, Any]]:
    return [{"spec": spec, "ocid": base_models.base_ocid(spec, region), "method": method_name(spec)}
            for spec in catalog.list_models() if not base or spec.id == base]  # fmt: skip
