"""Endpoints: a model (a custom model, a catalog base model's own weights, or an ACTIVE imported
model's) hosted on a HOSTING cluster, answering OCI's inference API and the OpenAI API.

Rules, as OCI has them: the model must be ACTIVE; one hosting cluster hosts up to 50 endpoints, all
of the same base model (the first endpoint decides which); the cluster's unit shape must be of the
model's family (Cohere shapes for Cohere models, generic/Llama shapes for Meta models). An endpoint
is CREATING until the serving engine has its base weights and adapter loaded (`Services.warm_endpoint`;
without a serving engine it is ACTIVE at once), then ACTIVE (or FAILED: a FAILED endpoint hosts
nothing, so it no longer counts in its cluster's usedEndpointCapacity); deleting it is immediate.

Concurrency: creating an endpoint updates, in the transaction that inserts it, its cluster's row (the
capacity it uses changes) and its custom model's row (what hosts the model changes: its etag moves);
both are versioned (services/transactions.py), so the 50th and 51st endpoint of a cluster cannot both
win, and neither can an endpoint create and a delete of its model sent at the same moment: the loser
runs again on what the winner committed and fails with the rule's own words (the model is DELETING;
the model is hosted). Races among the server's own requests are retried there, never answered 409.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from tuneforge.catalog import BaseModelSpec
from tuneforge.jobs.command import run_folder
from tuneforge.services import idempotency, tenancy
from tuneforge.services.context import Caller, Services
from tuneforge.services.errors import incorrect_state, invalid, not_found
from tuneforge.services.protocol import Answer, Page, check_if_match, etag, listing, rfc3339, sorted_by, sql_page
from tuneforge.services.resources import base_models, clusters, imported_models
from tuneforge.services.resources.clusters import ENDPOINTS_PER_HOSTING_CLUSTER, HOSTING_STATES
from tuneforge.services.schemas.resources import CreateEndpointDetails, Endpoint, UpdateEndpointDetails
from tuneforge.services.tenancy import owned
from tuneforge.services.transactions import Conflict, commit_versioned, retrying
from tuneforge.store import ids, workrequests
from tuneforge.store.tables import ClusterRow, EndpointRow, ImportedModelRow, JobRow, ModelRow, WorkRequestRow, utcnow

STATES = ("ACTIVE", "CREATING", "UPDATING", "DELETING", "DELETED", "FAILED")
SORT_COLUMNS = {"timeCreated": EndpointRow.time_created, "displayName": EndpointRow.display_name}
GUARDRAILS = ("contentModerationConfig", "promptInjectionConfig", "piiDetectionConfig")


def to_api(row: EndpointRow) -> Endpoint:
    return Endpoint(
        id=row.id,
        model_id=row.model_id,
        compartment_id=row.compartment_id,
        dedicated_ai_cluster_id=row.cluster_id,
        time_created=rfc3339(row.time_created),
        time_updated=rfc3339(row.time_updated),
        lifecycle_state=row.lifecycle_state,
        lifecycle_details=row.lifecycle_details,
        display_name=row.display_name,
        description=row.description,
        generative_ai_private_endpoint_id=row.private_endpoint_id,
        content_moderation_config=row.guardrails.get("contentModerationConfig"),
        prompt_injection_config=row.guardrails.get("promptInjectionConfig"),
        pii_detection_config=row.guardrails.get("piiDetectionConfig"),
        freeform_tags=row.freeform_tags,
        defined_tags=row.defined_tags,
        system_tags=row.system_tags,
    )


def _answer(row: EndpointRow, work_request_id: str | None = None) -> Answer[Endpoint]:
    return Answer(to_api(row), etag(row.id, row.revision), work_request_id)


def _guardrails(details: CreateEndpointDetails | UpdateEndpointDetails) -> dict:
    dumped = details.model_dump(by_alias=True, exclude_none=True)
    return {name: dumped[name] for name in GUARDRAILS if name in dumped}


def _work_request(svc: Services, session: Session, row: EndpointRow, operation: str, done: bool) -> WorkRequestRow:
    return workrequests.new_work_request(
        session,
        region=svc.region,
        tenancy_id=row.tenancy_id,
        compartment_id=row.compartment_id,
        operation_type=operation,
        entity_type="GenerativeAiEndpoint",
        resource_id=row.id,
        done=done,
    )


def hosted_spec(svc: Services, session: Session, caller: Caller, model_id: str, field: str = "modelId") -> BaseModelSpec:
    """The base model a hostable model runs on: a catalog or ACTIVE imported model's own, or an ACTIVE
    custom model's base."""
    spec = base_models.find(model_id, svc.region)
    if spec is not None:
        return spec
    if imported_models.is_imported_id(model_id):
        return base_models.base_for(session, caller, model_id, svc.region, field).spec
    model = session.get(ModelRow, model_id)
    if model is None or model.tenancy_id != caller.tenancy_id:
        raise invalid(f"{field}: no model {model_id!r} in your tenancy")
    if model.lifecycle_state != "ACTIVE":  # DELETED too: the loser of a race with its delete is told so
        raise invalid(f"{field}: model {model_id!r} is {model.lifecycle_state}; only an ACTIVE model can be hosted")
    return base_models.base_for(session, caller, model.base_model_id, svc.region, field).spec


