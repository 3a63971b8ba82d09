"""Requests that race, on SQLite and PostgreSQL, through the service layer (what the routers call) on
the store of a real `tuneforge serve` that trained the model.

The interleaving is forced, not hoped for: one request runs in a thread that is held at its first
write statement (it has read and checked everything it checks) while the other runs to its end; then
the held one goes on. That is exactly the moment two requests sent together can meet, and no sleep
decides it.

- an endpoint create and a delete of its model: never both succeed; the loser names what won;
- endpoint creates on one cluster from 4 threads at once: all succeed up to the cluster's limit, none
  answers 409 (the server retries its own bookkeeping);
- a model create (its job queued on a fine-tuning cluster) and a delete of that cluster: never both;
- a FAILED endpoint frees its slot of the cluster and does not keep its model from deletion.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

import pytest
from helpers.clients import clients
from helpers.fine_tuning import LORA_MODEL, create_cluster, dataset_lines, lora_model_details, upload, wait_work_request
from helpers.identities import new_identity
from helpers.servers import running_service
from sqlalchemy import event

from tuneforge.services.config import ServiceConfig
from tuneforge.services.context import Caller, Services
from tuneforge.services.errors import ServiceError
from tuneforge.services.resources import clusters, endpoints, models, objects
from tuneforge.services.schemas.resources import CreateDedicatedAiClusterDetails, CreateEndpointDetails, CreateModelDetails
from tuneforge.store.db import open_store
from tuneforge.store.tables import ModelRow

COMPARTMENT = "ocid1.compartment.oc1..aaaaraces"
HELD = "held-request"
WRITES = ("INSERT", "UPDATE", "DELETE")


@pytest.fixture(scope="module")
def store(backend, tmp_path_factory, tiny_weights):
    """(services on the store, caller, a function that trains one more ACTIVE model) after the server
    that trained them has stopped: nothing else writes while a test forces its interleaving."""
    with running_service(backend, tmp_path_factory.mktemp("races"), tiny_weights) as server:
        identity = new_identity("racer")
        server.register(identity)
        ai, objects = clients(server, identity)
        dataset = upload(objects, "races/train.jsonl", dataset_lines(40))
        cluster = create_cluster(ai, COMPARTMENT, unit_count=2)
        created = [ai.create_model(lora_model_details(COMPARTMENT, cluster.id, dataset)) for _ in range(2)]
        for answer in created:
            assert wait_work_request(ai, answer.headers["opc-work-request-id"], timeout=600).status == "SUCCEEDED"
        server.stop()
        config = ServiceConfig(data_dir=server.data_dir, database_url=server.database_url, weights=str(tiny_weights), workers=0)
        sessions = open_store(config.url)
        try:
            yield Services(config, sessions), Caller(identity.tenancy, identity.user), [a.data.id for a in created]
        finally:
            sessions.kw["bind"].dispose()


@contextmanager
def held_at_first_write(svc: Services) -> Iterator[tuple[threading.Event, threading.Event]]:
    """(reached, release): the thread named HELD stops before its first INSERT/UPDATE/DELETE until released."""
    engine = svc.sessions.kw["bind"]
    reached, release = threading.Event(), threading.Event()

    def hold(conn, cursor, statement, parameters, context, executemany):
        if threading.current_thread().name == HELD and not reached.is_set() and statement.lstrip().upper().startswith(WRITES):
            reached.set()
            release.wait(60)

    event.listen(engine, "before_cursor_execute", hold)
    try:
        yield reached, release
    finally:
        release.set()
        event.remove(engine, "before_cursor_execute", hold)


def outcome(call: Callable[[], object]) -> object | ServiceError:
    try:
        return call()
    except ServiceError as err:
        return err


def race(svc: Services, held: Callable[[], object], other: Callable[[], object]) -> tuple[object, object]:
    """Run `held` until its first write, `other` to its end, then the rest of `held`: both outcomes."""
    result: dict[str, object] = {}
    with held_at_first_write(svc) as (reached, release):
        thread = threading.Thread(target=lambda: result.update(held=outcome(held)), name=HELD)
        thread.start()
        assert reached.wait(60), "the held request never wrote"
        other_result = outcome(other)
        release.set()
        thread.join(60)
    assert not thread.is_alive()
    return result["held"], other_result


def hosting_cluster(svc: Services, caller: Caller) -> str:
    details = CreateDedicatedAiClusterDetails(
        type="HOSTING", compartment_id=COMPARTMENT, unit_count=1, unit_shape="LARGE_GENERIC"
    )
    return clusters.create_cluster(svc, caller, details).value.id


def endpoint_details(model_id: str, cluster_id: str) -> CreateEndpointDetails:
    return CreateEndpointDetails(compartment_id=COMPARTMENT, model_id=model_id, dedicated_ai_cluster_id=cluster_id)


def model_state(svc: Services, model_id: str) -> str:
    with svc.session() as session:
        return session.get(ModelRow, model_id).lifecycle_state


def test_an_endpoint_create_and_its_models_delete_never_both_win(store):
    svc, caller, (model_id, _) = store
    cluster_id = hosting_cluster(svc, caller)

    # The delete has checked "no endpoint hosts it" when the create commits: the delete must lose.
    deleted, created = race(
        svc,
        lambda: models.delete_model(svc, caller, model_id),
        lambda: endpoints.create_endpoint(svc, caller, endpoint_details(model_id, cluster_id)),
    )
    assert not isinstance(created, ServiceError), created.message
    assert isinstance(deleted, ServiceError), "the model was deleted while an endpoint was created on it"
    assert deleted.status == 409 and deleted.message == f"model {model_id} is hosted by 1 endpoint(s); delete them first"
    assert model_state(svc, model_id) == "ACTIVE"
    assert endpoints.get_endpoint(svc, caller, created.value.id).value.lifecycle_state == "ACTIVE"
    endpoints.delete_endpoint(svc, caller, created.value.id)

    # The create has checked "the model is ACTIVE" when the delete commits: the create must lose.
    created, deleted = race(
        svc,
        lambda: endpoints.create_endpoint(svc, caller, endpoint_details(model_id, cluster_id)),
        lambda: models.delete_model(svc, caller, model_id),
    )
    assert not isinstance(deleted, ServiceError), deleted.message
    assert isinstance(created, ServiceError), "an endpoint was created on a model being deleted"
    assert created.status == 400
    assert created.message == f"modelId: model {model_id!r} is DELETED; only an ACTIVE model can be hosted"
    assert clusters.get_cluster(svc, caller, cluster_id).value.capacity.used_endpoint_capacity == 0
    assert endpoints.list_endpoints(svc, caller, COMPARTMENT, cluster_id=cluster_id, lifecycle_state="CREATING").items == []


def test_concurrent_endpoint_creates_on_one_cluster_all_succeed_up_to_its_limit(store):
    svc, caller, _ = store
    cluster_id = hosting_cluster(svc, caller)
    limit = clusters.ENDPOINTS_PER_HOSTING_CLUSTER
    per_thread = limit // 4 + 1  # 4 x 13 = 52: two more than the cluster takes
    barrier = threading.Barrier(4)
    answers: list[object] = []
    lock = threading.Lock()

    def client() -> None:
        barrier.wait(60)
        for _ in range(per_thread):
            result = outcome(lambda: endpoints.create_endpoint(svc, caller, endpoint_details(LORA_MODEL, cluster_id)))
            with lock:
                answers.append(result)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    refused = [a for a in answers if isinstance(a, ServiceError)]
    assert [a.status for a in refused if a.status == 409] == [], [a.message for a in refused]
    assert len(answers) == 4 * per_thread and len(answers) - len(refused) == limit
    assert {(a.status, a.code) for a in refused} == {(400, "InvalidParameter")}
    assert all("OCI's limit per hosting cluster" in a.message for a in refused)
    assert clusters.get_cluster(svc, caller, cluster_id).value.capacity.used_endpoint_capacity == limit


def test_two_creates_on_one_cluster_at_the_same_moment_both_succeed(store):
    """The held create read the cluster before the other committed; its versioned UPDATE of the cluster
    then matches no row, which is the server's own race: it runs again and succeeds (no 409)."""
    svc, caller, _ = store
    cluster_id = hosting_cluster(svc, caller)
    first, second = race(
        svc,
        lambda: endpoints.create_endpoint(svc, caller, endpoint_details(LORA_MODEL, cluster_id)),
        lambda: endpoints.create_endpoint(svc, caller, endpoint_details(LORA_MODEL, cluster_id)),
    )
    assert not isinstance(first, ServiceError), first.message
    assert not isinstance(second, ServiceError), second.message
    assert clusters.get_cluster(svc, caller, cluster_id).value.capacity.used_endpoint_capacity == 2


