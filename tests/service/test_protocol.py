"""OCI protocol details the SDK relies on, through the real SDK: paging, idempotency, etags,
request ids, timestamps, error shapes and codes, tenancy isolation, signature checks."""

from __future__ import annotations

import re

import oci
import pytest
import requests
from helpers.clients import clients, service_error, signed_session
from helpers.fine_tuning import create_cluster, dataset_lines, lora_model_details, upload
from helpers.identities import new_identity
from helpers.waiting import wait_for

COMPARTMENT = "ocid1.compartment.oc1..aaaaprotocol"
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture(scope="module")
def sdk(service, alice):
    return clients(service, alice)


@pytest.fixture(scope="module")
def cluster(sdk):
    return create_cluster(sdk[0], COMPARTMENT)


@pytest.fixture(scope="module")
def dataset(sdk):
    return upload(sdk[1], "protocol/train.jsonl", dataset_lines(32))


def test_list_pages_with_opc_next_page(sdk):
    ai, _ = sdk
    compartment = COMPARTMENT + "paging"
    made = {create_cluster(ai, compartment, display_name=f"pool-{i}").id for i in range(5)}
    first = ai.list_dedicated_ai_clusters(compartment_id=compartment, limit=2)
    assert len(first.data.items) == 2 and first.headers["opc-next-page"]
    every = oci.pagination.list_call_get_all_results(ai.list_dedicated_ai_clusters, compartment_id=compartment, limit=2).data
    assert {c.id for c in every} == made
    by_name = oci.pagination.list_call_get_all_results(
        ai.list_dedicated_ai_clusters, compartment_id=compartment, limit=2, sort_by="displayName", sort_order="ASC"
    ).data
    assert [c.display_name for c in by_name] == [f"pool-{i}" for i in range(5)]
    models = oci.pagination.list_call_get_all_results(ai.list_models, compartment_id=compartment, limit=2).data
    assert len(models) == 5 and all(m.type == "BASE" for m in models)  # the catalog pages like anything else


def test_retried_create_returns_the_same_model_and_one_job(sdk, cluster, dataset):
    ai, _ = sdk
    details = lora_model_details(COMPARTMENT, cluster.id, dataset)
    first = ai.create_model(details, opc_retry_token="retry-token-one")
    again = ai.create_model(details, opc_retry_token="retry-token-one")
    assert again.data.id == first.data.id
    assert again.headers["opc-work-request-id"] == first.headers["opc-work-request-id"]
    wrs = ai.list_work_requests(compartment_id=COMPARTMENT, resource_id=first.data.id).data.items
    assert [w.operation_type for w in wrs] == ["CREATE_MODEL"]
    # Deleting cancels the job (queued or running) and the model ends DELETED.
    deleted = ai.delete_model(first.data.id)
    assert deleted.status == 202 and deleted.headers["opc-work-request-id"]
    wait_for(lambda: ai.get_model(first.data.id).data.lifecycle_state == "DELETED", 120, "the model to be deleted")
    create_wr = ai.get_work_request(first.headers["opc-work-request-id"]).data
    assert create_wr.status in ("CANCELED", "SUCCEEDED")
    assert ai.get_work_request(deleted.headers["opc-work-request-id"]).data.status == "SUCCEEDED"
    assert first.data.id not in {m.id for m in ai.list_models(compartment_id=COMPARTMENT).data.items}


def test_invalid_hyperparameter_is_400_naming_it(sdk, cluster, dataset):
    ai, _ = sdk
    err = service_error(lambda: ai.create_model(lora_model_details(COMPARTMENT, cluster.id, dataset, lora_r=100)))
    assert (err.status, err.code) == (400, "InvalidParameter")
    assert "fineTuneDetails.trainingConfig.loraR" in err.message and "1 to 64" in err.message
    tfew = oci.generative_ai.models.TFewTrainingConfig(total_training_epochs=1)
    details = lora_model_details(COMPARTMENT, cluster.id, dataset)
    details.fine_tune_details.training_config = tfew
    err = service_error(lambda: ai.create_model(details))
    assert err.status == 400 and "trainingConfigType" in err.message and "LORA_TRAINING_CONFIG" in err.message


def test_bad_dataset_is_400_naming_the_line(sdk, cluster):
    ai, objects = sdk
    body = dataset_lines(32).replace(b'"completion"', b'"answer"', 1) + b"not json\n"
    bad = upload(objects, "protocol/bad.jsonl", body)
    err = service_error(lambda: ai.create_model(lora_model_details(COMPARTMENT, cluster.id, bad)))
    assert err.status == 400 and err.code == "InvalidParameter"
    assert "line 1" in err.message and "line 33" in err.message
    missing = dict(bad, object_name="protocol/nothing.jsonl")
    err = service_error(lambda: ai.create_model(lora_model_details(COMPARTMENT, cluster.id, missing)))
    assert err.status == 400 and "protocol/nothing.jsonl" in err.message


