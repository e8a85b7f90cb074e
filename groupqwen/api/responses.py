"""OpenAI's Responses API, thin like the chat routes: ``POST /v1/responses`` parses the body, puts the
stored conversation of ``previous_response_id`` before its input, makes one ``Pipeline.run`` and writes
the response object or its typed events; ``GET``/``DELETE /v1/responses/{id}`` and
``GET /v1/responses/{id}/input_items`` read the store (``stored_responses.py``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from groupqwen import log
from groupqwen.access.limits import estimate_tokens
from groupqwen.api import auth
from groupqwen.api.body import json_object
from groupqwen.api.errors import from_validation_error
from groupqwen.api.openai import cache_control, decision_headers, finish_answer
from groupqwen.api.openapi import SSE, body, errors
from groupqwen.api.schemas.chat import check_limits, logprobs_json
from groupqwen.api.schemas.responses import (
    ResponsesRequest,
    ResponseWriter,
    chat_request,
    input_messages,
    message_item,
    new_id,
    reasoning_item,
    text_part,
)
from groupqwen.api.services import Services
from groupqwen.api.streaming import Disconnect, EventStream
from groupqwen.errors import GroupQwenError, InvalidRequest
from groupqwen.messages import Completion, Message, TokenLogprob
from groupqwen.orchestrator.answer import Answer, RequestContext
from groupqwen.telemetry import timing

router = APIRouter()
_log = log.get(__name__)


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _owner(request: Request) -> str:
    """Whose stored responses a request reads and writes (``auth.owner``: the key's tenant, or with
    ``auth: off`` the API key sent; hashed)."""
    return hashlib.sha256(auth.owner(request).encode()).hexdigest()


def _input_items(messages: list[Message]) -> tuple[dict[str, Any], ...]:
    items = []
    for message in messages:
        kind = "output_text" if message.role == "assistant" else "input_text"
        parts: list[Any] = list(message.parts) or [message.content]
        content = [
            {"type": kind, "text": p}
            if isinstance(p, str)
            else {"type": "input_image", "image_url": p.url, "detail": p.detail or "auto"}
            for p in parts
        ]
        role = "developer" if message.role == "system" else message.role
        items.append(
            {"id": new_id("msg"), "type": "message", "role": role, "status": "completed", "content": content}
        )
    return tuple(items)


@router.post(
    "/v1/responses",
    responses={200: {"content": SSE}, **errors(404, 429, 502, 503)},
    openapi_extra=body(ResponsesRequest),
)
async def create_response(request: Request) -> Response:
    """Every response, streamed or not, errors included, ends in one telemetry record."""
    services = _services(request)
    trace = services.telemetry.trace()
    try:
        return await _create_response(request, services, trace)
    except BaseException as exc:
        services.telemetry.finish(trace, exc)
        raise


async def _create_response(request: Request, services: Services, trace: timing.Trace) -> Response:
    settings = services.settings
    try:
        body = ResponsesRequest.model_validate(json_object(await request.body()))
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    owner = _owner(request)
    if body.store and settings.responses.max_stored == 0:
        raise InvalidRequest("This gateway stores no responses (responses.max_stored: 0): send store: false")
    history: tuple[Message, ...] = ()
    if body.previous_response_id is not None:
        history = services.responses.get(
            body.previous_response_id, owner, "previous_response_id"
        ).conversation
    new = input_messages(body, settings.images, settings.max_images)
    chat = chat_request(body, [*history, *new])
    check_limits(chat, settings, messages="input", max_tokens="max_output_tokens")
    auth.check_model(request, chat.model)
    admission = await services.limiter.admit(auth.principal_of(request), estimate_tokens(chat))
    try:
        trace.tenant = auth.trace_tenant(request, chat.user)
        trace.stream = body.stream
        ttl_s, read_cache, rate = cache_control(request)
        tenant = auth.cache_owner(request, chat.user)
        context = RequestContext(tenant, ttl_s, read_cache, body.stream, max_false_hit_rate=rate)
        writer = ResponseWriter(body, new_id("resp"))
        watch = Disconnect(request.receive)
        answer = await watch.watching(services.pipeline.run(chat, context))

        def keep(response: dict[str, Any], completion: Completion) -> None:
            if body.store:
                answered = Message("assistant", completion.content)
                conversation = (*history, *new, answered)
                services.responses.put(response, owner, conversation, _input_items(new))

        if not body.stream:
            completion = await watch.watching(answer.collect())
            watch.stop()
            payload = writer.done(completion, answer.decision, chat.logprobs)
            keep(payload, completion)
            finish_answer(services, trace, admission, None)
            return JSONResponse(
                payload, headers={**decision_headers(answer.decision, answer.cache), **admission.headers}
            )
        events = _events(
            answer, writer, chat.logprobs, keep, partial(finish_answer, services, trace, admission)
        )
        headers = decision_headers(answer.decision, answer.cache)
        headers.update({"cache-control": "no-cache", "x-accel-buffering": "no", **admission.headers})
        return EventStream(events, headers, watch)
    except BaseException:
        admission.settle(trace.prompt_tokens + trace.completion_tokens)
        raise


def _event(kind: str, seq: int, payload: dict[str, Any]) -> bytes:
    data = json.dumps(
        {"type": kind, "sequence_number": seq, **payload}, separators=(",", ":"), ensure_ascii=False
    )
    return f"event: {kind}\ndata: {data}\n\n".encode()


class _Events:
    """The typed events of one streamed response, numbered in order."""

    def __init__(self) -> None:
        self.seq = 0

    def __call__(self, kind: str, **payload: Any) -> bytes:
        frame = _event(kind, self.seq, payload)
        self.seq += 1
        return frame


async def _events(
    answer: Answer,
    writer: ResponseWriter,
    logprobs: bool,
    keep: Callable[[dict[str, Any], Completion], None],
    finish: Callable[[BaseException | None], object],
) -> AsyncIterator[bytes]:
    """``answer`` as Responses events: ``response.created`` and ``in_progress``, a reasoning item while the
    model thinks, the message item with its ``output_text`` deltas, then ``response.completed`` (or
    ``incomplete`` when it hit ``max_output_tokens``). A failure mid-stream ends it with
    ``response.failed`` carrying the error; ``finish`` gets what ended the stream once."""
    event = _Events()
    model = answer.decision.model
    failure: BaseException | None = None
    reasoning: list[str] = []
    content: list[str] = []
    tokens: list[TokenLogprob] = []
    output: list[dict[str, Any]] = []
    opened = ""  # the item being streamed: "", "reasoning" or "message"
    try:
        started = writer.response("in_progress", model=model)
        lead = event("response.created", response=started) + event("response.in_progress", response=started)
        async with aclosing(answer):
            try:
                async for delta in answer:
                    frames = [lead]
                    lead = b""
                    if delta.reasoning:
                        if not opened:
                            opened = "reasoning"
                            item = reasoning_item(writer.reasoning_id, "", "in_progress")
                            frames.append(event("response.output_item.added", output_index=0, item=item))
                        reasoning.append(delta.reasoning)
                        frames.append(
                            event(
                                "response.reasoning_text.delta",
                                item_id=writer.reasoning_id,
                                output_index=0,
                                content_index=0,
                                delta=delta.reasoning,
                            )
                        )
                    if delta.content or delta.finish_reason is not None:
                        if opened != "message":
                            frames.extend(_open_message(event, writer, opened, "".join(reasoning), output))
                            opened = "message"
                        content.append(delta.content)
                        tokens.extend(delta.logprobs)
                        if delta.content or delta.logprobs:
                            frames.append(
                                event(
                                    "response.output_text.delta",
                                    item_id=writer.message_id,
                                    output_index=len(output),
                                    content_index=0,
                                    delta=delta.content,
                                    logprobs=logprobs_json(delta.logprobs) if logprobs else [],
                                )
                            )
                    if delta.finish_reason is not None and delta.usage is not None:
                        completion = Completion(
                            "".join(content),
                            "".join(reasoning),
                            delta.finish_reason,
                            delta.usage,
                            tuple(tokens),
                        )
                        frames.extend(_close_message(event, writer, completion, logprobs, len(output)))
                        done = writer.done(completion, answer.decision, logprobs)
                        keep(done, completion)
                        final = (
                            "response.incomplete" if done["status"] == "incomplete" else "response.completed"
                        )
                        frames.append(event(final, response=done))
                    yield b"".join(frames)
            except Exception as exc:
                failure = exc
                error = exc if isinstance(exc, GroupQwenError) else None
                if error is None:
                    _log.exception("stream failed", error=type(exc).__name__)
                    error = GroupQwenError("The stream failed; the request id identifies it in the logs")
                else:
                    _log.error("stream failed", code=error.code, error=error.message)
                failed = writer.response(
                    "failed",
                    model=answer.decision.model,
                    decision=answer.decision,
                    error={"code": error.code or error.error_type, "message": error.message},
                )
                detail = {
                    "code": error.code or error.error_type,
                    "message": error.message,
                    "param": error.param,
                }
                yield lead + event("error", **detail) + event("response.failed", response=failed)
    except BaseException as exc:
        failure = exc
        raise
    finally:
        finish(failure)


def _open_message(
    event: _Events, writer: ResponseWriter, opened: str, reasoning: str, output: list[dict[str, Any]]
) -> list[bytes]:
    """Close the reasoning item (when the model thought) and open the message item with its text part."""
    frames = []
    if opened == "reasoning":
        frames.append(
            event(
                "response.reasoning_text.done",
                item_id=writer.reasoning_id,
                output_index=0,
                content_index=0,
                text=reasoning,
            )
        )
        item = reasoning_item(writer.reasoning_id, reasoning, "completed")
        frames.append(event("response.output_item.done", output_index=0, item=item))
        output.append(item)
    index = len(output)
    frames.append(
        event(
            "response.output_item.added",
            output_index=index,
            item=message_item(writer.message_id, [], "in_progress"),
        )
    )
    frames.append(
        event(
            "response.content_part.added",
            item_id=writer.message_id,
            output_index=index,
            content_index=0,
            part=text_part("", None),
        )
    )
    return frames


def _close_message(
    event: _Events, writer: ResponseWriter, completion: Completion, logprobs: bool, index: int
) -> list[bytes]:
    part = text_part(completion.content, completion.logprobs if logprobs else None)
    status = "incomplete" if completion.finish_reason == "length" else "completed"
    return [
        event(
            "response.output_text.done",
            item_id=writer.message_id,
            output_index=index,
            content_index=0,
            text=completion.content,
            logprobs=logprobs_json(completion.logprobs) if logprobs else [],
        ),
        event(
            "response.content_part.done",
            item_id=writer.message_id,
            output_index=index,
            content_index=0,
            part=part,
        ),
        event(
            "response.output_item.done",
            output_index=index,
            item=message_item(writer.message_id, [part], status),
        ),
    ]


@router.get("/v1/responses/{response_id}", responses=errors(404))
async def get_response(request: Request, response_id: str) -> dict[str, Any]:
    return _services(request).responses.get(response_id, _owner(request)).response


@router.delete("/v1/responses/{response_id}", responses=errors(404))
async def delete_response(request: Request, response_id: str) -> dict[str, Any]:
    _services(request).responses.delete(response_id, _owner(request))
    return {"id": response_id, "object": "response.deleted", "deleted": True}


@router.get(
    "/v1/responses/{response_id}/input_items",
    responses=errors(400, 404),
    openapi_extra={
        "parameters": [
            {
                "name": "order",
                "in": "query",
                "required": False,
                "schema": {"enum": ["asc", "desc"], "default": "desc"},
            }
        ]
    },
)
async def list_input_items(request: Request, response_id: str) -> dict[str, Any]:
    order = request.query_params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest(f"'order' must be 'asc' or 'desc', not {order[:20]!r}", param="order")
    items = list(_services(request).responses.get(response_id, _owner(request)).input_items)
    if order == "desc":
        items.reverse()
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": False,
    }
