"""An update body with a field its resource does not take is refused, naming the field (it used to
answer 200 and change nothing, so `modelId` on an endpoint's update looked as if it had moved the
endpoint). What the official SDK sends (only the fields that are set, or explicit nulls) stays fine.
On a live server, on SQLite and PostgreSQL, through the SDK's signed requests."""

from __future__ import annotations

import oci
import pytest
from helpers.clients import clients

COMPARTMENT = "ocid1.compartment.oc1..aaaaupdatebodies"
m = oci.generative_ai.models


def raw(ai, method: str, path: str, body: dict):
    """A signed request with a body the SDK's models cannot express (a field they do not have)."""
    headers = {"accept": "application/json", "content-type": "application/json"}
    return ai.base_client.call_api(resource_path=path, method=method, header_params=headers, body=body, response_type="object")


def refused(call) -> oci.exceptions.ServiceError:
    with pytest.raises(oci.exceptions.ServiceError) as info:
        call()
    return info.value


@pytest.fixture(scope="module")
def ai(service, alice):
    return clients(service, alice)[0]


@pytest.fixture(scope="module")
def cluster(ai):
    details = m.CreateDedicatedAiClusterDetails(
        type="HOSTING", compartment_id=COMPARTMENT, unit_count=1, unit_shape="LARGE_GENERIC"
    )
    return ai.create_dedicated_ai_cluster(details).data


@pytest.mark.parametrize(
    ("path", "field", "value"),
    [
        ("/endpoints/{endpoint}", "modelId", "ocid1.generativeaimodel.oc1.local.other"),
        ("/endpoints/{endpoint}", "dedicatedAiClusterId", "ocid1.generativeaidedicatedaicluster.oc1.local.other"),
        ("/dedicatedAiClusters/{cluster}", "type", "FINE_TUNING"),
        ("/dedicatedAiClusters/{cluster}", "unitShape", "SMALL_COHERE"),
        ("/models/{model}", "baseModelId", "cohere.command-r-16k"),
    ],
)
def test_a_field_the_update_does_not_take_is_refused_by_name(ai, cluster, path, field, value):
    ids = {
        "cluster": cluster.id,
        "endpoint": "ocid1.generativeaiendpoint.oc1.local.any",
        "model": "ocid1.generativeaimodel.oc1.local.any",
    }
    err = refused(lambda: raw(ai, "PUT", path.format(**ids), {"displayName": "renamed", field: value}))
    assert err.status == 400 and err.code == "InvalidParameter"
    assert err.message.startswith(f'{field}: "{value}" is not allowed'), err.message


def test_what_the_sdk_sends_is_still_fine(ai, cluster):
    etag = ai.get_dedicated_ai_cluster(cluster.id).headers["etag"]
    renamed = ai.update_dedicated_ai_cluster(cluster.id, m.UpdateDedicatedAiClusterDetails(display_name="renamed"), if_match=etag)
    assert renamed.data.display_name == "renamed" and renamed.data.unit_count == 1
    nulls = raw(ai, "PUT", f"/dedicatedAiClusters/{cluster.id}", {"displayName": "again", "description": None, "unitCount": None})
    assert nulls.status == 200 and nulls.data["displayName"] == "again" and nulls.data["unitCount"] == 1


def test_keep_best_refuses_a_misspelt_field(ai):
    err = refused(
        lambda: raw(ai, "POST", "/sweeps/ocid1.generativeaisweep.oc1.local.any/actions/keepBest", {"deleteOthers": True})
    )
    assert err.status == 400 and err.message.startswith("deleteOthers: true is not allowed"), err.message
