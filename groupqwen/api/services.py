"""The object graph behind the API: settings, the model pool and the pipeline."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from groupqwen.backends.base import Backend
from groupqwen.backends.fake import FakeBackend
from groupqwen.config import ModelSpec, Settings
from groupqwen.orchestrator.pipeline import Pipeline
from groupqwen.pool.scheduler import Pool


@dataclass
class Services:
    settings: Settings
    pool: Pool
    pipeline: Pipeline
    started: int = field(default_factory=lambda: int(time.time()))

    async def close(self) -> None:
        await self.pool.close()


def backend_for(spec: ModelSpec, settings: Settings) -> Backend:
    if spec.backend == "fake":
        reply = spec.fake_reply or "Hello from the fake backend."
        return FakeBackend(model_id=spec.id, tokens=re.findall(r"\s*\S+", reply), n_ctx=spec.n_ctx or 4096)
    from groupqwen.backends.llamacpp import LlamaCppBackend  # llama-cpp-python is an optional extra

    n_ctx = spec.n_ctx or min(spec.context_length, settings.n_ctx)
    return LlamaCppBackend(spec, n_ctx=n_ctx, n_threads=settings.n_threads)


def build_services(settings: Settings) -> Services:
    catalog = settings.catalog()
    pool = Pool(settings.available(), lambda spec: backend_for(spec, settings), max_queue=settings.max_queue)
    return Services(settings, pool, Pipeline(catalog, pool, settings.default_model))
