"""``POST /v1/chat/completions``'s request on the wire (→ ``ChatRequest``); its answers are
``chat_output.py``'s."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from pydantic import Field

from groupqwen import log
from groupqwen.api.schemas import FalseIfNull, Wire
from groupqwen.api.schemas.images import image_of
from groupqwen.api.schemas.tools import (
    NamedToolChoice,
    ToolCallIn,
    ToolIn,
    calls_of,
    check_tool_results,
    tools_of,
)
from groupqwen.api.schemas.translation import (
    TranslationOptionsIn,
    check_translation,
    options_of,
)
from groupqwen.config import Settings
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

MAX_CHOICES = 8  # ``n``: each choice is a generation of its own
MAX_LOGIT_BIAS = 300  # entries of ``logit_bias`` (OpenAI's limit)


MAX_NAME_CHARS = 256  # model, user, a message's name, each stop string


class ContentPart(Wire):
    type: str
    text: str | None = None
    image_url: object = None  # checked by ``image_of``, which names the exact field that is wrong


class ChatMessage(Wire):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = Field(None, max_length=MAX_NAME_CHARS)
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None


class StreamOptions(Wire):
    include_usage: bool = False
    include_obfuscation: bool | None = None  # OpenAI's padding against side channels: nothing to pad here


class JsonSchema(Wire):
    name: str = "response"
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormatIn(Wire):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchema | None = None


class ChatCompletionRequest(Wire):
    """``POST /v1/chat/completions``. Unknown fields are accepted and logged, except ``REFUSED`` ones."""

    model: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: FalseIfNull = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = Field(None, ge=1, le=MAX_CHOICES)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: ResponseFormatIn | None = None
    user: str | None = Field(None, max_length=MAX_NAME_CHARS)
    enable_thinking: bool | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    tools: list[ToolIn] | None = None
    tool_choice: str | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    translation_options: TranslationOptionsIn | None = None  # Qwen-MT's (``schemas/translation.py``)


_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}

# Fields whose meaning we cannot honour: silently ignoring them would change what the client gets.
REFUSED = {
    "functions": "the legacy function calling is not supported: send the functions as 'tools'",
    "function_call": "the legacy function calling is not supported: send 'tool_choice'",
    "audio": "audio output is not supported",
    "modalities": "only text output is supported",
}


def _text(text: str, where: str, max_chars: int) -> str:
    if len(text) > max_chars:
        raise InvalidRequest(
            f"{where} has {len(text)} characters; at most {max_chars} are accepted (max_text_chars)",
            param=where,
        )
    return text


def _message_of(message: ChatMessage, index: int, images: list[ImagePart], settings: Settings) -> Message:
    """The internal ``Message``; its images are appended to ``images`` (the request's, for the cap) once
    ``settings.images`` lets them through."""
    role: Role = _ROLES[message.role]
    max_images = settings.max_images
    calls = calls_of(message.tool_calls)
    if calls and role != "assistant":
        where = f"messages[{index}].tool_calls"
        raise InvalidRequest(f"{where}: only assistant messages carry tool calls", param=where)
    if message.content is None and not calls:
        raise InvalidRequest(f"messages[{index}].content is required", param=f"messages[{index}].content")
    if message.content is None or isinstance(message.content, str):
        text = _text(message.content or "", f"messages[{index}].content", settings.max_text_chars)
        return Message(role, text, tool_calls=calls)
    parts: list[str | ImagePart] = []
    for j, part in enumerate(message.content):
        where = f"messages[{index}].content[{j}]"
        if part.type == "text":
            if part.text is None:
                raise InvalidRequest(f"{where}.text is required", param=f"{where}.text")
            parts.append(_text(part.text, f"{where}.text", settings.max_text_chars))
        elif part.type == "image_url":
            if role != "user":
                raise InvalidRequest(
                    f"{where} is an image in a {message.role!r} message: images go in user messages only",
                    param=f"{where}.type",
                )
            if len(images) == max_images:
                raise InvalidRequest(
                    f"{where}: a request may carry at most {max_images} images (max_images)", param=where
                )
            images.append(image_of(part.image_url, where, settings.images))
            parts.append(images[-1])
        else:
            raise UnsupportedParameter(
                f"{where} has type {part.type!r}: only 'text' and 'image_url' parts are supported",
                param=f"{where}.type",
            )
    text = "\n".join(p for p in parts if isinstance(p, str))
    has_images = any(isinstance(p, ImagePart) for p in parts)
    return Message(role, text, tuple(parts) if has_images else (), tool_calls=calls)


def _count(turns: int, param: str, settings: Settings) -> None:
    if turns > settings.max_messages:
        raise InvalidRequest(
            f"'{param}' has {turns} messages; at most {settings.max_messages} are accepted (max_messages)",
            param=param,
        )


def _tokens(wanted: int | None, param: str, settings: Settings) -> None:
    limit = settings.max_output_tokens
    if limit is not None and wanted is not None and wanted > limit:
        raise InvalidRequest(
            f"'{param}' is {wanted}; at most {limit} are accepted (max_output_tokens)", param=param
        )


def check_limits(chat: ChatRequest, settings: Settings, *, messages: str, max_tokens: str) -> None:
    """The request limits of ``settings`` on a request built by another surface (text completions, the
    Responses API): ``messages`` names its turns' field (``prompt``, ``input``), ``max_tokens`` its
    token-limit field."""
    _count(len(chat.messages), messages, settings)
    for message in chat.messages:
        for text in message.parts or (message.content,):
            if isinstance(text, str):
                _text(text, messages, settings.max_text_chars)
    _tokens(chat.sampling.max_tokens, max_tokens, settings)


def _refuse(extra: dict[str, Any]) -> None:
    """The fields a request has beyond ``ChatCompletionRequest``'s: a 400 for a ``REFUSED`` one that is
    set, the others logged as ignored."""
    for name, why in REFUSED.items():
        if extra.get(name) not in (None, [], "none"):
            raise UnsupportedParameter(f"'{name}' is not supported: {why}", param=name)
    ignored = sorted(name for name in extra if name not in REFUSED)
    if ignored:
        _log.info("ignoring unsupported fields", fields=",".join(ignored))


def to_chat_request(body: ChatCompletionRequest, settings: Settings) -> ChatRequest:
    """Validate what pydantic cannot, and build the internal ``ChatRequest``: the request limits of
    ``settings`` (``max_messages``, ``max_text_chars``, ``max_output_tokens``, ``max_stop_sequences``,
    ``max_images``), and which image URLs may be forwarded (``settings.images``:
    ``api/schemas/images.py``)."""
    if body.model_extra:
        _refuse(body.model_extra)
    if body.top_logprobs and not body.logprobs:
        raise InvalidRequest("'top_logprobs' requires 'logprobs' to be true", param="top_logprobs")

    _count(len(body.messages), "messages", settings)
    max_tokens = body.max_completion_tokens or body.max_tokens
    _tokens(max_tokens, "max_completion_tokens" if body.max_completion_tokens else "max_tokens", settings)
    messages: list[Message] = []
    parts: list[ImagePart] = []
    called: set[str] = set()  # the ids of the tool calls so far: a tool message answers one of them
    for i, message in enumerate(body.messages):
        if message.role == "function":
            raise UnsupportedParameter(
                f"messages[{i}] has the legacy role 'function': send tool results as role 'tool' with a "
                "tool_call_id",
                param=f"messages[{i}].role",
            )
        turn = _message_of(message, i, parts, settings)
        if turn.role == "tool":
            turn = replace(
                turn,
                tool_call_id=check_tool_results(called, message.tool_call_id, f"messages[{i}].tool_call_id"),
            )
        called.update(c.id for c in turn.tool_calls)
        messages.append(turn)

    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    for i, stop in enumerate(stops):
        if len(stop) > MAX_NAME_CHARS:
            where = "stop" if isinstance(body.stop, str) else f"stop[{i}]"
            raise InvalidRequest(
                f"'{where}' has {len(stop)} characters; at most {MAX_NAME_CHARS}", param=where
            )
    if len(stops) > settings.max_stop_sequences:
        raise InvalidRequest(
            f"'stop' has {len(stops)} sequences; at most {settings.max_stop_sequences} are allowed",
            param="stop",
        )
    response_format = None
    if body.response_format is not None and body.response_format.type != "text":
        schema = None
        if body.response_format.type == "json_schema":
            if body.response_format.json_schema is None or body.response_format.json_schema.schema_ is None:
                raise InvalidRequest(
                    "response_format 'json_schema' needs json_schema.schema",
                    param="response_format.json_schema",
                )
            schema = body.response_format.json_schema.schema_
        response_format = ResponseFormat(type=body.response_format.type, schema=schema)

    thinking = body.enable_thinking
    template_thinking = (body.chat_template_kwargs or {}).get("enable_thinking")
    if thinking is None and template_thinking is not None:
        if not isinstance(template_thinking, bool):
            raise InvalidRequest(
                "chat_template_kwargs.enable_thinking must be a boolean",
                param="chat_template_kwargs.enable_thinking",
            )
        thinking = template_thinking

    sampling = Sampling(
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=tuple(s for s in stops if s),
        max_tokens=max_tokens,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        logit_bias=_logit_bias(body.logit_bias),
    )
    chat = ChatRequest(
        messages=tuple(messages),
        model=body.model,
        sampling=sampling,
        logprobs=bool(body.logprobs),
        top_logprobs=body.top_logprobs or 0,
        response_format=response_format,
        user=body.user,
        enable_thinking=thinking,
        tools=tools_of(body.tools, body.tool_choice, body.parallel_tool_calls),
        n=body.n or 1,
        translation=options_of(body.translation_options),
        stream=bool(body.stream),
    )
    check_translation(chat)
    return chat


def _logit_bias(bias: dict[str, float] | None) -> tuple[tuple[int, float], ...]:
    """``logit_bias`` as (token id, bias) pairs: keys are token ids (as strings), values in [-100, 100]."""
    if not bias:
        return ()
    if len(bias) > MAX_LOGIT_BIAS:
        raise InvalidRequest(
            f"logit_bias has {len(bias)} entries; at most {MAX_LOGIT_BIAS} are allowed", param="logit_bias"
        )
    pairs: list[tuple[int, float]] = []
    for key, value in bias.items():
        if not key.isascii() or not key.isdigit():
            raise InvalidRequest(
                f"logit_bias keys are token ids (non-negative integers as strings), not {key[:40]!r}",
                param="logit_bias",
            )
        if not -100 <= value <= 100:
            raise InvalidRequest(
                f"logit_bias[{key!r}] is {value}: a bias must be between -100 and 100", param="logit_bias"
            )
        pairs.append((int(key), float(value)))
    return tuple(sorted(pairs))
