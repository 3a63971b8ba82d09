"""What a probe from outside found (issue 10, part A), each reproduced against a live server on
SQLite and on PostgreSQL: oversized and pathological requests, streamed uploads, concurrent
writers holding one etag, unbounded integers and tags, object names, the not-implemented answer."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import oci
import pytest
from helpers.clients import clients, service_error, signed_session
from helpers.fine_tuning import create_cluster, dataset_lines, lora_model_details, upload

COMPARTMENT = "ocid1.compartment.oc1..aaaaprobe"


@pytest.fixture(scope="module")
def sdk(service, alice):
    return clients(service, alice)


def raw_request(service, method: str, path: str, headers: dict[str, str], body: bytes | None = None, chunked: bool = False):
    """One HTTP request on a fresh connection, exactly as written (no client library fixing it up)."""
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=60)
    conn.putrequest(method, path, skip_host="host" in {k.lower() for k in headers}, skip_accept_encoding=True)
    for name, value in headers.items():
        conn.putheader(name, value)
    if chunked:
        conn.putheader("transfer-encoding", "chunked")
    conn.endheaders()
    if body is not None:
        conn.send(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if chunked else body)
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    return response.status, payload


# ---- 1. unauthenticated requests are bounded -------------------------------------------------


def test_pathological_authorization_headers_are_refused_at_once(service):
    # A 40,000-character header once cost 13 s of CPU in a backtracking regular expression.
    status, body = raw_request(service, "GET", "/20231130/models?compartmentId=x", {"authorization": "Signature " + "a" * 40_000})
    assert status == 431 and json.loads(body)["code"] == "RequestHeaderFieldsTooLarge"
    # The largest header that is parsed at all is parsed in one pass: 401, naming what is wrong.
    for value in ("a" * 8000, 'keyId="' + "a" * 7900, "a=" * 3900, ",=" * 3900):
        status, body = raw_request(service, "GET", "/20231130/models?compartmentId=x", {"authorization": "Signature " + value})
        assert status == 401 and json.loads(body)["code"] == "NotAuthenticated"


def test_bad_clients_do_not_hold_up_good_ones(service, sdk):
    """Many pathological requests at once, and a signed request among them: every one is answered."""
    ai, _ = sdk
    bad = ["Signature " + "a" * 8000, "Signature " + 'keyId="x",' * 700, "Signature " + "a" * 100_000]

    def attack(i: int) -> int:
        return raw_request(service, "GET", "/20231130/models?compartmentId=x", {"authorization": bad[i % len(bad)]})[0]

    with ThreadPoolExecutor(16) as pool:
        attacks = [pool.submit(attack, i) for i in range(48)]
        assert ai.list_models(compartment_id=COMPARTMENT).status == 200
        assert {f.result(timeout=120) for f in attacks} <= {401, 431, 400}


def test_an_unauthenticated_body_is_never_read(service):
    """A 100 MB JSON body without a signature: refused from its headers (413 declared, 401 otherwise)."""
    status, body = raw_request(
        service, "POST", "/20231130/models", {"content-type": "application/json", "content-length": str(100 * 2**20)}
    )
    assert status == 413 and json.loads(body)["code"] == "PayloadTooLarge"
    status, body = raw_request(
        service, "POST", "/20231130/models", {"content-type": "application/json"}, b"{" * 500_000, chunked=True
    )
    assert status == 401


def test_signed_bodies_are_limited(service, alice):
    session = signed_session(alice)
    url = f"{service.endpoint}/20231130/dedicatedAiClusters"
    big = {
        "type": "FINE_TUNING",
        "compartmentId": COMPARTMENT,
        "unitCount": 1,
        "unitShape": "X",
        "description": "x" * (2 * 2**20),
    }
    response = session.post(url, json=big)
    assert response.status_code == 413 and response.json()["code"] == "PayloadTooLarge"


# ---- 2. uploads store exactly the bytes sent, or nothing ------------------------------------


def test_put_object_needs_content_length_and_keeps_the_old_object(service, alice, sdk):
    _, objects = sdk
    ns = objects.get_namespace().data
    objects.put_object(ns, "probe", "kept.jsonl", b"the original\n")
    signer = oci.signer.Signer(alice.tenancy, alice.user, alice.fingerprint, None, private_key_content=alice.private_pem)
    path = f"/n/{ns}/b/probe/o/kept.jsonl"

    def signed_headers(extra: dict[str, str]) -> dict[str, str]:
        import requests

        prepared = requests.Request("PUT", service.endpoint + path, headers=extra).prepare()
        signer.without_content_headers(prepared)  # as the SDK signs PutObject: no body headers
        headers = dict(prepared.headers)
        if "content-length" not in extra:  # requests and the signer add 0; this client streams instead
            headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}
        return headers

    status, body = raw_request(service, "PUT", path, signed_headers({}), b"replacement that streams\n", chunked=True)
    assert status == 411 and json.loads(body)["code"] == "MissingContentLength"
    md5 = base64.b64encode(hashlib.md5(b"something else").digest()).decode()
    status, body = raw_request(
        service, "PUT", path, signed_headers({"content-length": "12", "content-md5": md5}), b"not that md5"
    )
    assert status == 422 and json.loads(body)["code"] == "UnprocessableEntity"
    assert objects.get_object(ns, "probe", "kept.jsonl").data.content == b"the original\n"
    # Content-MD5 that matches is accepted and echoed
    good = base64.b64encode(hashlib.md5(b"new bytes\n").digest()).decode()
    put = objects.put_object(ns, "probe", "kept.jsonl", b"new bytes\n", content_md5=good)
    assert put.headers["opc-content-md5"] == good


# ---- 3. if-match is atomic --------------------------------------------------------------------


def _race(n: int, attempt) -> list[int]:
    """n threads released together, each calling attempt(i) -> HTTP status."""
    barrier = threading.Barrier(n)

    def run(i: int) -> int:
        barrier.wait()
        return attempt(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def test_one_etag_one_winner(service, alice, sdk):
    ai, objects = sdk
    cluster = create_cluster(ai, COMPARTMENT, display_name="race")
    etag = ai.get_dedicated_ai_cluster(cluster.id).headers["etag"]
    clients_ = [clients(service, alice)[0] for _ in range(10)]

    def update(i: int) -> int:
        details = oci.generative_ai.models.UpdateDedicatedAiClusterDetails(display_name=f"winner-{i}")
        try:
            return (
                clients_[i]
                .update_dedicated_ai_cluster(cluster.id, details, if_match=etag, retry_strategy=oci.retry.NoneRetryStrategy())
                .status
            )
        except oci.exceptions.ServiceError as err:
            return err.status

    statuses = _race(10, update)
    assert statuses.count(200) == 1 and statuses.count(412) == 9, statuses
    winner = statuses.index(200)
    assert ai.get_dedicated_ai_cluster(cluster.id).data.display_name == f"winner-{winner}"

    # objects: concurrent replaces holding the same etag
    ns = objects.get_namespace().data
    etag = objects.put_object(ns, "probe", "race.txt", b"v0").headers["etag"]
    stores = [clients(service, alice)[1] for _ in range(10)]

    def replace(i: int) -> int:
        try:
            return (
                stores[i]
                .put_object(
                    ns, "probe", "race.txt", f"v{i + 1}".encode(), if_match=etag, retry_strategy=oci.retry.NoneRetryStrategy()
                )
                .status
            )
        except oci.exceptions.ServiceError as err:
            return err.status

    statuses = _race(10, replace)
    assert statuses.count(200) == 1 and statuses.count(412) == 9, statuses
    assert objects.get_object(ns, "probe", "race.txt").data.content == f"v{statuses.index(200) + 1}".encode()


# ---- 4, 5. integers and tags have OCI's bounds -----------------------------------------------


def test_integers_and_plans_are_bounded(sdk, alice, service):
    ai, objects = sdk
    cluster = create_cluster(ai, COMPARTMENT)
    dataset = upload(objects, "probe/train.jsonl", dataset_lines(40))
    body = {
        "compartmentId": COMPARTMENT,
        "baseModelId": "meta.llama-3.3-70b-instruct",
        "fineTuneDetails": {
            "trainingDataset": {
                "datasetType": "OBJECT_STORAGE",
                "namespaceName": dataset["namespace_name"],
                "bucketName": dataset["bucket_name"],
                "objectName": dataset["object_name"],
            },
            "dedicatedAiClusterId": cluster.id,
            "trainingConfig": {"trainingConfigType": "LORA_TRAINING_CONFIG", "totalTrainingEpochs": 10**30},
        },
    }
    response = signed_session(alice).post(f"{service.endpoint}/20231130/models", json=body)
    assert response.status_code == 400
    assert (
        "fineTuneDetails.trainingConfig.totalTrainingEpochs: 1000000000000000000000000000000 is not allowed"
        in response.json()["message"]
    )
    long = lora_model_details(COMPARTMENT, cluster.id, dataset, total_training_epochs=10_000_000)
    err = service_error(lambda: ai.create_model(long))
    assert err.status == 400 and "totalTrainingSteps = 40,000,000, above the maximum of 1,000,000" in err.message


def test_tags_have_ocis_limits(sdk):
    ai, _ = sdk
    make = oci.generative_ai.models.CreateDedicatedAiClusterDetails
    ok = ai.create_dedicated_ai_cluster(
        make(
            type="FINE_TUNING",
            compartment_id=COMPARTMENT,
            unit_count=1,
            unit_shape="X",
            freeform_tags={f"k{i}": "v" for i in range(64)},
        )
    ).data
    assert len(ok.freeform_tags) == 64
    too_many = make(
        type="FINE_TUNING",
        compartment_id=COMPARTMENT,
        unit_count=1,
        unit_shape="X",
        freeform_tags={f"k{i}": "v" for i in range(45_000)},
    )
    err = service_error(lambda: ai.create_dedicated_ai_cluster(too_many))
    assert err.status in (400, 413)
    err = service_error(
        lambda: ai.create_dedicated_ai_cluster(
            make(
                type="FINE_TUNING",
                compartment_id=COMPARTMENT,
                unit_count=1,
                unit_shape="X",
                freeform_tags={f"k{i}": "v" for i in range(65)},
            )
        )
    )
    assert err.status == 400 and "at most 64" in err.message
    err = service_error(
        lambda: ai.create_dedicated_ai_cluster(
            make(
                type="FINE_TUNING",
                compartment_id=COMPARTMENT,
                unit_count=1,
                unit_shape="X",
                freeform_tags={f"k{i}": "v" * 250 for i in range(30)},
            )
        )
    )
    assert err.status == 400 and "bytes of tags" in err.message


# ---- 6. multipart uploads, changeCompartment, not-implemented operations ---------------------


def test_multipart_upload_through_the_sdks_upload_manager(sdk, tmp_path):
    _, objects = sdk
    ns = objects.get_namespace().data
    data = bytes(range(256)) * (45 * 4096)  # 45 MiB: three 20 MiB parts, the last one short
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    manager = oci.object_storage.UploadManager(objects, allow_parallel_uploads=True, parallel_process_count=3)
    done = manager.upload_file(ns, "probe", "big/multipart.bin", str(source), part_size=20 * 2**20)
    assert done.status == 200 and done.headers["opc-multipart-md5"].endswith("-3")
    head = objects.head_object(ns, "probe", "big/multipart.bin")
    assert (
        int(head.headers["content-length"]) == len(data)
        and head.headers["opc-multipart-md5"] == done.headers["opc-multipart-md5"]
    )
    assert (
        hashlib.sha256(objects.get_object(ns, "probe", "big/multipart.bin").data.content).digest()
        == hashlib.sha256(data).digest()
    )
    assert objects.list_multipart_uploads(ns, "probe").data == []  # committed uploads are gone

    # list parts, abort
    made = objects.create_multipart_upload(
        ns, "probe", oci.object_storage.models.CreateMultipartUploadDetails(object="aborted.bin")
    ).data
    part = objects.upload_part(ns, "probe", "aborted.bin", made.upload_id, 1, b"x" * 1000)
    parts = objects.list_multipart_upload_parts(ns, "probe", "aborted.bin", made.upload_id).data
    assert [(p.part_number, p.size, p.etag) for p in parts] == [(1, 1000, part.headers["etag"])]
    assert [u.upload_id for u in objects.list_multipart_uploads(ns, "probe").data] == [made.upload_id]
    objects.abort_multipart_upload(ns, "probe", "aborted.bin", made.upload_id)
    assert service_error(lambda: objects.list_multipart_upload_parts(ns, "probe", "aborted.bin", made.upload_id)).status == 404
    assert service_error(lambda: objects.head_object(ns, "probe", "aborted.bin")).status == 404


def test_change_compartment_and_unimplemented_operations(sdk):
    ai, objects = sdk
    cluster = create_cluster(ai, COMPARTMENT + "from")
    ai.change_dedicated_ai_cluster_compartment(
        cluster.id, oci.generative_ai.models.ChangeDedicatedAiClusterCompartmentDetails(compartment_id=COMPARTMENT + "to")
    )
    assert ai.get_dedicated_ai_cluster(cluster.id).data.compartment_id == COMPARTMENT + "to"
    assert [c.id for c in ai.list_dedicated_ai_clusters(compartment_id=COMPARTMENT + "to").data.items] == [cluster.id]
    ns = objects.get_namespace().data
    details = oci.object_storage.models.CreatePreauthenticatedRequestDetails(
        name="par", access_type="ObjectRead", time_expires="2030-01-01T00:00:00Z"
    )
    err = service_error(lambda: objects.create_preauthenticated_request(ns, "probe", details))
    assert err.status == 501 and err.code == "NotImplemented"


def test_model_change_compartment(sdk):
    ai, objects = sdk
    cluster = create_cluster(ai, COMPARTMENT)
    dataset = upload(objects, "probe/move.jsonl", dataset_lines(40))
    model = ai.create_model(lora_model_details(COMPARTMENT, cluster.id, dataset)).data
    etag = ai.get_model(model.id).headers["etag"]
    ai.change_model_compartment(
        model.id, oci.generative_ai.models.ChangeModelCompartmentDetails(compartment_id=COMPARTMENT + "moved"), if_match=etag
    )
    assert ai.get_model(model.id).data.compartment_id == COMPARTMENT + "moved"
    stale = oci.generative_ai.models.ChangeModelCompartmentDetails(compartment_id=COMPARTMENT)
    assert service_error(lambda: ai.change_model_compartment(model.id, stale, if_match=etag)).status == 412
    ai.delete_model(model.id)


# ---- 7. a dataset too long for the model is refused at create ---------------------------------


def test_too_long_examples_are_refused_at_create_with_their_lines(sdk):
    ai, objects = sdk
    cluster = create_cluster(ai, COMPARTMENT)
    lines = dataset_lines(40).decode().splitlines()
    lines[6] = json.dumps({"prompt": "Is 7 odd? " * 300, "completion": "yes"})  # far past the tiny model's 512 positions
    dataset = upload(objects, "probe/too-long.jsonl", ("\n".join(lines) + "\n").encode())
    err = service_error(lambda: ai.create_model(lora_model_details(COMPARTMENT, cluster.id, dataset)))
    assert err.status == 400 and "line 7: prompt + completion is" in err.message
    assert "this model's context is 512 (the limit of these weights" in err.message and "/tmp" not in err.message


# ---- 8. object names ---------------------------------------------------------------------------


def test_object_names_are_kept_exactly_and_never_merged(service, alice, sdk):
    _, objects = sdk
    ns = objects.get_namespace().data
    for name in ("données/été 2024.jsonl", "a+b c%20d.txt", "数据/训练.jsonl", "tab\there", "emoji-😀"):
        objects.put_object(ns, "names", name, name.encode())
        assert objects.get_object(ns, "names", name).data.content == name.encode()
    listed = {o.name for o in objects.list_objects(ns, "names").data.objects}
    assert {"données/été 2024.jsonl", "a+b c%20d.txt", "数据/训练.jsonl", "tab\there", "emoji-😀"} <= listed
    for name, what in (("line\nfeed", "line feed"), ("carriage\rreturn", "carriage return")):
        err = service_error(lambda: objects.put_object(ns, "names", name, b"x"))  # noqa: B023 (called at once)
        assert err.status == 400 and what in err.message
    session = signed_session(alice)
    for raw in ("x%ff", "x%fe"):
        response = session.put(f"{service.endpoint}/n/{ns}/b/names/o/{raw}", data=b"bytes")
        assert response.status_code == 400 and "UTF-8" in response.json()["message"]
    assert not any(o.name.startswith("x") for o in objects.list_objects(ns, "names").data.objects)
