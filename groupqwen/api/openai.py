"""The OpenAI-compatible routes, thin: parse the body → one ``Pipeline.run`` → JSON or SSE
(``streaming``)."""

from __future__ import annotations

import asyncio
import math
import secrets
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from groupqwen.access.limits import Admission, estimate_tokens
from groupqwen.api import auth
from groupqwen.api.body import json_object, read
from groupqwen.api.chat import parse_chat
from groupqwen.api.choices import Choices, total_usage
from groupqwen.api.errors import from_validation_error
from groupqwen.api.openapi import SSE, ChatCompletion, EmbeddingList, Model, ModelList, body, errors
from groupqwen.api.schemas.chat import ChatCompletionRequest
from groupqwen.api.schemas.chat_output import ChunkWriter, completion_json, decision_json
from groupqwen.api.schemas.embeddings import EmbeddingRequest, embedding_texts, embeddings_json
from groupqwen.api.schemas.models import model_json
from groupqwen.api.services import Services
from groupqwen.api.streaming import ChunkFrames, Disconnect, EventStream, answer_frames, json_bytes
from groupqwen.cache import Lookup
from groupqwen.config import AUTO_MODEL, Settings
from groupqwen.errors import InvalidRequest, ModelNotFound, UnsupportedParameter
from groupqwen.messages import ChatRequest, Completion, Decision, Usage
from groupqwen.orchestrator.answer import Answer, RequestContext
from groupqwen.orchestrator.router import FIXED_ROUTES
from groupqwen.telemetry import timing
from groupqwen.telemetry.timing import Trace

router = APIRouter()


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def _parse(request: Request, settings: Settings) -> tuple[ChatRequest, ChatCompletionRequest]:
    return parse_chat(json_object(await read(request)), settings)


def decision_headers(decision: Decision, cached: Lookup | None = None) -> dict[str, str]:
    headers = {
        "x-groupqwen-model": decision.model,
        "x-groupqwen-route": decision.route,
        "x-groupqwen-escalations": str(decision.escalations),
        "x-groupqwen-abandoned-tokens": str(decision.abandoned_tokens),
    }
    if cached is not None:
        headers["x-groupqwen-cache"] = cached.status
        if cached.similarity is not None:
            headers["x-groupqwen-cache-similarity"] = f"{cached.similarity:.4f}"
        if cached.stage is not None:
            headers["x-groupqwen-cache-stage"] = cached.stage
        if cached.score is not None:
            headers["x-groupqwen-cache-score"] = f"{cached.score:.4f}"
        if cached.hit_id is not None:
            headers["x-groupqwen-cache-hit-id"] = cached.hit_id
    return headers


CACHE_TTL_HEADER = "x-groupqwen-cache-ttl"
CACHE_RATE_HEADER = "x-groupqwen-cache-max-false-hit-rate"


CACHE_HEADERS = ("cache-control", CACHE_TTL_HEADER, CACHE_RATE_HEADER)


def _header_number(headers: Mapping[str, str], name: str, low: float, high: float, what: str) -> float | None:
    """The header ``name`` as a number in [``low``, ``high``]; ``None`` when absent; else a 400."""
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not low <= value <= high:
        raise InvalidRequest(f"The {name} header must be {what}, not {raw[:40]!r}", param=name)
    return value


def cache_control(headers: Mapping[str, str]) -> tuple[float | None, bool, float | None]:
    """A request's cache wishes from its ``headers`` (HTTP's, or a WebSocket ``chat.create``'s): (TTL for
    its answer, whether to read the cache, accepted false-hit rate).

    ``x-groupqwen-cache-ttl`` sets the TTL in seconds (0: do not store; above ``cache.max_ttl_s``: that);
    ``x-groupqwen-cache-max-false-hit-rate`` (0 to 1) the verifier's accepted false-hit rate for this
    request instead of ``cache.max_false_hit_rate``; ``Cache-Control: no-cache`` skips reading the cache,
    ``no-store`` reading and storing."""
    ttl_s = _header_number(headers, CACHE_TTL_HEADER, 0.0, math.inf, "a number of seconds >= 0")
    rate = _header_number(headers, CACHE_RATE_HEADER, 0.0, 1.0, "a fraction from 0 to 1, e.g. 0.01")
    directives = {d.strip().lower() for d in headers.get("cache-control", "").split(",")}
    if "no-store" in directives:
        return 0.0, False, rate
    return ttl_s, "no-cache" not in directives, rate


