"""OpenAI wire models for chat completions, and conversion to and from the internal ``messages`` types."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from groupqwen import log
from groupqwen.catalog import ModelSpec
from groupqwen.errors import InvalidRequest, UnsupportedParameter
from groupqwen.messages import (
    ChatRequest,
    Completion,
    Decision,
    Delta,
    Message,
    ResponseFormat,
    Role,
    Sampling,
    TokenLogprob,
    Usage,
)
from groupqwen.pool.scheduler import ModelState

_log = log.get(__name__)


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class ContentPart(_Wire):
    type: str
    text: str | None = None


class ChatMessage(_Wire):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(_Wire):
    include_usage: bool = False


class JsonSchema(_Wire):
    name: str = "response"
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormatIn(_Wire):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchema | None = None


class ChatCompletionRequest(_Wire):
    """``POST /v1/chat/completions``. Unknown fields are accepted and logged, except ``REFUSED`` ones."""

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: ResponseFormatIn | None = None
    user: str | None = None
    enable_thinking: bool | None = None
    chat_template_kwargs: dict[str, Any] | None = None


_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}

# Fields whose meaning we cannot honour: silently ignoring them would change what the client gets.
REFUSED = {
    "tools": "tool calling is not supported yet",
    "functions": "function calling is not supported yet",
    "tool_choice": "tool calling is not supported yet",
    "function_call": "function calling is not supported yet",
    "audio": "audio output is not supported",
    "modalities": "only text output is supported",
}


def _text_of(message: ChatMessage, index: int) -> str:
    if message.content is None:
        raise InvalidRequest(f"messages[{index}].content is required", param=f"messages[{index}].content")
    if isinstance(message.content, str):
        return message.content
    texts = []
    for j, part in enumerate(message.content):
        if part.type != "text" or part.text is None:
            raise UnsupportedParameter(
                f"messages[{index}].content[{j}] has type {part.type!r}: only 'text' parts are supported "
                "(images need a vision model, which is not configured here)",
                param=f"messages[{index}].content[{j}].type",
            )
        texts.append(part.text)
    return "\n".join(texts)


def to_chat_request(body: ChatCompletionRequest, max_stop_sequences: int) -> ChatRequest:
    """Validate what pydantic cannot, and build the internal ``ChatRequest``."""
    extra = dict(body.model_extra or {})
    for name, why in REFUSED.items():
        if extra.get(name) not in (None, [], "none"):
            raise UnsupportedParameter(f"'{name}' is not supported: {why}", param=name)
        extra.pop(name, None)
    if extra:
        _log.info("ignoring unsupported fields", fields=",".join(sorted(extra)))
    if body.n is not None and body.n > 1:
        raise UnsupportedParameter("'n' greater than 1 is not supported", param="n")
    if body.top_logprobs and not body.logprobs:
        raise InvalidRequest("'top_logprobs' requires 'logprobs' to be true", param="top_logprobs")

    messages = []
    for i, message in enumerate(body.messages):
        if message.role in ("tool", "function"):
            raise UnsupportedParameter(
                f"messages[{i}] has role {message.role!r}: tool results need tool calling, not supported yet",
                param=f"messages[{i}].role",
            )
        role: Role = _ROLES[message.role]
        messages.append(Message(role=role, content=_text_of(message, i)))

    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stops) > max_stop_sequences:
        raise InvalidRequest(
            f"'stop' has {len(stops)} sequences; at most {max_stop_sequences} are allowed", param="stop"
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

    defaults = Sampling()
    sampling = Sampling(
        temperature=defaults.temperature if body.temperature is None else body.temperature,
        top_p=defaults.top_p if body.top_p is None else body.top_p,
        seed=body.seed,
        stop=tuple(s for s in stops if s),
        max_tokens=body.max_completion_tokens or body.max_tokens,
    )
    return ChatRequest(
        messages=tuple(messages),
        model=body.model,
        sampling=sampling,
        logprobs=bool(body.logprobs),
        top_logprobs=body.top_logprobs or 0,
        response_format=response_format,
        user=body.user,
        enable_thinking=thinking,
    )


# --------------------------------------------------------------------------------------------------------
# Responses, built as plain dicts (they are on the hot path of streaming).


def _logprobs(items: tuple[TokenLogprob, ...]) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": lp.token,
                "logprob": lp.logprob,
                "bytes": list(lp.bytes),
                "top_logprobs": [
                    {"token": t.token, "logprob": t.logprob, "bytes": list(t.bytes)} for t in lp.top
                ],
            }
            for lp in items
        ],
        "refusal": None,
    }


def usage_json(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def completion_json(
    completion_id: str, decision: Decision, completion: Completion, logprobs: bool
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": completion.content}
    if completion.reasoning:
        message["reasoning_content"] = completion.reasoning
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": decision.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": _logprobs(completion.logprobs) if logprobs else None,
                "finish_reason": completion.finish_reason,
            }
        ],
        "usage": usage_json(completion.usage),
    }


class ChunkWriter:
    """Builds the ``chat.completion.chunk`` objects of one streamed answer."""

    def __init__(self, completion_id: str, model: str) -> None:
        self._base = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }

    def _chunk(self, delta: dict[str, Any], finish: str | None, logprobs: Any = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return {**self._base, "choices": [choice]}

    def role(self) -> dict[str, Any]:
        return self._chunk({"role": "assistant", "content": ""}, None)

    def delta(self, delta: Delta, logprobs: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if delta.reasoning:
            out["reasoning_content"] = delta.reasoning
        if delta.content or not delta.reasoning:
            out["content"] = delta.content
        return self._chunk(out, delta.finish_reason, _logprobs(delta.logprobs) if logprobs else None)

    def usage(self, usage: Usage) -> dict[str, Any]:
        return {**self._base, "choices": [], "usage": usage_json(usage)}


def model_json(state: ModelState, created: int) -> dict[str, Any]:
    spec: ModelSpec = state.spec
    replicas = getattr(state.backend, "replicas", None)
    return {
        "id": spec.id,
        "object": "model",
        "created": created,
        "owned_by": "groupqwen",
        "groupqwen": {
            "status": state.status,
            "error": state.error,
            "backend": spec.backend,
            "size_bytes": spec.size_bytes,
            "family": spec.family,
            "parameters": spec.parameters,
            "quantization": spec.quantization,
            "context_length": spec.context_length,
            "capabilities": {"thinking": spec.thinking, "vision": spec.vision, "tools": spec.tools},
            "memory": {"estimated_bytes": state.estimated_bytes, "measured_bytes": state.measured_bytes},
            "active_requests": state.active,
            "queued_requests": state.queued,
            "last_used": state.last_used,
            "keep_alive": spec.keep_alive,
            "pinned": spec.pinned,
            "max_parallel": spec.max_parallel,
            "replicas": [asdict(r) for r in replicas()] if callable(replicas) else None,
        },
    }
