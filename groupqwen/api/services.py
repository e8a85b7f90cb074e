"""The object graph behind the API: settings, the model pool and the pipeline."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from groupqwen.config import Settings
from groupqwen.orchestrator.pipeline import Pipeline
from groupqwen.pool import memory
from groupqwen.pool.factory import backend_for, memory_need
from groupqwen.pool.scheduler import Pool


@dataclass
class Services:
    settings: Settings
    pool: Pool
    pipeline: Pipeline
    started: int = field(default_factory=lambda: int(time.time()))

    async def close(self) -> None:
        await self.pool.close()


def build_services(settings: Settings) -> Services:
    catalog = settings.catalog()
    budget = memory.detect(
        settings.memory_budget_mb, settings.memory_share, settings.memory_margin_mb, use_gpu=False
    )
    pool = Pool(
        settings.available(),
        lambda spec: backend_for(spec, settings),
        need=lambda spec: memory_need(spec, settings),
        budget=budget.limit,
        max_queue=settings.max_queue,
    )
    return Services(settings, pool, Pipeline(catalog, pool, settings.default_model))