@router.post(
    "/v1/chat/completions",
    responses={200: {"model": ChatCompletion, "content": SSE}, **errors(404, 429, 502, 503)},
    openapi_extra=body(ChatCompletionRequest),
)
async def chat_completions(request: Request) -> Response:
    """A chat completion in OpenAI's shape, as JSON or streamed as server-sent events; the routing and cache
    decision in the ``groupqwen`` object and the ``x-groupqwen-*`` headers."""
    return await traced(request, _chat_completions)


async def traced(
    request: Request, handler: Callable[[Request, Services, Trace], Awaitable[Response]]
) -> Response:
    """Every answer (chat, text completion, response), streamed or not, errors included, ends in one
    telemetry record: ``handler`` gets the request's trace and ends it once it has an answer
    (``finish_answer``); an error before that ends it here."""
    services = _services(request)
    trace = services.telemetry.trace()
    try:
        return await handler(request, services, trace)
    except BaseException as exc:
        services.telemetry.finish(trace, exc)
        raise


async def _chat_completions(request: Request, services: Services, trace: Trace) -> Response:
    chat, body = await _parse(request, services.settings)
    completion_id = f"chatcmpl-{secrets.token_hex(16)}"
    return await respond(
        request,
        services,
        trace,
        chat,
        stream=bool(body.stream),
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
        payload=lambda answer, completions, usage: completion_json(
            completion_id, answer.decision, completions, usage, chat.logprobs
        ),
        frames=lambda answer: ChunkWriter(completion_id, answer.decision.model),
    )


async def respond(
    request: Request,
    services: Services,
    trace: Trace,
    chat: ChatRequest,
    *,
    stream: bool,
    include_usage: bool,
    payload: Callable[[Answer, list[Completion], Usage], dict[str, Any]],
    frames: Callable[[Answer], ChunkFrames],
) -> Response:
    """Run ``chat`` and answer with JSON (``payload``'s object for its choices and their total usage, plus
    the ``groupqwen`` decision) or SSE (``frames``' chunks): what chat and text completions share.
    ``chat.n`` choices are run one after another (``choices.py``). The rate limits admit it first (a 429
    before any work) and are settled with the tokens used when the answer ends; the trace learns the
    tenant and the mode; errors before the first token raise from here."""
    auth.check_model(request, chat.model)
    admission = await services.limiter.admit(auth.principal_of(request), estimate_tokens(chat))
    try:
        return await _respond(
            request, services, trace, chat, admission, stream, include_usage, payload, frames
        )
    except BaseException:
        admission.settle(trace.prompt_tokens + trace.completion_tokens)
        raise


def finish_answer(
    services: Services, trace: Trace, admission: Admission, failure: BaseException | None
) -> None:
    """The end of an answer, however it ended: its telemetry record, and its rate limits settled with the
    tokens it used."""
    services.telemetry.finish(trace, failure)
    admission.settle(trace.prompt_tokens + trace.completion_tokens)


async def _respond(
    request: Request,
    services: Services,
    trace: Trace,
    chat: ChatRequest,
    admission: Admission,
    stream: bool,
    include_usage: bool,
    payload: Callable[[Answer, list[Completion], Usage], dict[str, Any]],
    frames: Callable[[Answer], ChunkFrames],
) -> Response:
    trace.tenant = auth.trace_tenant(request, chat.user)
    trace.stream = stream
    ttl_s, read_cache, rate = cache_control(auth.headers(request))
    if chat.n > 1:  # several samples of one question: a cached answer is one sample, and storing n is moot
        ttl_s, read_cache = 0.0, False
    tenant = auth.cache_owner(request, chat.user)
    context = RequestContext(tenant, ttl_s, read_cache, stream, max_false_hit_rate=rate)
    watch = Disconnect(request.receive)
    choices = Choices(services.pipeline, chat, context, watch)
    answer = await choices.first()  # errors before the first token
    if not stream:
        completions = [await watch.watching(answer.collect())]
        while (more := await choices.next()) is not None:
            completions.append(await watch.watching(more.collect()))
        watch.stop()
        usage = total_usage([c.usage for c in completions])
        body = payload(answer, completions, usage)
        body["groupqwen"] = decision_json(
            answer.decision, answer.cache, boxes=answer.boxes, translation=answer.translation
        )
        timing.used(usage)
        finish_answer(services, trace, admission, None)
        headers = {**decision_headers(answer.decision, answer.cache), **admission.headers}
        return Response(json_bytes(body), media_type="application/json", headers=headers)
    events = answer_frames(
        answer,
        choices.next,
        frames(answer),
        choices=chat.n,
        logprobs=chat.logprobs,
        include_usage=include_usage,
        finish=partial(finish_answer, services, trace, admission),
    )
    headers = decision_headers(answer.decision, answer.cache)
    headers.update({"cache-control": "no-cache", "x-accel-buffering": "no", **admission.headers})
    return EventStream(events, headers, watch)


