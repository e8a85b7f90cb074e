"""Review of curated conversations over HTTP, for the web UI (docs/finetune.md, "Review over HTTP").

A dataset lives in ``data_dir/review/<name>/`` (for a key of a tenant other than ``default``,
``data_dir/tenants/<tenant>/review/<name>/``, which no other tenant sees): ``conversations.jsonl`` (what
``groupqwen data curate`` wrote) and ``decisions.jsonl``
(:class:`~groupqwen.finetune.review.ReviewStore`'s file, shared with ``groupqwen data review``, so either
resumes the other). The store is re-read on every request, so decisions made by the terminal review are
seen at once. Writes to one dataset are serialised by an ``asyncio.Lock``; file work runs in a worker
thread.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from groupqwen.api import auth
from groupqwen.api.body import json_object, loads, read
from groupqwen.api.errors import from_validation_error
from groupqwen.api.openapi import body, errors
from groupqwen.config import Settings
from groupqwen.errors import InsufficientStorage, InvalidRecords, InvalidRequest, NotFound
from groupqwen.finetune.records import Conversation, dumps, from_dict, read_jsonl, to_dict
from groupqwen.finetune.review import Decision, ReviewStore, key_of

router = APIRouter()

_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$")  # no leading dot: never "." or ".."
Status = Literal["pending", "accepted", "rejected", "edited"]
STATUSES: tuple[Status, ...] = ("pending", "accepted", "rejected", "edited")
_STATUS_OF: dict[str, Status] = {"accept": "accepted", "reject": "rejected", "edit": "edited"}
NDJSON = "application/x-ndjson"
T = TypeVar("T")


class DecisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=1000, description='"<id>#<branch>"')
    verdict: Literal["accept", "reject", "edit"]
    conversation: dict[str, Any] | None = Field(
        None, description="With 'edit' only: the edited conversation (fields left out keep their value)"
    )


@dataclass(frozen=True)
class Dataset:
    name: str
    folder: Path

    @property
    def conversations(self) -> Path:
        return self.folder / "conversations.jsonl"

    @property
    def decisions(self) -> Path:
        return self.folder / "decisions.jsonl"

    def require(self) -> None:
        if not self.conversations.is_file():
            raise NotFound(f"There is no review dataset {self.name!r}", param="name")

    def load(self) -> tuple[list[Conversation], ReviewStore]:
        self.require()
        return list(read_jsonl(self.conversations)), ReviewStore(self.decisions)


def dataset_at(request: Request, name: str) -> Dataset:
    if not _NAME.match(name):
        raise InvalidRequest(
            "Invalid value for 'name': 1-64 characters of [A-Za-z0-9._-], not starting with a dot",
            param="name",
        )
    settings: Settings = request.app.state.services.settings
    tenant = auth.dataset_tenant(request)
    base = settings.data_dir if tenant is None else settings.data_dir / "tenants" / tenant
    return Dataset(name, base / "review" / name)


def dataset_lock(request: Request, dataset: Dataset) -> asyncio.Lock:
    state = request.app.state
    locks: dict[str, asyncio.Lock] | None = getattr(state, "review_locks", None)
    if locks is None:
        locks = state.review_locks = {}
    return locks.setdefault(str(dataset.folder), asyncio.Lock())


def _status(decision: Decision | None) -> Status:
    return "pending" if decision is None else _STATUS_OF[decision.verdict]


def _counts(conversations: list[Conversation], store: ReviewStore) -> dict[str, int]:
    counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
    for conv in conversations:
        counts[_status(store.get(conv))] += 1
    return {**counts, "total": len(conversations)}


def _item(conv: Conversation, store: ReviewStore) -> dict[str, Any]:
    decision = store.get(conv)
    edited = decision.edited if decision is not None else None
    return {
        "key": key_of(conv),
        "status": _status(decision),
        "conversation": to_dict(conv),
        "edited": to_dict(edited) if edited is not None else None,
    }


def _parse_upload(body: bytes) -> list[Conversation]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("The body is not valid UTF-8", param="body") from None
    conversations: list[Conversation] = []
    seen: set[str] = set()
    for number, line in enumerate(text.split("\n"), 1):  # not splitlines(): U+2028 may sit in a string
        if not line.strip():
            continue
        try:
            conv = from_dict(loads(line))
        except (ValueError, TypeError) as exc:  # json.JSONDecodeError and body.BodyProblem are ValueErrors
            raise InvalidRecords(f"line {number}: {exc}", param="body") from None
        if key_of(conv) in seen:
            raise InvalidRecords(
                f"line {number}: the conversation {key_of(conv)!r} appears twice", param="body"
            )
        seen.add(key_of(conv))
        conversations.append(conv)
    if not conversations:
        raise InvalidRequest("The body holds no conversation (one JSON object per line)", param="body")
    return conversations


@contextmanager
def storage_errors() -> Iterator[None]:
    """A full disk (or quota) under the block is ``InsufficientStorage`` (507), not a 500. The review's
    writes are atomic (a temporary file, then a rename), so nothing was changed."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise InsufficientStorage(
            f"The review data could not be written: the disk of data_dir is full ({exc.strerror}); "
            "nothing was changed"
        ) from None


