"""Catalog base models as OCI Model objects (type BASE); they live in no tenancy and every
compartment lists them, as OCI's pretrained models do."""

from __future__ import annotations

import re

from tuneforge import catalog
from tuneforge.catalog import BaseModelSpec
from tuneforge.services.errors import invalid
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
