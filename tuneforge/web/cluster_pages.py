"""Console pages for dedicated AI clusters: list the tenancy's fine-tuning and hosting clusters,
create one, read one (the models trained on a fine-tuning cluster, the endpoints on a hosting
cluster) and delete one, all through `tuneforge.services.resources.clusters` (a busy cluster's 409 is shown
as the API words it)."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from tuneforge.services import tenancy
from tuneforge.services.context import Caller, Services
from tuneforge.services.errors import ServiceError, validation_message
from tuneforge.services.protocol import DEFAULT_LIMIT
from tuneforge.services.resources import clusters, endpoints, models
from tuneforge.services.schemas.resources import CreateDedicatedAiClusterDetails, DedicatedAiCluster
from tuneforge.web import queries
from tuneforge.web.deps import ConsoleCaller, ServicesDep, csrf_rejected, form_with_csrf, not_found
from tuneforge.web.render import page, redirect

router = APIRouter(include_in_schema=False)
TYPES = {"FINE_TUNING": "Fine-tuning", "HOSTING": "Hosting"}
# OCI's unit shapes (oci-api.md, DedicatedAiCluster.unitShape), offered as suggestions; any name of
# capital letters, digits and _ is accepted, as the API accepts it.
SHAPES = (
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
MAX_UNITS = 1000


def _all_clusters(svc: Services, caller: Caller, cluster_type: str, state: str | None = None) -> list[DedicatedAiCluster]:
    found, token = [], None
    while True:
        chunk = clusters.list_clusters(
            svc, caller, None, cluster_type=cluster_type, lifecycle_state=state, page=token, limit=DEFAULT_LIMIT, sort_order="ASC"
        )
        found += chunk.items
        token = chunk.next_page
        if token is None:
            return found


def active_clusters(svc: Services, caller: Caller, cluster_type: str) -> list[DedicatedAiCluster]:
    """The clusters a form can pick, oldest first."""
    return _all_clusters(svc, caller, cluster_type, "ACTIVE")


def _hosted(svc: Services, caller: Caller, cluster_id: str) -> list:
    return endpoints.list_endpoints(svc, caller, None, cluster_id=cluster_id, limit=DEFAULT_LIMIT).items


@router.get("/console/clusters")
def clusters_page(request: Request, caller: ConsoleCaller, svc: ServicesDep) -> Response:
    listed = {kind: _all_clusters(svc, caller, kind) for kind in TYPES}
    models_on = {c.id: len(models.models_on_cluster(svc, caller, c.id)) for c in listed["FINE_TUNING"]}
    endpoints_on = {c.id: len(_hosted(svc, caller, c.id)) for c in listed["HOSTING"]}
    return page(request, "clusters.html", listed=listed, types=TYPES, models_on=models_on, endpoints_on=endpoints_on)


# ---- create ---------------------------------------------------------------------------------


@dataclass
class ClusterForm:
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
        if self.type not in TYPES:
            self.errors["type"] = "Choose fine-tuning or hosting."
        if not self.compartment_id:
            self.errors["compartmentId"] = "Name a compartment (any label; the tenancy OCID is the root compartment)."
        if len(self.display_name) > 255:
            self.errors["displayName"] = "displayName: at most 255 characters."
        if not re.fullmatch(r"\d{1,4}", self.unit_count) or not 1 <= int(self.unit_count) <= MAX_UNITS:
            allowed = f"allowed: an integer from 1 to {MAX_UNITS}"
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


def _form_page(request: Request, svc: Services, caller: Caller, form: ClusterForm, status: int = 200) -> Response:
    compartments = tenancy.compartments(svc, caller)
    return page(
        request,
        "cluster_new.html",
        status=status,
        form=form,
        types=TYPES,
        shapes=SHAPES,
        compartments=compartments,
        max_units=MAX_UNITS,
    )


@router.get("/console/clusters/new")
def create_page(
    request: Request, caller: ConsoleCaller, svc: ServicesDep, type: Annotated[str, Query(max_length=16)] = "FINE_TUNING"
) -> Response:
    form = ClusterForm(type=type if type in TYPES else "FINE_TUNING", compartment_id=caller.tenancy_id)
    return _form_page(request, svc, caller, form)


@router.post("/console/clusters/new")
async def create(request: Request, caller: ConsoleCaller, svc: ServicesDep) -> Response:
    raw = await form_with_csrf(request)
    if raw is None:
        return csrf_rejected(request)
    form = ClusterForm.from_form(raw)
    details = form.details()
    if details is None:
        return _form_page(request, svc, caller, form, status=400)
    try:
        created = await run_in_threadpool(clusters.create_cluster, svc, caller, details, form.retry_token)
    except ServiceError as err:
        form.errors["form"] = err.message
        return _form_page(request, svc, caller, form, status=400)
    return redirect(f"/console/clusters/{created.value.id}")


# ---- one cluster ----------------------------------------------------------------------------


def _cluster(svc: Services, caller: Caller, cluster_id: str) -> DedicatedAiCluster | None:
    try:
        return clusters.get_cluster(svc, caller, cluster_id).value
    except ServiceError:
        return None


@router.get("/console/clusters/{cluster_id}")
def cluster_page(request: Request, cluster_id: str, caller: ConsoleCaller, svc: ServicesDep) -> Response:
    cluster = _cluster(svc, caller, cluster_id)
    if cluster is None:
        return not_found(request, "cluster")
    trained = hosted = []
    if cluster.type == "FINE_TUNING":
        trained = [queries.model_view(m, svc.region) for m in models.models_on_cluster(svc, caller, cluster.id)]
    else:
        hosted = _hosted(svc, caller, cluster.id)
    capacity = clusters.ENDPOINTS_PER_HOSTING_CLUSTER
    return page(request, "cluster.html", cluster=cluster, types=TYPES, trained=trained, hosted=hosted, capacity=capacity)


@router.post("/console/clusters/{cluster_id}/delete")
async def delete(request: Request, cluster_id: str, caller: ConsoleCaller, svc: ServicesDep) -> Response:
    if await form_with_csrf(request) is None:
        return csrf_rejected(request)
    if _cluster(svc, caller, cluster_id) is None:
        return not_found(request, "cluster")
    try:
        await run_in_threadpool(clusters.delete_cluster, svc, caller, cluster_id)
    except ServiceError as err:
        back = (f"/console/clusters/{cluster_id}", "Back to the cluster")
        return page(request, "error.html", status=err.status, title="Not deleted", message=err.message, back=back)
    return redirect("/console/clusters")
