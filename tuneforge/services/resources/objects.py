"""The Object Storage subset the SDK and the OCI CLI use for datasets: the namespace, buckets,
objects (put/get/head/delete/list) and multipart uploads (create, upload part, list parts,
commit, abort, list uploads). Each tenancy has one namespace; bytes live under the data dir in
files named by random keys (`tuneforge.store.objects`), so no object name ever becomes a path.

An upload stores exactly the bytes sent or nothing: the body is spooled to a temporary file, its
size checked against Content-Length and its MD5 against Content-MD5 when sent, and only then is it
published with a rename and one conditional UPDATE (an object's etag is its row's version, so an
if-match writer that lost a race gets 412 and the winner's object stays intact).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from anyio.to_thread import run_sync as run_in_threadpool
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from tuneforge.services.context import Caller, Services
from tuneforge.services.errors import ServiceError, invalid, payload_too_large
from tuneforge.services.protocol import Page, rfc3339
from tuneforge.services.schemas.resources import (
    Bucket,
    CommitMultipartUploadDetails,
    CreateBucketDetails,
    CreateMultipartUploadDetails,
    ListObjects,
    MultipartUpload,
    MultipartUploadPartSummary,
    ObjectSummary,
)
from tuneforge.store import objects
from tuneforge.store.tables import BucketRow, ObjectRow, UploadPartRow, UploadRow, utcnow

MAX_PUT_BYTES = 50 * 1024**3  # OCI: a single PutObject or UploadPart is at most 50 GiB
MAX_PARTS = 10_000  # OCI: part numbers 1 to 10,000
MIN_PART_BYTES = 10 * 1024**2  # OCI: every committed part but the last is at least 10 MiB
FORBIDDEN_IN_NAMES = {"\n": "line feed", "\r": "carriage return", "\x00": "NUL"}  # OCI's rule for object names
PUBLISH_ATTEMPTS = 5


# ---- names and errors -----------------------------------------------------------------------


def bucket_not_found(namespace: str, bucket: str) -> ServiceError:
    return ServiceError(
        404,
        "BucketNotFound",
        f"Either the bucket named '{bucket}' does not exist in the namespace '{namespace}' or you are not authorized to access it",
    )


def object_not_found(bucket: str, name: str) -> ServiceError:
    return ServiceError(404, "ObjectNotFound", f"The object '{name}' was not found in the bucket '{bucket}'")


def upload_not_found(upload_id: str) -> ServiceError:
    return ServiceError(
        404, "NoSuchUpload", f"The multipart upload '{upload_id[:64]}' does not exist (or was committed or aborted)"
    )


def check_object_name(name: str) -> str:
    """OCI's rule: 1 to 1024 bytes of UTF-8 with no line feed, carriage return or NUL. Every other
    name is kept exactly as sent."""
    for char, what in FORBIDDEN_IN_NAMES.items():
        if char in name:
            raise invalid(f"objectName: object names may not contain a {what} character")
    if not 1 <= len(name.encode("utf-8", "surrogatepass")) <= 1024:
        raise invalid("objectName: must be 1 to 1024 bytes of UTF-8")
    return name


def check_bucket_name(bucket: str) -> str:
    if not (1 <= len(bucket) <= 256 and all(c.isascii() and (c.isalnum() or c in "_.-") for c in bucket)):
        raise invalid(f"bucketName: {bucket[:300]!r} is not allowed; 1-256 letters, digits, '.', '-' or '_'")
    return bucket


def own_namespace(caller: Caller, namespace: str) -> None:
    if namespace != objects.namespace_for(caller.tenancy_id):
        raise ServiceError(
            404,
            "NamespaceNotFound",
            f"You do not have authorization to perform this request, or the requested resource could not be found: namespace {namespace[:300]!r}",
        )


def namespace_of(caller: Caller) -> str:
    return objects.namespace_for(caller.tenancy_id)


# ---- buckets --------------------------------------------------------------------------------


def _bucket_to_api(row: BucketRow) -> Bucket:
    return Bucket(
        namespace=row.namespace,
        name=row.name,
        compartment_id=row.compartment_id,
        created_by=row.created_by,
        time_created=rfc3339(row.time_created),
        etag=hashlib.sha256(f"{row.namespace}/{row.name}".encode()).hexdigest()[:32],
    )


def _bucket(session: Session, caller: Caller, namespace: str, bucket: str) -> BucketRow:
    own_namespace(caller, namespace)
    row = session.get(BucketRow, (namespace, bucket))
    if row is None:
        raise bucket_not_found(namespace, bucket)
    return row


def _bucket_or_new(session: Session, caller: Caller, namespace: str, bucket: str) -> None:
    """OCI needs create_bucket first; here a write into a missing bucket creates it in the tenancy's root compartment."""
    if session.get(BucketRow, (namespace, bucket)) is None:
        session.add(
            BucketRow(
                namespace=namespace,
                name=bucket,
                tenancy_id=caller.tenancy_id,
                compartment_id=caller.tenancy_id,
                created_by=caller.user_id,
            )
        )


