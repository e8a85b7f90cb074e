"""A request's way through: resolve the model → lease it from the pool → stream → split thinking.

``decide`` is cheap and raises before any work (unknown model); ``stream`` yields ``Delta``s, the last with
``finish_reason`` and ``usage``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing

from groupqwen.backends.base import map_backend_errors
from groupqwen.config import AUTO_MODEL, ModelSpec
from groupqwen.errors import BackendError, ModelNotFound
from groupqwen.messages import ChatRequest, Completion, Decision, Delta, GenerationRequest, TokenLogprob
from groupqwen.orchestrator.thinking import ThinkSplitter, wants_thinking
from groupqwen.pool.scheduler import Pool


class Pipeline:
    def __init__(self, catalog: Mapping[str, ModelSpec], pool: Pool, default_model: str) -> None:
        self._catalog = catalog
        self._pool = pool
        self._default_model = default_model

    def decide(self, request: ChatRequest) -> Decision:
        if request.model == AUTO_MODEL:
            model_id, route, reason = self._default_model, "default", "auto resolves to the default model"
        else:
            model_id, route, reason = request.model, "explicit", "model named in the request"
        spec = self._catalog.get(model_id)
        if spec is None:
            raise ModelNotFound(
                f"The model {model_id!r} does not exist. GET /v1/models lists the models served here.",
                param="model",
            )
        if model_id not in self._pool:
            raise ModelNotFound(
                f"The model {model_id!r} is in the catalog but its weights are not on this machine: set "
                f"models.{model_id}.path in the configuration to a local GGUF file ({spec.source}).",
                param="model",
            )
        thinking = spec.thinking and wants_thinking(request.messages, request.enable_thinking, True)
        return Decision(model=model_id, route=route, reason=reason, thinking=thinking)

    async def stream(self, request: ChatRequest, decision: Decision) -> AsyncGenerator[Delta, None]:
        generation = GenerationRequest(
            messages=request.messages,
            sampling=request.sampling,
            top_logprobs=request.top_logprobs if request.logprobs else 0,
            response_format=request.response_format,
            enable_thinking=decision.thinking,
        )
        async with self._pool.lease(decision.model) as backend:
            splitter: ThinkSplitter | None = None
            with map_backend_errors(decision.model):
                async with aclosing(backend.stream(generation)) as chunks:
                    async for chunk in chunks:
                        if splitter is None:
                            splitter = ThinkSplitter(inside=chunk.prompt_opens_thinking)
                        reasoning, content = splitter.feed(chunk.text)
                        if chunk.finish_reason is not None:
                            tail_reasoning, tail_content = splitter.flush()
                            reasoning, content = reasoning + tail_reasoning, content + tail_content
                        logprobs = chunk.logprobs if request.logprobs else ()
                        if reasoning or content or logprobs or chunk.finish_reason:
                            yield Delta(
                                content=content,
                                reasoning=reasoning,
                                logprobs=logprobs,
                                finish_reason=chunk.finish_reason,
                                usage=chunk.usage,
                            )
                        if chunk.finish_reason is not None:
                            return
            raise BackendError(f"model {decision.model!r} ended its stream without a finish reason")

    async def complete(self, request: ChatRequest, decision: Decision) -> Completion:
        content: list[str] = []
        reasoning: list[str] = []
        logprobs: list[TokenLogprob] = []
        async with aclosing(self.stream(request, decision)) as deltas:
            async for delta in deltas:
                content.append(delta.content)
                reasoning.append(delta.reasoning)
                logprobs.extend(delta.logprobs)
                if delta.finish_reason is not None and delta.usage is not None:
                    return Completion(
                        content="".join(content),
                        reasoning="".join(reasoning).strip(),
                        finish_reason=delta.finish_reason,
                        usage=delta.usage,
                        logprobs=tuple(logprobs),
                    )
        raise BackendError(f"model {decision.model!r} ended its stream without usage")
