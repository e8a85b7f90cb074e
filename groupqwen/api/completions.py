"""``POST /v1/completions`` (OpenAI's legacy text completions), thin like the chat route: parse the body →
one ``Pipeline.run`` (the prompt continued as written) → JSON or SSE ``text_completion`` chunks
(``openai.respond``)."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from groupqwen.api.body import json_object, read
from groupqwen.api.errors import fields_named, from_validation_error
from groupqwen.api.openai import respond, traced
from groupqwen.api.openapi import SSE, body, errors
from groupqwen.api.schemas.chat import check_limits
from groupqwen.api.schemas.completions import (
    CompletionRequest,
    TextChunkWriter,
    completion_json,
    to_chat_request,
)
from groupqwen.api.services import Services
from groupqwen.telemetry.timing import Trace

router = APIRouter()


@router.post(
    "/v1/completions",
    responses={200: {"content": SSE}, **errors(404, 429, 502, 503)},
    openapi_extra=body(CompletionRequest),
)
async def completions(request: Request) -> Response:
    """A text completion (the legacy OpenAI endpoint) of ``prompt``, as JSON or streamed as server-sent
    events."""
    return await traced(request, _completions)


async def _completions(request: Request, services: Services, trace: Trace) -> Response:
    try:
        body = CompletionRequest.model_validate(json_object(await read(request)))
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    chat = to_chat_request(body, services.settings.max_stop_sequences)
    check_limits(chat, services.settings, messages="prompt", max_tokens="max_tokens")
    completion_id = f"cmpl-{secrets.token_hex(16)}"
    echo = chat.messages[0].content if body.echo else ""
    with fields_named({"messages": "prompt"}):  # a prompt over the model's context, say
        return await respond(
            request,
            services,
            trace,
            chat,
            stream=body.stream,
            include_usage=bool(body.stream_options and body.stream_options.include_usage),
            payload=lambda answer, completions, usage: completion_json(
                completion_id, answer.decision, completions, usage, chat.logprobs, echo
            ),
            frames=lambda answer: TextChunkWriter(completion_id, answer.decision.model, echo),
        )