async def _on_disk(work: Callable[..., T], *args: Any) -> T:
    """``work(*args)`` in a worker thread, under ``storage_errors``."""
    with storage_errors():
        return await asyncio.to_thread(work, *args)


def _write_atomically(path: Path, conversations: list[Conversation]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".conversations-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for conv in conversations:
                f.write(dumps(conv) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@router.post("/v1/review/{name:path}/decisions", responses=errors(404, 507), openapi_extra=body(DecisionBody))
async def decide(request: Request, name: str) -> dict[str, Any]:
    """Record a decision through the shared ReviewStore; the last decision about a conversation wins."""
    dataset = dataset_at(request, name)
    try:
        body = DecisionBody.model_validate(json_object(await read(request) or b"{}"))
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    if body.verdict != "edit" and body.conversation is not None:
        raise InvalidRequest("'conversation' goes only with the verdict 'edit'", param="conversation")
    if body.verdict == "edit" and body.conversation is None:
        raise InvalidRequest("The verdict 'edit' needs the edited 'conversation'", param="conversation")

    def record() -> dict[str, Any]:
        conversations, store = dataset.load()
        original = next((c for c in conversations if key_of(c) == body.key), None)
        if original is None:
            raise NotFound(f"There is no conversation {body.key!r} in {dataset.name!r}", param="key")
        edited = None
        if body.conversation is not None:
            try:
                edited = from_dict({**to_dict(original), **body.conversation})
            except (ValueError, TypeError) as exc:
                raise InvalidRequest(
                    f"Invalid value for 'conversation': {exc}", param="conversation"
                ) from None
            if key_of(edited) != body.key:
                raise InvalidRequest(
                    "An edit keeps the conversation's 'id' and 'branch'", param="conversation"
                )
        decision = store.decide(original, body.verdict, edited)
        return {
            "object": "review.decision",
            "key": decision.key,
            "verdict": decision.verdict,
            "status": _status(decision),
            "counts": _counts(conversations, store),
        }

    async with dataset_lock(request, dataset):
        return await _on_disk(record)


@router.get(
    "/v1/review/{name:path}/export",
    responses={200: {"content": {NDJSON: {"schema": {"type": "string"}}}}, **errors(404)},
)
async def export(
    request: Request,
    name: str,
    keep_pending: bool = Query(
        True, description="Keep the conversations not reviewed yet (false: drop them)"
    ),
) -> Response:
    """The conversations the review did not reject as JSONL (accepted, edited as edited, and not reviewed
    unless ``keep_pending=false``): what ``groupqwen data review --apply`` writes."""
    dataset = dataset_at(request, name)

    def render() -> str:
        conversations, store = dataset.load()
        return "".join(dumps(c) + "\n" for c in store.apply(conversations, keep_pending))

    async with dataset_lock(request, dataset):
        text = await asyncio.to_thread(render)
    disposition = f'attachment; filename="{dataset.name}.jsonl"'
    return Response(text, media_type=NDJSON, headers={"content-disposition": disposition})


@router.post("/v1/review/{name:path}", responses=errors(507), openapi_extra=body(media_type=NDJSON))
async def upload(request: Request, name: str) -> dict[str, Any]:
    """Create or replace the dataset's conversations from a curated JSONL body; decisions are kept."""
    dataset = dataset_at(request, name)
    body = await read(request)  # RequestContextMiddleware caps its size (max_body_bytes → 413)
    conversations = await asyncio.to_thread(_parse_upload, body)
    async with dataset_lock(request, dataset):
        await _on_disk(_write_atomically, dataset.conversations, conversations)
    return {"object": "review.dataset", "name": dataset.name, "conversations": len(conversations)}


@router.get("/v1/review/{name:path}", responses=errors(404))
async def list_conversations(
    request: Request,
    name: str,
    status: Literal["pending", "accepted", "rejected", "edited", "all"] = Query("pending"),
    limit: int = Query(20, ge=1, le=500),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    """Counts per status and one page of the conversations with the given status, in file order."""
    dataset = dataset_at(request, name)

    def page() -> dict[str, Any]:
        conversations, store = dataset.load()
        chosen = [c for c in conversations if status == "all" or _status(store.get(c)) == status]
        return {
            "object": "review.page",
            "name": dataset.name,
            "status": status,
            "counts": _counts(conversations, store),
            "total": len(chosen),
            "offset": offset,
            "limit": limit,
            "data": [_item(c, store) for c in chosen[offset : offset + limit]],
        }

    async with dataset_lock(request, dataset):
        return await asyncio.to_thread(page)