def create_bucket(svc: Services, caller: Caller, namespace: str, details: CreateBucketDetails) -> Bucket:
    own_namespace(caller, namespace)
    with svc.session() as session:
        row = BucketRow(
            namespace=namespace,
            name=details.name,
            tenancy_id=caller.tenancy_id,
            compartment_id=details.compartment_id,
            created_by=caller.user_id,
        )
        session.add(row)
        try:
            session.commit()
        except IntegrityError:
            raise ServiceError(
                409, "BucketAlreadyExists", f"Bucket '{details.name}' already exists in namespace '{namespace}'"
            ) from None
        return _bucket_to_api(row)


def get_bucket(svc: Services, caller: Caller, namespace: str, bucket: str) -> Bucket:
    with svc.session() as session:
        return _bucket_to_api(_bucket(session, caller, namespace, bucket))


def list_buckets(svc: Services, caller: Caller, namespace: str, compartment_id: str) -> list[Bucket]:
    own_namespace(caller, namespace)
    with svc.session() as session:
        stmt = (
            select(BucketRow)
            .where(BucketRow.namespace == namespace, BucketRow.compartment_id == compartment_id)
            .order_by(BucketRow.name)
        )
        return [_bucket_to_api(r) for r in session.scalars(stmt)]


def delete_bucket(svc: Services, caller: Caller, namespace: str, bucket: str) -> None:
    with svc.session() as session:
        row = _bucket(session, caller, namespace, bucket)
        has_objects = session.scalars(
            select(ObjectRow.name).where(ObjectRow.namespace == namespace, ObjectRow.bucket == bucket).limit(1)
        ).first()
        has_uploads = session.scalars(
            select(UploadRow.upload_id).where(UploadRow.namespace == namespace, UploadRow.bucket == bucket).limit(1)
        ).first()
        if has_objects is not None or has_uploads is not None:
            raise ServiceError(
                409, "BucketNotEmpty", f"Bucket '{bucket}' is not empty; delete its objects and abort its multipart uploads first"
            )
        session.delete(row)
        session.commit()


# ---- spooling bodies ------------------------------------------------------------------------


@dataclass(frozen=True)
class Spooled:
    """A request body written to a private file: its storage key, size and base64 MD5."""

    path: Path
    key: str
    size: int
    md5: str

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


async def spool(svc: Services, chunks: AsyncIterator[bytes], *, expected_size: int | None, content_md5: str | None) -> Spooled:
    """Stream `chunks` into a fresh file under objects/tmp. Refuses (and removes the file) when the
    body is not exactly `expected_size` bytes or does not match `content_md5`."""
    tmp_dir = svc.config.objects_dir / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(16)
    path = tmp_dir / key
    md5, size = hashlib.md5(), 0
    try:
        with open(path, "wb") as f:
            async for chunk in chunks:
                size += len(chunk)
                if expected_size is not None and size > expected_size:
                    raise invalid(f"the body is longer than its Content-Length ({expected_size:,} bytes)")
                f.write(chunk)
                md5.update(chunk)
        if expected_size is not None and size != expected_size:
            raise invalid(f"the body has {size:,} bytes; its Content-Length says {expected_size:,}")
        digest = base64.b64encode(md5.digest()).decode()
        if content_md5 is not None and content_md5 != digest:
            raise ServiceError(
                422,
                "UnprocessableEntity",
                f"The computed MD5 of the request body ({digest}) does not match the Content-MD5 header ({content_md5[:64]})",
            )
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Spooled(path, key, size, digest)


