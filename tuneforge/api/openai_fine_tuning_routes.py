"""The OpenAI API's files and fine-tuning jobs at /openai/v1 (paths, parameters and objects as the
`openai` SDK's files and fine_tuning.jobs resources send and read them), over TuneForge's own jobs:
services/resources/openai_files.py and openai_jobs.py. The same bearer keys and tenancy as the
inference routes (api/openai_routes.py); errors in OpenAI's shape with `param` (openai_error)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from starlette.datastructures import UploadFile

from tuneforge.api.deps import CallerDep, ServicesDep
from tuneforge.services.resources import openai_files, openai_jobs
from tuneforge.services.schemas.openai_fine_tuning import OpenAIError, bad_request

router = APIRouter(prefix="/openai/v1", tags=["openai"])
MULTIPART_OVERHEAD = 64 * 1024  # the form's boundaries and the purpose field, beyond the file itself
CHUNK = 1024 * 1024
Limit = Annotated[int | None, Query()]
Cursor = Annotated[str | None, Query(max_length=255)]


async def openai_error(request: Request, exc: OpenAIError) -> JSONResponse:
    """OpenAI's `{"error": {"message", "type", "param", "code"}}`, which the SDK raises as its own exceptions."""
    request_id = getattr(request.state, "request_id", None)
    headers = {"opc-request-id": request_id} if request_id else None
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


# ---- files --------------------------------------------------------------------------------------


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(CHUNK):
        yield chunk


@router.post("/files")
async def create_file(request: Request, caller: CallerDep, svc: ServicesDep) -> JSONResponse:
    declared = request.headers.get("content-length", "")
    if declared.isdigit():
        openai_files.check_size(max(0, int(declared) - MULTIPART_OVERHEAD))
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise bad_request("The file must be uploaded as multipart/form-data with fields 'file' and 'purpose'.", "file")
    async with request.form(max_files=1, max_fields=8) as form:
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, UploadFile):
            raise bad_request("Missing required parameter: 'file'.", "file", "missing_required_parameter")
        purpose = purpose if isinstance(purpose, str) else None
        created = await openai_files.create_file(svc, caller, purpose, upload.filename, upload.size or 0, _chunks(upload))
    return JSONResponse(created)


@router.get("/files")
def list_files(
    caller: CallerDep,
    svc: ServicesDep,
    purpose: Cursor = None,
    limit: Limit = None,
    after: Cursor = None,
    order: Cursor = None,
) -> JSONResponse:
    return JSONResponse(openai_files.list_files(svc, caller, purpose, limit, after, order))


@router.get("/files/{file_id}")
def retrieve_file(file_id: str, caller: CallerDep, svc: ServicesDep) -> JSONResponse:
    return JSONResponse(openai_files.get_file(svc, caller, file_id))


@router.delete("/files/{file_id}")
def delete_file(file_id: str, caller: CallerDep, svc: ServicesDep) -> JSONResponse:
    return JSONResponse(openai_files.delete_file(svc, caller, file_id))


@router.get("/files/{file_id}/content")
def file_content(file_id: str, caller: CallerDep, svc: ServicesDep) -> FileResponse:
    path, _filename = openai_files.file_content(svc, caller, file_id)
    return FileResponse(path, media_type="application/octet-stream")


# ---- fine-tuning jobs ---------------------------------------------------------------------------


@router.post("/fine_tuning/jobs")
async def create_job(request: Request, caller: CallerDep, svc: ServicesDep) -> JSONResponse:
    try:
        body = await request.json()
    except ValueError:
        raise bad_request("The request body is not valid JSON.", None, "invalid_json") from None
    return JSONResponse(await asyncio.to_thread(openai_jobs.create_job, svc, caller, body))


@router.get("/fine_tuning/jobs")
def list_jobs(request: Request, caller: CallerDep, svc: ServicesDep, after: Cursor = None, limit: Limit = None) -> JSONResponse:
    # The SDK sends metadata={"k": "v"} as metadata[k]=v.
    metadata = {
        k[len("metadata[") : -1]: v for k, v in request.query_params.items() if k.startswith("metadata[") and k.endswith("]")
    }
    return JSONResponse(openai_jobs.list_jobs(svc, caller, after, limit, metadata or None))


@router.get("/fine_tuning/jobs/{job_id}")
def retrieve_job(job_id: str, caller: CallerDep, svc: ServicesDep) -> JSONResponse:
    return JSONResponse(openai_jobs.get_job(svc, caller, job_id))


@router.post("/fine_tuning/jobs/{job_id}/cancel")
def cancel_job(job_id: str, caller: CallerDep, svc: ServicesDep) -> JSONResponse:
    return JSONResponse(openai_jobs.cancel_job(svc, caller, job_id))


@router.post("/fine_tuning/jobs/{job_id}/pause")
def pause_job(job_id: str, caller: CallerDep, svc: ServicesDep) -> JSONResponse:
    return JSONResponse(openai_jobs.pause_job(svc, caller, job_id))


@router.post("/fine_tuning/jobs/{job_id}/resume")
def resume_job(job_id: str, caller: CallerDep, svc: ServicesDep) -> JSONResponse:
    return JSONResponse(openai_jobs.resume_job(svc, caller, job_id))


@router.get("/fine_tuning/jobs/{job_id}/events")
def list_events(job_id: str, caller: CallerDep, svc: ServicesDep, after: Cursor = None, limit: Limit = None) -> JSONResponse:
    return JSONResponse(openai_jobs.list_events(svc, caller, job_id, after, limit))


@router.get("/fine_tuning/jobs/{job_id}/checkpoints")
def list_checkpoints(job_id: str, caller: CallerDep, svc: ServicesDep, after: Cursor = None, limit: Limit = None) -> JSONResponse:
    return JSONResponse(openai_jobs.list_checkpoints(svc, caller, job_id, after, limit))
