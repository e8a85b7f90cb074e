"""A request's way through, in one call: ``Pipeline.run(request, context) -> Answer``.

1. Decide (cheap, raises before any work: unknown model or route, images for a model that cannot take
   them): an explicit model name always wins, ``auto`` and ``auto:…`` go through the router
   (docs/routing.md).
2. The cache's exact layer (before any lease), keyed by the images' URLs as the client sent them; then the
   images are prepared (``modalities/vision.py``: fetched, decoded, resized), except for an exact hit
   whose answer points at no box.
3. On an exact miss, the semantic layer. When the model is already loaded, generation starts at once and
   the semantic layer (an embedding: about 4 ms on one core here) runs beside it: a semantic hit cancels
   the generation and is replayed, a miss lets the generation go on. Nothing is sent before the semantic
   layer has answered, so a hit is never lost to a faster model; a miss costs no time to first token once
   the model's own first token takes longer than the embedding. A cold model is not loaded for what may be
   a hit: the semantic layer runs first, as it does for a model whose generation would compete with the
   embedding for the same cores (``overlap``: ``cache.overlap``, docs/cache.md).
4. On a miss, the cascade leases the model(s) and streams, escalating below a step's confidence bar
   (``cascade.py``); the answer's ``<think>`` part is split off as reasoning.
5. A miss's answer is handed to ``SemanticCache.store``, which writes it in the background: the last delta
   never waits for the store.

``run`` returns the ``Answer`` once its first delta exists, so its decision (after any escalation, or the
cache's) and cache outcome are final; errors before the first delta raise from ``run``. The pipeline marks
the request's trace (``telemetry.timing``): decision, cache outcome, first token, usage.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing, suppress
from dataclasses import replace

from groupqwen import log
from groupqwen.cache import Lookup, SemanticCache
from groupqwen.catalog import FT_PREFIX, ModelSpec
from groupqwen.config import AUTO_MODEL, ImagesConfig
from groupqwen.errors import BackendError, ModelNotFound
from groupqwen.messages import (
    Box,
    ChatRequest,
    Chunk,
    Completion,
    Decision,
    Delta,
    TranslationReport,
)
from groupqwen.modalities import vision
from groupqwen.orchestrator.answer import Answer, Outcome, RequestContext
from groupqwen.orchestrator.cascade import Cascade
from groupqwen.orchestrator.router import FIXED_ROUTES, ModelView, images_refused
from groupqwen.orchestrator.thinking import ThinkSplitter, wants_thinking
from groupqwen.orchestrator.translate import passed_through, translated
from groupqwen.orchestrator.weights import Routing
from groupqwen.pool.scheduler import Pool
from groupqwen.telemetry import timing

_log = log.get(__name__)


def model_not_found(model_id: str) -> ModelNotFound:
    """What a request naming a model that is not here, or is another tenant's, is told."""
    return ModelNotFound(
        f"The model {model_id!r} does not exist. GET /v1/models lists the models served here.", param="model"
    )