def _route_json(services: Services, name: str, models: tuple[str, ...]) -> dict[str, Any]:
    """A route (``auto``, ``auto:…``) as a model entry: an alias, with the models that may answer it;
    ``resolves_to``: ``auto``'s default model (what it is when no tier is served here), a plain route's
    one model."""
    info: dict[str, Any] = {"status": "alias", "models": list(models)}
    if name == AUTO_MODEL:
        info["resolves_to"] = services.settings.default_model
    elif name not in FIXED_ROUTES:
        info["resolves_to"] = models[0]
    return {
        "id": name,
        "object": "model",
        "created": services.started,
        "owned_by": "groupqwen",
        "groupqwen": info,
    }


@router.get("/v1/models", responses={200: {"model": ModelList}})
async def list_models(request: Request) -> dict[str, Any]:
    """The models and the routes (``auto``, ``auto:…``) this key may use; fine-tuned models recorded since
    the last look too."""
    services = _services(request)
    services.pipeline.discover()
    pool = services.pool
    principal = auth.principal_of(request)
    data = [
        model_json(state, services.started)
        for state in pool.states()
        if principal.may_use(state.spec.id) and auth.may_see(request, state.spec.owner)
    ]
    data += [
        _route_json(services, name, models)
        for name, models in services.pipeline.routes()
        if principal.may_use(name)
    ]
    return {
        "object": "list",
        "data": data,
        "groupqwen": {"memory": {"budget_bytes": pool.budget, "used_bytes": pool.used}},
    }


@router.get("/v1/models/{model_id:path}", responses={200: {"model": Model}, **errors(404)})
async def get_model(request: Request, model_id: str) -> dict[str, Any]:
    """One model as `GET /v1/models` lists it (status, backend, memory, context length), or a route."""
    services = _services(request)
    auth.check_model(request, model_id)
    services.pipeline.discover()
    for name, models in services.pipeline.routes():
        if name == model_id:
            return _route_json(services, name, models)
    for state in services.pool.states():
        if state.spec.id == model_id:
            return model_json(state, services.started)
    raise ModelNotFound(f"The model {model_id!r} does not exist", param="model")


@router.post(
    "/v1/embeddings",
    responses={200: {"model": EmbeddingList}, **errors(404, 429, 503)},
    openapi_extra=body(EmbeddingRequest),
)
async def create_embeddings(request: Request) -> Response:
    """Vectors from the semantic cache's embedder (``cache.embedder``; its ``name`` is the model), so any
    OpenAI client, and another gateway's ``cache.embedder.kind: openai``, can use them."""
    services = _services(request)
    try:
        body = EmbeddingRequest.model_validate(json_object(await read(request)))
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    texts = embedding_texts(body)
    admission = await services.limiter.admit(auth.principal_of(request), math.ceil(sum(map(len, texts)) / 4))
    used = 0
    try:
        body_json = await _embed(services, body, texts)
        used = body_json["usage"]["total_tokens"]
    finally:
        admission.settle(used)
    # serialised here: FastAPI's encoder walks every float first, a third of a millisecond per vector
    return Response(json_bytes(body_json), media_type="application/json", headers=admission.headers)


async def _embed(services: Services, body: EmbeddingRequest, texts: list[str]) -> dict[str, Any]:
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
    return embeddings_json(vectors, embedder.name, body.encoding_format, tokens)
