"""Operational routes: health, metrics and model lifetimes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from groupqwen import log
from groupqwen.api import auth
from groupqwen.api.body import json_object, read
from groupqwen.api.errors import error_body, from_validation_error
from groupqwen.api.openapi import SSE, Model, body, errors
from groupqwen.api.schemas.models import model_json
from groupqwen.api.services import Services
from groupqwen.cache import Invalidation
from groupqwen.catalog import FT_PREFIX, recorded, unregister_finetuned
from groupqwen.errors import GroupQwenError, InUse, InvalidRequest, ModelNotFound, NotFound, PermissionDenied
from groupqwen.finetune.jobs import jobs_dir
from groupqwen.orchestrator.pipeline import model_not_found
from groupqwen.telemetry.metrics import CONTENT_TYPE
from groupqwen.telemetry.records import parse_window
from groupqwen.telemetry.service import Telemetry

router = APIRouter()
_log = log.get(__name__)


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    """Liveness: answers while the process serves, with each model's status; `GET /v1/health` checks the
    components."""
    states = _services(request).pool.states()
    return {"status": "ok", "models": {s.spec.id: s.status for s in states}}


def _known(services: Services, model_id: str) -> None:
    if model_id not in services.pool:
        services.pipeline.discover()
    if model_id not in services.pool:
        raise ModelNotFound(f"The model {model_id!r} is not served here", param="model")


@router.post("/v1/models/{model_id:path}/load", responses={200: {"model": Model}, **errors(404, 502, 503)})
async def load_model(request: Request, model_id: str) -> dict[str, Any]:
    """Load a model now (it then idles out after its keep_alive)."""
    services = _services(request)
    _known(services, model_id)
    return model_json(await services.pool.load(model_id), services.started)


@router.post("/v1/models/{model_id:path}/unload", responses={200: {"model": Model}, **errors(404, 409)})
async def unload_model(request: Request, model_id: str) -> dict[str, Any]:
    """Unload a model now; 409 while it serves requests."""
    services = _services(request)
    _known(services, model_id)
    await services.pool.unload(model_id)
    state = next(s for s in services.pool.states() if s.spec.id == model_id)
    return model_json(state, services.started)


@router.delete("/v1/models/{model_id:path}", responses=errors(400, 403, 404, 409))
async def delete_model(request: Request, model_id: str) -> dict[str, Any]:
    """Delete a fine-tuned model (`ft:…`): its record goes, every replica stops serving it (requests in
    flight finish), and the adapter a job made is removed from disk. A tenant deletes its own; the models
    the gateway's own training made, only a key of the `default` tenant."""
    services = _services(request)
    settings = services.settings
    if not model_id.startswith(FT_PREFIX):
        raise InvalidRequest(
            f"{model_id!r} is not a fine-tuned model: only fine-tuned models (ft:…) can be deleted here",
            param="model",
        )
    found = await asyncio.to_thread(recorded, settings.finetuned_dir, model_id)
    if found is None or not auth.may_see(request, found[1]):
        raise model_not_found(model_id)
    adapter, owner = found
    principal = auth.principal_of(request)
    if not owner and not auth.is_operator(principal):
        raise auth.deny(
            PermissionDenied(
                f"The model {model_id!r} was made by the gateway's own training (groupqwen train, or a job "
                "of the 'default' tenant): only a key of the 'default' tenant may delete it."
            ),
            f"delete model {model_id}",
            principal,
        )
    auth.check_model(request, model_id)  # the key's allow-list
    named = next((where for where, model in settings.model_references() if model == model_id), None)
    if named is not None:
        raise InUse(
            f"The model {model_id!r} is named by the configuration ({named}): remove it there first",
            param="model",
        )
    await asyncio.to_thread(unregister_finetuned, settings.finetuned_dir, model_id)
    made_here = adapter.resolve().is_relative_to(jobs_dir(settings).resolve())

    def remove_adapter() -> None:  # once unloaded: a request in flight still had it
        if made_here:
            adapter.unlink(missing_ok=True)

    services.pipeline.forget(model_id, remove_adapter)
    if services.cache is not None:
        try:
            await services.cache.invalidate(Invalidation(model=model_id))
        except GroupQwenError as exc:  # its answers expire with their TTL, and no request can reach them
            _log.warning("cached answers of a deleted model kept", model=model_id, error=exc.message)
    auth.audit("model deleted", f"DELETE /v1/models/{model_id}", principal, adapter_removed=made_here)
    return {"id": model_id, "object": "model", "deleted": True}


# -- telemetry (docs/telemetry.md) ----------------------------------------------------------------------


