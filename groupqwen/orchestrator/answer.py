"""What an adapter hands ``Pipeline.run`` besides the request (``RequestContext``), and what it gets back
(``Answer``): an answer that has started, its decision and cache outcome known, its deltas to read."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING

from groupqwen.errors import BackendError
from groupqwen.messages import (
    Box,
    ChatRequest,
    Completion,
    Decision,
    Delta,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    TranslationReport,
    value,
)

if TYPE_CHECKING:
    from groupqwen.cache import Lookup


@value
class RequestContext:
    """What the adapter knows besides the body."""

    tenant: str = ""  # the cache's tenant (``cache_tenant``; hashed by the cache, never stored)
    ttl_s: float | None = None  # the answer's cache TTL (None: the default, 0: do not store)
    read_cache: bool = True  # False: skip reading the cache (the fresh answer is still stored)
    stream: bool = False  # the client reads the answer as it is generated (logged)
    max_false_hit_rate: float | None = None  # the cache verifier's accepted rate (None: the setting's)


def cache_tenant(owner: str | None, user: str | None) -> str:
    """The cache's tenant: who owns the answers (with ``auth: keys`` the key's tenant, with ``auth: off``
    the whole ``Authorization`` header) and the ``user`` together, so that nobody reads another's answers.
    The CLI, with neither, shares the answers of keyless HTTP calls."""
    return f"{owner or ''}\x00{user or ''}"


@dataclass
class Outcome:
    """What answers a request, as the pipeline settles it: the ``decision`` (the cascade's final one, or
    the cache's on a hit) and the cache's ``Lookup`` (``None``: no cache configured); ``translation``: how an
    in-process translation went, once it has ended."""

    decision: Decision
    cache: Lookup | None
    boxes: tuple[Box, ...] = ()  # what a vision model's answer points at, set by its last delta
    translation: TranslationReport | None = None


class Answer:
    """An answer that has started: ``Pipeline.run`` returns it once the first delta exists, so the
    ``decision`` and the ``cache`` outcome are final; only ``decision.confidence`` of a step that accepts
    every answer may be filled in later, by the last delta. Read it once: iterate its deltas (the last has
    ``finish_reason`` and ``usage``) or ``collect`` them; ``aclose`` stops the generation."""

    def __init__(
        self, outcome: Outcome, deltas: AsyncGenerator[Delta, None], first: Delta, request: ChatRequest
    ) -> None:
        self._outcome = outcome
        self._deltas = deltas
        self._first: Delta | None = first
        self.request = request  # as answered: its images prepared (another choice of it reuses them)

    @property
    def decision(self) -> Decision:
        return self._outcome.decision

    @property
    def cache(self) -> Lookup | None:
        return self._outcome.cache

    @property
    def boxes(self) -> tuple[Box, ...]:
        """The boxes in the answer (known once the last delta is read)."""
        return self._outcome.boxes

    @property
    def translation(self) -> TranslationReport | None:
        """How an in-process translation went (set with the last delta)."""
        return self._outcome.translation

    def __aiter__(self) -> AsyncIterator[Delta]:
        return self

    async def __anext__(self) -> Delta:
        first, self._first = self._first, None
        if first is not None:
            return first
        return await anext(self._deltas)

    async def collect(self) -> Completion:
        """The whole answer, for a client that does not stream it."""
        content: list[str] = []
        reasoning: list[str] = []
        logprobs: list[TokenLogprob] = []
        calls: list[ToolCall] = []
        async with aclosing(self):
            async for delta in self:
                content.append(delta.content)
                reasoning.append(delta.reasoning)
                logprobs.extend(delta.logprobs)
                merge_tool_calls(calls, delta.tool_calls)
                if delta.finish_reason is not None and delta.usage is not None:
                    return Completion(
                        content="".join(content),
                        reasoning="".join(reasoning).strip(),
                        finish_reason=delta.finish_reason,
                        usage=delta.usage,
                        logprobs=tuple(logprobs),
                        tool_calls=tuple(calls),
                    )
        raise BackendError(f"model {self.decision.model!r} ended its stream without usage")

    async def aclose(self) -> None:
        """Stop the generation (its model is released); what was not read is lost."""
        await self._deltas.aclose()


def merge_tool_calls(calls: list[ToolCall], pieces: tuple[ToolCallDelta, ...]) -> None:
    """Add streamed pieces to ``calls``: a piece with an ``id`` starts call ``index``, the others extend
    its arguments."""
    for piece in pieces:
        if piece.index == len(calls):
            calls.append(ToolCall(piece.id or f"call_{piece.index}", piece.name or "", piece.arguments))
        elif 0 <= piece.index < len(calls):
            call = calls[piece.index]
            calls[piece.index] = ToolCall(call.id, piece.name or call.name, call.arguments + piece.arguments)
        else:
            raise BackendError(f"a tool call piece has index {piece.index}, after {len(calls)} calls")