class Pipeline:
    """``routing``: what ``auto`` routes need (``routing_from_settings``); ``None`` where nothing is routed
    (``auto`` is the default model). ``overlap``: for which models generation starts while the semantic
    layer looks (``overlap_from_settings``, from ``cache.overlap``). ``images``: how a request's images are
    fetched and prepared for the models that answer it (``modalities/vision.py``). ``discover``: the models
    that appeared since it was last called (``pool.factory.FinetunedWatch``: fine-tuned models), asked by
    ``discover()`` and when a request names a model not served yet."""

    def __init__(
        self,
        catalog: Mapping[str, ModelSpec],
        pool: Pool,
        default_model: str,
        cache: SemanticCache | None,
        routing: Routing | None,
        overlap: Callable[[ModelSpec], bool],
        images: ImagesConfig,
        discover: Callable[[], tuple[list[ModelSpec], list[str]]] = lambda: ([], []),
    ) -> None:
        self._images = images
        self._catalog = dict(catalog)
        self._discover = discover
        self._overlap = overlap
        self._pool = pool
        self._default_model = default_model
        self._cache = cache
        self._routing = routing
        self._cascade = Cascade(pool, routing)
        self._background: set[asyncio.Task[None]] = set()

    def discover(self) -> None:
        """Serve from now on the models that appeared (a fine-tuned model that just finished): the pool and
        the catalog; a model already served is kept as it is. Those that went (deleted, here or by another
        replica) are forgotten."""
        appeared, gone = self._discover()
        for spec in appeared:
            if spec.id not in self._pool:
                self._pool.add(spec)
                self._catalog[spec.id] = spec
        for model_id in gone:
            self.forget(model_id)

    def forget(self, model_id: str, then: Callable[[], None] = lambda: None) -> None:
        """Serve ``model_id`` no more (a deleted fine-tuned model): requests already given it finish, then
        it is unloaded and ``then`` is called (``Pool.remove``)."""
        self._catalog.pop(model_id, None)
        self._pool.remove(model_id, then)

    def owner(self, model_id: str) -> str:
        """The tenant whose fine-tuned model ``model_id`` is (``ModelSpec.owner``); ``""`` for every other
        model, a route and an unknown id. Only a fine-tuned id looks for models that appeared since (a
        route or a base model asked for costs no look at the disk)."""
        if not model_id.startswith(FT_PREFIX):
            return ""
        if model_id not in self._catalog:
            self.discover()
        spec = self._catalog.get(model_id)
        return spec.owner if spec is not None else ""

    async def run(self, request: ChatRequest, context: RequestContext) -> Answer:
        """Answer ``request``: returns once the answer's first delta exists (see the module's docstring)."""
        decision = self._decide(request)
        cached = await self._lookup_exact(request, decision, context)
        if request.images and not self._replayed_as_is(request, decision, cached):  # else none to prepare
            steps = [s.model for s in decision.steps] or [decision.model]
            request = await vision.prepare(request, [self._catalog[m] for m in steps], self._images)
        timing.decided(decision)
        _log.info("chat completion", model=decision.model, route=decision.route, stream=context.stream)
        outcome = Outcome(decision, cached)
        deltas = self._answer(request, outcome, context.ttl_s)
        try:
            first = await anext(deltas)
        except BaseException:
            await deltas.aclose()
            raise
        return Answer(outcome, deltas, first, request)

    async def _lookup_exact(
        self, request: ChatRequest, decision: Decision, context: RequestContext
    ) -> Lookup | None:
        """The cache's exact layer; ``None`` when no cache is configured. A miss comes back ``pending``
        for the semantic layer."""
        if self._cache is None:
            return None
        scope = request.model if self._routed(request) else decision.model  # a route's answers share it
        return await self._cache.lookup_exact(
            request,
            context.tenant,
            scope,
            read=context.read_cache,
            max_false_hit_rate=context.max_false_hit_rate,
        )

    def _replayed_as_is(self, request: ChatRequest, decision: Decision, cached: Lookup | None) -> bool:
        """Whether an exact hit answers ``request`` without its images prepared: they are keyed by the
        client's URLs, and the answer points at no box (mapping one needs the image's size)."""
        if cached is None or cached.status != "hit":
            return False
        spec = self._catalog.get(decision.model)
        return spec is None or not vision.points_at(cached.completion().content, spec)

    def routes(self) -> list[tuple[str, tuple[str, ...]]]:
        """The routes a request may name here, ``auto`` first, each with the models that may answer it:
        ``auto`` and the ladder's routes (``auto:cascade``, ``auto:fast``, ``auto:best``) the router's tiers
        served here (``auto`` alone, the default model, when none is), ``auto:<name>`` its model. A route
        none of whose models is served here is left out (a request naming it could not be answered)."""
        if self._routing is None:
            return [(AUTO_MODEL, (self._default_model,))]
        served = {state.spec.id for state in self._pool.states()}
        policy = self._routing.router.policy
        ladder = tuple(dict.fromkeys(t.model for t in policy.tiers if t.model in served))
        out = [(AUTO_MODEL, ladder or (self._default_model,))]
        if ladder:
            out += [(name, ladder) for name in FIXED_ROUTES if name != AUTO_MODEL]
        out += [(name, (model,)) for name, model in sorted(policy.routes.items()) if model in served]
        return out

    def _routed(self, request: ChatRequest) -> bool:
        auto = request.model == AUTO_MODEL or request.model.startswith("auto:")
        return self._routing is not None and auto

    def _route(self, request: ChatRequest) -> Decision | None:
        """The router's decision for ``auto…``; ``None`` for plain ``auto`` when no tier is servable here
        (it then resolves to the default model)."""
        if self._routing is None or not self._routed(request):
            return None
        router = self._routing.router
        views = {
            s.spec.id: ModelView(
                s.status == "loaded", s.spec.n_ctx or s.spec.context_length, s.spec.thinking, s.spec.vision
            )
            for s in self._pool.states()
        }
        to_vision = bool(request.images) and "auto:vision" in router.policy.routes
        to_translate = request.translation is not None and "auto:translate" in router.policy.routes
        if (
            request.model == AUTO_MODEL
            and not to_vision
            and not to_translate
            and not any(t.model in views for t in router.policy.tiers)
        ):
            return None
        return router.route(request, views).decision()

    def _decide(self, request: ChatRequest) -> Decision:
        routed = self._route(request)
        if routed is not None:
            return routed
        if request.model.startswith("auto:"):
            raise ModelNotFound(
                f"Unknown route {request.model!r}: routing is not configured here; use 'auto' or a model.",
                param="model",
            )
        if request.model == AUTO_MODEL:
            model_id, route, reason = self._default_model, "default", "auto resolves to the default model"
        else:
            model_id, route, reason = request.model, "explicit", "model named in the request"
        if model_id not in self._catalog:
            self.discover()
        spec = self._catalog.get(model_id)
        if spec is None:
            raise model_not_found(model_id)
        if model_id not in self._pool:
            raise ModelNotFound(
                f"The model {model_id!r} is in the catalog but its weights are not on this machine: set "
                f"models.{model_id}.path in the configuration to a local GGUF file ({spec.source}).",
                param="model",
            )
        if request.images and not spec.vision:
            named = f"'auto' resolves to the default model {model_id!r}" if route == "default" else None
            what = f"This request carries images, but {named}, which" if named else f"The model {model_id!r}"
            raise images_refused(f"{what} does not take images", model_id)
        thinking = spec.thinking and wants_thinking(request.messages, request.enable_thinking, True)
        return Decision(model=model_id, route=route, reason=reason, thinking=thinking)

    async def _answer(
        self, request: ChatRequest, outcome: Outcome, ttl_s: float | None
    ) -> AsyncGenerator[Delta, None]:
        """Generate through the cascade, or replay the cache's answer when the exact layer (or the semantic
        layer, asked here) has one; ``outcome`` is settled before the first delta. A miss's answer is
        handed to the cache (``ttl_s``: its TTL, ``None`` the default) as the last delta is yielded."""
        texts: list[str] = []
        thoughts: list[str] = []

        def decided(decision: Decision) -> None:
            outcome.decision = decision
            timing.decided(decision)

        chunks = self._chunks(request, outcome, decided)
        cached = outcome.cache
        first: asyncio.Future[Chunk] | None = None
        if cached is not None and cached.pending and self._cache is not None:
            if self._warm(outcome.decision):  # generate while the semantic layer looks
                first = asyncio.ensure_future(anext(chunks))
                # let it reach the model before the embedding thread starts: that thread holds the GIL in
                # its tokenizer and numpy steps, and a waiting thread gets it only every 5 ms
                await asyncio.sleep(0)
            try:
                cached = await self._cache.lookup_similar(cached)
            except BaseException:
                self._abandon(chunks, first)
                raise
        if cached is not None:
            outcome.cache = cached
            timing.cached(cached.status, cached.bypass)
        if cached is not None and cached.status == "hit":
            self._abandon(chunks, first)
            decided(_cached_decision(outcome.decision, cached))
            timing.first_token()
            answer = cached.completion()
            outcome.boxes = await self._boxes(request, outcome.decision, answer.content)
            if answer.reasoning:
                yield Delta(reasoning=answer.reasoning)
            timing.used(answer.usage)
            yield Delta(content=answer.content, finish_reason=answer.finish_reason, usage=answer.usage)
            return
        splitter: ThinkSplitter | None = None
        called = False  # an answer with tool calls is never stored: replaying it would repeat the calls
        resumed = chunks if first is None else self._resume(chunks, first)
        async with aclosing(resumed):  # closed however the loop ends (a return leaves it unfinished)
            async for chunk in resumed:
                if splitter is None:
                    splitter = ThinkSplitter(chunk.prompt_opens_thinking, enabled=not request.raw_prompt)
                reasoning, content = splitter.feed(chunk.text)
                if chunk.finish_reason is not None:
                    tail_reasoning, tail_content = splitter.flush()
                    reasoning, content = reasoning + tail_reasoning, content + tail_content
                logprobs = chunk.logprobs if request.logprobs else ()
                texts.append(content)
                thoughts.append(reasoning)
                called = called or bool(chunk.tool_calls)
                if chunk.finish_reason is not None and chunk.usage is not None and not called:
                    self._store(cached, outcome.decision, texts, thoughts, chunk, ttl_s)
                if chunk.finish_reason is not None:
                    outcome.boxes = await self._boxes(request, outcome.decision, "".join(texts))
                if reasoning or content or logprobs or chunk.finish_reason or chunk.tool_calls:
                    timing.first_token()  # telemetry's TTFT (marks the request's trace once)
                    if chunk.usage is not None:
                        timing.used(chunk.usage)
                    yield Delta(
                        content=content,
                        reasoning=reasoning,
                        logprobs=logprobs,
                        finish_reason=chunk.finish_reason,
                        usage=chunk.usage,
                        tool_calls=chunk.tool_calls,
                    )
                if chunk.finish_reason is not None:
                    return
        raise BackendError(f"model {outcome.decision.model!r} ended its stream without a finish reason")

    async def _boxes(self, request: ChatRequest, decision: Decision, content: str) -> tuple[Box, ...]:
        """The boxes a vision model's answer points at (``modalities/boxes.py``), in the client's pixels."""
        spec = self._catalog.get(decision.model)
        if spec is None or not spec.vision or not request.prepared:
            return ()
        return await vision.boxes_of(content, spec, request, self._images)

    def _chunks(
        self, request: ChatRequest, outcome: Outcome, decided: Callable[[Decision], None]
    ) -> AsyncGenerator[Chunk, None]:
        """The cascade's chunks; a translation for a model that does not take Qwen-MT's options itself
        goes through ``translate.translated``."""
        spec = self._catalog.get(outcome.decision.model)
        if request.translation is None or spec is None:
            return self._cascade.stream(request, outcome.decision, decided)

        def reported(report: TranslationReport) -> None:
            outcome.translation = report

        if spec.translation:
            return passed_through(self._cascade.stream(request, outcome.decision, decided), request, reported)
        served = next(
            (s.spec for s in self._pool.states() if s.spec.id == spec.id), spec
        )  # its n_ctx allocated
        context = served.n_ctx or served.context_length
        return translated(self._cascade, request, outcome.decision, context, decided, reported)

    def _warm(self, decision: Decision) -> bool:
        """Whether to generate while the semantic layer looks: the model is loaded, and ``overlap`` says
        its generation does not compete with the embedding for the same cores."""
        if self._pool.status(decision.model) != "loaded":
            return False
        spec = self._catalog.get(decision.model)
        return spec is not None and self._overlap(spec)

    @staticmethod
    async def _resume(
        chunks: AsyncGenerator[Chunk, None], first: asyncio.Future[Chunk]
    ) -> AsyncGenerator[Chunk, None]:
        """``chunks``, led by the one a speculative start already asked for; closing it closes
        ``chunks``."""
        async with aclosing(chunks):
            try:
                yield await first
            except StopAsyncIteration:
                return
            async for chunk in chunks:
                yield chunk

    def _abandon(self, chunks: AsyncGenerator[Chunk, None], first: asyncio.Future[Chunk] | None) -> None:
        """Stop a generation nobody will read; its model is freed in the background."""
        if first is None:
            return
        first.cancel()

        async def close() -> None:
            with suppress(BaseException):
                await first
            await chunks.aclose()

        task = asyncio.create_task(close())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _store(
        self,
        cached: Lookup | None,
        decision: Decision,
        texts: list[str],
        thoughts: list[str],
        last: Chunk,
        ttl_s: float | None,
    ) -> None:
        if self._cache is None or cached is None or last.finish_reason is None or last.usage is None:
            return
        answer = Completion("".join(texts), "".join(thoughts).strip(), last.finish_reason, last.usage)
        self._cache.store(cached, decision.model, answer, ttl_s, decision)  # scheduled, not awaited


def _cached_decision(decision: Decision, hit: Lookup) -> Decision:
    """What answered a cache hit: the cache, on behalf of the model that wrote the answer."""
    model = hit.entry.model if hit.entry is not None else decision.model
    return replace(decision, model=model, route="cache", reason=hit.reason, escalations=0)
