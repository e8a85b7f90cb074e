"""``POST /v1/chat/completions``'s answers on the wire: the JSON ``chat.completion``, the chunks of a
streamed one and the ``groupqwen`` object they carry, built as plain dicts (they are on the hot path of
streaming)."""

from __future__ import annotations

import time
from typing import Any

from groupqwen.api.schemas.tools import tool_call_deltas_json
from groupqwen.api.schemas.translation import translation_json
from groupqwen.cache import Lookup
from groupqwen.messages import Box, Completion, Decision, Delta, TokenLogprob, TranslationReport, Usage


def logprobs_json(items: tuple[TokenLogprob, ...]) -> list[dict[str, Any]]:
    """Each token's log-probability and its alternatives, as chat choices and Responses' text parts give
    them."""
    return [
        {
            "token": lp.token,
            "logprob": lp.logprob,
            "bytes": list(lp.bytes),
            "top_logprobs": [
                {"token": t.token, "logprob": t.logprob, "bytes": list(t.bytes)} for t in lp.top
            ],
        }
        for lp in items
    ]


def _logprobs(items: tuple[TokenLogprob, ...]) -> dict[str, Any]:
    return {"content": logprobs_json(items), "refusal": None}


def usage_json(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def completion_json(
    completion_id: str, decision: Decision, completions: list[Completion], usage: Usage, logprobs: bool
) -> dict[str, Any]:
    """The ``chat.completion`` of ``completions`` (one per choice) and their ``usage`` (``total_usage``)."""
    choices = []
    for index, completion in enumerate(completions):
        message: dict[str, Any] = {"role": "assistant", "content": completion.content}
        if completion.reasoning:
            message["reasoning_content"] = completion.reasoning
        if completion.tool_calls:
            message["tool_calls"] = [c.as_json() for c in completion.tool_calls]
            message["content"] = completion.content or None
        choices.append(
            {
                "index": index,
                "message": message,
                "logprobs": _logprobs(completion.logprobs) if logprobs else None,
                "finish_reason": completion.finish_reason,
            }
        )
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": decision.model,
        "choices": choices,
        "usage": usage_json(usage),
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

    def _chunk(
        self, delta: dict[str, Any], finish: str | None, logprobs: Any = None, index: int = 0
    ) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return {**self._base, "choices": [choice]}

    def role(self, index: int = 0) -> dict[str, Any]:
        return self._chunk({"role": "assistant", "content": ""}, None, index=index)

    def delta(self, delta: Delta, logprobs: bool, index: int = 0) -> dict[str, Any]:
        """Choice ``index``'s piece: ``content`` unless the piece is only reasoning or tool calls."""
        out: dict[str, Any] = {}
        if delta.reasoning:
            out["reasoning_content"] = delta.reasoning
        if delta.content or not (delta.reasoning or delta.tool_calls):
            out["content"] = delta.content
        if delta.tool_calls:
            out["tool_calls"] = tool_call_deltas_json(delta.tool_calls)
        lp = _logprobs(delta.logprobs) if logprobs else None
        return self._chunk(out, delta.finish_reason, lp, index)

    def usage(self, usage: Usage) -> dict[str, Any]:
        return {**self._base, "choices": [], "usage": usage_json(usage)}


def decision_json(
    decision: Decision,
    cached: Lookup | None = None,
    boxes: tuple[Box, ...] = (),
    translation: TranslationReport | None = None,
) -> dict[str, Any]:
    """The decision, as the ``groupqwen`` object of a JSON answer or of a stream's last chunk, with the
    cache's outcome (``cache``) where a cache is configured, the ``boxes`` a vision model's answer points at
    (in pixels of the image sent) when it points at any, and how an in-process translation went
    (``translation``)."""
    out: dict[str, Any] = {
        "route": decision.route,
        "model": decision.model,
        "reason": decision.reason,
        "confidence": None if decision.confidence is None else round(decision.confidence, 4),
        "escalations": decision.escalations,
        "abandoned_tokens": decision.abandoned_tokens,
        "thinking": decision.thinking,
    }
    if cached is not None:
        out["cache"] = cache_json(cached)
    if boxes:
        out["boxes"] = [{"label": b.label, "x1": b.x1, "y1": b.y1, "x2": b.x2, "y2": b.y2} for b in boxes]
    if translation is not None:
        out["translation"] = translation_json(translation)
    return out


def cache_json(cached: Lookup) -> dict[str, Any]:
    """The cache's outcome: status, a hit's stage, the similarity, the verifier's score, and a semantic
    hit's id (for ``POST /v1/cache/feedback``)."""
    return {
        "status": cached.status,
        "stage": cached.stage,
        "similarity": None if cached.similarity is None else round(cached.similarity, 4),
        "score": None if cached.score is None else round(cached.score, 4),
        "reason": cached.bypass or cached.reason,
        "hit_id": cached.hit_id,
    }
