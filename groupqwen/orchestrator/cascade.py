"""Run a routed ``Decision``: answer with its first model, score confidence, escalate below the bar.

The client sees one answer. Stream policy (the same for streamed and non-streamed requests): a step that
may escalate holds its output back until its confidence is known — at the end of the answer, or after
``buffer_tokens`` tokens, whichever comes first. Below the step's bar, the generation is stopped and the
next step starts; nothing of the abandoned answer reaches the client. At or above the bar the held tokens
are released and the rest streams live; from then on the answer is committed (no later escalation).
The final step (``bar`` None) streams live from its first token, and so does a step whose bar is 0 (it
accepts every answer): its confidence is still scored over the same first tokens and reported through
``on_decided`` (the pipeline's) once known, after the first chunks.

A step that fails before anything was released (backend error, overload, no memory, prompt too long for
its context) also escalates, logged here with its error; the last step's failure is raised. Only
``GroupQwenError``s arrive here: the backends translate their foreign errors. Scored steps ask the backend for
``confidence.TOP_K`` alternatives per token; the client gets only the alternatives it asked for.

A request that may call tools goes straight to the ladder's last step, unscored: the confidence of the tokens
of a call's JSON says how sure the model is of its syntax, not whether the call is right, and a small tier
that answers in text when a call was wanted (or the reverse) scores high all the same.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, replace

from groupqwen import log
from groupqwen.errors import (
    BackendError,
    ContextLengthExceeded,
    GroupQwenError,
    InsufficientMemory,
    Overloaded,
)
from groupqwen.messages import CascadeStep, ChatRequest, Chunk, Decision, GenerationRequest, TokenLogprob
from groupqwen.orchestrator.confidence import TOP_K
from groupqwen.orchestrator.weights import Routing
from groupqwen.pool.scheduler import Pool

_log = log.get(__name__)
_ESCALATE_ON = (BackendError, ContextLengthExceeded, InsufficientMemory, Overloaded)


@dataclass(frozen=True)
class Attempt:
    model: str
    confidence: float | None  # None: not scored (final step, or it failed)
    outcome: str  # "accepted", "escalated", "failed: <code>"
    tokens: int


class _Escalate(Exception):
    def __init__(self, attempt: Attempt) -> None:
        self.attempt = attempt


class Cascade:
    """``routing``: the confidence scorer and ``buffer_tokens`` (``router.buffer_tokens``) for the steps
    that may escalate; ``None`` where nothing is routed, so that every decision is one step, never scored."""

    def __init__(self, pool: Pool, routing: Routing | None) -> None:
        self._pool = pool
        self._routing = routing

    @staticmethod
    def _decided(decision: Decision, step: CascadeStep, attempts: tuple[Attempt, ...]) -> Decision:
        left = [a for a in attempts if a.outcome != "accepted"]
        reason = decision.reason + "".join(
            f"; {a.model} {a.outcome}"
            + (f" at confidence {a.confidence:.2f}" if a.confidence is not None else "")
            for a in left
        )
        accepted = attempts[-1].confidence if attempts and attempts[-1].outcome == "accepted" else None
        return replace(
            decision,
            model=step.model,
            thinking=step.thinking,
            reason=reason,
            escalations=len(left),
            confidence=accepted,
        )

    async def stream(
        self, request: ChatRequest, decision: Decision, on_decided: Callable[[Decision], None] | None = None
    ) -> AsyncGenerator[Chunk, None]:
        """The chunks of the one answer the client sees, from ``decision.steps`` (or ``decision.model``
        alone). ``on_decided`` gets the final ``Decision`` before the first chunk is yielded."""
        steps = decision.steps or (CascadeStep(decision.model, None, decision.thinking),)
        if request.tools is not None and request.tools.active and len(steps) > 1:
            steps = steps[-1:]  # a tool call is judged by its arguments, not by token confidence
            decision = replace(decision, reason=f"{decision.reason}; tools: the last tier answers, unscored")
        attempts: list[Attempt] = []
        for index, step in enumerate(steps):
            last = index == len(steps) - 1
            run = self._run(request, decision, step, last, tuple(attempts), on_decided)
            try:
                async with aclosing(run):
                    async for chunk in run:
                        yield chunk
                return
            except _Escalate as escalation:
                attempts.append(escalation.attempt)
                attempt, failure = escalation.attempt, escalation.__cause__
                fields = {
                    "model": step.model,
                    "to": steps[index + 1].model,
                    "outcome": attempt.outcome,
                    "confidence": attempt.confidence,
                }
                if isinstance(failure, GroupQwenError):  # a failure handled here, so logged here
                    _log.warning("cascade escalates", **fields, error=failure.message)
                else:
                    _log.info("cascade escalates", **fields)

    async def _run(
        self,
        request: ChatRequest,
        decision: Decision,
        step: CascadeStep,
        last: bool,
        attempts: tuple[Attempt, ...],
        on_decided: Callable[[Decision], None] | None,
    ) -> AsyncGenerator[Chunk, None]:
        bar = None if last else step.bar
        asked_top = request.top_logprobs if request.logprobs else 0
        generation = GenerationRequest(
            messages=request.messages,
            sampling=request.sampling,
            logprobs=request.logprobs or bar is not None,
            top_logprobs=max(asked_top, TOP_K) if bar is not None else asked_top,
            response_format=request.response_format,
            enable_thinking=step.thinking,
            raw_prompt=request.raw_prompt,
            tools=request.tools,
            translation=request.translation,
        )
        held: list[Chunk] = []
        tokens: list[TokenLogprob] = []
        below: Attempt | None = None
        scoring = bar is not None  # until the confidence is known, over the first ``buffer_tokens``
        # no bar, or a bar of 0 that accepts every answer: nothing is held back while scoring
        committed = bar is None or bar <= 0
        sent = False  # a failure escalates only while the client has seen nothing of this step
        if committed and on_decided is not None:
            on_decided(self._decided(decision, step, attempts))
        try:
            async with (
                self._pool.lease(step.model) as backend,
                aclosing(backend.stream(generation)) as chunks,
            ):
                async for chunk in chunks:
                    if scoring:
                        tokens.extend(chunk.logprobs)
                        assert self._routing is not None  # only routed decisions have bars
                        if chunk.finish_reason is not None or len(tokens) >= self._routing.buffer_tokens:
                            scoring = False
                            confidence = self._routing.scorer.score(step.model, tokens)
                            if bar is not None and confidence < bar:
                                below = Attempt(step.model, confidence, "escalated", len(tokens))
                                break  # closes the generation before the next step leases its model
                            attempt = Attempt(step.model, confidence, "accepted", len(tokens))
                            if on_decided is not None:
                                on_decided(self._decided(decision, step, (*attempts, attempt)))
                            committed = True
                    if not committed:
                        held.append(chunk)
                        continue
                    sent = True
                    for piece in (*held, chunk):
                        yield _trim(piece, asked_top)
                    held.clear()
        except _ESCALATE_ON as exc:
            if sent or last:
                raise
            assert isinstance(exc, GroupQwenError)
            raise _Escalate(Attempt(step.model, None, f"failed: {exc.code}", len(tokens))) from exc
        if below is not None:
            raise _Escalate(below)


def _trim(chunk: Chunk, asked: int) -> Chunk:
    """Keep the ``asked`` alternatives per token (the cascade asked for more to score confidence)."""
    if not chunk.logprobs or all(len(t.top) <= asked for t in chunk.logprobs):
        return chunk
    return replace(chunk, logprobs=tuple(replace(t, top=t.top[:asked]) for t in chunk.logprobs))
