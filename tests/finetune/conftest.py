"""Fixtures of the data pipeline's tests: the hand-built exports under ``fixtures/``."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def fixtures() -> Path:
    return Path(__file__).parent / "fixtures"
