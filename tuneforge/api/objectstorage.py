"""The Object Storage routes the SDK and the OCI CLI call: HTTP <-> tuneforge.services.resources.objects.

Object names are read from the raw request path and percent-decoded to bytes, then to UTF-8
strictly: a name is kept exactly as sent, `x%ff` and `x%fe` are not valid UTF-8 (400) rather than
two spellings of one object, and a line feed is refused by name rather than failing to route."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import unquote_to_bytes

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from starlette.convertors import Convertor, register_url_convertor

from tuneforge.api.deps import CallerDep, CompartmentId, IfMatch, IfNoneMatch, Limit, Page, ServicesDep
from tuneforge.api.protocol import send_page
from tuneforge.services.errors import invalid
from tuneforge.services.resources import objects
from tuneforge.services.schemas.resources import (
    Bucket,
    CommitMultipartUploadDetails,
    CreateBucketDetails,
    CreateMultipartUploadDetails,
    ListObjects,
    MultipartUpload,
    MultipartUploadPartSummary,
)


class _AnyText(Convertor):
    """Like Starlette's `path`, but also across line breaks, so that every object name reaches the
    route (and is judged by OCI's naming rule there) instead of silently matching nothing."""

    regex = "[\\s\\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anytext", _AnyText())
router = APIRouter(tags=["objectStorage"])
ContentLength = Annotated[str | None, Header(alias="content-length", max_length=20)]
ContentMd5 = Annotated[str | None, Header(alias="content-md5", max_length=64)]
UploadId = Annotated[str, Query(alias="uploadId", min_length=1, max_length=64)]


