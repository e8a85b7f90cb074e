"""Checkpoints: written whole or not at all, the last K and the best kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from groupqwen.finetune.train import checkpoints


def _write(folder: Path) -> None:
    (folder / "weights").write_text("w")


def test_keeps_the_last_k_and_the_best(tmp_path: Path) -> None:
    losses = {1: 3.0, 2: 1.0, 3: 2.0, 4: 2.5, 5: 2.2}
    for step, loss in losses.items():
        checkpoints.save(tmp_path, step, {"val_loss": loss}, _write, keep=2)
    assert [c.step for c in checkpoints.listed(tmp_path)] == [2, 4, 5]
    best = checkpoints.best(checkpoints.listed(tmp_path))
    assert best is not None and best.step == 2
    latest = checkpoints.latest(tmp_path)
    assert latest is not None and latest.step == 5 and latest.trainer["val_loss"] == 2.2


def test_an_interrupted_write_leaves_no_checkpoint(tmp_path: Path) -> None:
    checkpoints.save(tmp_path, 1, {}, _write, keep=3)

    def dies(folder: Path) -> None:
        (folder / "half").write_text("…")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        checkpoints.save(tmp_path, 2, {}, dies, keep=3)
    assert [c.step for c in checkpoints.listed(tmp_path)] == [1]
    assert [p.name for p in checkpoints.folder(tmp_path).iterdir()] == ["step-000001"]