def check_content_length(content_length: str | None, what: str) -> int:
    """OCI requires Content-Length on PutObject and UploadPart (411 otherwise)."""
    if content_length is None:
        raise ServiceError(
            411, "MissingContentLength", f"{what} needs a Content-Length header (send the body with a known length)"
        )
    try:
        size = int(content_length)
    except ValueError:
        raise invalid(f"Content-Length: {content_length[:32]!r} is not a number of bytes") from None
    if size < 0:
        raise invalid("Content-Length: must not be negative")
    if size > MAX_PUT_BYTES:
        raise payload_too_large(what, MAX_PUT_BYTES)
    return size


# ---- objects --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredObject:
    """What HEAD/GET/PUT answer with: the headers' values and, for GET, where the bytes are."""

    name: str
    size: int
    md5: str
    etag: str
    content_type: str
    time_modified: str
    path: Path

    @property
    def headers(self) -> dict[str, str]:
        md5 = {"opc-multipart-md5": self.md5} if "-" in self.md5 else {"opc-content-md5": self.md5, "content-md5": self.md5}
        return {"etag": self.etag, **md5, "last-modified": self.time_modified, "content-type": self.content_type}


def _stored(svc: Services, row: ObjectRow) -> StoredObject:
    return StoredObject(
        row.name,
        row.size,
        row.md5,
        row.etag,
        row.content_type,
        row.time_created.strftime("%a, %d %b %Y %H:%M:%S GMT"),
        objects.blob_path(svc.config.objects_dir, row.storage_key),
    )


def _publish(
    svc: Services,
    caller: Caller,
    namespace: str,
    bucket: str,
    name: str,
    blob: Spooled,
    content_type: str,
    if_match: str | None,
    if_none_match: str | None,
) -> StoredObject:
    """Move the spooled file into place and point the object's row at it, atomically with respect to
    other writers. On any refusal the new file is removed and the old object is left as it was."""
    target = objects.blob_path(svc.config.objects_dir, blob.key)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(blob.path, target)
    try:
        for _ in range(PUBLISH_ATTEMPTS):
            with svc.session() as session:
                _bucket_or_new(session, caller, namespace, bucket)
                row = objects.find(session, namespace, bucket, name)
                if if_none_match == "*" and row is not None:
                    raise ServiceError(412, "IfNoneMatchFailed", f"The object '{name}' already exists")
                if if_match is not None and (row is None or if_match.strip('"') != row.etag):
                    raise ServiceError(412, "IfMatchFailed", f"The if-match etag does not match object '{name}'")
                old_key = row.storage_key if row is not None else None
                if row is None:
                    row = ObjectRow(namespace=namespace, bucket=bucket, name=name)
                    session.add(row)
                row.size, row.md5, row.content_type, row.storage_key, row.time_created = (
                    blob.size,
                    blob.md5,
                    content_type,
                    blob.key,
                    utcnow(),
                )
                try:
                    session.commit()
                except (StaleDataError, IntegrityError):  # another writer got there first
                    session.rollback()
                    if if_match is not None or if_none_match == "*":
                        raise ServiceError(412, "IfMatchFailed", f"The object '{name}' was changed by another request") from None
                    continue  # no precondition: last writer wins, so try again over the new row
                if old_key:
                    # Jobs hold hard links to datasets they snapshot, so removing this name is safe.
                    objects.blob_path(svc.config.objects_dir, old_key).unlink(missing_ok=True)
                return _stored(svc, row)
        raise ServiceError(409, "ConcurrentObjectUpdate", f"The object '{name}' is being written by other requests; retry")
    except BaseException:
        target.unlink(missing_ok=True)
        raise


async def put_object(
    svc: Services,
    caller: Caller,
    namespace: str,
    bucket: str,
    name: str,
    chunks: AsyncIterator[bytes],
    *,
    content_length: str | None,
    content_md5: str | None = None,
    content_type: str | None = None,
    if_match: str | None = None,
    if_none_match: str | None = None,
) -> StoredObject:
    own_namespace(caller, namespace)
    check_bucket_name(bucket)
    check_object_name(name)
    size = check_content_length(content_length, "PutObject")
    blob = await spool(svc, chunks, expected_size=size, content_md5=content_md5)
    try:
        return await run_in_threadpool(
            _publish,
            svc,
            caller,
            namespace,
            bucket,
            name,
            blob,
            content_type or "application/octet-stream",
            if_match,
            if_none_match,
        )
    finally:
        blob.discard()


