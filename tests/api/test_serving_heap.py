"""``serving.freeze_heap``: what a server process built before serving is collected of its garbage, then
frozen out of the garbage collector's sight; a worker process's app is built that way."""

from __future__ import annotations

import gc
import logging
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from groupqwen.api import serving


class Node:
    """A GC-tracked object that can refer to itself (a reference cycle)."""

    me: Node | None = None


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Leave the test process's collector unfrozen, as it is for every other test."""
    try:
        yield
    finally:
        gc.unfreeze()


def test_garbage_is_collected_and_the_rest_frozen(unfrozen: None) -> None:
    garbage, kept = Node(), Node()
    garbage.me, kept.me = garbage, kept  # two cycles; only ``kept`` is still referred to
    dead = weakref.ref(garbage)
    del garbage
    before = gc.get_freeze_count()
    serving.freeze_heap()
    assert dead() is None  # collected before freezing, not kept for ever
    assert gc.get_freeze_count() > before
    assert not any(o is kept for o in gc.get_objects())  # frozen: no generation holds it any more
    assert kept.me is kept


def test_a_workers_app_is_built_then_frozen(
    unfrozen: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "models": {"fake": {"backend": "fake"}},
                "default_model": "fake",
                "models_dir": str(tmp_path / "models"),
                "data_dir": str(tmp_path / "data"),
                "cache": {"backend": "off"},
            }
        )
    )
    monkeypatch.setenv(serving.WORKER_CONFIG, str(config))
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        app = serving.worker_app()
    finally:  # the worker set up logging for its process: undone
        root.handlers[:] = handlers
        root.setLevel(level)
    assert gc.get_freeze_count() > 0
    assert not any(o is app for o in gc.get_objects())
