"""The console's cluster pages through FastAPI's TestClient: list, create (errors next to their
fields), read (the models trained on a fine-tuning cluster, the endpoints on a hosting one and its
replicas, real replica processes) and delete, all through tuneforge.services.resources.clusters;
another tenancy sees none of them."""

from __future__ import annotations

import dataclasses
import re

import psutil
from helpers.console import TENANCY_A, create_model, field_errors
from helpers.fine_tuning import LORA_MODEL
from helpers.waiting import wait_for


def new_cluster(console, **fields):
    page = console.client.get("/console/clusters/new").text
    form = {
        "csrf": console.csrf("/console/clusters/new"),
        "retryToken": re.search(r'name="retryToken" value="([^"]+)"', page).group(1),
        "type": "FINE_TUNING",
        "compartmentId": "ocid1.compartment.oc1..aaaaweb",
        "unitCount": "2",
        "unitShape": "LARGE_GENERIC",
        "displayName": "pool-a",
        **fields,
    }
    return console.client.post("/console/clusters/new", data=form, follow_redirects=False)


def host_a_base_model(console_app, cluster_id: str) -> str:
    """An endpoint on the hosting cluster, made through the service layer (the console does not create endpoints)."""
    from tuneforge.services.context import Caller
    from tuneforge.services.resources import endpoints
    from tuneforge.services.schemas.resources import CreateEndpointDetails

    app, _ = console_app
    details = CreateEndpointDetails(
        compartment_id=TENANCY_A, model_id=LORA_MODEL, dedicated_ai_cluster_id=cluster_id, display_name="chat"
    )
    return endpoints.create_endpoint(app.state.services, Caller(TENANCY_A, "alice"), details).value.id


def test_create_list_read_and_delete_clusters(alice, bob, console_app):
    created = new_cluster(alice)
    assert created.status_code == 303
    cluster_id = created.headers["location"].rsplit("/", 1)[-1]
    hosting = new_cluster(alice, type="HOSTING", unitCount="1", displayName="host-a").headers["location"].rsplit("/", 1)[-1]
    listing = alice.client.get("/console/clusters").text
    assert re.search(
        rf'id="clusters-fine_tuning".*data-cluster-id="{cluster_id}".*id="clusters-hosting".*data-cluster-id="{hosting}"',
        listing,
        re.S,
    )
    assert "0 of 50" in listing

    # A model on the cluster appears on its page; the create form offers the cluster.
    model_id = create_model(alice, cluster=cluster_id)
    page = alice.client.get(f"/console/clusters/{cluster_id}").text
    assert f'data-model-id="{model_id}"' in page and "2 × LARGE_GENERIC" in page
    assert cluster_id in alice.client.get("/console/models/new").text
    assert "0 of 50 endpoints used" in alice.client.get(f"/console/clusters/{hosting}").text
    endpoint_id = host_a_base_model(console_app, hosting)
    page = alice.client.get(f"/console/clusters/{hosting}").text
    assert f'data-endpoint-id="{endpoint_id}"' in page and "1 of 50 endpoints used" in page
    assert "1 of 50" in alice.client.get("/console/clusters").text

    # Another tenancy sees none of it.
    assert cluster_id not in bob.client.get("/console/clusters").text
    assert bob.client.get(f"/console/clusters/{cluster_id}").status_code == 404
    assert bob.client.post(f"/console/clusters/{cluster_id}/delete", data={"csrf": bob.csrf()}).status_code == 404

    # Busy (its model is queued): the API's 409, in words; free again once the model is deleted.
    busy = alice.client.post(f"/console/clusters/{cluster_id}/delete", data={"csrf": alice.csrf()})
    assert busy.status_code == 409 and "training job(s) queued or running" in busy.text
    alice.client.post(f"/console/models/{model_id}/delete", data={"csrf": alice.csrf()})
    done = alice.client.post(f"/console/clusters/{cluster_id}/delete", data={"csrf": alice.csrf()}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/console/clusters"
    assert cluster_id not in alice.client.get("/console/clusters").text
    assert "state-DELETED" in alice.client.get(f"/console/clusters/{cluster_id}").text


def test_cluster_form_errors_are_tied_to_their_fields(alice):
    refused = new_cluster(alice, unitCount="0", unitShape="large generic", compartmentId="")
    assert refused.status_code == 400
    errors = field_errors(refused.text)
    assert errors["unitCount"] == "unitCount: 0 is not allowed; allowed: an integer from 1 to 1000"
    assert errors["unitShape"].startswith("unitShape: large generic is not allowed; allowed: capital letters")
    assert errors["compartmentId"].startswith("Name a compartment")
    unit_count = re.search(r'<input id="unitCount"[^>]*>', refused.text).group(0)
    assert 'aria-invalid="true"' in unit_count and 'aria-describedby="desc-unitCount err-unitCount"' in unit_count
    assert "There are 3 problems with this form" in refused.text and '<a href="#unitCount">' in refused.text
    assert "clusters-fine_tuning" in alice.client.get("/console/clusters").text
    assert 'class="empty">No fine-tuning clusters' in alice.client.get("/console/clusters").text  # nothing was created


def test_a_hosting_cluster_page_shows_its_replicas(alice, bob, console_app, tiny_llama):
    from tuneforge.services.actions import inference
    from tuneforge.services.context import Caller
    from tuneforge.services.resources import clusters, endpoints
    from tuneforge.services.schemas.resources import UpdateDedicatedAiClusterDetails

    app, _ = console_app
    svc = app.state.services
    svc.config = dataclasses.replace(svc.config, weights=str(tiny_llama))
    svc.warm_endpoint = lambda endpoint_id: inference.warm_endpoint(svc, endpoint_id)  # as `tuneforge serve` sets it
    owner = Caller(TENANCY_A, "alice")
    cluster_id = new_cluster(alice, type="HOSTING", unitCount="2", displayName="host-r").headers["location"].rsplit("/", 1)[-1]
    try:
        assert "No replicas running" in alice.client.get(f"/console/clusters/{cluster_id}").text
        endpoint_id = host_a_base_model(console_app, cluster_id)
        wait_for(lambda: endpoints.get_endpoint(svc, owner, endpoint_id).value.lifecycle_state == "ACTIVE", 180, "the endpoint")

        page = alice.client.get(f"/console/clusters/{cluster_id}").text
        rows = re.findall(r'data-replica="(\d+)" data-state="(\w+)">.*?<td data-label="Process">(\d+) on ', page, re.S)
        assert [(index, state) for index, state, _ in rows] == [("0", "running"), ("1", "running")], page
        for _, _, pid in rows:  # each a replica process of this server
            assert "tuneforge.hosting" in " ".join(psutil.Process(int(pid)).cmdline())
        assert bob.client.get(f"/console/clusters/{cluster_id}").status_code == 404

        clusters.update_cluster(svc, owner, cluster_id, UpdateDedicatedAiClusterDetails(unit_count=1))
        wait_for(
            lambda: re.findall(r'data-replica="(\d+)"', alice.client.get(f"/console/clusters/{cluster_id}").text) == ["0"],
            60,
            "the page to show one replica",
        )
    finally:
        if svc.hosting is not None:
            svc.hosting.shutdown()