def test_unknown_base_model_and_wrong_cluster_are_400(sdk, cluster, dataset):
    ai, _ = sdk
    details = lora_model_details(COMPARTMENT, cluster.id, dataset)
    details.base_model_id = "meta.llama-9-1t"
    err = service_error(lambda: ai.create_model(details))
    assert err.status == 400 and "baseModelId" in err.message
    hosting = ai.create_dedicated_ai_cluster(
        oci.generative_ai.models.CreateDedicatedAiClusterDetails(
            type="HOSTING", compartment_id=COMPARTMENT, unit_count=1, unit_shape="LARGE_GENERIC"
        )
    ).data
    assert hosting.capacity.total_endpoint_capacity == 50
    err = service_error(lambda: ai.create_model(lora_model_details(COMPARTMENT, hosting.id, dataset)))
    assert err.status == 400 and "dedicatedAiClusterId" in err.message and "FINE_TUNING" in err.message


def test_etag_and_if_match(sdk):
    ai, _ = sdk
    made = ai.create_dedicated_ai_cluster(
        oci.generative_ai.models.CreateDedicatedAiClusterDetails(
            type="FINE_TUNING", compartment_id=COMPARTMENT, unit_count=1, unit_shape="SMALL_COHERE"
        )
    )
    got = ai.get_dedicated_ai_cluster(made.data.id)
    assert got.headers["etag"] == made.headers["etag"]
    update = oci.generative_ai.models.UpdateDedicatedAiClusterDetails(display_name="renamed")
    err = service_error(lambda: ai.update_dedicated_ai_cluster(made.data.id, update, if_match="stale-etag"))
    assert (err.status, err.code) == (412, "PreconditionFailed")
    updated = ai.update_dedicated_ai_cluster(made.data.id, update, if_match=got.headers["etag"])
    assert updated.data.display_name == "renamed" and updated.headers["etag"] != got.headers["etag"]
    err = service_error(lambda: ai.delete_dedicated_ai_cluster(made.data.id, if_match=got.headers["etag"]))
    assert err.status == 412
    ai.delete_dedicated_ai_cluster(made.data.id, if_match=updated.headers["etag"])
    assert ai.get_dedicated_ai_cluster(made.data.id).data.lifecycle_state == "DELETED"


def test_request_id_is_echoed_and_times_are_rfc3339(service, alice, sdk, cluster):
    ai, _ = sdk
    response = ai.get_dedicated_ai_cluster(cluster.id, opc_request_id="MYREQUEST1")
    assert response.headers["opc-request-id"] == "MYREQUEST1"
    err = service_error(lambda: ai.get_model("ocid1.generativeaimodel.oc1.local.nothing", opc_request_id="MYREQUEST2"))
    assert err.status == 404 and err.code == "NotAuthorizedOrNotFound"
    assert err.headers["opc-request-id"] == "MYREQUEST2"
    raw = signed_session(alice).get(f"{service.endpoint}/20231130/dedicatedAiClusters/{cluster.id}").json()
    assert RFC3339_MS.match(raw["timeCreated"])
    assert "timeUpdated" not in raw  # None fields are omitted


def test_other_tenancy_sees_nothing(service, sdk, bob, cluster, dataset):
    _ai, _objects = sdk
    bob_ai, bob_objects = clients(service, bob)
    assert service_error(lambda: bob_ai.get_dedicated_ai_cluster(cluster.id)).status == 404
    assert bob_ai.list_dedicated_ai_clusters(compartment_id=COMPARTMENT).data.items == []
    err = service_error(lambda: bob_objects.get_object(dataset["namespace_name"], dataset["bucket_name"], dataset["object_name"]))
    assert err.status == 404
    assert bob_objects.get_namespace().data != dataset["namespace_name"]
    # Bob cannot train on Alice's data or in Alice's cluster either.
    err = service_error(lambda: bob_ai.create_model(lora_model_details(COMPARTMENT, cluster.id, dataset)))
    assert err.status == 400


