"""What a sweep says about itself, on SQLite and PostgreSQL, through the service layer and the sweep
coordinator's own steps (no server, no worker: every job stays where the test puts it, so each state
is reached deterministically):

- a trial whose training job waits in the queue is QUEUED, not RUNNING; RUNNING once a worker claimed it;
- keepBest on a CANCELED sweep none of whose trials finished says so (not "once it has finished");
- cancelling a CANCELED sweep is 409 (a CANCELING one answers as the first cancel did).
"""

from __future__ import annotations

import pytest
from helpers.fine_tuning import LORA_MODEL, dataset_lines

from tuneforge.jobs import queue
from tuneforge.services.background.sweep_coordinator import SweepCoordinator
from tuneforge.services.config import ServiceConfig
from tuneforge.services.context import Caller, Services
from tuneforge.services.errors import ServiceError
from tuneforge.services.resources import clusters, objects, sweeps
from tuneforge.services.schemas.resources import CreateBucketDetails, CreateDedicatedAiClusterDetails
from tuneforge.services.schemas.sweeps import CreateSweepDetails, KeepBestDetails
from tuneforge.store.db import open_store
from tuneforge.store.tables import JobRow, ModelRow

COMPARTMENT = "ocid1.compartment.oc1..aaaasweepstates"
CALLER = Caller(tenancy_id="ocid1.tenancy.oc1..aaaasweepstates", user_id="ocid1.user.oc1..aaaasweepstates")
BUCKET = "datasets"


@pytest.fixture
def store(fresh_service, tiny_weights):
    """Services on a store of its own (SQLite or PostgreSQL) with the dataset uploaded; no workers."""
    config = ServiceConfig(
        data_dir=fresh_service.data_dir, database_url=fresh_service.database_url, weights=str(tiny_weights), workers=0
    )
    sessions = open_store(config.url)
    svc = Services(config, sessions)
    namespace = objects.namespace_of(CALLER)
    objects.create_bucket(svc, CALLER, namespace, CreateBucketDetails(name=BUCKET, compartment_id=COMPARTMENT))
    objects.put_bytes(svc, CALLER, namespace, BUCKET, "train.jsonl", dataset_lines(40), "application/x-ndjson")
    try:
        yield svc
    finally:
        sessions.kw["bind"].dispose()


def new_sweep(svc: Services) -> str:
    cluster = CreateDedicatedAiClusterDetails(
        type="FINE_TUNING", compartment_id=COMPARTMENT, unit_count=2, unit_shape="LARGE_GENERIC"
    )
    cluster_id = clusters.create_cluster(svc, CALLER, cluster).value.id
    details = CreateSweepDetails.model_validate(
        {
            "compartmentId": COMPARTMENT,
            "baseModelId": LORA_MODEL,
            "dedicatedAiClusterId": cluster_id,
            "trainingDataset": {"namespaceName": objects.namespace_of(CALLER), "bucketName": BUCKET, "objectName": "train.jsonl"},
            "trainingConfig": {"trainingConfigType": "LORA_TRAINING_CONFIG", "totalTrainingEpochs": 1, "trainingBatchSize": 8},
            "trialCount": 3,
        }
    )
    return sweeps.create_sweep(svc, CALLER, details).value.id


def trial_states(svc: Services, sweep_id: str) -> dict[int, str]:
    return {t.number: t.state for t in sweeps.get_sweep(svc, CALLER, sweep_id).value.trials}


def refusal(call) -> ServiceError:
    with pytest.raises(ServiceError) as info:
        call()
    return info.value


def test_a_trial_waiting_in_the_queue_is_queued_not_running(store):
    svc = store
    sweep_id = new_sweep(svc)
    coordinator = SweepCoordinator(svc, lease_seconds=30)
    coordinator.step()  # claims the sweep, starts as many trials as the cluster has units (2): their jobs wait
    assert trial_states(svc, sweep_id) == {0: "QUEUED", 1: "QUEUED"}

    with svc.session() as session:  # a worker takes the oldest job (trial 0's), as a server's worker does
        claimed = queue.claim(session, "tests-worker:1", set(), lease_seconds=30)
        trial0_model = session.get(ModelRow, claimed.model_id)
        assert claimed.state == "RUNNING" and trial0_model.display_name.endswith("trial-000")
    coordinator.step()
    assert trial_states(svc, sweep_id) == {0: "RUNNING", 1: "QUEUED"}


def test_a_canceled_sweep_says_so(store):
    svc = store
    sweep_id = new_sweep(svc)
    coordinator = SweepCoordinator(svc, lease_seconds=30)
    coordinator.step()
    wr_id = sweeps.cancel_sweep(svc, CALLER, sweep_id)
    assert sweeps.cancel_sweep(svc, CALLER, sweep_id) == wr_id  # CANCELING: the same answer again
    for _ in range(10):  # each step stops what it can; a queued trial's model ends at once
        coordinator.step()
        if sweeps.get_sweep(svc, CALLER, sweep_id).value.lifecycle_state == "CANCELED":
            break
    sweep = sweeps.get_sweep(svc, CALLER, sweep_id).value
    assert sweep.lifecycle_state == "CANCELED" and set(trial_states(svc, sweep_id).values()) == {"FAILED"}
    with svc.session() as session:
        assert {job.state for job in session.query(JobRow)} == {"DONE"}

    kept = refusal(lambda: sweeps.keep_best(svc, CALLER, sweep_id, KeepBestDetails()))
    assert kept.status == 409
    assert kept.message == f"sweep {sweep_id} is CANCELED and none of its trials finished: there is no best to keep"
    again = refusal(lambda: sweeps.cancel_sweep(svc, CALLER, sweep_id))
    assert again.status == 409 and again.message == f"sweep {sweep_id} is already CANCELED"
