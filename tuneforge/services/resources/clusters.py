"""Dedicated AI clusters. Here a FINE_TUNING cluster names a worker pool: it runs at most
`unitCount` of its training jobs at once; a HOSTING cluster hosts endpoints (at most 50, as in OCI) on
`unitCount` replicas, serving processes or Ray actors (tuneforge/hosting), which an update scales.
Clusters need no provisioning, so every operation completes at once (its work request SUCCEEDED)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tuneforge.services import idempotency, tenancy
from tuneforge.services.context import Caller, Services
from tuneforge.services.errors import incorrect_state, invalid, not_found
from tuneforge.services.protocol import Answer, Page, check_if_match, etag, listing, rfc3339, sorted_by, sql_page
from tuneforge.services.schemas.resources import (
    CreateDedicatedAiClusterDetails,
    DedicatedAiCluster,
    HostingCapacity,
    UpdateDedicatedAiClusterDetails,
)
from tuneforge.services.tenancy import owned
from tuneforge.services.transactions import commit_versioned, retrying
from tuneforge.store import ids, workrequests
from tuneforge.store.tables import ClusterRow, EndpointRow, JobRow, utcnow

STATES = ("CREATING", "ACTIVE", "UPDATING", "DELETING", "DELETED", "FAILED", "NEEDS_ATTENTION")
ENDPOINTS_PER_HOSTING_CLUSTER = 50  # OCI: "A hosting dedicated AI cluster can have up to 50 endpoints"
# An endpoint's states that hold a slot of its cluster and keep its model from deletion (FAILED hosts nothing).
HOSTING_STATES = ("ACTIVE", "CREATING", "UPDATING")
SORT_COLUMNS = {
    "timeCreated": ClusterRow.time_created,
    "displayName": ClusterRow.display_name,
    "lifecycleState": ClusterRow.lifecycle_state,
}


def to_api(row: ClusterRow, used_endpoints: int = 0) -> DedicatedAiCluster:
    capacity = None
    if row.type == "HOSTING":
        capacity = HostingCapacity(total_endpoint_capacity=ENDPOINTS_PER_HOSTING_CLUSTER, used_endpoint_capacity=used_endpoints)
    return DedicatedAiCluster(
        id=row.id,
        type=row.type,
        compartment_id=row.compartment_id,
        time_created=rfc3339(row.time_created),
        time_updated=rfc3339(row.time_updated),
        lifecycle_state=row.lifecycle_state,
        lifecycle_details=row.lifecycle_details,
        unit_count=row.unit_count,
        unit_shape=row.unit_shape,
        display_name=row.display_name,
        description=row.description,
        capacity_reservation_id=row.capacity_reservation_id,
        capacity=capacity,
        freeform_tags=row.freeform_tags,
        defined_tags=row.defined_tags,
    )


def _used(session: Session, row: ClusterRow) -> int:
    """usedEndpointCapacity: the endpoints that hold a slot (a FAILED endpoint hosts nothing)."""
    return session.scalar(
        select(func.count())
        .select_from(EndpointRow)
        .where(EndpointRow.cluster_id == row.id, EndpointRow.lifecycle_state.in_(HOSTING_STATES))
    )


def usable(session: Session, caller: Caller, cluster_id: str, field: str, cluster_type: str, why: str) -> ClusterRow:
    """The ACTIVE cluster of `cluster_type` a create names in `field` (a model's training cluster, an
    endpoint's hosting cluster, a sweep's), else 400 naming the field and the cluster; `why` says
    what needs that type ("endpoints need a HOSTING cluster")."""
    cluster = session.get(ClusterRow, cluster_id)
    if cluster is None or cluster.tenancy_id != caller.tenancy_id or cluster.lifecycle_state == "DELETED":
        raise invalid(f"{field}: no dedicated AI cluster {cluster_id!r} in your tenancy")
    if cluster.type != cluster_type:
        raise invalid(f"{field}: cluster {cluster_id!r} is a {cluster.type} cluster; {why}")
    if cluster.lifecycle_state != "ACTIVE":
        raise invalid(f"{field}: cluster {cluster_id!r} is {cluster.lifecycle_state}, not ACTIVE")
    return cluster


def _answer(session: Session, row: ClusterRow, work_request_id: str | None = None) -> Answer[DedicatedAiCluster]:
    return Answer(to_api(row, _used(session, row)), etag(row.id, row.revision), work_request_id)


def _work_request(svc: Services, session: Session, row: ClusterRow, operation: str) -> str:
    wr = workrequests.new_work_request(
        session,
        region=svc.region,
        tenancy_id=row.tenancy_id,
        compartment_id=row.compartment_id,
        operation_type=operation,
        entity_type="GenerativeAiDedicatedAiCluster",
        resource_id=row.id,
        done=True,
    )
    return wr.id


def add_cluster(
    svc: Services, session: Session, caller: Caller, details: CreateDedicatedAiClusterDetails
) -> tuple[ClusterRow, str]:
    """A new ACTIVE cluster row and its (already SUCCEEDED) work request's id, in the caller's transaction."""
    now = utcnow()
    row = ClusterRow(
        id=ids.new_ocid(ids.CLUSTER, svc.region),
        tenancy_id=caller.tenancy_id,
        compartment_id=details.compartment_id,
        type=details.type,
        unit_count=details.unit_count,
        unit_shape=details.unit_shape,
        display_name=details.display_name or "dedicatedaicluster" + now.strftime("%Y%m%d%H%M%S"),
        description=details.description,
        capacity_reservation_id=details.capacity_reservation_id,
        lifecycle_state="ACTIVE",
        freeform_tags=details.freeform_tags or {},
        defined_tags=details.defined_tags or {},
        time_created=now,
    )
    session.add(row)
    session.flush()
    return row, _work_request(svc, session, row, "CREATE_DEDICATED_AI_CLUSTER")


def create_cluster(
    svc: Services, caller: Caller, details: CreateDedicatedAiClusterDetails, retry_token: str | None = None
) -> Answer[DedicatedAiCluster]:
    digest = idempotency.body_hash(details)
    with svc.session() as session:
        earlier = idempotency.lookup(session, caller.tenancy_id, retry_token, "CreateDedicatedAiCluster", digest)
        if earlier is not None:
            return _answer(session, session.get(ClusterRow, earlier.resource_id), earlier.work_request_id)
        row, wr_id = add_cluster(svc, session, caller, details)
        idempotency.record(session, caller.tenancy_id, retry_token, "CreateDedicatedAiCluster", digest, row.id, wr_id)
        earlier = idempotency.commit_or_earlier(session, caller.tenancy_id, retry_token, "CreateDedicatedAiCluster", digest)
        if earlier is not None:
            return _answer(session, session.get(ClusterRow, earlier.resource_id), earlier.work_request_id)
        return _answer(session, row, wr_id)


def get_cluster(svc: Services, caller: Caller, cluster_id: str) -> Answer[DedicatedAiCluster]:
    with svc.session() as session:
        return _answer(session, owned(session, caller, ClusterRow, cluster_id, "dedicated AI cluster"))


def replicas(svc: Services, caller: Caller, cluster_id: str) -> list:
    """A HOSTING cluster's replicas on this server (`tuneforge.hosting.router.ReplicaStatus`, by index);
    [] for a fine-tuning cluster, or before the cluster's first endpoint starts them."""
    with svc.session() as session:
        owned(session, caller, ClusterRow, cluster_id, "dedicated AI cluster")
    return svc.hosting.describe(cluster_id) if svc.hosting is not None else []


