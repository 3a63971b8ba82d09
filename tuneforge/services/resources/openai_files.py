"""The OpenAI API's files (/openai/v1/files): per tenancy, their bytes an object of the tenancy's
Object Storage namespace in the reserved bucket OPENAI_FILES_BUCKET, named by the file id (so the
OCI API sees the same bytes, and a fine-tuning job's dataset is that object).

A `fine-tune` file is checked when it is uploaded, line by line as a training job will read it:
`processed` with its number of examples, or `error` with every bad line named in `status_details`.
What depends on the base model (the 32-example minimum for training data, token lengths) is checked
when a job names the file (openai_jobs.py), as OpenAI does in its `validating_files` step."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from anyio.to_thread import run_sync as run_in_threadpool
from sqlalchemy import select

from tuneforge import data
from tuneforge.errors import DatasetError
from tuneforge.services.context import Caller, Services
from tuneforge.services.errors import ServiceError
from tuneforge.services.resources import objects
from tuneforge.services.schemas.openai_fine_tuning import OpenAIError, bad_request, cursor_page, not_found, page_limit, shown
from tuneforge.store import objects as stored
from tuneforge.store.tables import OpenAIFileRow, utcnow

OPENAI_FILES_BUCKET = "openai-files"
MAX_FILE_BYTES = 512 * 1024**2  # OpenAI's own limit on one file
UPLOAD_PURPOSES = ("fine-tune", "batch", "assistants", "vision", "user_data", "evals")
RESULTS_PURPOSE = "fine-tune-results"  # written by TuneForge (a job's step metrics), never uploaded
MAX_LISTED = 10_000  # OpenAI's own maximum page
MAX_FILENAME = 255


def file_object(row: OpenAIFileRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "file",
        "bytes": row.bytes,
        "created_at": int(row.created_at.timestamp()),
        "filename": row.filename,
        "purpose": row.purpose,
        "status": row.status,
        "status_details": row.status_details,
        "expires_at": None,
    }


def no_such_file(file_id: str, param: str | None = None) -> OpenAIError:
    # Another tenancy's file does not exist for the caller (OpenAI's wording for a missing file).
    return not_found(f"No such File object: {file_id[:100]}", param)


def owned_file(session, caller: Caller, file_id: str, param: str | None = None) -> OpenAIFileRow:
    row = session.get(OpenAIFileRow, file_id)
    if row is None or row.tenancy_id != caller.tenancy_id:
        raise no_such_file(file_id, param)
    return row


def blob_path(svc: Services, caller: Caller, file_id: str) -> Path:
    """Where the file's bytes are on this server (the object's blob)."""
    path = objects.object_path(svc, caller, stored.namespace_for(caller.tenancy_id), OPENAI_FILES_BUCKET, file_id)
    if path is None:
        raise no_such_file(file_id)
    return path


def check_purpose(purpose: str | None) -> str:
    if not purpose:
        raise bad_request("Missing required parameter: 'purpose'.", "purpose", "missing_required_parameter")
    if purpose not in UPLOAD_PURPOSES:
        allowed = ", ".join(repr(p) for p in UPLOAD_PURPOSES)
        raise bad_request(f"Invalid value for 'purpose': {shown(purpose)}; supported values are {allowed}.", "purpose")
    return purpose


def check_size(declared: int | None) -> None:
    if declared is not None and declared > MAX_FILE_BYTES:
        raise OpenAIError(
            413, f"The file is larger than this server accepts ({MAX_FILE_BYTES:,} bytes at most).", "file", "file_too_large"
        )


def problems_text(err: DatasetError) -> str:
    """OpenAI's status_details: one sentence, then every problem by line."""
    shown_problems = "; ".join(str(p) for p in err.problems)
    more = f"; and {err.total - len(err.problems)} more" if err.total > len(err.problems) else ""
    return f"Invalid file format: {err.total} problem(s): {shown_problems}{more}."


def check_fine_tune_file(path: Path) -> tuple[str, str | None, int | None]:
    """(status, status_details, examples) of a fine-tune file: its lines as training reads them (at
    least one example; the minimum for training data is the job's check). Supervised and preference
    files alike: which family a job takes is its method's check (openai_jobs)."""
    try:
        return "processed", None, data.scan_dataset(path, min_examples=1, method=None)
    except DatasetError as err:
        return "error", problems_text(err), None


