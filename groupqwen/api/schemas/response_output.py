"""The response object of ``POST /v1/responses`` and its output items (reasoning, message,
``function_call``), built as plain dicts: ``ResponseWriter`` makes the object as it stands, and the finished
one (``response_events`` streams the same items as events)."""

from __future__ import annotations

import secrets
import time
from typing import Any

from groupqwen.api.schemas.chat_output import decision_json, logprobs_json
from groupqwen.api.schemas.response_tools import function_call_item, tools_json
from groupqwen.api.schemas.responses import ResponsesRequest
from groupqwen.messages import Completion, Decision, TokenLogprob, Tools, TranslationReport, Usage


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


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


def message_item(
    item_id: str, content: list[dict[str, Any]], status: str, role: str = "assistant"
) -> dict[str, Any]:
    return {"type": "message", "id": item_id, "status": status, "role": role, "content": content}


def reasoning_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "reasoning_text", "text": text}] if text else []
    return {"type": "reasoning", "id": item_id, "summary": [], "content": content, "status": status}


class ResponseWriter:
    """The response object of one answer, as it stands; ``body`` is the request, ``created_at`` its time."""

    def __init__(self, body: ResponsesRequest, response_id: str, tools: Tools | None = None) -> None:
        self.id = response_id
        self.body = body
        self.tools = tools
        self.created_at = int(time.time())
        self.message_id = new_id("msg")
        self.reasoning_id = new_id("rs")
        self._call_ids: dict[int, str] = {}

    def call_item_id(self, index: int) -> str:
        """The ``function_call`` item of the answer's call ``index`` (the same while streaming and after)."""
        return self._call_ids.setdefault(index, new_id("fc"))

    def response(
        self,
        status: str,
        *,
        model: str,
        output: list[dict[str, Any]] | None = None,
        usage: Usage | None = None,
        decision: Decision | None = None,
        error: dict[str, Any] | None = None,
        translation: TranslationReport | None = None,
    ) -> dict[str, Any]:
        body = self.body
        fmt = body.text.format if body.text is not None and body.text.format is not None else None
        text_format: dict[str, Any] = {"type": "text"} if fmt is None else {"type": fmt.type}
        if fmt is not None and fmt.type == "json_schema":
            text_format.update(name=fmt.name or "response", schema=fmt.schema_, strict=fmt.strict)
        effort = body.reasoning.effort if body.reasoning is not None else None
        tools, tool_choice = tools_json(self.tools)
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
            "tool_choice": tool_choice,
            "tools": tools,
            "top_logprobs": body.top_logprobs,
            "top_p": body.top_p,
            "truncation": body.truncation or "disabled",
            "usage": usage_json(usage),
            "user": body.user,
        }
        if decision is not None:
            payload["groupqwen"] = decision_json(decision, translation=translation)
        return payload

    def output(self, completion: Completion, logprobs: bool) -> list[dict[str, Any]]:
        items = []
        if completion.reasoning:
            items.append(reasoning_item(self.reasoning_id, completion.reasoning, "completed"))
        status = "incomplete" if completion.finish_reason == "length" else "completed"
        if completion.content or not completion.tool_calls:
            part = text_part(completion.content, completion.logprobs if logprobs else None)
            items.append(message_item(self.message_id, [part], status))
        for index, call in enumerate(completion.tool_calls):
            items.append(function_call_item(self.call_item_id(index), call, "completed"))
        return items

    def done(
        self,
        completion: Completion,
        decision: Decision,
        logprobs: bool,
        output: list[dict[str, Any]] | None = None,
        translation: TranslationReport | None = None,
    ) -> dict[str, Any]:
        """The finished response; ``output`` its items as streamed (else made from ``completion``);
        ``translation``: how a request with ``translation_options`` went (in ``groupqwen``)."""
        status = "incomplete" if completion.finish_reason == "length" else "completed"
        output = self.output(completion, logprobs) if output is None else output
        return self.response(
            status,
            model=decision.model,
            output=output,
            usage=completion.usage,
            decision=decision,
            translation=translation,
        )
