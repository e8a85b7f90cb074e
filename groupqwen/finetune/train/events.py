"""What a training run reports as it goes: ``Event``s, given to every sink (a JSONL log, a progress bar,
the job's database rows).

``metrics`` events carry ``step``, ``total_steps``, ``train_loss``, ``learning_rate``, ``tokens_per_s``,
``eta_s`` and, on an evaluation, ``val_loss``; ``message`` events say what happens (loading, a checkpoint,
the end) in words.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

EventType = Literal["message", "metrics"]


@dataclass(frozen=True)
class Event:
    type: EventType
    message: str
    data: dict[str, Any] = field(default_factory=dict)
    level: Literal["info", "warn", "error"] = "info"
    created_at: float = field(default_factory=time.time)


Sink = Callable[[Event], None]


class JsonlLog:
    """Appends each event as one JSON line to ``path`` (the run's ``events.jsonl``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, event: Event) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(asdict(event)) + "\n")


def read_log(path: Path) -> list[Event]:
    if not path.is_file():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            events.append(Event(**json.loads(line)))
    return events
