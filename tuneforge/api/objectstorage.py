"""The Object Storage subset the SDK's ObjectStorageClient needs for datasets: namespace, buckets
(create/get/list/delete; put_object creates a missing bucket), and objects (put/get/head/delete/list).

Each tenancy has one namespace; objects are stored under the data dir by tuneforge.store.objects."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
from pathlib import Path
from typing import Annotated, AsyncIterator

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from tuneforge.api.deps import CallerDep, CompartmentId, ConfigDep, IfMatch, SessionDep
from tuneforge.api.errors import ApiError, invalid
from tuneforge.api.protocol import rfc3339
from tuneforge.api.schemas import Bucket, CreateBucketDetails, ListObjects, ObjectSummary
from tuneforge.store import objects
from tuneforge.store.tables import BucketRow, ObjectRow, utcnow

router = APIRouter(tags=["objectStorage"])


def _bucket_not_found(namespace: str, bucket: str) -> ApiError:
    return ApiError(404, "BucketNotFound", f"Either the bucket named '{bucket}' does not exist in the namespace '{namespace}' or you are not authorized to access it")


def _object_not_found(bucket: str, name: str) -> ApiError:
    return ApiError(404, "ObjectNotFound", f"The object '{name}' was not found in the bucket '{bucket}'")


def _own_namespace(caller, namespace: str) -> None:
    if namespace != objects.namespace_for(caller.tenancy_id):
        raise ApiError(404, "NamespaceNotFound", f"You do not have authorization to perform this request, or the requested resource could not be found: namespace {namespace!r}")


def _object_headers(row: ObjectRow) -> dict[str, str]:
    return {
        "etag": row.etag,
        "opc-content-md5": row.md5,
        "content-md5": row.md5,
        "last-modified": row.time_created.strftime("%a, %d %b %Y %H:%M:%S GMT"),
        "content-type": row.content_type,
    }


@router.get("/n", response_class=JSONResponse)
@router.get("/n/", response_class=JSONResponse, include_in_schema=False)
def get_namespace(caller: CallerDep) -> JSONResponse:
    return JSONResponse(objects.namespace_for(caller.tenancy_id))


# ---- buckets --------------------------------------------------------------------------------


def _bucket_to_api(row: BucketRow) -> Bucket:
    return Bucket(namespace=row.namespace, name=row.name, compartment_id=row.compartment_id, created_by=row.created_by,
                 time_created=rfc3339(row.time_created), etag=hashlib.sha256(f"{row.namespace}/{row.name}".encode()).hexdigest()[:32])  # fmt: skip


@router.post("/n/{namespaceName}/b", response_model=Bucket, response_model_exclude_none=True)
def create_bucket(namespaceName: str, details: CreateBucketDetails, caller: CallerDep, session: SessionDep) -> Bucket:
    _own_namespace(caller, namespaceName)
    row = BucketRow(namespace=namespaceName, name=details.name, tenancy_id=caller.tenancy_id,
                    compartment_id=details.compartment_id, created_by=caller.user_id)  # fmt: skip
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        raise ApiError(409, "BucketAlreadyExists", f"Bucket '{details.name}' already exists in namespace '{namespaceName}'") from None
    return _bucket_to_api(row)


def _bucket(session, caller, namespace: str, bucket: str) -> BucketRow:
    _own_namespace(caller, namespace)
    row = session.get(BucketRow, (namespace, bucket))
    if row is None:
        raise _bucket_not_found(namespace, bucket)
    return row


@router.get("/n/{namespaceName}/b/{bucketName}", response_model=Bucket, response_model_exclude_none=True)
def get_bucket(namespaceName: str, bucketName: str, caller: CallerDep, session: SessionDep) -> Bucket:
    return _bucket_to_api(_bucket(session, caller, namespaceName, bucketName))


@router.get("/n/{namespaceName}/b", response_model=list[Bucket], response_model_exclude_none=True)
def list_buckets(namespaceName: str, caller: CallerDep, session: SessionDep,
                 compartmentId: CompartmentId) -> list[Bucket]:  # fmt: skip
    _own_namespace(caller, namespaceName)
    rows = session.scalars(select(BucketRow).where(BucketRow.namespace == namespaceName, BucketRow.compartment_id == compartmentId).order_by(BucketRow.name))
    return [_bucket_to_api(r) for r in rows]


@router.delete("/n/{namespaceName}/b/{bucketName}", status_code=204, response_class=Response)
def delete_bucket(namespaceName: str, bucketName: str, caller: CallerDep, session: SessionDep) -> Response:
    row = _bucket(session, caller, namespaceName, bucketName)
    if session.scalars(select(ObjectRow).where(ObjectRow.namespace == namespaceName, ObjectRow.bucket == bucketName).limit(1)).first():
        raise ApiError(409, "BucketNotEmpty", f"Bucket '{bucketName}' is not empty; delete its objects first")
    session.delete(row)
    session.commit()
    return Response(status_code=204)


# ---- objects --------------------------------------------------------------------------------


@router.put("/n/{namespaceName}/b/{bucketName}/o/{objectName:path}", status_code=200, response_class=Response)
async def put_object(
    namespaceName: str, bucketName: str, objectName: str, request: Request, caller: CallerDep, config: ConfigDep,
    if_match: IfMatch = None,
    if_none_match: Annotated[str | None, Header(alias="if-none-match", max_length=512)] = None,
    content_md5: Annotated[str | None, Header(alias="content-md5", max_length=64)] = None,
    content_type: Annotated[str | None, Header(alias="content-type", max_length=255)] = None,
) -> Response:  # fmt: skip
    """Streams the body to a temporary file, then publishes it with an atomic rename."""
    _own_namespace(caller, namespaceName)
    _check_object_name(bucketName, objectName)
    tmp, key, digest, size = await spool(config.objects_dir, request.stream())
    try:
        if content_md5 is not None and content_md5 != digest:
            raise ApiError(400, "InvalidParameter", f"Content-MD5 {content_md5} does not match the body's MD5 {digest}")
        meta = dict(size=size, md5=digest, content_type=content_type or "application/octet-stream", storage_key=key)
        row = await run_in_threadpool(_publish, request.app.state.sessions, config.objects_dir, caller, namespaceName,
                                      bucketName, objectName, tmp, meta, if_match, if_none_match)  # fmt: skip
    finally:
        tmp.unlink(missing_ok=True)
    return Response(status_code=200, headers=_object_headers(row))


async def spool(objects_dir: Path, chunks: AsyncIterator[bytes]) -> tuple[Path, str, str, int]:
    """Stream `chunks` into a fresh file under objects_dir/tmp: (its path, its storage key, base64 MD5,
    size). The caller publishes it (an atomic rename) and unlinks the path in any case."""
    tmp_dir = objects_dir / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(16)
    tmp = tmp_dir / key
    md5, size = hashlib.md5(), 0
    try:
        with open(tmp, "wb") as f:
            async for chunk in chunks:
                f.write(chunk)
                md5.update(chunk)
                size += len(chunk)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, key, base64.b64encode(md5.digest()).decode(), size


def _check_object_name(bucket: str, name: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,256}", bucket):
        raise invalid(f"bucketName: {bucket!r} is not allowed; 1-256 letters, digits, '.', '-' or '_'")
    if not 1 <= len(name.encode("utf-8", "replace")) <= 1024:
        raise invalid("objectName: must be 1-1024 bytes of UTF-8")


def _publish(sessions, objects_dir: Path, caller, namespace, bucket, name, tmp: Path, meta: dict, if_match, if_none_match) -> ObjectRow:
    with sessions() as session:
        if session.get(BucketRow, (namespace, bucket)) is None:
            # OCI needs create_bucket first; here a put creates the bucket in the tenancy's root compartment.
            session.add(BucketRow(namespace=namespace, name=bucket, tenancy_id=caller.tenancy_id,
                                  compartment_id=caller.tenancy_id, created_by=caller.user_id))  # fmt: skip
        row = objects.find(session, namespace, bucket, name)
        if if_none_match == "*" and row is not None:
            raise ApiError(412, "IfNoneMatchFailed", f"The object '{name}' already exists")
        if if_match is not None and (row is None or if_match.strip('"') != row.etag):
            raise ApiError(412, "IfMatchFailed", f"The if-match etag does not match object '{name}'")
        old_key = row.storage_key if row else None
        target = objects.blob_path(objects_dir, meta["storage_key"])
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
        if row is None:
            row = ObjectRow(namespace=namespace, bucket=bucket, name=name, **meta, etag=secrets.token_hex(16))
            session.add(row)
        else:
            for field, value in meta.items():
                setattr(row, field, value)
            row.etag, row.time_created = secrets.token_hex(16), utcnow()
        try:
            session.commit()
        except Exception:
            target.unlink(missing_ok=True)
            raise
        if old_key:
            # Jobs hold hard links to datasets they snapshot, so removing this name is safe.
            objects.blob_path(objects_dir, old_key).unlink(missing_ok=True)
        return row


def _object(session, caller, namespace: str, bucket: str, name: str) -> ObjectRow:
    _own_namespace(caller, namespace)
    row = objects.find(session, namespace, bucket, name)
    if row is None:
        if session.get(BucketRow, (namespace, bucket)) is None:
            raise _bucket_not_found(namespace, bucket)
        raise _object_not_found(bucket, name)
    return row


@router.get("/n/{namespaceName}/b/{bucketName}/o/{objectName:path}", response_class=FileResponse)
def get_object(namespaceName: str, bucketName: str, objectName: str, caller: CallerDep, session: SessionDep, config: ConfigDep):
    row = _object(session, caller, namespaceName, bucketName, objectName)
    path = objects.blob_path(config.objects_dir, row.storage_key)
    return FileResponse(path, headers=_object_headers(row), media_type=row.content_type, stat_result=os.stat(path))


@router.head("/n/{namespaceName}/b/{bucketName}/o/{objectName:path}", response_class=Response)
def head_object(namespaceName: str, bucketName: str, objectName: str, caller: CallerDep, session: SessionDep) -> Response:
    row = _object(session, caller, namespaceName, bucketName, objectName)
    return Response(status_code=200, headers={**_object_headers(row), "content-length": str(row.size)})


@router.delete("/n/{namespaceName}/b/{bucketName}/o/{objectName:path}", status_code=204, response_class=Response)
def delete_object(namespaceName: str, bucketName: str, objectName: str, caller: CallerDep, session: SessionDep,
                  config: ConfigDep, if_match: IfMatch = None) -> Response:  # fmt: skip
    row = _object(session, caller, namespaceName, bucketName, objectName)
    if if_match is not None and if_match.strip('"') != row.etag:
        raise ApiError(412, "IfMatchFailed", f"The if-match etag does not match object '{objectName}'")
    session.delete(row)
    session.commit()
    objects.blob_path(config.objects_dir, row.storage_key).unlink(missing_ok=True)
    return Response(status_code=204)


@router.get("/n/{namespaceName}/b/{bucketName}/o", response_model=ListObjects, response_model_exclude_none=True)
def list_objects(
    namespaceName: str, bucketName: str, caller: CallerDep, session: SessionDep,
    prefix: Annotated[str | None, Query(max_length=1024)] = None,
    start: Annotated[str | None, Query(max_length=1024)] = None,
    end: Annotated[str | None, Query(max_length=1024)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    delimiter: Annotated[str | None, Query(pattern="^/$")] = None,
    fields: Annotated[str | None, Query(max_length=255)] = None,
    startAfter: Annotated[str | None, Query(max_length=1024)] = None,
) -> ListObjects:  # fmt: skip
    """Names in order; `nextStartWith` (pass back as `start`) when more follow. With delimiter="/",
    names below a further "/" are folded into `prefixes`."""
    _bucket(session, caller, namespaceName, bucketName)
    stmt = select(ObjectRow).where(ObjectRow.namespace == namespaceName, ObjectRow.bucket == bucketName).order_by(ObjectRow.name)
    if prefix:
        stmt = stmt.where(ObjectRow.name.startswith(prefix, autoescape=True))
    if start:
        stmt = stmt.where(ObjectRow.name >= start)
    if startAfter:
        stmt = stmt.where(ObjectRow.name > startAfter)
    if end:
        stmt = stmt.where(ObjectRow.name < end)
    found: list[ObjectSummary] = []
    prefixes: list[str] = []
    next_start = None
    for row in session.scalars(stmt):
        if delimiter:
            rest = row.name[len(prefix or "") :]
            if delimiter in rest:
                folded = (prefix or "") + rest.split(delimiter, 1)[0] + delimiter
                if not prefixes or prefixes[-1] != folded:
                    if len(found) + len(prefixes) >= limit:
                        next_start = row.name
                        break
                    prefixes.append(folded)
                continue
        if len(found) + len(prefixes) >= limit:
            next_start = row.name
            break
        found.append(ObjectSummary(name=row.name, size=row.size, md5=row.md5, time_created=rfc3339(row.time_created),
                                   time_modified=rfc3339(row.time_created), etag=row.etag, storage_tier="Standard"))  # fmt: skip
    return ListObjects(objects=found, prefixes=prefixes if delimiter else None, next_start_with=next_start)