async def create_file(
    svc: Services, caller: Caller, purpose: str | None, filename: str | None, size: int, chunks: AsyncIterator[bytes]
) -> dict[str, Any]:
    """Store an uploaded file (`size` bytes from `chunks`) and, for `fine-tune`, check it."""
    purpose = check_purpose(purpose)
    check_size(size)
    if not filename:
        raise bad_request("Missing required parameter: 'file'.", "file", "missing_required_parameter")
    if purpose == "fine-tune" and not filename.endswith(".jsonl"):
        raise bad_request(
            f"Invalid file format for Fine-Tuning API. Must be .jsonl (got {shown(filename[:100])}).",
            "file",
            "invalid_file_format",
        )
    file_id = "file-" + secrets.token_hex(12)
    namespace = stored.namespace_for(caller.tenancy_id)
    await objects.put_object(
        svc,
        caller,
        namespace,
        OPENAI_FILES_BUCKET,
        file_id,
        chunks,
        content_length=str(size),
        content_type="application/jsonl" if filename.endswith(".jsonl") else "application/octet-stream",
    )
    return await run_in_threadpool(_record, svc, caller, file_id, purpose, filename[-MAX_FILENAME:], size)


def _record(svc: Services, caller: Caller, file_id: str, purpose: str, filename: str, size: int) -> dict[str, Any]:
    status, details, examples = "processed", None, None
    if purpose == "fine-tune":
        status, details, examples = check_fine_tune_file(blob_path(svc, caller, file_id))
    row = OpenAIFileRow(
        id=file_id,
        tenancy_id=caller.tenancy_id,
        purpose=purpose,
        filename=filename,
        bytes=size,
        status=status,
        status_details=details,
        examples=examples,
        created_at=utcnow(),
    )
    with svc.session() as session:
        session.add(row)
        session.commit()
        return file_object(row)


def write_file(svc: Services, caller: Caller, purpose: str, filename: str, body: bytes) -> str:
    """A file TuneForge writes itself (a job's results); its id."""
    file_id = "file-" + secrets.token_hex(12)
    objects.put_bytes(svc, caller, stored.namespace_for(caller.tenancy_id), OPENAI_FILES_BUCKET, file_id, body, "text/csv")
    with svc.session() as session:
        session.add(
            OpenAIFileRow(
                id=file_id,
                tenancy_id=caller.tenancy_id,
                purpose=purpose,
                filename=filename,
                bytes=len(body),
                status="processed",
                created_at=datetime.now(UTC),
            )
        )
        session.commit()
    return file_id


def get_file(svc: Services, caller: Caller, file_id: str) -> dict[str, Any]:
    with svc.session() as session:
        return file_object(owned_file(session, caller, file_id))


def list_files(
    svc: Services, caller: Caller, purpose: str | None, limit: int | None, after: str | None, order: str | None
) -> dict[str, Any]:
    if order not in (None, "asc", "desc"):
        raise bad_request(f"Invalid value for 'order': {shown(order)}; supported values are 'asc' and 'desc'.", "order")
    limit = page_limit(limit, MAX_LISTED, MAX_LISTED)
    descending = order != "asc"  # OpenAI lists the newest first unless asked otherwise
    with svc.session() as session:
        stmt = select(OpenAIFileRow).where(OpenAIFileRow.tenancy_id == caller.tenancy_id)
        if purpose:
            stmt = stmt.where(OpenAIFileRow.purpose == purpose)
        keys = (
            (OpenAIFileRow.created_at.desc(), OpenAIFileRow.id.desc())
            if descending
            else (OpenAIFileRow.created_at, OpenAIFileRow.id)
        )
        rows = session.scalars(stmt.order_by(*keys)).all()
        return cursor_page([file_object(r) for r in rows], after, limit)


def delete_file(svc: Services, caller: Caller, file_id: str) -> dict[str, Any]:
    """The file and its object. A job that already uses it keeps its own snapshot of the bytes."""
    with svc.session() as session:
        row = owned_file(session, caller, file_id)
        session.delete(row)
        session.commit()
    try:
        objects.delete_object(svc, caller, stored.namespace_for(caller.tenancy_id), OPENAI_FILES_BUCKET, file_id)
    except ServiceError as err:  # already removed through the Object Storage API: the file is gone all the same
        if err.status != 404:
            raise
    return {"id": file_id, "object": "file", "deleted": True}


def file_content(svc: Services, caller: Caller, file_id: str) -> tuple[Path, str]:
    """(the bytes' path, the file name) for GET /files/{id}/content."""
    with svc.session() as session:
        row = owned_file(session, caller, file_id)
        filename = row.filename
    return blob_path(svc, caller, file_id), filename
