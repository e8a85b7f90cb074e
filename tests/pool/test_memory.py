"""Where the memory budget comes from: an explicit limit, a share of free RAM, or the GPU through NVML."""

from __future__ import annotations

import pytest

from groupqwen.pool import memory
from groupqwen.pool.budget import MiB


def test_an_explicit_limit_wins() -> None:
    budget = memory.detect(limit_mb=512, share=0.5, margin_mb=100, use_gpu=False)
    assert budget.limit == 512 * MiB and budget.device == "ram"


def test_the_default_is_a_share_of_available_ram_less_the_margin() -> None:
    total, available = memory.ram()
    assert 0 < available <= total
    budget = memory.detect(limit_mb=None, share=0.5, margin_mb=64, use_gpu=False)
    assert budget.total == total
    assert abs(budget.limit - (available // 2 - 64 * MiB)) < 256 * MiB  # available moves a little


def test_the_gpu_budget_uses_nvml_when_a_gpu_is_there(monkeypatch: pytest.MonkeyPatch) -> None:
    gib = 1024 * MiB
    monkeypatch.setattr(memory, "gpu_memory", lambda: ("NVIDIA H200", 141 * gib, 140 * gib))
    budget = memory.detect(limit_mb=None, share=0.9, margin_mb=1024, use_gpu=True)
    assert budget.device == "cuda:0 (NVIDIA H200)" and budget.total == 141 * gib
    assert budget.limit == int(140 * gib * 0.9) - gib


def test_without_a_gpu_nvml_reports_none_and_the_budget_is_ram() -> None:
    # This machine has no GPU: NVML either is missing its driver library or finds no device.
    assert memory.gpu_memory() is None
    assert memory.detect(limit_mb=None, share=0.8, margin_mb=0, use_gpu=True).device == "ram"


def test_current_rss_is_this_process() -> None:
    assert 10 * MiB < memory.current_rss() < 8 * 1024 * MiB