def list_clusters(
    svc: Services,
    caller: Caller,
    compartment_id: str | None,
    *,
    lifecycle_state: str | None = None,
    display_name: str | None = None,
    cluster_id: str | None = None,
    capacity_reservation_id: str | None = None,
    cluster_type: str | None = None,
    page: str | None = None,
    limit: int | None = None,
    sort_by: str | None = None,
    sort_order: str | None = None,
) -> Page[DedicatedAiCluster]:
    """DELETED clusters are listed only when asked for with lifecycle_state="DELETED"; compartment_id
    None: every compartment (the console's view)."""
    filters = (
        (ClusterRow.display_name, display_name),
        (ClusterRow.id, cluster_id),
        (ClusterRow.capacity_reservation_id, capacity_reservation_id),
        (ClusterRow.type, cluster_type),
    )
    stmt = listing(ClusterRow, caller.tenancy_id, compartment_id, lifecycle_state, filters)
    stmt = sorted_by(stmt, SORT_COLUMNS, sort_by, sort_order, ClusterRow.id)
    with svc.session() as session:
        rows = sql_page(session, stmt, page, limit)
        return Page([to_api(r, _used(session, r)) for r in rows.items], rows.next_page)


def update_cluster(
    svc: Services, caller: Caller, cluster_id: str, details: UpdateDedicatedAiClusterDetails, if_match: str | None = None
) -> Answer[DedicatedAiCluster]:
    return retrying(lambda: _update(svc, caller, cluster_id, details, if_match))


