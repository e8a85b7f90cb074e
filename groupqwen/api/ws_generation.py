"""A ``/v1/ws`` generation: one ``chat.create`` run through ``Pipeline.run`` in a task of its own, its
answer emitted as numbered frames (``chunk``, then ``done``, ``error`` or ``cancelled``) into its
``Generation`` (``api/ws_sessions.py``), whichever connection reads them."""

from __future__ import annotations

import asyncio
import secrets
from contextlib import aclosing, suppress
from typing import Any

from starlette.requests import HTTPConnection

from groupqwen import log
from groupqwen.access.limits import UNLIMITED, estimate_tokens
from groupqwen.api import auth
from groupqwen.api.chat import parse_chat
from groupqwen.api.errors import error_body
from groupqwen.api.openai import cache_control, decision_headers
from groupqwen.api.schemas.chat_output import ChunkWriter, decision_json, usage_json
from groupqwen.api.services import Services
from groupqwen.api.ws_sessions import Cancelled, Generation, Overflow, Session
from groupqwen.errors import GroupQwenError, UnsupportedParameter
from groupqwen.orchestrator.answer import Answer, RequestContext

_log = log.get(__name__)


async def generate(
    services: Services,
    session: Session,
    generation: Generation,
    body: dict[str, Any],
    headers: dict[str, str],
    connection: HTTPConnection,
) -> None:
    """One generation, in its own task: one telemetry record (``transport: ws``), like an HTTP request;
    ``headers``: the frame's cache headers, read as HTTP's are."""
    log.request_id.set(generation.request_id)
    trace = services.telemetry.trace()
    trace.transport = "ws"
    failure: BaseException | None = None
    meta = {"request_id": generation.request_id}
    admission = UNLIMITED
    try:
        await auth.recheck(connection, "chat.create")  # a key revoked since the upgrade: a 401 here
        chat, _ = parse_chat(body, services.settings)
        if chat.n > 1:
            raise UnsupportedParameter(
                "'n' greater than 1 is not supported over /v1/ws: one choice per id", param="n"
            )
        auth.check_model(connection, chat.model)
        # the same rate limits as HTTP: over them, a 429 error frame for this id only
        admission = await services.limiter.admit(auth.principal_of(connection), estimate_tokens(chat))
        trace.tenant = auth.trace_tenant(connection, chat.user)
        trace.stream = True
        ttl_s, read_cache, rate = cache_control(headers)
        owner = auth.cache_owner(connection, chat.user)
        context = RequestContext(owner, ttl_s, read_cache, stream=True, max_false_hit_rate=rate)
        answer = await services.pipeline.run(chat, context)
        await _stream(generation, answer, chat.logprobs)
    except Overflow as exc:
        failure = exc
    except asyncio.CancelledError as exc:
        failure = generation.reason or exc
        if generation.reason is None:
            raise
        asyncio.current_task().uncancel()  # type: ignore[union-attr]
        if isinstance(generation.reason, Cancelled):
            with suppress(Overflow):
                await generation.emit("cancelled", meta)
    except GroupQwenError as exc:
        failure = exc
        _log.info("websocket generation failed", status=exc.status_code, code=exc.code, error=exc.message)
        with suppress(Overflow):
            await generation.emit("error", {"status": exc.status_code, **error_body(exc), **meta})
    except Exception as exc:
        failure = exc
        _log.exception("websocket generation failed", error=type(exc).__name__)
        unexpected = GroupQwenError("The generation failed; the request id identifies it in the logs")
        with suppress(Overflow):
            await generation.emit("error", {"status": 500, **error_body(unexpected), **meta})
    finally:
        services.telemetry.finish(trace, failure)
        admission.settle(trace.prompt_tokens + trace.completion_tokens)
        session.finished(generation)


async def _stream(generation: Generation, answer: Answer, logprobs: bool) -> None:
    """``answer`` as ``chunk`` frames (the ``chat.completion.chunk`` objects SSE sends; the first, the role
    chunk, carries the HTTP headers' information), then ``done`` once the model is released."""
    writer = ChunkWriter(f"chatcmpl-{secrets.token_hex(16)}", answer.decision.model)
    headers = {"x-request-id": generation.request_id, **decision_headers(answer.decision, answer.cache)}
    await generation.emit("chunk", {"data": writer.role(), "headers": headers})
    usage = None
    async with aclosing(answer):
        async for delta in answer:
            chunk = writer.delta(delta, logprobs)
            if delta.finish_reason is not None:
                chunk["groupqwen"] = decision_json(answer.decision, boxes=answer.boxes)
            await generation.emit("chunk", {"data": chunk})
            if delta.usage is not None:
                usage = delta.usage
    done = {
        "usage": None if usage is None else usage_json(usage),
        "groupqwen": decision_json(answer.decision, boxes=answer.boxes),
        "request_id": generation.request_id,
    }
    await generation.emit("done", done)
