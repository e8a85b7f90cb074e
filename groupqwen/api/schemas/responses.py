"""``POST /v1/responses`` on the wire (OpenAI's Responses API): the request, and the conversation's
``Message``s and the ``ChatRequest`` it makes (the response object is ``response_output``).

The input is a string (one user turn) or a list of items: messages (``role`` + ``content``, a string or
``input_text`` / ``input_image`` / ``output_text`` parts), the ``function_call`` items of an earlier answer
and the ``function_call_output`` items with their results (``response_tools``), and ``reasoning`` items a
client hands back (their text is not sent to the model again, as a chat client's ``reasoning_content`` is
not). ``instructions`` becomes the system turn of this response only; ``previous_response_id`` puts the
stored conversation before the input (``api/responses.py``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from groupqwen import log
from groupqwen.api.schemas import FalseIfNull, TrueIfNull, Wire
from groupqwen.api.schemas.images import image_of
from groupqwen.api.schemas.response_tools import (
    ResponsesTool,
    ResponsesToolChoice,
    call_of,
    response_tools,
    with_call,
)
from groupqwen.api.schemas.tools import check_tool_results
from groupqwen.api.schemas.translation import TranslationOptionsIn, check_translation, options_of
from groupqwen.config import ImagesConfig
from groupqwen.errors import InvalidRequest, UnsupportedParameter
from groupqwen.messages import (
    ChatRequest,
    ImagePart,
    Message,
    ResponseFormat,
    Role,
    Sampling,
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
    call_id: str | None = None  # function_call and function_call_output items
    name: str | None = None
    arguments: str | None = None
    output: str | list[InputPart] | None = None


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
    stream: FalseIfNull = False
    store: TrueIfNull = True
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
    tools: list[ResponsesTool] | None = None
    tool_choice: str | ResponsesToolChoice | None = None
    translation_options: TranslationOptionsIn | None = None  # Qwen-MT's, as on chat completions


# Fields whose meaning we cannot honour: silently ignoring them would change what the client gets.
REFUSED = {
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


def _output_text(item: InputItem, where: str) -> str:
    if item.output is None:
        raise InvalidRequest(f"{where}.output is required: the call's result", param=f"{where}.output")
    if isinstance(item.output, str):
        return item.output
    texts = []
    for j, part in enumerate(item.output):
        if part.type != "input_text" or part.text is None:
            raise UnsupportedParameter(
                f"{where}.output[{j}] has type {part.type!r}: a call's result holds only 'input_text' parts",
                param=f"{where}.output[{j}].type",
            )
        texts.append(part.text)
    return "\n".join(texts)


def input_messages(
    body: ResponsesRequest, policy: ImagesConfig, max_images: int, history: tuple[Message, ...] = ()
) -> list[Message]:
    """The turns ``input`` adds to the conversation after ``history``, checked (``reasoning`` items are
    dropped; a ``function_call_output`` must answer a call made in ``history`` or the input)."""
    if body.input is None or body.input == "" or body.input == []:
        raise InvalidRequest("'input' is required: a string or a list of input items", param="input")
    if isinstance(body.input, str):
        return [Message("user", body.input)]
    messages: list[Message] = []
    images: list[ImagePart] = []
    called = {call.id for message in history for call in message.tool_calls}
    for i, item in enumerate(body.input):
        where = f"input[{i}]"
        if item.type == "message":
            messages.append(_parts(item, where, policy, images, max_images))
        elif item.type == "function_call":
            call = call_of(item.call_id, item.name, item.arguments, where)
            with_call(messages, call)
            called.add(call.id)
        elif item.type == "function_call_output":
            call_id = check_tool_results(called, item.call_id, f"{where}.call_id")
            messages.append(Message("tool", _output_text(item, where), tool_call_id=call_id))
        elif item.type == "reasoning":
            continue
        else:
            raise UnsupportedParameter(
                f"{where} has type {item.type!r}: only 'message', 'function_call', "
                "'function_call_output' and 'reasoning' items are supported",
                param=f"{where}.type",
            )
    if not any(m.role in ("user", "tool") for m in messages):
        raise InvalidRequest("'input' has no user message or function_call_output to answer", param="input")
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
    chat = ChatRequest(
        messages=tuple(messages + conversation),
        model=body.model,
        sampling=Sampling(
            temperature=body.temperature,
            top_p=body.top_p,
            max_tokens=body.max_output_tokens,
        ),
        logprobs=LOGPROBS_INCLUDE in (body.include or ()),
        top_logprobs=body.top_logprobs or 0,
        response_format=response_format,
        user=body.user,
        enable_thinking=thinking,
        tools=response_tools(body.tools, body.tool_choice, body.parallel_tool_calls),
        translation=options_of(body.translation_options),
        stream=bool(body.stream),
    )
    check_translation(chat, turns="input", system="instructions")
    return chat
