"""The object graph behind the API: settings, the model pool, the pipeline and telemetry."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from groupqwen import log
from groupqwen.access.authenticate import Authenticator
from groupqwen.access.limits import RateLimiter
from groupqwen.api.stored_responses import RedisResponseStore, ResponseStore, StoredResponses
from groupqwen.api.ws_directory import Directory, advertised_url
from groupqwen.api.ws_sessions import Sessions
from groupqwen.cache import Embedder, SemanticCache, cache_from_settings, embedder_from_settings
from groupqwen.catalog import ModelSpec
from groupqwen.clock import SYSTEM_CLOCK, Clock
from groupqwen.config import LimitsConfig, Settings
from groupqwen.errors import GroupQwenError
from groupqwen.finetune.jobs import JobStore
from groupqwen.finetune.runner import JobRunner
from groupqwen.orchestrator.pipeline import Pipeline
from groupqwen.orchestrator.weights import routing_from_settings
from groupqwen.pool import memory
from groupqwen.pool.factory import FinetunedWatch, backend_for, memory_need, served, shares_the_cpu
from groupqwen.pool.scheduler import BackendFactory, Pool
from groupqwen.telemetry.database import database_url
from groupqwen.telemetry.health import CheckResult, ModelHealth, gpu_check, models_check
from groupqwen.telemetry.service import Telemetry

_log = log.get(__name__)


@dataclass
class Services:
    settings: Settings
    pool: Pool
    pipeline: Pipeline
    started: int = field(default_factory=lambda: int(time.time()))
    telemetry: Telemetry = field(default_factory=Telemetry)  # in memory only unless given
    cache: SemanticCache | None = None
    embedder: Embedder | None = None  # what /v1/embeddings serves; None: the cache's, or built on first use
    clock: Clock = SYSTEM_CLOCK  # the stored responses' expiry, the WebSocket sessions' resume window
    jobs: JobRunner | None = None  # fine-tuning jobs (api/finetune.py)
    responses: StoredResponses = field(init=False)  # the Responses API's stored responses
    access: Authenticator = field(default_factory=lambda: Authenticator(None))  # auth: off unless given
    sessions: Sessions = field(init=False)  # /v1/ws (api/ws_sessions.py)
    # no limit unless given (build_services gives the one settings.limits describes)
    limiter: RateLimiter = field(
        default_factory=lambda: RateLimiter.from_config(LimitsConfig.model_validate({}))
    )
    _embedder_lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    async def load_embedder(self) -> Embedder:
        """``embedder``, else the cache's; with neither, the configured one, built once."""
        if self.embedder is None and self.cache is not None:
            self.embedder = self.cache.embedder
        async with self._embedder_lock:
            if self.embedder is None:
                self.embedder = await asyncio.to_thread(embedder_from_settings, self.settings)
            return self.embedder

    def __post_init__(self) -> None:
        stored = self.settings.responses
        if stored.redis_url is None:
            self.responses = ResponseStore(stored.max_stored, stored.max_bytes, stored.ttl_s, self.clock)
        else:
            self.responses = RedisResponseStore(
                stored.redis_url,
                prefix=stored.redis_prefix,
                max_stored=stored.max_stored,
                max_bytes=stored.max_bytes,
                ttl_s=stored.ttl_s,
                timeout_s=stored.redis_timeout_s,
            )
        ws = self.settings.ws
        directory = None if ws.redis_url is None else Directory(ws, advertised_url(self.settings), self.clock)
        self.sessions = Sessions(ws, self.clock, directory)
        self.telemetry.watch_websockets(self.sessions.gauges)
        limiter = self.limiter
        if limiter.shared:

            async def limits_check() -> CheckResult:
                status, reason = await limiter.probe()
                return CheckResult(status, reason)

            self.telemetry.health.add("limits", limits_check)
        pool = self.pool
        cache = self.cache
        if cache is not None:

            async def cache_check() -> CheckResult:
                status, reason = await cache.probe()
                return CheckResult(status, reason)

            self.telemetry.health.add("cache", cache_check)
        self.telemetry.health.add(
            "models",
            models_check(lambda: [ModelHealth(s.spec.id, s.status, s.error) for s in pool.states()]),
            critical=True,
        )
        self.telemetry.health.add("gpu", gpu_check(memory.gpu_memory))

    async def start(self) -> None:
        """Ensure the bootstrap admin key (``auth: keys``), then start telemetry's background work and the
        fine-tuning jobs left queued or running."""
        key = self.settings.auth.bootstrap_admin_key
        try:
            await asyncio.to_thread(self.access.bootstrap, key.get_secret_value() if key else None)
        except GroupQwenError as exc:
            _log.error("cannot start", error=exc.message)
            raise
        self.telemetry.start()
        if self.jobs is not None:
            await self.jobs.start()

    async def close(self) -> None:
        try:
            if self.jobs is not None:
                await self.jobs.close()
            await self.sessions.close()
            await self.pool.close()
        finally:
            try:
                await self.telemetry.close()
            finally:
                self.access.close()
                if self.cache is not None:
                    await self.cache.close()
                if self.embedder is not None:
                    self.embedder.close()
                await self.limiter.close()
                await self.responses.close()


