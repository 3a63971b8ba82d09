"""/20231130/dedicatedAiClusters. Here a cluster names a worker pool: a FINE_TUNING cluster runs at
most `unitCount` of its training jobs at once; HOSTING clusters are recorded for the hosting API.
Clusters need no provisioning, so every operation completes at once (its work request SUCCEEDED)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Response
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from tuneforge.api import idempotency
from tuneforge.api.deps import CallerDep, CompartmentId, ConfigDep, IfMatch, Limit, Page, QueryStr, RetryToken, SessionDep, SortOrder, owned
from tuneforge.api.errors import incorrect_state, not_found
from tuneforge.api.protocol import check_if_match, etag, rfc3339, send_etag, sql_page
from tuneforge.api.schemas import (
    CreateDedicatedAiClusterDetails, DedicatedAiCluster, DedicatedAiClusterCollection, HostingCapacity,
    UpdateDedicatedAiClusterDetails,
)  # fmt: skip
from tuneforge.store import ids, workrequests
from tuneforge.store.tables import ClusterRow, JobRow, utcnow

router = APIRouter(prefix="/20231130", tags=["dedicatedAiClusters"])
ClusterState = Literal["CREATING", "ACTIVE", "UPDATING", "DELETING", "DELETED", "FAILED", "NEEDS_ATTENTION"]
ENDPOINTS_PER_HOSTING_CLUSTER = 50  # OCI: "A hosting dedicated AI cluster can have up to 50 endpoints"


def cluster_to_api(row: ClusterRow) -> DedicatedAiCluster:
    capacity = None
    if row.type == "HOSTING":
        capacity = HostingCapacity(total_endpoint_capacity=ENDPOINTS_PER_HOSTING_CLUSTER, used_endpoint_capacity=0)
    return DedicatedAiCluster(
        id=row.id, type=row.type, compartment_id=row.compartment_id, time_created=rfc3339(row.time_created),
        time_updated=rfc3339(row.time_updated), lifecycle_state=row.lifecycle_state, lifecycle_details=row.lifecycle_details,
        unit_count=row.unit_count, unit_shape=row.unit_shape, display_name=row.display_name, description=row.description,
        capacity_reservation_id=row.capacity_reservation_id, capacity=capacity,
        freeform_tags=row.freeform_tags, defined_tags=row.defined_tags,
    )  # fmt: skip


def _cluster(session, caller, cluster_id: str) -> ClusterRow:
    return owned(session, caller, ClusterRow, cluster_id, "dedicated AI cluster")


def _send(response: Response, row: ClusterRow, wr_id: str | None = None) -> DedicatedAiCluster:
    send_etag(response, row.id, row.revision, wr_id)
    return cluster_to_api(row)


def _work_request(session, config, row: ClusterRow, operation: str) -> str:
    wr = workrequests.new_work_request(
        session, region=config.region, tenancy_id=row.tenancy_id, compartment_id=row.compartment_id,
        operation_type=operation, entity_type="GenerativeAiDedicatedAiCluster", resource_id=row.id, done=True,
    )  # fmt: skip
    return wr.id


@router.post("/dedicatedAiClusters", response_model=DedicatedAiCluster, response_model_exclude_none=True)
def create_dedicated_ai_cluster(details: CreateDedicatedAiClusterDetails, caller: CallerDep, session: SessionDep,
                                config: ConfigDep, response: Response, retry_token: RetryToken = None) -> DedicatedAiCluster:  # fmt: skip
    digest = idempotency.body_hash(details)
    earlier = idempotency.lookup(session, caller.tenancy_id, retry_token, "CreateDedicatedAiCluster", digest)
    if earlier is not None:
        return _send(response, session.get(ClusterRow, earlier.resource_id), earlier.work_request_id)
    now = utcnow()
    row = ClusterRow(
        id=ids.new_ocid(ids.CLUSTER, config.region), tenancy_id=caller.tenancy_id, compartment_id=details.compartment_id,
        type=details.type, unit_count=details.unit_count, unit_shape=details.unit_shape,
        display_name=details.display_name or "dedicatedaicluster" + now.strftime("%Y%m%d%H%M%S"),
        description=details.description, capacity_reservation_id=details.capacity_reservation_id,
        lifecycle_state="ACTIVE", freeform_tags=details.freeform_tags or {}, defined_tags=details.defined_tags or {},
        time_created=now,
    )  # fmt: skip
    session.add(row)
    session.flush()
    wr_id = _work_request(session, config, row, "CREATE_DEDICATED_AI_CLUSTER")
    idempotency.record(session, caller.tenancy_id, retry_token, "CreateDedicatedAiCluster", digest, row.id, wr_id)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        earlier = idempotency.lookup(session, caller.tenancy_id, retry_token, "CreateDedicatedAiCluster", digest)
        if earlier is None:
            raise
        return _send(response, session.get(ClusterRow, earlier.resource_id), earlier.work_request_id)
    return _send(response, row, wr_id)


@router.get("/dedicatedAiClusters/{dedicatedAiClusterId}", response_model=DedicatedAiCluster, response_model_exclude_none=True)
def get_dedicated_ai_cluster(dedicatedAiClusterId: str, caller: CallerDep, session: SessionDep, response: Response) -> DedicatedAiCluster:
    return _send(response, _cluster(session, caller, dedicatedAiClusterId))


SORT_COLUMNS = {"timeCreated": ClusterRow.time_created, "displayName": ClusterRow.display_name, "lifecycleState": ClusterRow.lifecycle_state}


@router.get("/dedicatedAiClusters", response_model=DedicatedAiClusterCollection, response_model_exclude_none=True)
def list_dedicated_ai_clusters(
    caller: CallerDep, session: SessionDep, response: Response,
    compartmentId: CompartmentId,
    lifecycleState: ClusterState | None = None,
    displayName: QueryStr = None,
    id: QueryStr = None,
    capacityReservationId: QueryStr = None,
    limit: Limit = None,
    page: Page = None,
    sortOrder: SortOrder = None,
    sortBy: Literal["timeCreated", "displayName", "lifecycleState"] | None = None,
) -> DedicatedAiClusterCollection:  # fmt: skip
    """DELETED clusters are listed only when asked for with lifecycleState=DELETED."""
    stmt = select(ClusterRow).where(ClusterRow.tenancy_id == caller.tenancy_id, ClusterRow.compartment_id == compartmentId)
    stmt = stmt.where(ClusterRow.lifecycle_state == lifecycleState) if lifecycleState else stmt.where(ClusterRow.lifecycle_state != "DELETED")
    for column, value in ((ClusterRow.display_name, displayName), (ClusterRow.id, id), (ClusterRow.capacity_reservation_id, capacityReservationId)):
        if value:
            stmt = stmt.where(column == value)
    sort_by = sortBy or "timeCreated"
    descending = (sortOrder or ("DESC" if sort_by == "timeCreated" else "ASC")) == "DESC"
    column = SORT_COLUMNS[sort_by]
    stmt = stmt.order_by(column.desc() if descending else column.asc(), ClusterRow.id)
    rows = sql_page(session, stmt, page, limit, response)
    return DedicatedAiClusterCollection(items=[cluster_to_api(r) for r in rows])


@router.put("/dedicatedAiClusters/{dedicatedAiClusterId}", response_model=DedicatedAiCluster, response_model_exclude_none=True)
def update_dedicated_ai_cluster(dedicatedAiClusterId: str, details: UpdateDedicatedAiClusterDetails, caller: CallerDep,
                                session: SessionDep, config: ConfigDep, response: Response, if_match: IfMatch = None) -> DedicatedAiCluster:  # fmt: skip
    row = _cluster(session, caller, dedicatedAiClusterId)
    check_if_match(if_match, etag(row.id, row.revision))
    if row.lifecycle_state != "ACTIVE":
        raise incorrect_state(f"dedicated AI cluster {row.id} is {row.lifecycle_state}")
    for field in details.model_fields_set:
        value = getattr(details, field)
        if value is not None:
            setattr(row, field, value)
    row.time_updated, row.revision = utcnow(), row.revision + 1
    wr_id = _work_request(session, config, row, "UPDATE_DEDICATED_AI_CLUSTER")
    session.commit()
    return _send(response, row, wr_id)


@router.delete("/dedicatedAiClusters/{dedicatedAiClusterId}", status_code=202, response_class=Response)
def delete_dedicated_ai_cluster(dedicatedAiClusterId: str, caller: CallerDep, session: SessionDep, config: ConfigDep,
                                if_match: IfMatch = None) -> Response:  # fmt: skip
    """409 IncorrectState while training jobs are queued or running on it (the SDK retries 409)."""
    row = _cluster(session, caller, dedicatedAiClusterId)
    check_if_match(if_match, etag(row.id, row.revision))
    if row.lifecycle_state == "DELETED":
        raise not_found("dedicated AI cluster")
    busy = session.scalar(select(func.count()).select_from(JobRow).where(JobRow.cluster_id == row.id, JobRow.state != "DONE"))
    if busy:
        raise incorrect_state(f"dedicated AI cluster {row.id} has {busy} training job(s) queued or running; delete or wait for them")
    row.lifecycle_state, row.time_updated, row.revision = "DELETED", utcnow(), row.revision + 1
    wr_id = _work_request(session, config, row, "DELETE_DEDICATED_AI_CLUSTER")
    session.commit()
    return Response(status_code=202, headers={"opc-work-request-id": wr_id})
