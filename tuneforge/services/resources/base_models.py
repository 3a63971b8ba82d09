"""Base models: the catalog's, as OCI Model objects (type BASE; they live in no tenancy and every
compartment lists them, as OCI's pretrained models do), and a tenancy's ACTIVE imported models,
which are base models everywhere a catalog model is (fine-tuned, hosted, called) and train and
serve their own weights."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from tuneforge import catalog
from tuneforge.catalog import BaseModelSpec
from tuneforge.errors import InvalidParameter
from tuneforge.services.context import Caller, Services
from tuneforge.services.errors import ServiceError, invalid
from tuneforge.services.schemas.resources import Model

CATALOG_COMPARTMENT = "ocid1.compartment.oc1..tuneforgecatalog"
# A fixed creation time keeps base models' etags and sort order stable across restarts.
CATALOG_TIME = "2024-01-01T00:00:00.000Z"
CAPABILITIES = ["TEXT_GENERATION", "CHAT", "FINE_TUNE"]


def base_ocid(spec: BaseModelSpec, region: str) -> str:
    # Readable rather than random: "meta.llama-3.3-70b-instruct" -> "...base-meta-llama-3-3-70b-instruct".
    return f"ocid1.generativeaimodel.oc1.{region}.base-" + re.sub(r"[^a-z0-9]+", "-", spec.id.lower())


def find(ref: str, region: str) -> BaseModelSpec | None:
    """The base model named by its catalog name or its OCID, or None."""
    for spec in catalog.list_models():
        if ref in (spec.id, base_ocid(spec, region)):
            return spec
    return None


def resolve(ref: str, region: str) -> BaseModelSpec:
    spec = find(ref, region)
    if spec is None:
        known = ", ".join(m.id for m in catalog.list_models())
        raise invalid(f"baseModelId: {ref!r} is not allowed; it must be a fine-tunable base model (name or OCID): {known}")
    return spec


@dataclass(frozen=True)
class Base:
    """A base model as a fine-tune or an endpoint uses it."""

    spec: BaseModelSpec
    # An imported model's own folder, which its jobs train and its endpoints serve; None for a catalog
    # model (the server's `serve --weights` or the engine's per-model lookup).
    weights: Path | None = None


def imported_spec(row) -> BaseModelSpec:
    """An imported model (its ImportedModelRow) as a base model: catalog.spec_for_config on its config.json."""
    try:
        return catalog.spec_for_config(row.id, row.display_name, row.vendor, row.config or {})
    except InvalidParameter as err:  # an import accepted only what the architectures allow; a later registry may not
        raise invalid(f"baseModelId: imported model {row.id} cannot be used as a base model: {err.allowed}") from None


def base_for(session: Session, caller: Caller, ref: str, region: str, field: str = "baseModelId") -> Base:
    """The base model `ref` names: a catalog model (name or OCID), or the caller's ACTIVE imported
    model (400 naming `field` otherwise)."""
    from tuneforge.services.resources import imported_models  # it lists base models too: imported here, not at the top

    if imported_models.is_imported_id(ref):
        row = imported_models.active(session, caller, ref, field)
        return Base(imported_spec(row), imported_models.weights_folder(row))
    spec = find(ref, region)
    if spec is None:
        known = ", ".join(m.id for m in catalog.list_models())
        raise invalid(
            f"{field}: {ref!r} is not allowed; it must be a fine-tunable base model (name or OCID): {known}; "
            "or the OCID of an ACTIVE imported model of your tenancy"
        )
    return Base(spec)


def to_api(spec: BaseModelSpec, region: str) -> Model:
    return Model(
        id=base_ocid(spec, region),
        compartment_id=CATALOG_COMPARTMENT,
        capabilities=CAPABILITIES,
        lifecycle_state="ACTIVE",
        lifecycle_details=f"Deprecated base model; fine-tuning still works ({spec.method})." if spec.deprecated else None,
        display_name=spec.id,
        vendor=spec.vendor,
        version="1.0",
        description=f"{spec.display_name}: fine-tuned with {spec.method} ({spec.training_config_type}).",
        time_created=CATALOG_TIME,
        type="BASE",
        freeform_tags={},
        defined_tags={},
        system_tags={},
    )


def all_base(region: str) -> list[Model]:
    return [to_api(spec, region) for spec in catalog.list_models()]


def choices(svc: Services, caller: Caller) -> list[BaseModelSpec]:
    """What the caller can fine-tune: the catalog's models, then the tenancy's ACTIVE imported models
    (every compartment, oldest first; one whose config.json the architectures no longer take is left out)."""
    from tuneforge.services.resources import imported_models

    found = catalog.list_models()
    for row in imported_models.active_rows(svc, caller):
        try:
            found.append(catalog.spec_for_config(row.id, row.display_name, row.vendor, row.config or {}))
        except InvalidParameter:
            continue
    return found


def training_weights(svc: Services, caller: Caller, ref: str) -> str | None:
    """The weights a fine-tune of `ref` trains, as datasets.check takes them (their tokenizer counts the
    tokens): an imported model's own folder, else the server's `serve --weights` (None: the lookup)."""
    if not ref.startswith("ocid1.") or find(ref, svc.region) is not None:
        return svc.config.weights
    try:
        with svc.session() as session:
            base = base_for(session, caller, ref, svc.region)
    except ServiceError:
        return svc.config.weights
    return str(base.weights) if base.weights is not None else svc.config.weights