def object_name(request: Request, marker: bytes) -> str:
    """The object name exactly as the client sent it: the raw path after /b/<bucket>/<marker>/."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    parts = raw.split(b"/", 6)  # "", "n", ns, "b", bucket, "o"|"u", name
    if len(parts) < 7 or parts[5] != marker:
        raise invalid("objectName: is required")
    try:
        return objects.check_object_name(unquote_to_bytes(parts[6]).decode("utf-8"))
    except UnicodeDecodeError:
        raise invalid("objectName: must be valid UTF-8 (its percent-escapes do not decode to UTF-8)") from None


@router.get("/n", response_class=JSONResponse)
@router.get("/n/", response_class=JSONResponse, include_in_schema=False)
def get_namespace(caller: CallerDep) -> JSONResponse:
    return JSONResponse(objects.namespace_of(caller))


# ---- buckets --------------------------------------------------------------------------------


@router.post("/n/{namespaceName}/b", response_model=Bucket, response_model_exclude_none=True)
def create_bucket(namespaceName: str, details: CreateBucketDetails, caller: CallerDep, svc: ServicesDep) -> Bucket:
    return objects.create_bucket(svc, caller, namespaceName, details)


@router.get("/n/{namespaceName}/b/{bucketName}", response_model=Bucket, response_model_exclude_none=True)
def get_bucket(namespaceName: str, bucketName: str, caller: CallerDep, svc: ServicesDep) -> Bucket:
    return objects.get_bucket(svc, caller, namespaceName, bucketName)


@router.get("/n/{namespaceName}/b", response_model=list[Bucket], response_model_exclude_none=True)
def list_buckets(namespaceName: str, caller: CallerDep, svc: ServicesDep, compartmentId: CompartmentId) -> list[Bucket]:
    return objects.list_buckets(svc, caller, namespaceName, compartmentId)


@router.delete("/n/{namespaceName}/b/{bucketName}", status_code=204, response_class=Response)
def delete_bucket(namespaceName: str, bucketName: str, caller: CallerDep, svc: ServicesDep) -> Response:
    objects.delete_bucket(svc, caller, namespaceName, bucketName)
    return Response(status_code=204)


# ---- objects --------------------------------------------------------------------------------


@router.put("/n/{namespaceName}/b/{bucketName}/o/{objectName:anytext}", status_code=200, response_class=Response)
async def put_object(
    namespaceName: str,
    bucketName: str,
    objectName: str,
    request: Request,
    caller: CallerDep,
    svc: ServicesDep,
    content_length: ContentLength = None,
    content_md5: ContentMd5 = None,
    content_type: Annotated[str | None, Header(alias="content-type", max_length=255)] = None,
    if_match: IfMatch = None,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """Streams the body to a temporary file, checks its length (and MD5 when sent), then publishes it."""
    stored = await objects.put_object(
        svc,
        caller,
        namespaceName,
        bucketName,
        object_name(request, b"o"),
        request.stream(),
        content_length=content_length,
        content_md5=content_md5,
        content_type=content_type,
        if_match=if_match,
        if_none_match=if_none_match,
    )
    return Response(status_code=200, headers=stored.headers)


@router.get("/n/{namespaceName}/b/{bucketName}/o/{objectName:anytext}", response_class=FileResponse)
def get_object(namespaceName: str, bucketName: str, objectName: str, request: Request, caller: CallerDep, svc: ServicesDep):
    stored = objects.get_object(svc, caller, namespaceName, bucketName, object_name(request, b"o"))
    return FileResponse(stored.path, headers=stored.headers, media_type=stored.content_type)


@router.head("/n/{namespaceName}/b/{bucketName}/o/{objectName:anytext}", response_class=Response)
def head_object(
    namespaceName: str, bucketName: str, objectName: str, request: Request, caller: CallerDep, svc: ServicesDep
) -> Response:
    stored = objects.get_object(svc, caller, namespaceName, bucketName, object_name(request, b"o"))
    return Response(status_code=200, headers={**stored.headers, "content-length": str(stored.size)})


@router.delete("/n/{namespaceName}/b/{bucketName}/o/{objectName:anytext}", status_code=204, response_class=Response)
def delete_object(
    namespaceName: str,
    bucketName: str,
    objectName: str,
    request: Request,
    caller: CallerDep,
    svc: ServicesDep,
    if_match: IfMatch = None,
) -> Response:
    objects.delete_object(svc, caller, namespaceName, bucketName, object_name(request, b"o"), if_match)
    return Response(status_code=204)


@router.get("/n/{namespaceName}/b/{bucketName}/o", response_model=ListObjects, response_model_exclude_none=True)
def list_objects(
    namespaceName: str,
    bucketName: str,
    caller: CallerDep,
    svc: ServicesDep,
    prefix: Annotated[str | None, Query(max_length=1024)] = None,
    start: Annotated[str | None, Query(max_length=1024)] = None,
    end: Annotated[str | None, Query(max_length=1024)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    delimiter: Annotated[str | None, Query(pattern="^/$")] = None,
    fields: Annotated[str | None, Query(max_length=255)] = None,
    startAfter: Annotated[str | None, Query(max_length=1024)] = None,
) -> ListObjects:
    return objects.list_objects(
        svc,
        caller,
        namespaceName,
        bucketName,
        prefix=prefix,
        start=start,
        end=end,
        limit=limit,
        delimiter=delimiter,
        start_after=startAfter,
    )


# ---- multipart uploads ----------------------------------------------------------------------


@router.post("/n/{namespaceName}/b/{bucketName}/u", response_model=MultipartUpload, response_model_exclude_none=True)
def create_multipart_upload(
    namespaceName: str,
    bucketName: str,
    details: CreateMultipartUploadDetails,
    caller: CallerDep,
    svc: ServicesDep,
    if_match: IfMatch = None,
    if_none_match: IfNoneMatch = None,
) -> MultipartUpload:
    return objects.create_upload(svc, caller, namespaceName, bucketName, details, if_match, if_none_match)


@router.get("/n/{namespaceName}/b/{bucketName}/u", response_model=list[MultipartUpload], response_model_exclude_none=True)
def list_multipart_uploads(
    namespaceName: str,
    bucketName: str,
    caller: CallerDep,
    svc: ServicesDep,
    response: Response,
    limit: Limit = None,
    page: Page = None,
) -> list[MultipartUpload]:
    return send_page(response, objects.list_uploads(svc, caller, namespaceName, bucketName, page=page, limit=limit))


@router.put("/n/{namespaceName}/b/{bucketName}/u/{objectName:anytext}", status_code=200, response_class=Response)
async def upload_part(
    namespaceName: str,
    bucketName: str,
    objectName: str,
    request: Request,
    caller: CallerDep,
    svc: ServicesDep,
    upload_id: UploadId,
    upload_part_num: Annotated[int, Query(alias="uploadPartNum", ge=1, le=objects.MAX_PARTS)],
    content_length: ContentLength = None,
    content_md5: ContentMd5 = None,
) -> Response:
    headers = await objects.upload_part(
        svc,
        caller,
        namespaceName,
        bucketName,
        object_name(request, b"u"),
        upload_id,
        upload_part_num,
        request.stream(),
        content_length=content_length,
        content_md5=content_md5,
    )
    return Response(status_code=200, headers=headers)


@router.get(
    "/n/{namespaceName}/b/{bucketName}/u/{objectName:anytext}",
    response_model=list[MultipartUploadPartSummary],
    response_model_exclude_none=True,
)
def list_multipart_upload_parts(
    namespaceName: str,
    bucketName: str,
    objectName: str,
    request: Request,
    caller: CallerDep,
    svc: ServicesDep,
    response: Response,
    upload_id: UploadId,
    limit: Limit = None,
    page: Page = None,
) -> list[MultipartUploadPartSummary]:
    found = objects.list_parts(
        svc, caller, namespaceName, bucketName, object_name(request, b"u"), upload_id, page=page, limit=limit
    )
    return send_page(response, found)


@router.post("/n/{namespaceName}/b/{bucketName}/u/{objectName:anytext}", status_code=200, response_class=Response)
def commit_multipart_upload(
    namespaceName: str,
    bucketName: str,
    objectName: str,
    details: CommitMultipartUploadDetails,
    request: Request,
    caller: CallerDep,
    svc: ServicesDep,
    upload_id: UploadId,
) -> Response:
    stored = objects.commit_upload(svc, caller, namespaceName, bucketName, object_name(request, b"u"), upload_id, details)
    return Response(status_code=200, headers=stored.headers)


@router.delete("/n/{namespaceName}/b/{bucketName}/u/{objectName:anytext}", status_code=204, response_class=Response)
def abort_multipart_upload(
    namespaceName: str,
    bucketName: str,
    objectName: str,
    request: Request,
    caller: CallerDep,
    svc: ServicesDep,
    upload_id: UploadId,
) -> Response:
    objects.abort_upload(svc, caller, namespaceName, bucketName, object_name(request, b"u"), upload_id)
    return Response(status_code=204)