def _check_shape(cluster: ClusterRow, spec: BaseModelSpec) -> None:
    shape = cluster.unit_shape.upper()
    cohere_shape = "COHERE" in shape
    generic_shape = any(word in shape for word in ("GENERIC", "LLAMA", "META"))
    if (spec.vendor == "cohere" and generic_shape) or (spec.vendor != "cohere" and cohere_shape):
        raise invalid(
            f"dedicatedAiClusterId: cluster {cluster.id!r} has unit shape {cluster.unit_shape}, "
            f"which does not host {spec.vendor} models such as {spec.id}"
        )


def _live_endpoints(session: Session, cluster_id: str) -> list[EndpointRow]:
    return list(
        session.scalars(
            select(EndpointRow).where(EndpointRow.cluster_id == cluster_id, EndpointRow.lifecycle_state.in_(HOSTING_STATES))
        )
    )


def _claim_model(session: Session, model_id: str) -> None:
    """Move the custom model's revision in this transaction, only while it is still ACTIVE at the
    revision read: a delete of the model that read it before fails its own versioned UPDATE (and runs
    again, seeing this endpoint), and a delete that committed first makes this one run again."""
    model = session.get(ModelRow, model_id)
    claimed = session.execute(
        update(ModelRow)
        .where(ModelRow.id == model_id, ModelRow.revision == model.revision, ModelRow.lifecycle_state == "ACTIVE")
        .values(revision=ModelRow.revision + 1)
        .execution_options(synchronize_session="fetch")
    ).rowcount
    if not claimed:
        raise Conflict


def create_endpoint(
    svc: Services, caller: Caller, details: CreateEndpointDetails, retry_token: str | None = None
) -> Answer[Endpoint]:
    digest = idempotency.body_hash(details)
    created = retrying(lambda: _insert(svc, caller, details, retry_token, digest))
    if isinstance(created, Answer):  # the retry token's earlier create
        return created
    row, wr_id = created
    if svc.warm_endpoint is None:
        finish_creation(svc, row.id)
    else:
        svc.warm_endpoint(row.id)
    with svc.session() as session:
        return _answer(session.get(EndpointRow, row.id), wr_id)