def _update(
    svc: Services, caller: Caller, cluster_id: str, details: UpdateDedicatedAiClusterDetails, if_match: str | None
) -> Answer[DedicatedAiCluster]:
    with svc.session() as session:
        row = owned(session, caller, ClusterRow, cluster_id, "dedicated AI cluster")
        check_if_match(if_match, etag(row.id, row.revision))
        if row.lifecycle_state != "ACTIVE":
            raise incorrect_state(f"dedicated AI cluster {row.id} is {row.lifecycle_state}")
        for field in details.model_fields_set:
            value = getattr(details, field)
            if value is not None:
                setattr(row, field, value)
        row.time_updated = utcnow()
        wr_id = _work_request(svc, session, row, "UPDATE_DEDICATED_AI_CLUSTER")
        commit_versioned(session)
        if row.type == "HOSTING" and svc.hosting is not None:  # its units are replicas: as many as it now has
            svc.hosting.scale(row.id, row.unit_count)
        return _answer(session, row, wr_id)


def change_compartment(svc: Services, caller: Caller, cluster_id: str, compartment_id: str, if_match: str | None = None) -> None:
    tenancy.change_compartment(
        svc,
        caller,
        ClusterRow,
        cluster_id,
        "dedicated AI cluster",
        compartment_id,
        if_match,
        movable=lambda state: state == "ACTIVE",
    )


def delete_cluster(svc: Services, caller: Caller, cluster_id: str, if_match: str | None = None) -> str:
    """409 IncorrectState while training jobs are queued or running on it, or endpoints name it (the
    SDK retries 409). Returns the DELETE_DEDICATED_AI_CLUSTER work request id. The cluster's row is
    updated before they are counted: a model create or an endpoint create on it at the same moment
    either committed first (and is counted) or finds the cluster DELETED (models._hold_cluster, the
    endpoint create's versioned UPDATE of the cluster)."""
    return retrying(lambda: _delete(svc, caller, cluster_id, if_match))


def _delete(svc: Services, caller: Caller, cluster_id: str, if_match: str | None) -> str:
    with svc.session() as session:
        row = owned(session, caller, ClusterRow, cluster_id, "dedicated AI cluster")
        check_if_match(if_match, etag(row.id, row.revision))
        if row.lifecycle_state == "DELETED":
            raise not_found("dedicated AI cluster")
        row.lifecycle_state, row.time_updated = "DELETED", utcnow()
        session.flush()  # the row's lock (PostgreSQL) or the database's (SQLite) before counting what uses it
        busy = session.scalar(select(func.count()).select_from(JobRow).where(JobRow.cluster_id == row.id, JobRow.state != "DONE"))
        if busy:
            raise incorrect_state(
                f"dedicated AI cluster {row.id} has {busy} training job(s) queued or running; delete or wait for them"
            )
        # FAILED endpoints hold no slot but still name the cluster: they go first, as the hosting ones do.
        endpoints = session.scalar(
            select(func.count())
            .select_from(EndpointRow)
            .where(EndpointRow.cluster_id == row.id, EndpointRow.lifecycle_state != "DELETED")
        )
        if endpoints:
            raise incorrect_state(f"dedicated AI cluster {row.id} has {endpoints} endpoint(s); delete them first")
        wr_id = _work_request(svc, session, row, "DELETE_DEDICATED_AI_CLUSTER")
        commit_versioned(session)
    if svc.hosting is not None:
        svc.hosting.remove(cluster_id)  # its replicas stop
    return wr_id
