"""The official `oci` SDK's clients for a test server, signed with a test identity's API key."""

from __future__ import annotations

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