def test_a_failed_endpoint_frees_its_slot_and_its_model(store):
    svc, caller, (_, model_id) = store
    cluster_id = hosting_cluster(svc, caller)
    loading = replace(svc, warm_endpoint=lambda endpoint_id: None)  # a serving engine that has not loaded it yet
    endpoint = endpoints.create_endpoint(loading, caller, endpoint_details(model_id, cluster_id)).value
    assert endpoint.lifecycle_state == "CREATING"
    assert clusters.get_cluster(svc, caller, cluster_id).value.capacity.used_endpoint_capacity == 1
    endpoints.finish_creation(svc, endpoint.id, "the adapter could not be loaded")  # as the engine reports a failed load
    assert endpoints.get_endpoint(svc, caller, endpoint.id).value.lifecycle_state == "FAILED"
    assert clusters.get_cluster(svc, caller, cluster_id).value.capacity.used_endpoint_capacity == 0
    # a FAILED endpoint hosts nothing: its model can go, and the endpoint is deleted in its own time
    models.delete_model(svc, caller, model_id)
    assert model_state(svc, model_id) == "DELETED"
    err = outcome(lambda: clusters.delete_cluster(svc, caller, cluster_id))
    assert isinstance(err, ServiceError) and err.status == 409 and "1 endpoint(s)" in err.message
    endpoints.delete_endpoint(svc, caller, endpoint.id)
    clusters.delete_cluster(svc, caller, cluster_id)


