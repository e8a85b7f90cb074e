"""The OpenAI-compatible routes: dispatch only."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from contextlib import aclosing, suppress
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from groupqwen import log
from groupqwen.api.errors import error_body, from_validation_error
from groupqwen.api.schemas import (
    ChatCompletionRequest,
    ChunkWriter,
    completion_json,
    model_json,
    to_chat_request,
)
from groupqwen.api.services import Services
from groupqwen.config import AUTO_MODEL
from groupqwen.errors import ClientDisconnected, GroupQwenError, InvalidRequest, ModelNotFound
from groupqwen.messages import ChatRequest, Decision, Delta

router = APIRouter()
T = TypeVar("T")
_log = log.get(__name__)


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def _parse(request: Request, max_stop_sequences: int) -> tuple[ChatRequest, ChatCompletionRequest]:
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"The request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object")
    try:
        body = ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    return to_chat_request(body, max_stop_sequences), body


def _headers(decision: Decision) -> dict[str, str]:
    return {"x-groupqwen-model": decision.model, "x-groupqwen-route": decision.route}


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work`` but cancel it if the client goes away first (its body is read, so the only message
    left to receive is ``http.disconnect``)."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
            _log.info("client disconnected before the answer; generation cancelled")
            raise ClientDisconnected("The client closed the connection")
    return task.result()


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    services = _services(request)
    chat, body = await _parse(request, services.settings.max_stop_sequences)
    decision = services.pipeline.decide(chat)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    _log.info("chat completion", model=decision.model, route=decision.route, stream=body.stream)
    if not body.stream:
        completion = await _unless_disconnected(request, services.pipeline.complete(chat, decision))
        payload = completion_json(completion_id, decision, completion, chat.logprobs)
        return JSONResponse(payload, headers=_headers(decision))

    deltas = services.pipeline.stream(chat, decision)
    try:  # errors before the first token are plain HTTP errors
        first = await _unless_disconnected(request, anext(deltas))
    except BaseException:
        await deltas.aclose()
        raise
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    frames = _stream(deltas, first, ChunkWriter(completion_id, decision.model), chat.logprobs, include_usage)
    headers = {**_headers(decision), "cache-control": "no-cache", "x-accel-buffering": "no"}
    return StreamingResponse(frames, media_type="text/event-stream", headers=headers)


async def _stream(
    deltas: AsyncGenerator[Delta, None],
    first: Delta,
    writer: ChunkWriter,
    logprobs: bool,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    async with aclosing(deltas):
        yield _sse(writer.role())
        try:
            delta: Delta | None = first
            while delta is not None:
                yield _sse(writer.delta(delta, logprobs))
                if delta.usage is not None and include_usage:
                    yield _sse(writer.usage(delta.usage))
                delta = await anext(deltas, None)
        except GroupQwenError as exc:
            _log.error("stream failed", code=exc.code, error=exc.message)
            yield _sse(error_body(exc))
        except Exception as exc:
            _log.exception("stream failed", error=type(exc).__name__)
            yield _sse(
                error_body(GroupQwenError("The stream failed; the request id identifies it in the logs"))
            )
    yield b"data: [DONE]\n\n"


def _auto_json(services: Services) -> dict[str, Any]:
    return {
        "id": AUTO_MODEL,
        "object": "model",
        "created": services.started,
        "owned_by": "groupqwen",
        "groupqwen": {"status": "alias", "resolves_to": services.settings.default_model},
    }


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    services = _services(request)
    pool = services.pool
    data = [model_json(state, services.started) for state in pool.states()]
    return {
        "object": "list",
        "data": [*data, _auto_json(services)],
        "groupqwen": {"memory": {"budget_bytes": pool.budget, "used_bytes": pool.used}},
    }


@router.get("/v1/models/{model_id:path}")
async def get_model(request: Request, model_id: str) -> dict[str, Any]:
    services = _services(request)
    if model_id == AUTO_MODEL:
        return _auto_json(services)
    for state in services.pool.states():
        if state.spec.id == model_id:
            return model_json(state, services.started)
    raise ModelNotFound(f"The model {model_id!r} does not exist", param="model")