def put_bytes(
    svc: Services, caller: Caller, namespace: str, bucket: str, name: str, body: bytes, content_type: str
) -> StoredObject:
    """PutObject for bytes already in memory, from a thread that is not serving a request (the sweep
    coordinator's learning-curve subsets): the same checks and the same atomic publish."""
    own_namespace(caller, namespace)
    check_bucket_name(bucket)
    check_object_name(name)
    tmp_dir = svc.config.objects_dir / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(16)
    path = tmp_dir / key
    path.write_bytes(body)
    blob = Spooled(path, key, len(body), base64.b64encode(hashlib.md5(body).digest()).decode())
    try:
        return _publish(svc, caller, namespace, bucket, name, blob, content_type, None, None)
    finally:
        blob.discard()


def _object_row(session: Session, caller: Caller, namespace: str, bucket: str, name: str) -> ObjectRow:
    own_namespace(caller, namespace)
    row = objects.find(session, namespace, bucket, name)
    if row is None:
        if session.get(BucketRow, (namespace, bucket)) is None:
            raise bucket_not_found(namespace, bucket)
        raise object_not_found(bucket, name)
    return row


def get_object(svc: Services, caller: Caller, namespace: str, bucket: str, name: str) -> StoredObject:
    with svc.session() as session:
        return _stored(svc, _object_row(session, caller, namespace, bucket, name))


def object_path(svc: Services, caller: Caller, namespace: str, bucket: str, name: str) -> Path | None:
    """Where a tenancy's object's bytes are (for the console's dataset check), or None."""
    if namespace != objects.namespace_for(caller.tenancy_id):
        return None
    with svc.session() as session:
        row = objects.find(session, namespace, bucket, name)
        return objects.blob_path(svc.config.objects_dir, row.storage_key) if row is not None else None


def delete_object(svc: Services, caller: Caller, namespace: str, bucket: str, name: str, if_match: str | None = None) -> None:
    with svc.session() as session:
        row = _object_row(session, caller, namespace, bucket, name)
        if if_match is not None and if_match.strip('"') != row.etag:
            raise ServiceError(412, "IfMatchFailed", f"The if-match etag does not match object '{name}'")
        key = row.storage_key
        session.delete(row)
        try:
            session.commit()
        except StaleDataError:
            raise ServiceError(412, "IfMatchFailed", f"The object '{name}' was changed by another request") from None
    objects.blob_path(svc.config.objects_dir, key).unlink(missing_ok=True)


def list_objects(
    svc: Services,
    caller: Caller,
    namespace: str,
    bucket: str,
    *,
    prefix: str | None = None,
    start: str | None = None,
    end: str | None = None,
    limit: int = 1000,
    delimiter: str | None = None,
    start_after: str | None = None,
) -> ListObjects:
    """Names in order; `nextStartWith` (pass back as `start`) when more follow. With delimiter="/",
    names below a further "/" are folded into `prefixes`."""
    with svc.session() as session:
        _bucket(session, caller, namespace, bucket)
        stmt = select(ObjectRow).where(ObjectRow.namespace == namespace, ObjectRow.bucket == bucket).order_by(ObjectRow.name)
        if prefix:
            stmt = stmt.where(ObjectRow.name.startswith(prefix, autoescape=True))
        if start:
            stmt = stmt.where(ObjectRow.name >= start)
        if start_after:
            stmt = stmt.where(ObjectRow.name > start_after)
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
            found.append(
                ObjectSummary(
                    name=row.name,
                    size=row.size,
                    md5=row.md5,
                    time_created=rfc3339(row.time_created),
                    time_modified=rfc3339(row.time_created),
                    etag=row.etag,
                    storage_tier="Standard",
                )
            )
    return ListObjects(objects=found, prefixes=prefixes if delimiter else None, next_start_with=next_start)


# ---- multipart uploads ----------------------------------------------------------------------


def _upload_to_api(row: UploadRow) -> MultipartUpload:
    return MultipartUpload(
        namespace=row.namespace,
        bucket=row.bucket,
        object=row.name,
        upload_id=row.upload_id,
        time_created=rfc3339(row.time_created),
    )