def test_wrong_key_unsigned_and_tampered_requests_are_401(service, alice, cluster):
    stranger = new_identity("stranger")  # never registered
    ai, _ = clients(service, stranger)
    err = service_error(lambda: ai.list_dedicated_ai_clusters(compartment_id=COMPARTMENT))
    assert (err.status, err.code) == (401, "NotAuthenticated")
    impostor = new_identity("impostor")  # signs as Alice's keyId with another key
    impostor.tenancy, impostor.user, impostor.fingerprint = alice.tenancy, alice.user, alice.fingerprint
    err = service_error(lambda: clients(service, impostor)[0].get_dedicated_ai_cluster(cluster.id))
    assert err.status == 401
    unsigned = requests.get(f"{service.endpoint}/20231130/dedicatedAiClusters/{cluster.id}")
    assert unsigned.status_code == 401 and unsigned.json()["code"] == "NotAuthenticated"
    assert unsigned.headers["opc-request-id"]
    # A body changed after signing no longer matches x-content-sha256.
    session = signed_session(alice)
    prepared = session.prepare_request(
        requests.Request(
            "POST",
            f"{service.endpoint}/20231130/dedicatedAiClusters",
            json={"type": "HOSTING", "compartmentId": COMPARTMENT, "unitCount": 1, "unitShape": "X"},
        )
    )
    prepared.body = (
        prepared.body.replace(b"HOSTING", b"FINE_TUNING")
        if isinstance(prepared.body, bytes)
        else prepared.body.replace("HOSTING", "FINE_TUNING")
    )
    prepared.headers["content-length"] = str(len(prepared.body))
    assert session.send(prepared).status_code == 401
    # A replayed request from long ago is refused.
    stale = session.prepare_request(
        requests.Request(
            "GET",
            f"{service.endpoint}/20231130/dedicatedAiClusters/{cluster.id}",
            headers={"date": "Mon, 01 Jan 2024 00:00:00 GMT"},
        )
    )
    assert session.send(stale).status_code == 401


def test_validation_errors_are_400_invalid_parameter(service, alice):
    session = signed_session(alice)
    missing = session.get(f"{service.endpoint}/20231130/models")
    assert missing.status_code == 400
    assert missing.json() == {"code": "InvalidParameter", "message": "compartmentId: is required"}
    bad_enum = session.get(f"{service.endpoint}/20231130/models", params={"compartmentId": COMPARTMENT, "lifecycleState": "NOPE"})
    assert bad_enum.status_code == 400 and "lifecycleState" in bad_enum.json()["message"]
    bad_json = session.post(
        f"{service.endpoint}/20231130/models", data=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 400 and bad_json.json()["code"] == "InvalidParameter"
    bad_page = session.get(
        f"{service.endpoint}/20231130/dedicatedAiClusters", params={"compartmentId": COMPARTMENT, "page": "zzz"}
    )
    assert bad_page.status_code == 400 and "page" in bad_page.json()["message"]


def test_object_storage_round_trip(sdk):
    _, objects = sdk
    ns = objects.get_namespace().data
    put = objects.put_object(ns, "roundtrip", "a/b/../c.jsonl", b"hello\n")
    assert put.headers["etag"] and put.headers["opc-content-md5"]
    got = objects.get_object(ns, "roundtrip", "a/b/../c.jsonl")
    assert got.data.content == b"hello\n"
    head = objects.head_object(ns, "roundtrip", "a/b/../c.jsonl")
    assert head.headers["etag"] == put.headers["etag"] and head.headers["content-length"] == "6"
    objects.put_object(ns, "roundtrip", "top.jsonl", b"x")
    listing = objects.list_objects(ns, "roundtrip", fields="name,size").data
    assert [o.name for o in listing.objects] == ["a/b/../c.jsonl", "top.jsonl"]
    folded = objects.list_objects(ns, "roundtrip", delimiter="/").data
    assert folded.prefixes == ["a/"] and [o.name for o in folded.objects] == ["top.jsonl"]
    paged = objects.list_objects(ns, "roundtrip", limit=1).data
    assert paged.next_start_with == "top.jsonl"
    assert objects.get_bucket(ns, "roundtrip").data.name == "roundtrip"  # created by the first put
    objects.delete_object(ns, "roundtrip", "top.jsonl")
    assert service_error(lambda: objects.head_object(ns, "roundtrip", "top.jsonl")).status == 404
    err = service_error(lambda: objects.put_object(ns, "roundtrip", "a/b/../c.jsonl", b"again", if_none_match="*"))
    assert err.status == 412


def test_unstorable_input_is_400_not_500(service, alice, sdk):
    session = signed_session(alice)
    url = f"{service.endpoint}/20231130/dedicatedAiClusters"
    base = '{"type": "HOSTING", "compartmentId": "%s", "unitCount": 1, "unitShape": "X", "displayName": "%s"}'
    for name in ("lone \\ud800 surrogate", "nul \\u0000 char", "x" * 300):
        response = session.post(url, data=(base % (COMPARTMENT, name)).encode(), headers={"content-type": "application/json"})
        assert response.status_code == 400, (name, response.text)
        assert "displayName" in response.json()["message"]
    huge = session.post(url, json={"type": "HOSTING", "compartmentId": COMPARTMENT, "unitCount": 10**30, "unitShape": "X"})
    assert huge.status_code == 400 and "unitCount" in huge.json()["message"]
    _, objects = sdk
    ns = objects.get_namespace().data
    assert service_error(lambda: objects.put_object(ns, "limits", "é" * 600, b"x")).status == 400  # 1200 bytes
    # "bad/bucket" makes a path that matches no Object Storage operation: 501, never a misleading 404
    assert service_error(lambda: objects.put_object(ns, "bad/bucket", "x", b"x")).status == 501
    assert session.get(f"{service.endpoint}/20231130/models/a%00b").status_code == 400
