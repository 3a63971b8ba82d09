"""Model discovery (OCI's `GET /20231130/modelDiscovery`): what can be fine-tuned and called here, as
the SDK's `list_model_discovery` parses it: the catalog's base models and the tenancy's ACTIVE
imported models, each with its capabilities, the modalities and APIs it answers, where it runs and
every hyperparameter of its fine-tuning method with range and default (the catalog's tables;
an imported model takes its architecture's method's table, `catalog.spec_for_config`)."""

from __future__ import annotations

from tuneforge import catalog
from tuneforge.catalog import BaseModelSpec, ParamSpec, format_number
from tuneforge.errors import InvalidParameter
from tuneforge.services.context import Caller, Services
from tuneforge.services.protocol import Page, page_of
from tuneforge.services.resources import base_models, imported_models
from tuneforge.services.schemas.imported_models import Availability, ModelDiscovery, ModelModalitySupport, Parameter
from tuneforge.store.tables import ImportedModelRow

REALM = "oc1"
SERVING_MODES = ["ON_DEMAND", "DEDICATED"]  # by its id (a base or imported model), or through an endpoint
# The inference APIs every model here answers: OCI's chat and generateText, and OpenAI's two.
API_CAPABILITIES = ["OCI_CHAT", "OCI_GENERATE_TEXT", "OPENAI_V1_CHAT_COMPLETIONS", "OPENAI_V1_COMPLETIONS"]
METHOD_NAMES = {"LORA": "LoRA", "TFEW": "T-Few"}


def _parameter(param: ParamSpec) -> Parameter:
    return Parameter(
        name=param.name,
        type="INTEGER" if param.type == "int" else "FLOAT",
        minimum=param.minimum if param.tunable else param.default,
        maximum=param.maximum if param.tunable else param.default,
        default_value=format_number(param.default),
        description=f"{param.description.rstrip('.')} (allowed: {param.allowed()}).",
    )


def _discovery(spec: BaseModelSpec, model_id: str, vendor: str, region: str, why: str) -> ModelDiscovery:
    method = Parameter(
        name="trainingConfigType",
        type="STRING",
        default_value=spec.training_config_type,
        description=f"The fine-tuning method: {METHOD_NAMES.get(spec.method, spec.method)} ({why}).",
    )
    return ModelDiscovery(
        model_id=model_id,
        vendor=vendor,
        capabilities=base_models.CAPABILITIES,
        api_capability=API_CAPABILITIES,
        modality_support=[ModelModalitySupport(input="TEXT", output="TEXT")],
        model_access="HOSTED",
        parameters=[method, *(_parameter(p) for p in spec.params.values())],
        # OCI publishes no dates for the deprecated catalog models; their deprecation shows in the filter
        # (isDeprecated) and the catalog model's lifecycleDetails, not as a made-up date.
        availability=[Availability(realm=REALM, region=region, serving_modes=SERVING_MODES, supported_replacements=[])],
    )


def catalog_items(region: str) -> list[tuple[ModelDiscovery, bool]]:
    """The catalog's base models, each with whether it is deprecated."""
    return [
        (_discovery(spec, spec.id, spec.vendor, region, "the catalog's table for this model"), spec.deprecated)
        for spec in catalog.list_models()
    ]


def imported_item(row: ImportedModelRow, region: str) -> ModelDiscovery | None:
    """An ACTIVE imported model (None if its config no longer passes the catalog)."""
    spec = imported_spec(row)
    if spec is None:
        return None
    why = f"{row.architecture} models take OCI's {METHOD_NAMES.get(spec.method, spec.method)} table"
    return _discovery(spec, row.id, row.vendor or spec.vendor, region, why)


def discoveries(svc: Services, caller: Caller, compartment_id: str | None) -> list[tuple[ModelDiscovery, bool]]:
    """Every discoverable model with whether it is deprecated: the catalog, then the tenancy's ACTIVE
    imported models (of `compartment_id`; None: every compartment), oldest first."""
    found = catalog_items(svc.region)
    for row in imported_models.active_rows(svc, caller):
        if compartment_id is None or row.compartment_id == compartment_id:
            item = imported_item(row, svc.region)
            if item is not None:
                found.append((item, False))
    return found


def imported_spec(row: ImportedModelRow) -> BaseModelSpec | None:
    """The fine-tuning spec of an ACTIVE imported model (None if its config no longer passes the catalog)."""
    try:
        return catalog.spec_for_config(row.id, row.display_name, row.vendor, row.config or {})
    except InvalidParameter:
        return None


def list_model_discovery(
    svc: Services,
    caller: Caller,
    compartment_id: str | None,
    *,
    realm: list[str] | None = None,
    region: list[str] | None = None,
    model_id: str | None = None,
    serving_mode: list[str] | None = None,
    api_capability: list[str] | None = None,
    capability: list[str] | None = None,
    model_access: list[str] | None = None,
    is_deprecated: bool | None = None,
    is_on_demand_retired: bool | None = None,
    is_dedicated_retired: bool | None = None,
    page: str | None = None,
    limit: int | None = None,
) -> Page[ModelDiscovery]:
    """OCI's filters: a list filter keeps a model that matches any of its values; nothing here is
    retired, so is_*_retired=true keeps nothing."""

    def keep(item: ModelDiscovery, deprecated: bool) -> bool:
        where = item.availability[0]
        return (
            (not realm or where.realm in realm)
            and (not region or where.region in region)
            and (not model_id or item.model_id == model_id)
            and (not serving_mode or bool(set(serving_mode) & set(where.serving_modes)))
            and (not api_capability or bool(set(api_capability) & set(item.api_capability)))
            and (not capability or bool(set(capability) & set(item.capabilities)))
            and (not model_access or item.model_access in model_access)
            and (is_deprecated is None or deprecated == is_deprecated)
            and not is_on_demand_retired
            and not is_dedicated_retired
        )

    items = [item for item, deprecated in discoveries(svc, caller, compartment_id) if keep(item, deprecated)]
    return page_of(items, page, limit)
