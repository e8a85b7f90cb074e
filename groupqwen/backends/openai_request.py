"""The request an OpenAI-compatible server gets for a ``GenerationRequest``: a chat completion, or for a raw
prompt a text completion; streamed (with ``include_usage``) when the client reads the answer as it comes,
else one JSON answer."""

from __future__ import annotations

from typing import Any

from groupqwen.messages import GenerationRequest, ImagePart, Message, Tools


def request_body(request: GenerationRequest, model: str) -> dict[str, Any]:
    """The upstream's request for ``model`` (its name there): a chat completion, or for a raw prompt a text
    completion (``/completions``, its ``logprobs`` the number of alternatives)."""
    sampling, fmt = request.sampling, request.response_format
    body: dict[str, Any] = {"model": model, "stream": request.stream}
    if request.stream:
        body["stream_options"] = {"include_usage": True}
    if request.raw_prompt:
        body["prompt"] = request.messages[-1].content
        if request.logprobs or request.top_logprobs:
            body["logprobs"] = request.top_logprobs
    else:
        body["messages"] = [_message(m) for m in request.messages]
        body["chat_template_kwargs"] = {"enable_thinking": request.enable_thinking}
        if request.logprobs or request.top_logprobs:
            body.update(logprobs=True, top_logprobs=request.top_logprobs)
    optional = {  # what the client did not set is the server's default
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "seed": sampling.seed,
        "stop": list(sampling.stop),
        "max_tokens": sampling.max_tokens,
        "presence_penalty": sampling.presence_penalty or None,
        "frequency_penalty": sampling.frequency_penalty or None,
        "logit_bias": {str(token): bias for token, bias in sampling.logit_bias} or None,
    }
    body.update((k, v) for k, v in optional.items() if v is not None and v != [])
    if request.tools is not None:
        body.update(tools_body(request.tools))
    if request.translation is not None:  # a Qwen-MT endpoint (models.<id>.translation)
        body["translation_options"] = request.translation.as_json()
    if fmt is not None and fmt.type == "json_schema" and fmt.schema is not None:
        schema = {"name": "response", "schema": fmt.schema, "strict": True}
        body["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif fmt is not None:
        body["response_format"] = {"type": "json_object"}
    return body


def _message(message: Message) -> dict[str, Any]:
    """A message as OpenAI's wire has it; one with images as its text and ``image_url`` parts in order, an
    assistant's with its ``tool_calls``, a tool result with its ``tool_call_id``."""
    if message.tool_calls:
        calls = [c.as_json() for c in message.tool_calls]
        return {"role": message.role, "content": message.content or None, "tool_calls": calls}
    if message.tool_call_id is not None:
        return {"role": message.role, "content": message.content, "tool_call_id": message.tool_call_id}
    if not message.parts:
        return {"role": message.role, "content": message.content}
    parts: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, ImagePart):
            image = {"url": part.url} if part.detail is None else {"url": part.url, "detail": part.detail}
            parts.append({"type": "image_url", "image_url": image})
        else:
            parts.append({"type": "text", "text": part})
    return {"role": message.role, "content": parts}


def tools_body(tools: Tools) -> dict[str, Any]:
    """``tools``, ``tool_choice`` and ``parallel_tool_calls`` as the client sent them."""
    choice: Any = tools.choice
    if tools.choice == "named":
        choice = {"type": "function", "function": {"name": tools.name}}
    return {
        "tools": [t.as_json() for t in tools.functions],
        "tool_choice": choice,
        "parallel_tool_calls": tools.parallel,
    }
