"""End to end with the two bundled real models: the cascade keeps or escalates a real answer.

One model generates at a time (the cascade is sequential), each on one thread, a few tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from groupqwen.api.services import build_services
from groupqwen.config import Settings, load_settings
from groupqwen.messages import ChatRequest, Decision, Message, Sampling
from groupqwen.orchestrator.answer import RequestContext
from groupqwen.pool.bundled import ensure_bundled
from groupqwen.telemetry.service import Telemetry

SMALL, LARGE = "smollm2-135m", "qwen2.5-coder-0.5b"
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def models_dir() -> Path:
    settings = Settings()
    for model_id in (SMALL, LARGE):
        ensure_bundled(settings.catalog()[model_id], settings.models_dir)
    return settings.models_dir


async def answer(models_dir: Path, bar: float) -> tuple[str, Decision]:
    settings = load_settings(
        models_dir=models_dir,
        n_threads=1,
        n_ctx=512,
        cache={"backend": "off"},
        router={"tiers": [{"model": SMALL, "bar": bar}, {"model": LARGE}]},
        memory_budget_mb=16 * 1024,
    )
    services = build_services(settings, telemetry=Telemetry())
    pipeline = services.pipeline
    request = ChatRequest(
        messages=(Message("user", "What is the capital of France? Answer in one word."),),
        model="auto:cascade",
        sampling=Sampling(temperature=0.0, max_tokens=6),
    )
    try:
        answered = await pipeline.run(request, RequestContext())
        completion = await answered.collect()
        return completion.content, answered.decision
    finally:
        await services.close()


async def test_bar_zero_keeps_the_small_answer(models_dir: Path) -> None:
    text, decision = await answer(models_dir, 0.0)
    assert decision.model == SMALL and decision.escalations == 0
    assert decision.confidence is not None and 0.0 <= decision.confidence <= 1.0 and text.strip()


async def test_bar_one_escalates_to_the_large_model(models_dir: Path) -> None:
    text, decision = await answer(models_dir, 1.0)
    assert decision.model == LARGE and decision.escalations == 1 and "Paris" in text
    assert f"{SMALL} escalated at confidence" in decision.reason
