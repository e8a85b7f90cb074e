"""``n`` choices: one ``Pipeline.run`` per choice, one after the other (a model serves one stream at a time;
their order is the choices' ``index``).

Choice ``i`` is the request with ``seed + i`` when the request has a seed (reproducible and distinct), else
an unseeded sample of its own; each runs the cascade on its own, so a choice may escalate where another did
not. The headers and the ``groupqwen`` object describe the first choice. With ``n > 1`` the adapter reads and
stores no cache (``RequestContext``): a cached answer is one sample, and ``n`` samples are asked for their
variety.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from groupqwen.messages import ChatRequest, Usage
from groupqwen.orchestrator.answer import Answer, RequestContext
from groupqwen.orchestrator.pipeline import Pipeline

if TYPE_CHECKING:
    from groupqwen.api.streaming import Disconnect


class Choices:
    """The answers of one request, started in turn under one client-disconnect ``watch``."""

    def __init__(self, pipeline: Pipeline, request: ChatRequest, context: RequestContext, watch: Disconnect):
        self._pipeline, self._request, self._context, self._watch = pipeline, request, context, watch
        self.n = request.n
        self._started = 0  # how many choices have been started

    def _choice(self, index: int) -> ChatRequest:
        seed = self._request.sampling.seed
        if index == 0 or seed is None:
            return self._request
        return replace(self._request, sampling=replace(self._request.sampling, seed=seed + index))

    async def first(self) -> Answer:
        """Choice 0, started: its errors (before its first token) are the request's. The other choices
        take its request as answered (its images already fetched and prepared)."""
        self._started = 1
        answer = await self._watch.watching(self._pipeline.run(self._choice(0), self._context))
        self._request = answer.request
        return answer

    async def next(self) -> Answer | None:
        """Choice 1, 2, … to ``n - 1`` in turn, each asked for when the one before has been read; ``None``
        after the last (a coroutine, not an async generator: one choice, the usual, costs no generator)."""
        if self._started == self.n:
            return None
        index, self._started = self._started, self._started + 1
        return await self._watch.watching(self._pipeline.run(self._choice(index), self._context))


def total_usage(usages: list[Usage]) -> Usage:
    """The usage of all choices: the prompt once, every choice's completion."""
    return Usage(usages[0].prompt_tokens, sum(u.completion_tokens for u in usages))
