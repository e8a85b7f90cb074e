"""``POST /v1/responses`` on the wire (OpenAI's Responses API): the request (→ the conversation's
``Message``s and a ``ChatRequest``), the response object, and the typed events of a streamed one.

The input is a string (one user turn) or a list of items: messages (``role`` + ``content``, a string or
``input_text`` / ``input_image`` / ``output_text`` parts) and ``reasoning`` items a client hands back (their
text is not sent to the model again, as a chat client's ``reasoning_content`` is not). ``instructions``
becomes the system turn of this response only; ``previous_response_id`` puts the stored conversation
before the input (``api/responses.py``).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import Field

from groupqwen import log
from groupqwen.api.schemas import Wire
from groupqwen.api.schemas.chat import decision_json, logprobs_json
from groupqwen.api.schemas.images import image_of
from groupqwen.config import ImagesConfig
from groupqwen.errors import InvalidRequest, UnsupportedParameter
from groupqwen.messages import (
    ChatRequest,
    Completion,
    Decision,
    ImagePart,
    Message,
    ResponseFormat,
    Role,
    Sampling,
    TokenLogprob,
    Usage,
)

_log = log.get(__name__)

LOGPROBS_INCLUDE = "message.output_text.logprobs"
_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}
_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")


class InputPart(Wire):
    type: str
    text: str | None = None
    image_url: str | None = None
    detail: str | None = None


class InputItem(Wire):
    type: str = "message"
    role: str | None = None
    content: str | list[InputPart] | None = None


class TextFormat(Wire):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class TextConfig(Wire):
    format: TextFormat | None = None


class ReasoningConfig(Wire):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: str | None = None


class ResponsesRequest(Wire):
    """``POST /v1/responses``. Unknown fields are accepted and logged, except ``REFUSED`` ones."""

    model: str = Field(min_length=1)
    input: str | list[InputItem] | None = None
    instructions: str | None = None
    previous_response_id: str | None = Field(None, min_length=1)
    stream: bool = False
    store: bool = True
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_logprobs: int | None = Field(None, ge=0, le=20)
    include: list[str] | None = None
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    metadata: dict[str, str] | None = Field(None, max_length=16)
    user: str | None = None
    truncation: Literal["auto", "disabled"] | None = None
    parallel_tool_calls: bool | None = None


# Fields whose meaning we cannot honour: silently ignoring them would change what the client gets.
REFUSED = {
    "tools": "tool calling is not supported in the Responses API yet; use /v1/chat/completions",
    "tool_choice": "tool calling is not supported in the Responses API yet",
    "background": "background responses are not supported: send the request and read it (or stream it)",
    "conversation": "conversation objects are not supported: chain responses with previous_response_id",
    "prompt": "stored prompt templates are not supported: send the input itself",
}


def _parts(
    item: InputItem, where: str, policy: ImagesConfig, images: list[ImagePart], max_images: int
) -> Message:
    role = _ROLES.get(item.role or "")
    if role is None:
        raise InvalidRequest(
            f"{where}.role must be one of user, assistant, system, developer", param=f"{where}.role"
        )
    if item.content is None:
        raise InvalidRequest(f"{where}.content is required", param=f"{where}.content")
    if isinstance(item.content, str):
        return Message(role, item.content)
    parts: list[str | ImagePart] = []
    for j, part in enumerate(item.content):
        at = f"{where}.content[{j}]"
        if part.type in ("input_text", "output_text"):
            if part.text is None:
                raise InvalidRequest(f"{at}.text is required", param=f"{at}.text")
            parts.append(part.text)
        elif part.type == "input_image":
            if role != "user":
                raise InvalidRequest(
                    f"{at} is an image in a {item.role!r} message: images go in user messages"
                )
            if part.image_url is None:
                raise InvalidRequest(
                    f"{at}.image_url is required (a URL or a data:image/…;base64,… URL; file_id is not "
                    "supported)",
                    param=f"{at}.image_url",
                )
            if len(images) == max_images:
                raise InvalidRequest(f"{at}: a request may carry at most {max_images} images (max_images)")
            images.append(image_of({"url": part.image_url, "detail": part.detail}, at, policy))
            parts.append(images[-1])
        else:
            raise UnsupportedParameter(
                f"{at} has type {part.type!r}: only 'input_text', 'input_image' and 'output_text' parts are "
                "supported",
                param=f"{at}.type",
            )
    text = "\n".join(p for p in parts if isinstance(p, str))
    has_images = any(isinstance(p, ImagePart) for p in parts)
    return Message(role, text, tuple(parts) if has_images else ())


def input_messages(body: ResponsesRequest, policy: ImagesConfig, max_images: int) -> list[Message]:
    """The turns ``input`` adds to the conversation, checked (``reasoning`` items are dropped)."""
    if body.input is None or body.input == "" or body.input == []:
        raise InvalidRequest("'input' is required: a string or a list of input items", param="input")
    if isinstance(body.input, str):
        return [Message("user", body.input)]
    messages: list[Message] = []
    images: list[ImagePart] = []
    for i, item in enumerate(body.input):
        where = f"input[{i}]"
        if item.type == "message":
            messages.append(_parts(item, where, policy, images, max_images))
        elif item.type == "reasoning":
            continue
        elif item.type in ("function_call", "function_call_output"):
            raise UnsupportedParameter(
                f"{where} is a {item.type!r} item: tool calling is not supported in the Responses API yet",
                param=f"{where}.type",
            )
        else:
            raise UnsupportedParameter(
                f"{where} has type {item.type!r}: only 'message' and 'reasoning' items are supported",
                param=f"{where}.type",
            )
    if not any(m.role == "user" for m in messages):
        raise InvalidRequest("'input' has no user message to answer", param="input")
    return messages


def chat_request(body: ResponsesRequest, conversation: list[Message]) -> ChatRequest:
    """The chat completion that answers ``conversation`` (history + input) with ``body``'s settings;
    ``instructions`` leads as the system turn."""
    extra = dict(body.model_extra or {})
    for name, why in REFUSED.items():
        if extra.get(name) not in (None, [], "none", False):
            raise UnsupportedParameter(f"'{name}' is not supported: {why}", param=name)
        extra.pop(name, None)
    if extra:
        _log.info("ignoring unsupported fields", fields=",".join(sorted(extra)))
    unknown = sorted(set(body.include or ()) - {LOGPROBS_INCLUDE, "reasoning.encrypted_content"})
    if unknown:
        raise UnsupportedParameter(
            f"'include' has {', '.join(map(repr, unknown))}: only {LOGPROBS_INCLUDE!r} is supported",
            param="include",
        )
    if body.truncation == "auto":
        raise UnsupportedParameter(
            "truncation 'auto' is not supported: a conversation longer than the context is an error",
            param="truncation",
        )
    response_format = None
    fmt = body.text.format if body.text is not None else None
    if fmt is not None and fmt.type != "text":
        if fmt.type == "json_schema" and fmt.schema_ is None:
            raise InvalidRequest("text.format 'json_schema' needs a 'schema'", param="text.format.schema")
        response_format = ResponseFormat(type=fmt.type, schema=fmt.schema_)
    effort = body.reasoning.effort if body.reasoning is not None else None
    thinking = None if effort is None else effort not in ("none", "minimal")
    messages = [Message("system", body.instructions)] if body.instructions else []
    defaults = Sampling()
    return ChatRequest(
        messages=tuple(messages + conversation),
        model=body.model,
        sampling=Sampling(
            temperature=defaults.temperature if body.temperature is None else body.temperature,
            top_p=defaults.top_p if body.top_p is None else body.top_p,
            max_tokens=body.max_output_tokens,
        ),
        logprobs=LOGPROBS_INCLUDE in (body.include or ()),
        top_logprobs=body.top_logprobs or 0,
        response_format=response_format,
        user=body.user,
        enable_thinking=thinking,
    )


# --------------------------------------------------------------------------------------------------------
# The response object and its stream's events, built as plain dicts.


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def usage_json(usage: Usage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


def text_part(text: str, logprobs: tuple[TokenLogprob, ...] | None) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "output_text", "text": text, "annotations": []}
    if logprobs is not None:
        part["logprobs"] = logprobs_json(logprobs)
    return part


def message_item(item_id: str, content: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def reasoning_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "reasoning_text", "text": text}] if text else []
    return {"type": "reasoning", "id": item_id, "summary": [], "content": content, "status": status}


class ResponseWriter:
    """The response object of one answer, as it stands; ``body`` is the request, ``created_at`` its time."""

    def __init__(self, body: ResponsesRequest, response_id: str) -> None:
        self.id = response_id
        self.body = body
        self.created_at = int(time.time())
        self.message_id = new_id("msg")
        self.reasoning_id = new_id("rs")

    def response(
        self,
        status: str,
        *,
        model: str,
        output: list[dict[str, Any]] | None = None,
        usage: Usage | None = None,
        decision: Decision | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        body = self.body
        fmt = body.text.format if body.text is not None and body.text.format is not None else None
        text_format: dict[str, Any] = {"type": "text"} if fmt is None else {"type": fmt.type}
        if fmt is not None and fmt.type == "json_schema":
            text_format.update(name=fmt.name or "response", schema=fmt.schema_, strict=fmt.strict)
        effort = body.reasoning.effort if body.reasoning is not None else None
        payload: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "completed_at": int(time.time()) if status in ("completed", "incomplete") else None,
            "error": error,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": body.instructions,
            "max_output_tokens": body.max_output_tokens,
            "metadata": body.metadata or {},
            "model": model,
            "output": output or [],
            "parallel_tool_calls": True if body.parallel_tool_calls is None else body.parallel_tool_calls,
            "previous_response_id": body.previous_response_id,
            "reasoning": {"effort": effort, "summary": None},
            "store": body.store,
            "temperature": body.temperature,
            "text": {"format": text_format},
            "tool_choice": "auto",
            "tools": [],
            "top_logprobs": body.top_logprobs,
            "top_p": body.top_p,
            "truncation": body.truncation or "disabled",
            "usage": usage_json(usage),
            "user": body.user,
        }
        if decision is not None:
            payload["groupqwen"] = decision_json(decision)
        return payload

    def output(self, completion: Completion, logprobs: bool) -> list[dict[str, Any]]:
        items = []
        if completion.reasoning:
            items.append(reasoning_item(self.reasoning_id, completion.reasoning, "completed"))
        part = text_part(completion.content, completion.logprobs if logprobs else None)
        status = "incomplete" if completion.finish_reason == "length" else "completed"
        items.append(message_item(self.message_id, [part], status))
        return items

    def done(self, completion: Completion, decision: Decision, logprobs: bool) -> dict[str, Any]:
        """The finished response."""
        status = "incomplete" if completion.finish_reason == "length" else "completed"
        output = self.output(completion, logprobs)
        return self.response(
            status, model=decision.model, output=output, usage=completion.usage, decision=decision
        )
