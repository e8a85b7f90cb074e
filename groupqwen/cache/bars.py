"""Per-entry bars, learned online (after vCache): an entry whose answer was served for a question and
then regenerated (the client asked the same question again with ``Cache-Control: no-cache`` within
``window_s``) or disliked (``POST /v1/cache/feedback`` with the hit's id) was a wrong hit for that
question, so the entry raises its own bar above the score it was served at: halfway from that score to 1
(``TIGHTEN``). Its other neighbours, and every other entry, keep
the shared bar; an entry regenerated again rises again.

Kept in the process (a bounded, least-recently-used table each), not in the store: a replica learns from
the requests it serves. The scores are the stage's own: the verifier's probability, or the cosine where
the threshold stage serves.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass

from groupqwen.clock import SYSTEM_CLOCK, Clock

TIGHTEN = 0.5


@dataclass(frozen=True)
class _Serve:
    entry_key: str
    score: float
    at: float


class EntryBars:
    """The bars entries have learned, and the recent semantic serves that may still teach one."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK, window_s: float = 600.0, max_size: int = 100_000) -> None:
        self._clock = clock
        self.window_s = window_s
        self._max = max_size
        self._bars: OrderedDict[str, float] = OrderedDict()
        self._serves: OrderedDict[str, _Serve] = OrderedDict()  # by the question's exact key
        self._hits: OrderedDict[str, _Serve] = OrderedDict()  # by the hit's id

    def bar(self, entry_key: str) -> float:
        """The entry's own bar (0.0: none learned, the shared bar rules)."""
        return self._bars.get(entry_key, 0.0)

    def served(self, request_key: str, entry_key: str, score: float) -> str:
        """A semantic hit: ``entry_key``'s answer served for the question whose exact key is
        ``request_key``, at ``score``. Returns the hit's id (unguessable: only its receiver can use it)."""
        serve, hit_id = _Serve(entry_key, score, self._clock.time()), secrets.token_hex(12)
        for table, key in ((self._serves, request_key), (self._hits, hit_id)):
            table[key] = serve
            table.move_to_end(key)
            while len(table) > self._max:
                table.popitem(last=False)
        return hit_id

    def disliked(self, hit_id: str) -> str | None:
        """The client says the hit ``hit_id`` did not answer its question: its entry tightens its bar (once
        per hit). Returns that entry's key; ``None`` for an unknown (or forgotten) id."""
        serve = self._hits.pop(hit_id, None)
        if serve is None:
            return None
        self.tighten(serve.entry_key, serve.score)
        return serve.entry_key

    def regenerated(self, request_key: str) -> str | None:
        """The question was asked again, not reading the cache: the entry served for it within the window
        (if any) tightens its bar. Returns that entry's key."""
        serve = self._serves.pop(request_key, None)
        if serve is None or self._clock.time() - serve.at > self.window_s:
            return None
        self.tighten(serve.entry_key, serve.score)
        return serve.entry_key

    def tighten(self, entry_key: str, score: float) -> float:
        """Raise ``entry_key``'s bar above ``score`` (a wrong serve); returns the new bar."""
        bar = max(self.bar(entry_key), score + TIGHTEN * (1.0 - score))
        self._bars[entry_key] = bar
        self._bars.move_to_end(entry_key)
        while len(self._bars) > self._max:
            self._bars.popitem(last=False)
        return bar

    def __len__(self) -> int:
        return len(self._bars)