def _insert(
    svc: Services, caller: Caller, details: CreateEndpointDetails, retry_token: str | None, digest: str
) -> Answer[Endpoint] | tuple[EndpointRow, str]:
    """One try at the create's transaction: the new CREATING row and its work request's id, or the
    answer of the retry token's earlier create."""
    with svc.session() as session:
        earlier = idempotency.lookup(session, caller.tenancy_id, retry_token, "CreateEndpoint", digest)
        if earlier is not None:
            return _answer(session.get(EndpointRow, earlier.resource_id), earlier.work_request_id)
        field = "dedicatedAiClusterId"
        cluster = clusters.usable(
            session, caller, details.dedicated_ai_cluster_id, field, "HOSTING", "endpoints need a HOSTING cluster"
        )
        spec = hosted_spec(svc, session, caller, details.model_id)
        _check_shape(cluster, spec)
        if imported_models.is_imported_id(details.model_id):  # the same race with a delete of the imported model
            imported_models.claim(session, session.get(ImportedModelRow, details.model_id))
        elif base_models.find(details.model_id, svc.region) is None:
            _claim_model(session, details.model_id)
        hosted = _live_endpoints(session, cluster.id)
        if len(hosted) >= ENDPOINTS_PER_HOSTING_CLUSTER:
            raise invalid(
                f"{field}: cluster {cluster.id!r} already hosts {len(hosted)} endpoints, OCI's limit per hosting cluster"
            )
        if hosted and hosted[0].base_model_id != spec.id:
            raise invalid(
                f"modelId: cluster {cluster.id!r} hosts {hosted[0].base_model_id} models; {details.model_id!r} is a "
                f"{spec.id} model (all endpoints of a hosting cluster share one base model)"
            )
        now = utcnow()
        row = EndpointRow(
            id=ids.new_ocid(ids.ENDPOINT, svc.region),
            tenancy_id=caller.tenancy_id,
            compartment_id=details.compartment_id,
            display_name=details.display_name or "endpoint" + now.strftime("%Y%m%d%H%M%S"),
            description=details.description,
            lifecycle_state="CREATING",
            model_id=details.model_id,
            base_model_id=spec.id,
            cluster_id=cluster.id,
            private_endpoint_id=details.generative_ai_private_endpoint_id,
            guardrails=_guardrails(details),
            freeform_tags=details.freeform_tags or {},
            defined_tags=details.defined_tags or {},
            system_tags={},
            time_created=now,
        )
        session.add(row)
        session.flush()
        wr = _work_request(svc, session, row, "CREATE_ENDPOINT", done=False)
        session.flush()  # the work request's row before its first log line (a foreign key)
        workrequests.log(session, wr.id, f"Accepted: host {details.model_id} ({spec.id}) on {cluster.id}.")
        cluster.time_updated = now  # a versioned UPDATE: concurrent creates on this cluster conflict (see the docstring)
        idempotency.record(session, caller.tenancy_id, retry_token, "CreateEndpoint", digest, row.id, wr.id)
        earlier = idempotency.commit_or_earlier(
            session, caller.tenancy_id, retry_token, "CreateEndpoint", digest, commit=commit_versioned
        )
        if earlier is not None:
            return _answer(session.get(EndpointRow, earlier.resource_id), earlier.work_request_id)
        return row, wr.id


def finish_creation(svc: Services, endpoint_id: str, error: str | None = None) -> None:
    """CREATING -> ACTIVE (or FAILED with `error`, a message for the user), with its work request."""
    retrying(lambda: _finish_creation(svc, endpoint_id, error))


def _finish_creation(svc: Services, endpoint_id: str, error: str | None) -> None:
    with svc.session() as session:
        row = session.get(EndpointRow, endpoint_id)
        if row is None or row.lifecycle_state != "CREATING":
            return
        wr = session.scalars(
            select(WorkRequestRow).where(
                WorkRequestRow.resource_id == endpoint_id, WorkRequestRow.operation_type == "CREATE_ENDPOINT"
            )
        ).first()
        row.lifecycle_state, row.lifecycle_details, row.time_updated = (
            ("FAILED", error, utcnow()) if error else ("ACTIVE", None, utcnow())
        )
        if wr is not None:
            if error:
                workrequests.error(session, wr.id, "EndpointFailed", error)
            workrequests.log(
                session, wr.id, f"Endpoint {'failed: ' + error if error else 'ACTIVE: the model is loaded and answering.'}"
            )
            workrequests.finish(session, wr, "FAILED" if error else "SUCCEEDED")
        commit_versioned(session)