def overlap_from_settings(settings: Settings) -> Callable[[ModelSpec], bool]:
    """For which models generation starts while the cache's semantic layer embeds (``cache.overlap``)."""
    mode = settings.cache.overlap
    if mode == "auto":  # a remote server would be sent a request that every semantic hit abandons
        cores = os.cpu_count() or 1  # once, not per request
        return lambda spec: spec.backend != "openai_http" and not shares_the_cpu(spec, settings, cores)
    return lambda spec: mode == "always"


def build_services(
    settings: Settings,
    *,
    backend_factory: BackendFactory | None = None,
    telemetry: Telemetry | None = None,
    cache: SemanticCache | None = None,
    embedder: Embedder | None = None,
    limiter: RateLimiter | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> Services:
    """The gateway's object graph. Every part left out is built from ``settings`` as in production:
    ``backend_factory`` the pool's (llama.cpp, OpenAI-compatible HTTP or the fake, by each model's
    ``backend``); ``telemetry`` persisting to ``telemetry.database_url``; ``cache`` as ``cache:`` says
    (none with ``backend: off``); ``embedder`` the cache's (or, with no cache, the configured one, built
    on first use); the API keys as ``auth:`` says; ``limiter`` the rate limits of ``limits:``. ``clock``
    times the pool's idle models and queue waits, the stored responses' expiry, how long keys are trusted,
    the rate limits' buckets, the WebSocket sessions (resume window, heartbeats) and the cache it builds
    (entries' expiry, the Redis store's breaker; a ``cache`` passed in keeps its own).
    ``groupqwen.testing`` builds it around fakes."""
    budget = memory.detect(
        settings.memory_budget_mb,
        settings.memory_share,
        settings.memory_margin_mb,
        use_gpu=settings.n_gpu_layers != 0,
    )
    pool = Pool(
        {model_id: served(spec, settings) for model_id, spec in settings.served_models().items()},
        backend_factory or (lambda spec: backend_for(spec, settings)),
        need=lambda spec: memory_need(spec, settings),
        budget=budget.limit,
        max_queue=settings.max_queue,
        clock=clock,
    )
    if cache is None:
        cache = cache_from_settings(settings, clock=clock)
    if embedder is None:
        embedder = cache.embedder if cache is not None else None
    if embedder is None and settings.cache.embedder.kind == "openai":  # probed at start, as with a cache
        embedder = embedder_from_settings(settings)
    services = Services(
        settings,
        pool,
        Pipeline(
            settings.catalog(),
            pool,
            settings.default_model,
            cache,
            routing_from_settings(settings),
            overlap=overlap_from_settings(settings),
            images=settings.images,
            discover=FinetunedWatch(settings),
        ),
        telemetry=telemetry if telemetry is not None else Telemetry.from_settings(settings),
        cache=cache,
        embedder=embedder,
        clock=clock,
        access=Authenticator.from_settings(settings, clock=clock),
        limiter=limiter or RateLimiter.from_config(settings.limits, clock=clock),
    )
    pipeline = services.pipeline
    services.jobs = JobRunner(settings, JobStore(database_url(settings)), lambda _: pipeline.discover())
    return services