def _upload(session: Session, caller: Caller, namespace: str, bucket: str, name: str, upload_id: str) -> UploadRow:
    own_namespace(caller, namespace)
    row = session.get(UploadRow, upload_id[:64])
    if row is None or row.tenancy_id != caller.tenancy_id or (row.namespace, row.bucket, row.name) != (namespace, bucket, name):
        raise upload_not_found(upload_id)
    return row


def create_upload(
    svc: Services,
    caller: Caller,
    namespace: str,
    bucket: str,
    details: CreateMultipartUploadDetails,
    if_match: str | None = None,
    if_none_match: str | None = None,
) -> MultipartUpload:
    own_namespace(caller, namespace)
    check_bucket_name(bucket)
    check_object_name(details.object)
    with svc.session() as session:
        _bucket_or_new(session, caller, namespace, bucket)
        if if_none_match == "*" and objects.find(session, namespace, bucket, details.object) is not None:
            raise ServiceError(412, "IfNoneMatchFailed", f"The object '{details.object}' already exists")
        row = UploadRow(
            upload_id=secrets.token_hex(16),
            tenancy_id=caller.tenancy_id,
            namespace=namespace,
            bucket=bucket,
            name=details.object,
            content_type=details.content_type,
            if_match=if_match,
            if_none_match=if_none_match,
        )
        session.add(row)
        session.commit()
        return _upload_to_api(row)


async def upload_part(
    svc: Services,
    caller: Caller,
    namespace: str,
    bucket: str,
    name: str,
    upload_id: str,
    part_num: int,
    chunks: AsyncIterator[bytes],
    *,
    content_length: str | None,
    content_md5: str | None = None,
) -> dict[str, str]:
    """Store one part (re-uploading a part number replaces it); its etag and MD5 headers."""
    if not 1 <= part_num <= MAX_PARTS:
        raise invalid(f"uploadPartNum: {part_num} is not allowed; part numbers are 1 to {MAX_PARTS:,}")
    size = check_content_length(content_length, "UploadPart")
    await run_in_threadpool(_check_upload_exists, svc, caller, namespace, bucket, name, upload_id)  # before reading the body
    blob = await spool(svc, chunks, expected_size=size, content_md5=content_md5)
    try:
        return await run_in_threadpool(_store_part, svc, caller, namespace, bucket, name, upload_id, part_num, blob)
    finally:
        blob.discard()


def _check_upload_exists(svc: Services, caller: Caller, namespace, bucket, name, upload_id: str) -> None:
    with svc.session() as session:
        _upload(session, caller, namespace, bucket, name, upload_id)


def _store_part(
    svc: Services, caller: Caller, namespace, bucket, name, upload_id: str, part_num: int, blob: Spooled
) -> dict[str, str]:
    target = objects.blob_path(svc.config.objects_dir, blob.key)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(blob.path, target)
    try:
        with svc.session() as session:
            _upload(session, caller, namespace, bucket, name, upload_id)
            row = session.get(UploadPartRow, (upload_id, part_num))
            old_key = row.storage_key if row is not None else None
            if row is None:
                row = UploadPartRow(upload_id=upload_id, part_num=part_num)
                session.add(row)
            row.size, row.md5, row.etag, row.storage_key, row.time_created = (
                blob.size,
                blob.md5,
                secrets.token_hex(16),
                blob.key,
                utcnow(),
            )
            session.commit()
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    if old_key:
        objects.blob_path(svc.config.objects_dir, old_key).unlink(missing_ok=True)
    return {"etag": row.etag, "opc-content-md5": row.md5}


def list_parts(
    svc: Services,
    caller: Caller,
    namespace: str,
    bucket: str,
    name: str,
    upload_id: str,
    *,
    page: str | None = None,
    limit: int | None = None,
) -> Page[MultipartUploadPartSummary]:
    start = int(page) if page and page.isdigit() and len(page) <= 6 else 0
    if page and not start:
        raise invalid(f"page: {page[:64]!r} is not a page token returned by this service (opc-next-page)")
    size = limit or 1000
    with svc.session() as session:
        _upload(session, caller, namespace, bucket, name, upload_id)
        stmt = select(UploadPartRow).where(UploadPartRow.upload_id == upload_id, UploadPartRow.part_num >= start)
        rows = session.scalars(stmt.order_by(UploadPartRow.part_num).limit(size + 1)).all()
    items = [MultipartUploadPartSummary(etag=r.etag, md5=r.md5, size=r.size, part_number=r.part_num) for r in rows[:size]]
    return Page(items, str(rows[size].part_num) if len(rows) > size else None)


