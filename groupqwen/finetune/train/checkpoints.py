"""Checkpoints of a training run: ``<run>/checkpoints/step-000010/``, each whole or absent.

A checkpoint holds the PEFT adapter (``adapter_config.json``, ``adapter_model.safetensors``: usable on its
own), the optimiser and scheduler state, the random generators' states (``state.pt``) and ``trainer.json``
(step, losses). It is written into a hidden temporary folder beside the others and renamed into place,
so an interruption mid-write leaves no half checkpoint; leftovers of such writes are removed on the next
save. After each save only the last ``keep`` and the one with the best validation loss remain.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_PREFIX = "step-"
TRAINER_FILE = "trainer.json"


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int
    train_loss: float | None
    val_loss: float | None

    @property
    def trainer(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.path / TRAINER_FILE).read_text(encoding="utf-8"))
        return data


def folder(run: Path) -> Path:
    return run / "checkpoints"


def listed(run: Path) -> list[Checkpoint]:
    """The complete checkpoints of ``run``, oldest first."""
    found = []
    root = folder(run)
    if not root.is_dir():
        return []
    for path in root.iterdir():
        if not path.name.startswith(_PREFIX) or not (path / TRAINER_FILE).is_file():
            continue
        data = json.loads((path / TRAINER_FILE).read_text(encoding="utf-8"))
        found.append(Checkpoint(path, int(data["step"]), data.get("train_loss"), data.get("val_loss")))
    return sorted(found, key=lambda c: c.step)


def latest(run: Path) -> Checkpoint | None:
    found = listed(run)
    return found[-1] if found else None


def best(checkpoints: list[Checkpoint]) -> Checkpoint | None:
    scored = [c for c in checkpoints if c.val_loss is not None]
    return min(scored, key=lambda c: (c.val_loss, c.step)) if scored else None


def save(run: Path, step: int, trainer: dict[str, Any], write: Callable[[Path], None], keep: int) -> Path:
    """Write checkpoint ``step`` (``write`` fills the folder, then ``trainer`` goes in last), then prune."""
    root = folder(run)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(f".{_PREFIX}*"):  # an earlier write that was interrupted
        shutil.rmtree(stale, ignore_errors=True)
    final = root / f"{_PREFIX}{step:06d}"
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        write(work)
        (work / TRAINER_FILE).write_text(json.dumps({**trainer, "step": step}), encoding="utf-8")
        if final.exists():  # the same step again (a resumed run that was stopped before its next one)
            shutil.rmtree(final)
        os.replace(work, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    prune(run, keep)
    return final


def prune(run: Path, keep: int) -> None:
    found = listed(run)
    kept = {c.path for c in found[-keep:]}
    top = best(found)
    if top is not None:
        kept.add(top.path)
    for checkpoint in found:
        if checkpoint.path not in kept:
            shutil.rmtree(checkpoint.path, ignore_errors=True)
