"""A scripted backend for tests: it streams the tokens it was given, with their log-probabilities; a request
with tools has its tool calls read out of those tokens as from a real model's (``tool_calls.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field, replace

from groupqwen.backends.tool_calls import ToolCallParser
from groupqwen.errors import BackendError, ContextLengthExceeded
from groupqwen.messages import (
    Chunk,
    FinishReason,
    GenerationRequest,
    ReplicaState,
    TokenLogprob,
    TopLogprob,
    Usage,
)


@dataclass
class FakeBackend:
    """Streams ``tokens`` (each with ``logprob``), honouring ``max_tokens`` and ``stop``.

    A prompt's token count is its number of whitespace-separated words; over ``n_ctx`` it raises
    ``ContextLengthExceeded`` like a real model. ``fail_after`` raises ``BackendError`` (what any real
    backend's failure becomes) after that many tokens; ``delay`` sleeps between tokens. ``requests`` records
    what it was asked (the last ``keep_requests`` of them, when set: a served fake keeps 1,000, so a long run
    does not grow), ``cancelled`` counts streams closed before their end, ``loads`` counts loads.
    """

    model_id: str = "fake"
    tokens: Sequence[str] = ("Hello", ",", " world", "!")
    logprob: float = -0.1
    logprobs: Sequence[float] = ()  # per token, where given (then ``logprob``)
    n_ctx: int = 4096
    delay: float = 0.0
    fail_after: int | None = None
    requests: list[GenerationRequest] = field(default_factory=list)
    keep_requests: int | None = None
    cancelled: int = 0
    loads: int = 0
    active: int = 0

    async def load(self) -> None:
        self.loads += 1

    async def close(self) -> None:
        return None

    def replicas(self) -> tuple[ReplicaState, ...]:
        return ()

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        self.requests.append(request)
        if self.keep_requests is not None and len(self.requests) > self.keep_requests:
            del self.requests[: len(self.requests) - self.keep_requests]
        prompt_tokens = sum(len(m.content.split()) + 4 for m in request.messages)
        max_tokens = request.sampling.max_tokens
        if prompt_tokens + (max_tokens or 0) > self.n_ctx:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {self.n_ctx} tokens; the request needs "
                f"{prompt_tokens} prompt tokens plus {max_tokens or 0} to generate.",
                param="messages",
            )
        self.active += 1
        finished = False
        tools = request.tools
        calls = ToolCallParser(tools, self.model_id) if tools is not None and tools.active else None
        try:
            text = ""
            produced = 0
            finish: FinishReason = "stop"
            for token in self.tokens:
                if max_tokens is not None and produced >= max_tokens:
                    finish = "length"
                    break
                if self.fail_after is not None and produced >= self.fail_after:
                    raise BackendError(f"model {self.model_id!r} failed: scripted failure")
                if self.delay:
                    await asyncio.sleep(self.delay)
                else:
                    await asyncio.sleep(0)
                text += token
                hit = next((s for s in request.sampling.stop if s in text), None)
                if hit is not None:
                    keep = text[: text.index(hit)]
                    piece = keep[len(text) - len(token) :] if len(keep) > len(text) - len(token) else ""
                    if piece:
                        yield _called(calls, Chunk(text=piece))
                    produced += 1
                    break
                logprob = self.logprobs[produced] if produced < len(self.logprobs) else self.logprob
                produced += 1
                top = tuple(
                    TopLogprob(token=t, logprob=logprob - i, bytes=tuple(t.encode()))
                    for i, t in enumerate([token, "<alt>"][: request.top_logprobs])
                )
                scored = request.logprobs or request.top_logprobs > 0
                logprobs = (TokenLogprob(token, logprob, tuple(token.encode()), top),) if scored else ()
                yield _called(calls, Chunk(text=token, logprobs=logprobs))
            finished = True
            last = Chunk(finish_reason=finish, usage=Usage(prompt_tokens, produced))
            if calls is not None:
                rest, pieces = calls.finish(truncated=finish == "length")
                called = finish == "stop" and bool(calls.calls)
                last = replace(
                    last, text=rest, tool_calls=pieces, finish_reason="tool_calls" if called else finish
                )
            yield last
        finally:
            self.active -= 1
            if not finished:
                self.cancelled += 1


def _called(calls: ToolCallParser | None, chunk: Chunk) -> Chunk:
    """``chunk`` with the tool calls of its text read out (when the request has tools)."""
    if calls is None:
        return chunk
    text, pieces = calls.feed(chunk.text)
    return replace(chunk, text=text, tool_calls=pieces)
