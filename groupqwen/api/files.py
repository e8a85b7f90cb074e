"""Fine-tuning files, in OpenAI's shape (docs/finetune.md, "Jobs API"): upload, list, show, read, delete.

``POST /v1/files`` takes a training file (purpose ``fine-tune``), checked line by line before it is kept in
``files_folder``; ``GET /v1/files`` lists them as OpenAI does (``purpose``, ``limit``, ``after``,
``order``); ``GET /v1/files/{id}/content`` returns the bytes kept; ``DELETE /v1/files/{id}`` forgets the
file and removes its bytes, unless a queued or running job trains on it (409, naming the job).

Files are the key's tenant's (``auth.dataset_tenant``): another tenant's are "not found" (404) and not
listed; the gateway's own keys see every tenant's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import StreamingResponse

from groupqwen.api import auth
from groupqwen.api.finetune import jobs_of, owner_of
from groupqwen.api.openapi import errors
from groupqwen.api.services import Services
from groupqwen.errors import FinetuneError, InvalidRequest, NotFound
from groupqwen.finetune.jobs import StoredFile, new_id
from groupqwen.finetune.train import data

router = APIRouter(tags=["fine-tuning"])
PURPOSE = "fine-tune"  # the only purpose served here
_CHUNK = 1 << 20


def file_json(stored: StoredFile) -> dict[str, Any]:
    return {
        "id": stored.id,
        "object": "file",
        "bytes": stored.bytes,
        "created_at": stored.created_at,
        "filename": stored.filename,
        "purpose": stored.purpose,
        "status": "processed",
    }


def files_folder(services: Services) -> Path:
    """Where uploaded (and built) training files are kept."""
    folder = services.settings.data_dir / "finetune" / "files"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def keep_file(request: Request, partial: Path, filename: str) -> dict[str, Any]:
    """Check ``partial`` (a training file written in ``files_folder``) line by line and keep it as a
    ``fine-tune`` file of the caller's tenant; a bad line is a 400 that names ``filename``."""
    services, jobs = jobs_of(request)
    file_id = new_id("file")
    final = files_folder(services) / f"{file_id}.jsonl"

    def check_and_keep() -> int:
        data.check(partial, "file")
        size = partial.stat().st_size
        os.replace(partial, final)
        return size

    try:
        size = await asyncio.to_thread(check_and_keep)
    except FinetuneError as exc:
        raise InvalidRequest(exc.message.replace(str(partial), filename), param="file") from None
    stored = StoredFile(file_id, filename, PURPOSE, size, final, int(time.time()), owner_of(request))
    await asyncio.to_thread(jobs.store.add_file, stored)
    return file_json(stored)


@router.post("/v1/files", responses=errors(400, 413, 503))
async def create_file(
    request: Request, file: Annotated[UploadFile, File()], purpose: Annotated[str, Form()]
) -> dict[str, Any]:
    """Upload a training or validation file (JSONL chat examples, `purpose=fine-tune`); it is checked
    before it is kept."""
    services, _ = jobs_of(request)
    if purpose != PURPOSE:
        raise InvalidRequest(f"purpose {purpose!r} is not served here: only {PURPOSE!r}", param="purpose")
    fd, partial = tempfile.mkstemp(prefix=".upload.", dir=files_folder(services))
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := await file.read(_CHUNK):
                out.write(chunk)
        return await keep_file(request, Path(partial), file.filename or "file.jsonl")
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)


@router.get("/v1/files", responses=errors(400, 404, 503))
async def list_files(
    request: Request,
    purpose: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    after: str | None = None,
    order: Literal["asc", "desc"] = "desc",
) -> dict[str, Any]:
    """The caller's files, newest first (`order=asc`: oldest first), `limit` (1–10,000) at a time, of one
    `purpose` if given; `after`: those that follow that file (a page's `last_id`)."""
    _, jobs = jobs_of(request)
    found = await asyncio.to_thread(
        jobs.store.files,
        auth.dataset_tenant(request),
        purpose=purpose,
        after=after,
        limit=limit + 1,
        ascending=order == "asc",
    )
    page = [file_json(f) for f in found[:limit]]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(found) > limit,
    }


@router.get("/v1/files/{file_id}", responses=errors(404, 503))
async def retrieve_file(request: Request, file_id: str) -> dict[str, Any]:
    """One uploaded file's record."""
    _, jobs = jobs_of(request)
    return file_json(await asyncio.to_thread(jobs.store.file, file_id, auth.dataset_tenant(request)))


@router.get(
    "/v1/files/{file_id}/content",
    responses={
        200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
        **errors(404, 503),
    },
)
async def file_content(request: Request, file_id: str) -> StreamingResponse:
    """The bytes of an uploaded file, as they were kept (JSONL)."""
    _, jobs = jobs_of(request)
    stored = await asyncio.to_thread(jobs.store.file, file_id, auth.dataset_tenant(request))
    try:  # opened now: a delete while it is sent does not cut it short
        handle = await asyncio.to_thread(stored.path.open, "rb")
    except FileNotFoundError:
        raise NotFound(
            f"The file {file_id!r} is recorded but its bytes are gone from {stored.path.parent}",
            param="file_id",
        ) from None
    return StreamingResponse(
        _chunks(handle),
        media_type="application/octet-stream",
        headers={"content-length": str(os.fstat(handle.fileno()).st_size)},
    )


async def _chunks(handle: BinaryIO) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(handle.read, _CHUNK):
            yield chunk
    finally:
        handle.close()


@router.delete("/v1/files/{file_id}", responses=errors(404, 409, 503))
async def delete_file(request: Request, file_id: str) -> dict[str, Any]:
    """Delete an uploaded file (its record and its bytes); 409 while a queued or running job trains on it.
    Jobs that have finished keep naming it."""
    _, jobs = jobs_of(request)
    stored = await asyncio.to_thread(jobs.store.delete_file, file_id, auth.dataset_tenant(request))
    await asyncio.to_thread(stored.path.unlink, missing_ok=True)
    return {"id": stored.id, "object": "file", "deleted": True}