def list_uploads(
    svc: Services, caller: Caller, namespace: str, bucket: str, *, page: str | None = None, limit: int | None = None
) -> Page[MultipartUpload]:
    with svc.session() as session:
        _bucket(session, caller, namespace, bucket)
        stmt = select(UploadRow).where(UploadRow.namespace == namespace, UploadRow.bucket == bucket)
        if page:
            stmt = stmt.where(UploadRow.upload_id > page[:64])
        size = limit or 1000
        rows = session.scalars(stmt.order_by(UploadRow.upload_id).limit(size + 1)).all()
        return Page([_upload_to_api(r) for r in rows[:size]], rows[size - 1].upload_id if len(rows) > size else None)


def abort_upload(svc: Services, caller: Caller, namespace: str, bucket: str, name: str, upload_id: str) -> None:
    with svc.session() as session:
        row = _upload(session, caller, namespace, bucket, name, upload_id)
        keys = _drop_upload(session, row)
        session.commit()
    _remove_blobs(svc, keys)


def _drop_upload(session: Session, upload: UploadRow) -> list[str]:
    parts = session.scalars(select(UploadPartRow).where(UploadPartRow.upload_id == upload.upload_id)).all()
    for part in parts:
        session.delete(part)
    session.delete(upload)
    return [p.storage_key for p in parts]


def _remove_blobs(svc: Services, keys: list[str]) -> None:
    for key in keys:
        objects.blob_path(svc.config.objects_dir, key).unlink(missing_ok=True)


def commit_upload(
    svc: Services, caller: Caller, namespace: str, bucket: str, name: str, upload_id: str, details: CommitMultipartUploadDetails
) -> StoredObject:
    """Join the committed parts, in part-number order, into the object; its MD5 is OCI's multipart
    MD5 (the MD5 of the parts' binary MD5s, then "-" and the count), which the CLI checks."""
    wanted = sorted(details.parts_to_commit, key=lambda p: p.part_num)
    if len({p.part_num for p in wanted}) != len(wanted):
        raise invalid("partsToCommit: a part number is listed twice")
    with svc.session() as session:
        upload = _upload(session, caller, namespace, bucket, name, upload_id)
        parts = {p.part_num: p for p in session.scalars(select(UploadPartRow).where(UploadPartRow.upload_id == upload_id))}
        content_type, if_match, if_none_match = upload.content_type, upload.if_match, upload.if_none_match
    for i, want in enumerate(wanted):
        part = parts.get(want.part_num)
        if part is None or part.etag != want.etag.strip('"'):
            raise invalid(f"partsToCommit: part {want.part_num} was not uploaded with etag {want.etag[:64]!r}")
        if part.size < MIN_PART_BYTES and i < len(wanted) - 1:
            raise invalid(
                f"partsToCommit: part {want.part_num} has {part.size:,} bytes; every part but the last needs at least {MIN_PART_BYTES:,}"
            )
    tmp_dir = svc.config.objects_dir / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(16)
    path, md5s, size = tmp_dir / key, b"", 0
    try:
        with open(path, "wb") as out:
            for want in wanted:
                part = parts[want.part_num]
                with open(objects.blob_path(svc.config.objects_dir, part.storage_key), "rb") as src:
                    shutil.copyfileobj(src, out, 16 << 20)
                md5s += base64.b64decode(part.md5)
                size += part.size
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    multipart_md5 = f"{base64.b64encode(hashlib.md5(md5s).digest()).decode()}-{len(wanted)}"
    blob = Spooled(path, key, size, multipart_md5)
    try:
        stored = _publish(
            svc, caller, namespace, bucket, name, blob, content_type or "application/octet-stream", if_match, if_none_match
        )
    finally:
        blob.discard()
    with svc.session() as session:
        upload = session.get(UploadRow, upload_id)
        keys = _drop_upload(session, upload) if upload is not None else []
        session.commit()
    _remove_blobs(svc, keys)
    return stored
