"""OpenAI's Responses API, thin like the chat routes: ``POST /v1/responses`` parses the body, puts the
stored conversation of ``previous_response_id`` before its input, makes one ``Pipeline.run`` and writes
the response object or its typed events; ``GET``/``DELETE /v1/responses/{id}`` and
``GET /v1/responses/{id}/input_items`` read the store (``stored_responses.py``)."""

from __future__ import annotations

import hashlib
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from groupqwen.access.limits import estimate_tokens
from groupqwen.api import auth
from groupqwen.api.body import json_object, read
from groupqwen.api.errors import fields_named, from_validation_error
from groupqwen.api.openai import cache_control, decision_headers, finish_answer, traced
from groupqwen.api.openapi import SSE, body, errors
from groupqwen.api.response_events import response_events
from groupqwen.api.schemas.chat import check_limits
from groupqwen.api.schemas.response_output import ResponseWriter, message_item, new_id
from groupqwen.api.schemas.response_tools import function_call_item
from groupqwen.api.schemas.responses import ResponsesRequest, chat_request, input_messages
from groupqwen.api.services import Services
from groupqwen.api.streaming import Disconnect, EventStream
from groupqwen.errors import InvalidRequest
from groupqwen.messages import Completion, Message
from groupqwen.orchestrator.answer import RequestContext
from groupqwen.telemetry import timing

router = APIRouter()


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _owner(request: Request) -> str:
    """Whose stored responses a request reads and writes (``auth.owner``: the key's tenant, or with
    ``auth: off`` the API key sent; hashed)."""
    return hashlib.sha256(auth.owner(request).encode()).hexdigest()


def _input_items(messages: list[Message]) -> tuple[dict[str, Any], ...]:
    """The input's turns as the items ``input_items`` lists: messages, the calls an assistant turn made
    (``function_call``) and the results sent back (``function_call_output``)."""
    items: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "tool":
            items.append(
                {
                    "id": new_id("fco"),
                    "type": "function_call_output",
                    "call_id": message.tool_call_id,
                    "output": message.content,
                    "status": "completed",
                }
            )
            continue
        if message.content or message.parts or not message.tool_calls:
            kind = "output_text" if message.role == "assistant" else "input_text"
            parts: list[Any] = list(message.parts) or [message.content]
            content = [
                {"type": kind, "text": p}
                if isinstance(p, str)
                else {"type": "input_image", "image_url": p.url, "detail": p.detail or "auto"}
                for p in parts
            ]
            role = "developer" if message.role == "system" else message.role
            items.append(message_item(new_id("msg"), content, "completed", role))
        items.extend(function_call_item(new_id("fc"), call, "completed") for call in message.tool_calls)
    return tuple(items)


@router.post(
    "/v1/responses",
    responses={200: {"content": SSE}, **errors(404, 429, 502, 503)},
    openapi_extra=body(ResponsesRequest),
)
async def create_response(request: Request) -> Response:
    """A response in the Responses API's shape (input items, tools, ``previous_response_id``), as JSON or
    streamed as its typed server-sent events; stored for ``GET`` and continuation unless ``store`` is
    false."""
    return await traced(request, _create_response)


async def _create_response(request: Request, services: Services, trace: timing.Trace) -> Response:
    settings = services.settings
    try:
        body = ResponsesRequest.model_validate(json_object(await read(request)))
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    owner = _owner(request)
    if body.store and settings.responses.max_stored == 0:
        raise InvalidRequest("This gateway stores no responses (responses.max_stored: 0): send store: false")
    history: tuple[Message, ...] = ()
    if body.previous_response_id is not None:
        stored = await services.responses.get(body.previous_response_id, owner, "previous_response_id")
        history = stored.conversation
    new = input_messages(body, settings.images, settings.max_images, history)
    chat = chat_request(body, [*history, *new])
    check_limits(chat, settings, messages="input", max_tokens="max_output_tokens")
    auth.check_model(request, chat.model)
    admission = await services.limiter.admit(auth.principal_of(request), estimate_tokens(chat))
    try:
        trace.tenant = auth.trace_tenant(request, chat.user)
        trace.stream = body.stream
        ttl_s, read_cache, rate = cache_control(auth.headers(request))
        tenant = auth.cache_owner(request, chat.user)
        context = RequestContext(tenant, ttl_s, read_cache, body.stream, max_false_hit_rate=rate)
        writer = ResponseWriter(body, new_id("resp"), chat.tools)
        watch = Disconnect(request.receive)
        with fields_named({"messages": "input", "max_tokens": "max_output_tokens"}):  # over the context, say
            answer = await watch.watching(services.pipeline.run(chat, context))

        async def keep(response: dict[str, Any], completion: Completion) -> None:
            if body.store:
                answered = Message("assistant", completion.content, tool_calls=completion.tool_calls)
                conversation = (*history, *new, answered)
                await services.responses.put(response, owner, conversation, _input_items(new))

        if not body.stream:
            completion = await watch.watching(answer.collect())
            watch.stop()
            payload = writer.done(completion, answer.decision, chat.logprobs, translation=answer.translation)
            await keep(payload, completion)
            finish_answer(services, trace, admission, None)
            return JSONResponse(
                payload, headers={**decision_headers(answer.decision, answer.cache), **admission.headers}
            )
        events = response_events(
            answer, writer, chat.logprobs, keep, partial(finish_answer, services, trace, admission)
        )
        headers = decision_headers(answer.decision, answer.cache)
        headers.update({"cache-control": "no-cache", "x-accel-buffering": "no", **admission.headers})
        return EventStream(events, headers, watch)
    except BaseException:
        admission.settle(trace.prompt_tokens + trace.completion_tokens)
        raise


@router.get("/v1/responses/{response_id}", responses=errors(404))
async def get_response(request: Request, response_id: str) -> dict[str, Any]:
    """A stored response (`store: true`, the default), as it was returned."""
    return (await _services(request).responses.get(response_id, _owner(request))).response


@router.delete("/v1/responses/{response_id}", responses=errors(404))
async def delete_response(request: Request, response_id: str) -> dict[str, Any]:
    """Forget a stored response: it can no longer be read or continued with `previous_response_id`."""
    await _services(request).responses.delete(response_id, _owner(request))
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
    """The input items of a stored response, newest first unless `order=asc`."""
    order = request.query_params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest(f"'order' must be 'asc' or 'desc', not {order[:20]!r}", param="order")
    items = list((await _services(request).responses.get(response_id, _owner(request))).input_items)
    if order == "desc":
        items.reverse()
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": False,
    }