def creating(svc: Services) -> list[str]:
    """Endpoints still CREATING (a restarted server warms them again)."""
    with svc.session() as session:
        return list(session.scalars(select(EndpointRow.id).where(EndpointRow.lifecycle_state == "CREATING")))


def get_endpoint(svc: Services, caller: Caller, endpoint_id: str) -> Answer[Endpoint]:
    with svc.session() as session:
        return _answer(owned(session, caller, EndpointRow, endpoint_id, "endpoint"))


def list_endpoints(
    svc: Services,
    caller: Caller,
    compartment_id: str | None,
    *,
    lifecycle_state: str | None = None,
    display_name: str | None = None,
    endpoint_id: str | None = None,
    cluster_id: str | None = None,
    model_id: str | None = None,
    page: str | None = None,
    limit: int | None = None,
    sort_by: str | None = None,
    sort_order: str | None = None,
) -> Page[Endpoint]:
    """DELETED endpoints only when asked for; compartment_id None: every compartment (the console)."""
    filters = (
        (EndpointRow.display_name, display_name),
        (EndpointRow.id, endpoint_id),
        (EndpointRow.cluster_id, cluster_id),
        (EndpointRow.model_id, model_id),
    )
    stmt = listing(EndpointRow, caller.tenancy_id, compartment_id, lifecycle_state, filters)
    stmt = sorted_by(stmt, SORT_COLUMNS, sort_by, sort_order, EndpointRow.id)
    with svc.session() as session:
        rows = sql_page(session, stmt, page, limit)
        return Page([to_api(r) for r in rows.items], rows.next_page)


def update_endpoint(
    svc: Services, caller: Caller, endpoint_id: str, details: UpdateEndpointDetails, if_match: str | None = None
) -> Answer[Endpoint]:
    return retrying(lambda: _update(svc, caller, endpoint_id, details, if_match))


def _update(
    svc: Services, caller: Caller, endpoint_id: str, details: UpdateEndpointDetails, if_match: str | None
) -> Answer[Endpoint]:
    with svc.session() as session:
        row = owned(session, caller, EndpointRow, endpoint_id, "endpoint")
        check_if_match(if_match, etag(row.id, row.revision))
        if row.lifecycle_state not in ("ACTIVE", "FAILED"):
            raise incorrect_state(f"endpoint {row.id} is {row.lifecycle_state}")
        for field in ("display_name", "description", "freeform_tags", "defined_tags"):
            if field in details.model_fields_set and getattr(details, field) is not None:
                setattr(row, field, getattr(details, field))
        if "generative_ai_private_endpoint_id" in details.model_fields_set:
            row.private_endpoint_id = details.generative_ai_private_endpoint_id
        if guardrails := _guardrails(details):
            row.guardrails = {**row.guardrails, **guardrails}
        row.time_updated = utcnow()
        wr = _work_request(svc, session, row, "UPDATE_ENDPOINT", done=True)
        commit_versioned(session)
        return _answer(row, wr.id)


def change_compartment(svc: Services, caller: Caller, endpoint_id: str, compartment_id: str, if_match: str | None = None) -> None:
    tenancy.change_compartment(svc, caller, EndpointRow, endpoint_id, "endpoint", compartment_id, if_match)


def delete_endpoint(svc: Services, caller: Caller, endpoint_id: str, if_match: str | None = None) -> str:
    return retrying(lambda: _delete(svc, caller, endpoint_id, if_match))


