"""Shared fixtures: every test starts from an environment without ``GROUPQWEN_*`` variables."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _clean_groupqwen_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("GROUPQWEN_"):
            monkeypatch.delenv(name)
