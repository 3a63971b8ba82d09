"""The official `oci` SDK's clients for a test server, signed with a test identity's API key."""

from __future__ import annotations

import oci
import pytest
import requests

from helpers.identities import Identity
from helpers.servers import Service


def clients(svc: Service, identity: Identity):
    """(GenerativeAiClient, ObjectStorageClient) pointed at `svc`."""
    import oci

    config = identity.config()
    return (
        oci.generative_ai.GenerativeAiClient(config, service_endpoint=svc.endpoint),
        oci.object_storage.ObjectStorageClient(config, service_endpoint=svc.endpoint),
    )


def signed_session(identity) -> requests.Session:
    session = requests.Session()
    session.auth = oci.signer.Signer(
        identity.tenancy, identity.user, identity.fingerprint, None, private_key_content=identity.private_pem
    )
    return session


def service_error(call) -> oci.exceptions.ServiceError:
    with pytest.raises(oci.exceptions.ServiceError) as info:
        call()
    return info.value


def native(ai, method: str, path: str, body: dict | None = None, **headers: str):
    """A signed request to a TuneForge-only route (the SDK has no sweeps client)."""
    header_params = {"accept": "application/json", "content-type": "application/json"}
    header_params.update({name.replace("_", "-"): value for name, value in headers.items()})
    return ai.base_client.call_api(
        resource_path=path, method=method, header_params=header_params, body=body, response_type="object"
    )
