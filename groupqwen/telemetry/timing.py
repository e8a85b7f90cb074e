"""The per-request ``Trace``: what the API, the pool and the pipeline learn about one chat completion.

The API creates a trace (``Telemetry.trace``), which also becomes the *current* trace of the request's
context, sets what only it knows (``tenant``, ``stream``) and finishes it (``Telemetry.finish``); layers
below the API mark it without knowing about telemetry's other parts::

    timing.decided(decision)       # the pipeline: which model and route answer (again after escalating)
    timing.cached(status, bypass)  # the pipeline: the cache's outcome (hit, miss, bypass and why)
    timing.queue_waited(seconds)   # the pool, once it hands out a model
    timing.first_token()           # the pipeline, on the first piece of the answer
    timing.used(usage)             # the pipeline, with the answer's last piece

All are no-ops outside a traced request. A trace holds no prompt or answer text, only numbers and names.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from contextvars import ContextVar

from groupqwen.messages import Decision, Usage
from groupqwen.telemetry.records import RequestRecord

_current: ContextVar[Trace | None] = ContextVar("groupqwen_trace", default=None)

NO_MODEL = "none"  # the model/route of a request that failed before the orchestrator decided


class Trace:
    """Mutable while the request runs; ``record()`` freezes it into a ``RequestRecord``."""

    __slots__ = (
        "cache",
        "cache_bypass",
        "completion_tokens",
        "error",
        "escalations",
        "finished",
        "first_token_at",
        "model",
        "prompt_tokens",
        "queue_wait",
        "request_id",
        "route",
        "started",
        "started_wall",
        "status",
        "stream",
        "tenant",
        "transport",
    )

    def __init__(self, request_id: str, *, clock: float | None = None, wall: float | None = None) -> None:
        self.request_id = request_id
        self.started = time.perf_counter() if clock is None else clock
        self.started_wall = time.time() if wall is None else wall
        self.tenant = "anonymous"
        self.model = NO_MODEL
        self.route = NO_MODEL
        self.stream = False
        self.escalations = 0
        self.cache = "bypass"  # hit | miss | bypass
        self.cache_bypass: str | None = None  # why the cache was bypassed, when it said so
        self.queue_wait: float | None = None
        self.first_token_at: float | None = None
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.status = 200
        self.error: str | None = None
        self.finished = False
        self.transport = "http"  # the adapter's: http | ws

    def activate(self) -> Trace:
        """Make this the current trace of the running context (and of tasks it starts)."""
        _current.set(self)
        return self

    def decided(self, model: str, route: str, escalations: int = 0) -> None:
        self.model, self.route, self.escalations = model, route, escalations

    def used(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.prompt_tokens, self.completion_tokens = prompt_tokens, completion_tokens

    def failed(self, status: int, code: str | None) -> None:
        self.status, self.error = status, code

    def record(self, now: float | None = None) -> RequestRecord:
        end = time.perf_counter() if now is None else now
        latency = max(0.0, end - self.started)
        ttft = None if self.first_token_at is None else max(0.0, self.first_token_at - self.started)
        generating = latency - ttft if ttft is not None else 0.0
        # decode speed: the tokens after the first over the time after the first. A cache hit generated
        # nothing (its answer is replayed in one piece): it has no speed, and its tokens are counted as
        # served by the cache instead (records.summarize, metrics.Metrics.observe)
        tokens_per_second = (
            (self.completion_tokens - 1) / generating
            if generating > 0 and self.completion_tokens > 1 and self.cache != "hit"
            else None
        )
        return RequestRecord(
            id=uuid.uuid4().hex,
            request_id=self.request_id,
            started_at=self.started_wall,
            tenant=self.tenant,
            model=self.model,
            route=self.route,
            stream=self.stream,
            escalations=self.escalations,
            cache=self.cache,
            status=self.status,
            error=self.error,
            queue_wait_s=self.queue_wait,
            ttft_s=ttft,
            latency_s=latency,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            tokens_per_s=tokens_per_second,
            transport=self.transport,
        )


def current() -> Trace | None:
    """The trace of the request running in this context, if any."""
    return _current.get()


def decided(decision: Decision) -> None:
    """``decision`` answers the request (so far: the cascade may escalate, the cache may answer)."""
    trace = _current.get()
    if trace is not None:
        trace.decided(decision.model, decision.route, decision.escalations)


def cached(status: str, bypass: str | None = None) -> None:
    """The cache's outcome: ``hit``, ``miss`` or ``bypass`` (the default, for a request it never saw);
    ``bypass``: the cache's reason for one (``policy``, ``no_cache``, ``store_slow``, …)."""
    trace = _current.get()
    if trace is not None:
        trace.cache, trace.cache_bypass = status, bypass


def used(usage: Usage) -> None:
    """The answer's token counts, known with its last piece."""
    trace = _current.get()
    if trace is not None:
        trace.used(usage.prompt_tokens, usage.completion_tokens)


def queue_waited(seconds: float) -> None:
    """The pool handed out a model after ``seconds`` (waiting for a slot, and loading it when cold)."""
    trace = _current.get()
    if trace is not None and trace.queue_wait is None:
        trace.queue_wait = seconds


def first_token() -> None:
    """The first piece of the answer exists now (marks the current trace once)."""
    trace = _current.get()
    if trace is not None and trace.first_token_at is None:
        trace.first_token_at = time.perf_counter()


def tenant(user: str | None, authorization: str | None) -> str:
    """Who asked: the request's ``user`` field, else a hash of its API key (never the key), else anonymous."""
    if user:
        return "user:" + user[:64]
    if authorization:
        token = authorization.removeprefix("Bearer ").strip()
        if token:
            return "key:" + hashlib.sha256(token.encode()).hexdigest()[:16]
    return "anonymous"