def test_a_model_create_and_its_clusters_delete_never_both_win(store):
    svc, caller, _ = store

    def training_cluster() -> str:
        details = CreateDedicatedAiClusterDetails(
            type="FINE_TUNING", compartment_id=COMPARTMENT, unit_count=1, unit_shape="LARGE_GENERIC"
        )
        return clusters.create_cluster(svc, caller, details).value.id

    def create(cluster_id: str):
        dataset = {"namespaceName": objects.namespace_of(caller), "bucketName": "datasets", "objectName": "races/train.jsonl"}
        details = {
            "compartmentId": COMPARTMENT,
            "baseModelId": LORA_MODEL,
            "fineTuneDetails": {
                "trainingDataset": dataset,
                "dedicatedAiClusterId": cluster_id,
                "trainingConfig": {"trainingConfigType": "LORA_TRAINING_CONFIG", "totalTrainingEpochs": 1},
            },
        }
        return models.create_model(svc, caller, CreateModelDetails.model_validate(details))

    # The delete counted no job before the create queued one: the delete must lose.
    cluster_id = training_cluster()
    deleted, created = race(svc, lambda: clusters.delete_cluster(svc, caller, cluster_id), lambda: create(cluster_id))
    assert not isinstance(created, ServiceError), created.message
    assert isinstance(deleted, ServiceError), "the cluster was deleted while a job was queued on it"
    assert deleted.status == 409 and "has 1 training job(s) queued or running" in deleted.message
    assert clusters.get_cluster(svc, caller, cluster_id).value.lifecycle_state == "ACTIVE"

    # The create found the cluster ACTIVE before the delete committed: the create must lose.
    cluster_id = training_cluster()
    created, deleted = race(svc, lambda: create(cluster_id), lambda: clusters.delete_cluster(svc, caller, cluster_id))
    assert not isinstance(deleted, ServiceError), deleted.message
    assert isinstance(created, ServiceError), "a job was queued on a deleted cluster"
    assert created.status == 400
    assert created.message == (
        f"fineTuneDetails.dedicatedAiClusterId: cluster {cluster_id!r} was deleted while the model was being created"
    )
    assert models.models_on_cluster(svc, caller, cluster_id) == []