def _delete(svc: Services, caller: Caller, endpoint_id: str, if_match: str | None) -> str:
    with svc.session() as session:
        row = owned(session, caller, EndpointRow, endpoint_id, "endpoint")
        check_if_match(if_match, etag(row.id, row.revision))
        if row.lifecycle_state == "DELETED":
            raise not_found("endpoint")
        row.lifecycle_state, row.time_updated = "DELETED", utcnow()
        wr = _work_request(svc, session, row, "DELETE_ENDPOINT", done=True)
        cluster = session.get(ClusterRow, row.cluster_id)
        if cluster is not None:
            cluster.time_updated = utcnow()  # its used capacity changed
        commit_versioned(session)
        return wr.id


# ---- what inference needs --------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What answers an inference request: a base model's weights, with a custom model's adapter or none."""

    spec: BaseModelSpec
    model_id: str  # the model as the API names it (custom model OCID, or the base model's OCID)
    run_dir: Path | None  # the custom model's finished run folder (adapter/, model.json); None: the base itself
    endpoint_id: str | None = None
    cluster_id: str | None = None  # the endpoint's HOSTING cluster, whose `units` replicas answer it
    units: int = 0
    weights: Path | None = None  # the base itself when it is an imported model: its own folder
    adapter: Path | None = None  # another adapter of run_dir than its final one: an evaluation cycle's (a checkpoint)


def endpoint_target(svc: Services, caller: Caller, endpoint_id: str) -> Target:
    """The ACTIVE endpoint's model, for DEDICATED serving mode."""
    with svc.session() as session:
        row = tenancy.owned_active(session, caller, EndpointRow, endpoint_id, "endpoint", "it answers once it is ACTIVE")
        model_id, cluster_id = row.model_id, row.cluster_id
    return hosted_target(svc, caller, endpoint_id, model_id, cluster_id)


def hosted_target(svc: Services, caller: Caller, endpoint_id: str, model_id: str, cluster_id: str) -> Target:
    """An endpoint's model on its cluster's replicas (as many as the cluster's unitCount is now)."""
    with svc.session() as session:
        cluster = session.get(ClusterRow, cluster_id)
        units = cluster.unit_count if cluster is not None else 1
    target = model_target(svc, caller, model_id)
    return replace(target, endpoint_id=endpoint_id, cluster_id=cluster_id, units=units)


def model_target(svc: Services, caller: Caller, model_id: str) -> Target:
    """A model by id or base model name: a catalog base model, the tenancy's ACTIVE imported model, or
    its ACTIVE custom model."""
    spec = base_models.find(model_id, svc.region)
    if spec is not None:
        return Target(spec, base_models.base_ocid(spec, svc.region), None)
    if imported_models.is_imported_id(model_id):
        with svc.session() as session:
            row = tenancy.owned_active(session, caller, ImportedModelRow, model_id, "model", "only an ACTIVE model answers")
            base = base_models.Base(base_models.imported_spec(row), imported_models.weights_folder(row))
        return Target(base.spec, model_id, None, weights=base.weights)
    with svc.session() as session:
        model = tenancy.owned_active(session, caller, ModelRow, model_id, "model", "only an ACTIVE model answers")
        job = session.scalars(select(JobRow).where(JobRow.model_id == model_id).order_by(JobRow.time_created.desc())).first()
        spec = base_models.base_for(session, caller, model.base_model_id, svc.region, "model").spec
    folder = run_folder(Path(job.job_dir)) if job is not None else None
    if folder is None or not folder.is_finished():
        raise incorrect_state(f"model {model_id} has no adapter on this server")
    return Target(spec, model_id, folder.path)


def hosting_endpoints(session: Session, model_id: str) -> int:
    """Endpoints that host a model (CREATING, ACTIVE or UPDATING; a FAILED one hosts nothing): a
    hosted model cannot be deleted."""
    return session.scalar(
        select(func.count())
        .select_from(EndpointRow)
        .where(EndpointRow.model_id == model_id, EndpointRow.lifecycle_state.in_(HOSTING_STATES))
    )
