"""Console pages for dedicated AI clusters: list the tenancy's fine-tuning and hosting clusters,
create one, read one (the models trained on a fine-tuning cluster, the endpoints and replicas of a
hosting cluster) and delete one, all through `tuneforge.services.resources.clusters` (a busy cluster's 409 is shown
as the API words it)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from tuneforge.services import tenancy
from tuneforge.services.context import Caller, Services
from tuneforge.services.errors import ServiceError
from tuneforge.services.protocol import DEFAULT_LIMIT
from tuneforge.services.resources import clusters, endpoints, models
from tuneforge.services.schemas.resources import DedicatedAiCluster
from tuneforge.web import forms, queries
from tuneforge.web.deps import ConsoleCaller, ServicesDep, csrf_rejected, form_with_csrf, not_found
from tuneforge.web.render import page, redirect

router = APIRouter(include_in_schema=False)


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
    listed = {kind: _all_clusters(svc, caller, kind) for kind in forms.CLUSTER_TYPES}
    models_on = {c.id: len(models.models_on_cluster(svc, caller, c.id)) for c in listed["FINE_TUNING"]}
    endpoints_on = {c.id: len(_hosted(svc, caller, c.id)) for c in listed["HOSTING"]}
    return page(
        request, "clusters.html", listed=listed, types=forms.CLUSTER_TYPES, models_on=models_on, endpoints_on=endpoints_on
    )


# ---- create ---------------------------------------------------------------------------------


def _form_page(request: Request, svc: Services, caller: Caller, form: forms.ClusterForm, status: int = 200) -> Response:
    compartments = tenancy.compartments(svc, caller)
    return page(
        request,
        "cluster_new.html",
        status=status,
        form=form,
        types=forms.CLUSTER_TYPES,
        shapes=forms.CLUSTER_SHAPES,
        compartments=compartments,
        max_units=forms.MAX_CLUSTER_UNITS,
    )


@router.get("/console/clusters/new")
def create_page(
    request: Request, caller: ConsoleCaller, svc: ServicesDep, type: Annotated[str, Query(max_length=16)] = "FINE_TUNING"
) -> Response:
    form = forms.ClusterForm(type=type if type in forms.CLUSTER_TYPES else "FINE_TUNING", compartment_id=caller.tenancy_id)
    return _form_page(request, svc, caller, form)


@router.post("/console/clusters/new")
async def create(request: Request, caller: ConsoleCaller, svc: ServicesDep) -> Response:
    raw = await form_with_csrf(request)
    if raw is None:
        return csrf_rejected(request)
    form = forms.ClusterForm.from_form(raw)
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
    trained = hosted = replicas = []
    if cluster.type == "FINE_TUNING":
        trained = [queries.model_view(m, svc.region) for m in models.models_on_cluster(svc, caller, cluster.id)]
    else:
        hosted = _hosted(svc, caller, cluster.id)
        replicas = clusters.replicas(svc, caller, cluster.id)
    capacity = clusters.ENDPOINTS_PER_HOSTING_CLUSTER
    return page(
        request,
        "cluster.html",
        cluster=cluster,
        types=forms.CLUSTER_TYPES,
        trained=trained,
        hosted=hosted,
        replicas=replicas,
        capacity=capacity,
    )


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
