"""The OpenAI-compatible routes: dispatch only."""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from groupqwen import log
from groupqwen.api.errors import error_body, from_validation_error
from groupqwen.api.schemas.chat import (
    ChatCompletionRequest,
    ChunkWriter,
    completion_json,
    decision_json,
    to_chat_request,
)
from groupqwen.api.schemas.embeddings import EmbeddingRequest, embedding_texts, embeddings_json
from groupqwen.api.schemas.models import model_json
from groupqwen.api.services import Services
from groupqwen.cache import Lookup
from groupqwen.config import AUTO_MODEL, Settings
from groupqwen.errors import (
    ClientDisconnected,
    GroupQwenError,
    InvalidRequest,
    ModelNotFound,
    UnsupportedParameter,
)
from groupqwen.messages import ChatRequest, Decision, Delta
from groupqwen.telemetry import timing
from groupqwen.telemetry.service import Telemetry, status_of
from groupqwen.telemetry.timing import Trace

router = APIRouter()
_log = log.get(__name__)


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def _json_object(request: Request) -> dict[str, Any]:
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
    return data


async def _parse(request: Request, settings: Settings) -> tuple[ChatRequest, ChatCompletionRequest]:
    data = await _json_object(request)
    try:
        body = ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    return to_chat_request(body, settings.max_stop_sequences, settings.max_images), body


def _headers(decision: Decision, cached: Lookup | None = None) -> dict[str, str]:
    headers = {
        "x-groupqwen-model": decision.model,
        "x-groupqwen-route": decision.route,
        "x-groupqwen-escalations": str(decision.escalations),
    }
    if cached is not None:
        headers["x-groupqwen-cache"] = cached.status
        if cached.similarity is not None:
            headers["x-groupqwen-cache-similarity"] = f"{cached.similarity:.4f}"
    return headers


CACHE_TTL_HEADER = "x-groupqwen-cache-ttl"


def _cache_control(request: Request) -> tuple[float | None, bool]:
    """The request's cache wishes: (TTL for its answer, whether to read the cache).

    ``x-groupqwen-cache-ttl`` sets the TTL in seconds (0: do not store; above ``cache.max_ttl_s``: that);
    ``Cache-Control: no-cache`` skips reading the cache, ``no-store`` reading and storing."""
    ttl_s: float | None = None
    raw = request.headers.get(CACHE_TTL_HEADER)
    if raw is not None:
        try:
            ttl_s = float(raw)
        except ValueError:
            ttl_s = -1.0
        if not math.isfinite(ttl_s) or ttl_s < 0:
            raise InvalidRequest(
                f"The {CACHE_TTL_HEADER} header must be a number of seconds >= 0, not {raw[:40]!r}",
                param=CACHE_TTL_HEADER,
            )
    directives = {d.strip().lower() for d in request.headers.get("cache-control", "").split(",")}
    if "no-store" in directives:
        return 0.0, False
    return ttl_s, "no-cache" not in directives


def _cache_tenant(request: Request, chat: ChatRequest) -> str:
    """The cache's tenant: the API key and the ``user`` together (hashed by the cache, never stored)."""
    return f"{request.headers.get('authorization', '')}\x00{chat.user or ''}"


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


