"""The precision guard: a second look at a near neighbour before its answer is reused.

Sentence embeddings place minimal pairs almost on top of each other ("convert Celsius to Fahrenheit" and
"Fahrenheit to Celsius" are at cosine 0.995 with MiniLM, "is it safe" and "is it not safe" at 0.993), so a
threshold alone cannot refuse them. The guard compares the two texts' words and refuses a match when:

- **negation**: one text negates and the other does not (``not``, ``n't``, ``never``, ``without``, ``no`` …,
  and ``il-``/``dis-`` antonyms of a word the other text has);
- **numbers**: the numbers (digits, ordinals and number words) differ;
- **order**: the shared content words appear in another order (swapped roles: "A to B" / "B to A");
- **substitution**: the texts are the same but for a content word on each side (France / Germany,
  Python / Java, bake / fry): a minimal pair, which embeddings rate near-identical.

It is pure and cheap (microseconds); ``bench/cache_quality.py`` measures what it buys.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from functools import lru_cache
from typing import Protocol


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_TOKEN = re.compile(r"[a-z0-9]+(?:[.'][a-z0-9]+)*")
_DIGIT = re.compile(r"[0-9]")
_NEGATIONS = _words(
    "not no never none nobody nothing neither nor without cannot cant dont doesnt didnt isnt arent wasnt "
    "werent wont wouldnt shouldnt couldnt hasnt havent hadnt mustnt aint"
)
_NUMBER_WORDS = _words(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand "
    "million billion first second third fourth fifth sixth seventh eighth ninth tenth half quarter "
    "january february march april may june july august september october november december "
    "monday tuesday wednesday thursday friday saturday sunday"
)
_STOPWORDS = _words(
    "a an the and or but if of in on at to from into onto for with by about as is are was were be been being "
    "am do does did done doing have has had having i me my mine we us our you your yours he him his she "
    "her it its they them their this that these those there here what which who whom whose when where why "
    "how can could should would will shall may might must please tell give show explain describe "
    "some any all each every other such than then so too very just also more most much many lot lots "
    "get got way ways best good better quick quickly fast faster easy easily simple simply make way "
    "one ones thing things up out over under again s t d ll ve re m"
)
_UNSTEMMED = _STOPWORDS | _NEGATIONS  # kept as they are; never content words
_NEGATING_PREFIXES = ("dis", "il", "im", "in", "ir", "un", "non")
# words that give the words around them roles: "A to B", "A than B", "A before B"
_RELATIONS = _words("to from into onto than before after vs versus over under by")


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower().replace("n't", "nt").replace("\u2019", "'"))


def _stem(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _is_number(token: str) -> bool:
    return token in _NUMBER_WORDS or _DIGIT.search(token) is not None


@dataclass(frozen=True)
class Parsed:
    words: tuple[str, ...]  # every token, stemmed, in order
    negations: int
    numbers: frozenset[str]
    content: tuple[str, ...]  # content words, in order of first appearance


@lru_cache(maxsize=4096)
def parse(text: str) -> Parsed:
    """``text``'s words; remembered for the texts seen last (a query is read by the guard and the verifier,
    a stored question again each time it is a candidate)."""
    words = tuple(t if t in _UNSTEMMED else _stem(t.replace("'", "")) for t in tokens(text))
    negations = sum(1 for t in words if t in _NEGATIONS)
    numbers = frozenset(t for t in words if _is_number(t))
    content: list[str] = []
    for word in words:
        if word not in _UNSTEMMED and word not in numbers and word not in content:
            content.append(word)
    return Parsed(words, negations, numbers, tuple(content))


def _antonym_prefixed(words: set[str], others: set[str]) -> bool:
    """``illegal`` against ``legal``, ``disconnected`` against ``connected``."""
    for word in words:
        for prefix in _NEGATING_PREFIXES:
            if word.startswith(prefix) and word[len(prefix) :] in others:
                return True
    return False


def _numbers_differ(a: frozenset[str], b: frozenset[str]) -> bool:
    if a == b:
        return False
    digits_a = {n for n in a if n[0].isdigit()}
    digits_b = {n for n in b if n[0].isdigit()}
    # number words ("first", "may") are also plain words: compare them only when both sides have numbers
    return digits_a != digits_b or bool(a and b)


def _swapped(a: Sequence[str], b: Sequence[str], shared: set[str]) -> bool:
    """Two shared words whose order flips while something shared stands between them in both texts."""
    seq_a = [t for t in a if t in shared or t in _RELATIONS]
    seq_b = [t for t in b if t in shared or t in _RELATIONS]
    if seq_a == seq_b:
        return False
    last_a = {t: i for i, t in enumerate(seq_a)}
    last_b = {t: i for i, t in enumerate(seq_b)}
    words = sorted(w for w in shared if w in last_a and w in last_b)
    for i, x in enumerate(words):
        for y in words[i + 1 :]:
            ax, ay, bx, by = last_a[x], last_a[y], last_b[x], last_b[y]
            if (ax < ay) != (bx < by) and abs(ax - ay) > 1 and abs(bx - by) > 1:
                return True
    return False


def _substituted(a: Sequence[str], b: Sequence[str], max_words: int) -> bool:
    """The texts are equal but for one replaced run of at most ``max_words`` content words a side."""
    edits = [op for op in SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes() if op[0] != "equal"]
    if len(edits) != 1 or edits[0][0] != "replace":
        return False
    _, i1, i2, j1, j2 = edits[0]
    only_a = [t for t in a[i1:i2] if t not in _STOPWORDS]
    only_b = [t for t in b[j1:j2] if t not in _STOPWORDS]
    return 0 < len(only_a) <= max_words and 0 < len(only_b) <= max_words


class Guard(Protocol):
    """Whether a neighbour's cached text may answer the query's (both normalised)."""

    def check(self, query: str, cached: str) -> Verdict: ...


class LexicalGuard:
    """Refuses near neighbours that differ in negation, numbers, role order or one swapped word.

    ``max_substitution``: texts equal but for one replaced run of at most this many content words a side
    are a minimal pair ("capital of France" / "of Germany") and refused.
    """

    def __init__(self, max_substitution: int = 2) -> None:
        self.max_substitution = max_substitution

    def check(self, query: str, cached: str) -> Verdict:
        q, c = parse(query), parse(cached)
        if (q.negations > 0) != (c.negations > 0):
            return Verdict(False, "negation")
        q_words, c_words = set(q.content), set(c.content)
        if _antonym_prefixed(q_words - c_words, c_words) or _antonym_prefixed(c_words - q_words, q_words):
            return Verdict(False, "negation")
        if _numbers_differ(q.numbers, c.numbers):
            return Verdict(False, "numbers")
        if _swapped(q.words, c.words, (q_words & c_words) | (q.numbers & c.numbers)):
            return Verdict(False, "order")
        if _substituted(q.words, c.words, self.max_substitution):
            return Verdict(False, "substitution")
        return Verdict(True)


class NoGuard:
    """Accepts every match above the threshold (for measuring what the guard buys)."""

    def check(self, query: str, cached: str) -> Verdict:
        return Verdict(True)
