"""Fixtures of the data pipeline's tests: the hand-built exports under ``fixtures/``."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


@pytest.fixture
def fixtures() -> Path:
    return Path(__file__).parent / "fixtures"


def _peak_memory(call: Callable[[], T]) -> tuple[T | Exception, int]:
    """What ``call`` returned or raised, and the peak of the Python memory allocated while it ran."""
    tracemalloc.start()
    try:
        result: T | Exception = call()
    except Exception as exc:  # handed back to be asserted on
        result = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return result, peak


PeakMemory = Callable[[Callable[[], Any]], tuple[Any, int]]


@pytest.fixture
def peak_memory() -> PeakMemory:
    """``peak_memory(call)``: what ``call`` returned or raised, and the peak of Python memory it allocated."""
    return _peak_memory
