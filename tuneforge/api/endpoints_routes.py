"""/20231130/endpoints: HTTP <-> tuneforge.services.resources.endpoints."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Response

from tuneforge.api.deps import CallerDep, CompartmentId, IfMatch, Limit, Page, QueryStr, RetryToken, ServicesDep, SortOrder
from tuneforge.api.protocol import send_accepted, send_answer, send_page
from tuneforge.services.resources import endpoints
from tuneforge.services.schemas.resources import (
    ChangeCompartmentDetails,
    CreateEndpointDetails,
    Endpoint,
    EndpointCollection,
    UpdateEndpointDetails,
)

router = APIRouter(prefix="/20231130", tags=["endpoints"])
EndpointState = Literal["ACTIVE", "CREATING", "UPDATING", "DELETING", "DELETED", "FAILED"]


@router.post("/endpoints", response_model=Endpoint, response_model_exclude_none=True)
def create_endpoint(
    details: CreateEndpointDetails, caller: CallerDep, svc: ServicesDep, response: Response, retry_token: RetryToken = None
) -> Endpoint:
    return send_answer(response, endpoints.create_endpoint(svc, caller, details, retry_token))


@router.get("/endpoints/{endpointId}", response_model=Endpoint, response_model_exclude_none=True)
def get_endpoint(endpointId: str, caller: CallerDep, svc: ServicesDep, response: Response) -> Endpoint:
    return send_answer(response, endpoints.get_endpoint(svc, caller, endpointId))


@router.get("/endpoints", response_model=EndpointCollection, response_model_exclude_none=True)
def list_endpoints(
    caller: CallerDep,
    svc: ServicesDep,
    response: Response,
    compartmentId: CompartmentId,
    lifecycleState: EndpointState | None = None,
    displayName: QueryStr = None,
    id: QueryStr = None,
    generativeAiPrivateEndpointId: QueryStr = None,
    limit: Limit = None,
    page: Page = None,
    sortOrder: SortOrder = None,
    sortBy: Literal["displayName", "timeCreated"] | None = None,
) -> EndpointCollection:
    found = endpoints.list_endpoints(
        svc,
        caller,
        compartmentId,
        lifecycle_state=lifecycleState,
        display_name=displayName,
        endpoint_id=id,
        page=page,
        limit=limit,
        sort_by=sortBy,
        sort_order=sortOrder,
    )
    return EndpointCollection(items=send_page(response, found))


@router.put("/endpoints/{endpointId}", response_model=Endpoint, response_model_exclude_none=True)
def update_endpoint(
    endpointId: str,
    details: UpdateEndpointDetails,
    caller: CallerDep,
    svc: ServicesDep,
    response: Response,
    if_match: IfMatch = None,
) -> Endpoint:
    return send_answer(response, endpoints.update_endpoint(svc, caller, endpointId, details, if_match))


@router.post("/endpoints/{endpointId}/actions/changeCompartment", status_code=200, response_class=Response)
def change_endpoint_compartment(
    endpointId: str,
    details: ChangeCompartmentDetails,
    caller: CallerDep,
    svc: ServicesDep,
    if_match: IfMatch = None,
    retry_token: RetryToken = None,
) -> Response:
    endpoints.change_compartment(svc, caller, endpointId, details.compartment_id, if_match)
    return Response(status_code=200)


@router.delete("/endpoints/{endpointId}", status_code=202, response_class=Response)
def delete_endpoint(endpointId: str, caller: CallerDep, svc: ServicesDep, if_match: IfMatch = None) -> Response:
    return send_accepted(endpoints.delete_endpoint(svc, caller, endpointId, if_match))