@router.get(
    "/v1/health",
    responses={
        503: {
            "description": "down: the same report",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def health_detailed(request: Request) -> JSONResponse:
    """Every check (models, database, disk, GPU, and Redis when configured) with its reason; 503 if down."""
    report = await _services(request).telemetry.health.run()
    return JSONResponse(report, status_code=503 if report["status"] == "down" else 200)


@router.get("/v1/metrics", responses=errors(503))
async def metrics_summary(
    request: Request,
    window: str = Query("5m", description="90s, 5m, 1h, 7d …"),
    source: Literal["memory", "store"] = Query("memory", description="recent records, or the database"),
) -> dict[str, Any]:
    """The JSON summary of the chat completions that finished within ``window`` (a tenant's own admin key:
    its tenant's only)."""
    telemetry = _services(request).telemetry
    tenant = auth.metrics_tenant(request)
    if source == "memory":
        return telemetry.summary(parse_window(window, maximum=telemetry.recent_window_s), tenant=tenant)
    if telemetry.writer is None:
        raise InvalidRequest("Invalid value for 'source': this gateway persists no records", param="source")
    return await telemetry.stored_summary(parse_window(window, maximum=telemetry.retention_s), tenant=tenant)


@router.get(
    "/metrics", responses={200: {"content": {CONTENT_TYPE.split(";")[0]: {"schema": {"type": "string"}}}}}
)
async def metrics_prometheus(request: Request) -> Response:
    """Prometheus text format."""
    return Response(_services(request).telemetry.metrics.render(), media_type=CONTENT_TYPE)


@router.get("/v1/metrics/stream", responses={200: {"content": SSE}, **errors(503)})
async def metrics_stream(
    request: Request,
    window: str = Query("1m", description="the window of each summary"),
    interval: float = Query(2.0, ge=0.1, le=60, description="seconds between summaries"),
    events: int | None = Query(None, ge=1, description="stop after this many events"),
) -> StreamingResponse:
    """Server-sent events: ``summary`` every ``interval`` seconds and ``request`` for each finished one (a
    tenant's own admin key: its tenant's only)."""
    telemetry = _services(request).telemetry
    seconds = parse_window(window, maximum=telemetry.recent_window_s)
    telemetry.live.check_room()
    frames = _live_frames(
        telemetry,
        seconds,
        interval,
        events,
        auth.metrics_tenant(request),
        lambda: auth.recheck(request, "summary"),
    )
    return StreamingResponse(
        frames,
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


async def _live_frames(
    telemetry: Telemetry,
    window_s: float,
    interval: float,
    events: int | None,
    tenant: str | None,
    recheck: Callable[[], Awaitable[object]],
) -> AsyncIterator[bytes]:
    """``recheck``: the key looked up again before each summary; a key revoked (or expired) since the
    stream began ends it with an ``error`` event."""
    sent = 0
    async with telemetry.live.subscribe() as subscription:
        next_summary = time.monotonic()
        while events is None or sent < events:
            wait = next_summary - time.monotonic()
            record = await subscription.next(wait) if wait > 0 else None
            if record is not None:
                if tenant is not None and record.tenant != tenant:
                    continue
                yield _event("request", dataclasses.asdict(record))
            else:
                try:
                    await recheck()
                except GroupQwenError as exc:
                    yield _event("error", {"status": exc.status_code, **error_body(exc)})
                    return
                summary = telemetry.summary(window_s, tenant=tenant)
                yield _event("summary", {**summary, "missed": subscription.missed})
                next_summary = time.monotonic() + interval
            sent += 1


# -- the semantic cache (docs/cache.md) ----------------------------------------------------------------


class CacheInvalidation(BaseModel):
    """``POST /v1/cache/invalidate``: entries matching every given condition are dropped."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = Field(None, min_length=1, description="Entries answered by this model")
    older_than_s: float | None = Field(None, ge=0, description="Entries older than this many seconds")
    pattern: str | None = Field(None, min_length=1, max_length=500, description="Glob on the prompt text")


class CacheFeedback(BaseModel):
    """``POST /v1/cache/feedback``: a semantic hit (``x-groupqwen-cache-hit-id``) that did not answer."""

    model_config = ConfigDict(extra="forbid", strict=True)

    hit_id: str = Field(min_length=1, max_length=100, description="The hit's x-groupqwen-cache-hit-id")
    rating: Literal["bad"] = Field(description="bad: the cached answer did not answer the question")


@router.post("/v1/cache/feedback", responses=errors(404, 503), openapi_extra=body(CacheFeedback))
async def cache_feedback(request: Request) -> dict[str, Any]:
    """The hit's entry raises its own bar (docs/cache.md, per-entry bars); an unknown id is a 404, a cache
    store that does not answer a 503."""
    try:
        body = CacheFeedback.model_validate(json_object(await read(request)))
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    cache = _services(request).cache
    if cache is None or not await cache.dislike(body.hit_id):
        raise NotFound(
            f"No semantic hit {body.hit_id[:40]!r} is remembered (an exact hit has none; ids are kept for "
            "the last 100,000 hits of this gateway process, or for ten minutes with the Redis cache)",
            param="hit_id",
        )
    return {"object": "cache.feedback", "hit_id": body.hit_id, "rating": body.rating}


@router.get("/v1/cache/stats", responses=errors(503))
async def cache_stats(request: Request) -> dict[str, Any]:
    """The cache's entries, hits and misses, and its backend (`off` when the cache is disabled)."""
    cache = _services(request).cache
    if cache is None:
        return {"object": "cache.stats", "backend": "off"}
    return {"object": "cache.stats", **dataclasses.asdict(await cache.stats())}


@router.post("/v1/cache/invalidate", responses=errors(503), openapi_extra=body(CacheInvalidation))
async def cache_invalidate(request: Request) -> dict[str, Any]:
    """Remove the cached answers of one model, older than `older_than_s`, or whose question matches
    `pattern` (a glob); at least one is required."""
    raw = await read(request)
    try:
        body = CacheInvalidation.model_validate(json_object(raw or b"{}"))
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    selector = Invalidation(body.model, body.older_than_s, body.pattern)
    if selector.empty():
        raise InvalidRequest(
            "Give at least one of 'model', 'older_than_s' or 'pattern'; DELETE /v1/cache clears everything",
            param="body",
        )
    cache = _services(request).cache
    removed = await cache.invalidate(selector) if cache is not None else 0
    return {"object": "cache.invalidation", "removed": removed}


@router.delete("/v1/cache", responses=errors(503))
async def cache_clear(request: Request) -> dict[str, Any]:
    """Remove every cached answer, returning how many went."""
    cache = _services(request).cache
    removed = await cache.clear() if cache is not None else 0
    return {"object": "cache.cleared", "removed": removed}
