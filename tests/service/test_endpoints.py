"""Endpoints through the official SDK: a fine-tuned model hosted on a HOSTING cluster, with OCI's
rules (ACTIVE model, one base model per cluster, the unit shape's family, 50 per cluster), lifecycle
and work requests, and what hosting forbids (deleting a hosted model or a busy cluster)."""

from __future__ import annotations

import oci
import pytest
from helpers.clients import clients, service_error
from helpers.fine_tuning import create_cluster, dataset_lines, lora_model_details, upload, wait_work_request

COMPARTMENT = "ocid1.compartment.oc1..aaaahosting"
m = oci.generative_ai.models


@pytest.fixture(scope="module")
def trained(service, alice):
    ai, objects = clients(service, alice)
    dataset = upload(objects, "hosting/train.jsonl", dataset_lines(40))
    cluster = create_cluster(ai, COMPARTMENT)
    created = ai.create_model(lora_model_details(COMPARTMENT, cluster.id, dataset))
    assert wait_work_request(ai, created.headers["opc-work-request-id"]).status == "SUCCEEDED"
    return ai, created.data.id


def hosting_cluster(ai, shape: str = "LARGE_GENERIC"):
    return ai.create_dedicated_ai_cluster(
        m.CreateDedicatedAiClusterDetails(type="HOSTING", compartment_id=COMPARTMENT, unit_count=1, unit_shape=shape)
    ).data


def test_endpoint_lifecycle(trained):
    ai, model_id = trained
    cluster = hosting_cluster(ai)
    details = m.CreateEndpointDetails(
        compartment_id=COMPARTMENT,
        model_id=model_id,
        dedicated_ai_cluster_id=cluster.id,
        display_name="support-bot",
        content_moderation_config=m.ContentModerationConfig(is_enabled=False),
    )
    created = ai.create_endpoint(details)
    wr = wait_work_request(ai, created.headers["opc-work-request-id"])
    assert wr.status == "SUCCEEDED" and wr.operation_type == "CREATE_ENDPOINT"
    endpoint = ai.get_endpoint(created.data.id).data
    assert (
        endpoint.lifecycle_state == "ACTIVE" and endpoint.model_id == model_id and endpoint.dedicated_ai_cluster_id == cluster.id
    )
    assert endpoint.content_moderation_config.is_enabled is False
    assert ai.get_dedicated_ai_cluster(cluster.id).data.capacity.used_endpoint_capacity == 1
    listed = oci.pagination.list_call_get_all_results(ai.list_endpoints, compartment_id=COMPARTMENT).data
    assert endpoint.id in {e.id for e in listed}

    etag = ai.get_endpoint(endpoint.id).headers["etag"]
    renamed = ai.update_endpoint(endpoint.id, m.UpdateEndpointDetails(display_name="renamed"), if_match=etag).data
    assert renamed.display_name == "renamed"
    assert (
        service_error(lambda: ai.update_endpoint(endpoint.id, m.UpdateEndpointDetails(display_name="x"), if_match=etag)).status
        == 412
    )
    ai.change_endpoint_compartment(endpoint.id, m.ChangeEndpointCompartmentDetails(compartment_id=COMPARTMENT + "moved"))
    assert ai.get_endpoint(endpoint.id).data.compartment_id == COMPARTMENT + "moved"

    # hosting protects what it hosts
    assert service_error(lambda: ai.delete_model(model_id, retry_strategy=oci.retry.NoneRetryStrategy())).status == 409
    assert (
        service_error(lambda: ai.delete_dedicated_ai_cluster(cluster.id, retry_strategy=oci.retry.NoneRetryStrategy())).status
        == 409
    )
    deleted = ai.delete_endpoint(endpoint.id)
    assert wait_work_request(ai, deleted.headers["opc-work-request-id"]).status == "SUCCEEDED"
    assert ai.get_endpoint(endpoint.id).data.lifecycle_state == "DELETED"
    assert ai.get_dedicated_ai_cluster(cluster.id).data.capacity.used_endpoint_capacity == 0


def test_endpoint_rules(trained, service, bob):
    ai, model_id = trained
    hosting = hosting_cluster(ai)
    fine_tuning = create_cluster(ai, COMPARTMENT)

    def refused(**kw):
        details = m.CreateEndpointDetails(
            **{"compartment_id": COMPARTMENT, "model_id": model_id, "dedicated_ai_cluster_id": hosting.id, **kw}
        )
        err = service_error(lambda: ai.create_endpoint(details))
        assert err.status == 400, err
        return err.message

    assert "endpoints need a HOSTING cluster" in refused(dedicated_ai_cluster_id=fine_tuning.id)
    assert "does not host meta models" in refused(dedicated_ai_cluster_id=hosting_cluster(ai, "SMALL_COHERE_V2").id)
    assert "no model" in refused(model_id="ocid1.generativeaimodel.oc1.local.nosuchmodel")
    # bob's tenancy sees nothing of alice's
    bob_ai, _ = clients(service, bob)
    err = service_error(
        lambda: bob_ai.create_endpoint(
            m.CreateEndpointDetails(compartment_id=COMPARTMENT, model_id=model_id, dedicated_ai_cluster_id=hosting.id)
        )
    )
    assert err.status == 400 and "in your tenancy" in err.message

    # one base model per hosting cluster: the first endpoint decides
    base = next(
        x for x in ai.list_models(compartment_id=COMPARTMENT).data.items if x.display_name == "meta.llama-3.1-70b-instruct"
    )
    ai.create_endpoint(m.CreateEndpointDetails(compartment_id=COMPARTMENT, model_id=base.id, dedicated_ai_cluster_id=hosting.id))
    assert "share one base model" in refused()


def test_fifty_endpoints_per_cluster(trained):
    ai, _ = trained
    hosting = hosting_cluster(ai)
    base = next(
        x for x in ai.list_models(compartment_id=COMPARTMENT).data.items if x.display_name == "meta.llama-3.3-70b-instruct"
    )
    details = m.CreateEndpointDetails(compartment_id=COMPARTMENT, model_id=base.id, dedicated_ai_cluster_id=hosting.id)
    for _ in range(50):
        ai.create_endpoint(details)
    err = service_error(lambda: ai.create_endpoint(details))
    assert err.status == 400 and "already hosts 50 endpoints" in err.message
    assert ai.get_dedicated_ai_cluster(hosting.id).data.capacity.used_endpoint_capacity == 50
