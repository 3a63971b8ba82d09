"""/20231130/dedicatedAiClusters: HTTP <-> tuneforge.services.resources.clusters."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Response

from tuneforge.api.deps import CallerDep, CompartmentId, IfMatch, Limit, Page, QueryStr, RetryToken, ServicesDep, SortOrder
from tuneforge.api.protocol import send_accepted, send_answer, send_page
from tuneforge.services.resources import clusters
from tuneforge.services.schemas.resources import (
    ChangeCompartmentDetails,
    CreateDedicatedAiClusterDetails,
    DedicatedAiCluster,
    DedicatedAiClusterCollection,
    UpdateDedicatedAiClusterDetails,
)

router = APIRouter(prefix="/20231130", tags=["dedicatedAiClusters"])
ClusterState = Literal["CREATING", "ACTIVE", "UPDATING", "DELETING", "DELETED", "FAILED", "NEEDS_ATTENTION"]


@router.post("/dedicatedAiClusters", response_model=DedicatedAiCluster, response_model_exclude_none=True)
def create_dedicated_ai_cluster(
    details: CreateDedicatedAiClusterDetails,
    caller: CallerDep,
    svc: ServicesDep,
    response: Response,
    retry_token: RetryToken = None,
) -> DedicatedAiCluster:
    return send_answer(response, clusters.create_cluster(svc, caller, details, retry_token))


@router.get("/dedicatedAiClusters/{dedicatedAiClusterId}", response_model=DedicatedAiCluster, response_model_exclude_none=True)
def get_dedicated_ai_cluster(
    dedicatedAiClusterId: str, caller: CallerDep, svc: ServicesDep, response: Response
) -> DedicatedAiCluster:
    return send_answer(response, clusters.get_cluster(svc, caller, dedicatedAiClusterId))


@router.get("/dedicatedAiClusters", response_model=DedicatedAiClusterCollection, response_model_exclude_none=True)
def list_dedicated_ai_clusters(
    caller: CallerDep,
    svc: ServicesDep,
    response: Response,
    compartmentId: CompartmentId,
    lifecycleState: ClusterState | None = None,
    displayName: QueryStr = None,
    id: QueryStr = None,
    capacityReservationId: QueryStr = None,
    limit: Limit = None,
    page: Page = None,
    sortOrder: SortOrder = None,
    sortBy: Literal["timeCreated", "displayName", "lifecycleState"] | None = None,
) -> DedicatedAiClusterCollection:
    found = clusters.list_clusters(
        svc,
        caller,
        compartmentId,
        lifecycle_state=lifecycleState,
        display_name=displayName,
        cluster_id=id,
        capacity_reservation_id=capacityReservationId,
        page=page,
        limit=limit,
        sort_by=sortBy,
        sort_order=sortOrder,
    )
    return DedicatedAiClusterCollection(items=send_page(response, found))


@router.put("/dedicatedAiClusters/{dedicatedAiClusterId}", response_model=DedicatedAiCluster, response_model_exclude_none=True)
def update_dedicated_ai_cluster(
    dedicatedAiClusterId: str,
    details: UpdateDedicatedAiClusterDetails,
    caller: CallerDep,
    svc: ServicesDep,
    response: Response,
    if_match: IfMatch = None,
) -> DedicatedAiCluster:
    return send_answer(response, clusters.update_cluster(svc, caller, dedicatedAiClusterId, details, if_match))


@router.post("/dedicatedAiClusters/{dedicatedAiClusterId}/actions/changeCompartment", status_code=200, response_class=Response)
def change_dedicated_ai_cluster_compartment(
    dedicatedAiClusterId: str,
    details: ChangeCompartmentDetails,
    caller: CallerDep,
    svc: ServicesDep,
    if_match: IfMatch = None,
    retry_token: RetryToken = None,
) -> Response:
    clusters.change_compartment(svc, caller, dedicatedAiClusterId, details.compartment_id, if_match)
    return Response(status_code=200)


@router.delete("/dedicatedAiClusters/{dedicatedAiClusterId}", status_code=202, response_class=Response)
def delete_dedicated_ai_cluster(
    dedicatedAiClusterId: str, caller: CallerDep, svc: ServicesDep, if_match: IfMatch = None
) -> Response:
    """409 IncorrectState while training jobs are queued or running on it (the SDK retries 409)."""
    return send_accepted(clusters.delete_cluster(svc, caller, dedicatedAiClusterId, if_match))