class _Disconnect:
    """Watches for the client going away while the request's task works: the body is read, so the only
    message left to receive is ``http.disconnect``; it then cancels that task, which stops the generation
    wherever it waits. ``stop`` before the response's last message (after it, uvicorn answers every
    ``receive`` with a disconnect). One watcher per request, for the answer and its whole stream."""

    def __init__(self, receive: Receive) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self.gone = False
        self._watcher = asyncio.get_running_loop().create_task(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        _log.info("client disconnected; generation cancelled")
        self._task.cancel()

    def stop(self) -> None:
        self._watcher.cancel()

    def absorb(self, exc: asyncio.CancelledError) -> ClientDisconnected:
        """The error that replaces this watcher's cancellation (raise ``exc`` itself when it is not one)."""
        if not self.gone:
            raise exc
        self._task.uncancel()
        return ClientDisconnected("The client closed the connection")


class _EventStream(StreamingResponse):
    """Server-sent events written from the request's own task (Starlette's ``StreamingResponse`` starts a
    task group and a second task for them: a loop turn and more before the first token goes out); the
    request's ``_Disconnect`` stops the stream when the client goes away."""

    def __init__(self, frames: AsyncIterator[bytes], headers: dict[str, str], watch: _Disconnect) -> None:
        super().__init__(frames, media_type="text/event-stream", headers=headers)
        self._watch = watch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            start = {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            await send(start)
            async for frame in self.body_iterator:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
        except asyncio.CancelledError as exc:
            self._watch.absorb(exc)
            return  # the client is gone: nobody to finish the response for
        finally:
            self._watch.stop()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    """Every chat completion, streamed or not, errors included, ends in one telemetry record."""
    services = _services(request)
    trace = services.telemetry.trace()
    try:
        return await _chat_completions(request, services, trace)
    except BaseException as exc:
        services.telemetry.finish(trace, exc)
        raise


async def _chat_completions(request: Request, services: Services, trace: Trace) -> Response:
    chat, body = await _parse(request, services.settings)
    trace.tenant = timing.tenant(chat.user, request.headers.get("authorization"))
    trace.stream = bool(body.stream)
    decision = services.pipeline.decide(chat)
    ttl_s, read_cache = _cache_control(request)
    cached = await services.pipeline.lookup(chat, decision, _cache_tenant(request, chat), read=read_cache)
    trace.decided(decision.model, decision.route)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    _log.info("chat completion", model=decision.model, route=decision.route, stream=body.stream)
    final = [decision]  # the final decision (the cascade's or the cache's), known before the first delta
    looked = [cached]  # the cache's final answer, known before the first delta

    def decided(outcome: Decision) -> None:
        final[0] = outcome
        trace.decided(outcome.model, outcome.route, outcome.escalations)

    def on_cached(lookup: Lookup) -> None:
        looked[0] = lookup
        trace.cache = lookup.status

    watch = _Disconnect(request.receive)
    if not body.stream:
        try:
            completion = await services.pipeline.complete(chat, decision, cached, ttl_s, decided, on_cached)
        except asyncio.CancelledError as exc:
            raise watch.absorb(exc) from None
        finally:
            watch.stop()
        decision = final[0]
        payload = completion_json(completion_id, decision, completion, chat.logprobs)
        payload["groupqwen"] = decision_json(decision)
        trace.used(completion.usage.prompt_tokens, completion.usage.completion_tokens)
        services.telemetry.finish(trace)
        return JSONResponse(payload, headers=_headers(decision, looked[0]))

    deltas = services.pipeline.stream(chat, decision, cached, ttl_s, decided, on_cached)
    try:  # errors before the first token are plain HTTP errors
        first = await anext(deltas)
    except BaseException as exc:
        watch.stop()
        await deltas.aclose()
        if isinstance(exc, asyncio.CancelledError):
            raise watch.absorb(exc) from None
        raise
    decision = final[0]
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    writer = ChunkWriter(completion_id, decision.model)
    frames = _observed(
        _stream(deltas, first, writer, chat.logprobs, include_usage, trace, lambda: decision_json(final[0])),
        services.telemetry,
        trace,
    )
    headers = {**_headers(decision, looked[0]), "cache-control": "no-cache", "x-accel-buffering": "no"}
    return _EventStream(frames, headers, watch)


async def _stream(
    deltas: AsyncGenerator[Delta, None],
    first: Delta,
    writer: ChunkWriter,
    logprobs: bool,
    include_usage: bool,
    trace: Trace,
    info: Callable[[], dict[str, Any]],
) -> AsyncGenerator[bytes, None]:
    async with aclosing(deltas):
        lead = _sse(writer.role())  # sent with the first delta: one write for the first token
        try:
            delta: Delta | None = first
            while delta is not None:
                frame = writer.delta(delta, logprobs)
                if delta.finish_reason is not None:
                    frame["groupqwen"] = info()  # the decision as it stands at the end (confidence known)
                yield lead + _sse(frame)
                lead = b""
                if delta.usage is not None:
                    trace.used(delta.usage.prompt_tokens, delta.usage.completion_tokens)
                if delta.usage is not None and include_usage:
                    yield _sse(writer.usage(delta.usage))
                delta = await anext(deltas, None)
        except GroupQwenError as exc:
            trace.failed(*status_of(exc))
            _log.error("stream failed", code=exc.code, error=exc.message)
            yield lead + _sse(error_body(exc))
        except Exception as exc:
            trace.failed(*status_of(exc))
            _log.exception("stream failed", error=type(exc).__name__)
            failure = GroupQwenError("The stream failed; the request id identifies it in the logs")
            yield lead + _sse(error_body(failure))
    yield b"data: [DONE]\n\n"


async def _observed(
    frames: AsyncGenerator[bytes, None], telemetry: Telemetry, trace: Trace
) -> AsyncIterator[bytes]:
    """Pass ``frames`` through, then finish the request's trace (499 if the client went away first)."""
    failure: BaseException | None = None
    try:
        async with aclosing(frames):
            async for frame in frames:
                yield frame
    except BaseException as exc:
        failure = exc
        raise
    finally:
        telemetry.finish(trace, failure)


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


@router.post("/v1/embeddings")
async def create_embeddings(request: Request) -> Response:
    """Vectors from the semantic cache's embedder (``cache.embedder``; its ``name`` is the model), so any
    OpenAI client, and another gateway's ``cache.embedder.kind: openai``, can use them."""
    services = _services(request)
    try:
        body = EmbeddingRequest.model_validate(await _json_object(request))
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    texts = embedding_texts(body)
    embedder = await services.load_embedder()
    if body.model != embedder.name:
        raise ModelNotFound(
            f"The embedding model {body.model!r} does not exist; this gateway embeds with {embedder.name!r}",
            param="model",
        )
    if body.dimensions is not None and body.dimensions != embedder.dim:
        raise UnsupportedParameter(
            f"{embedder.name!r} gives {embedder.dim} dimensions, not {body.dimensions}", param="dimensions"
        )
    vectors = await asyncio.to_thread(embedder.embed, texts)
    tokens = embedder.count_tokens(texts) or 0
    body_json = embeddings_json(vectors, embedder.name, body.encoding_format, tokens)
    # serialised here: FastAPI's encoder walks every float first, a third of a millisecond per vector
    return Response(json.dumps(body_json, separators=(",", ":")), media_type="application/json")
