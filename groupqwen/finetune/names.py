"""The export owner's name, matched as a name: not every "will", "young" or "example" in the text.

A name from the export (``"Will Young"``) is found

- **whole**, its parts in order (``Will Young``, ``W. Young``), capitalised as a name (``Will Young``,
  ``WILL YOUNG``; all lower case too when a part is not a common word);
- **by one part**: a part that is not a common English word (``Priya``, ``Raman``) wherever it stands as a
  word, capitalised or in lower case. A part that *is* a common word (:data:`COMMON_WORDS`: ``Will``,
  ``Young``, ``Mark``, ``Price``, ``Example``…) only where a name stands: capitalised, and
  - beside another part of the same name (``Young, Will``);
  - after a title (``Mr. Young``, ``Dr Example``): the only place a common-word *surname* alone is taken;
  - for a given name (the first part), also: after a cue (``I'm``, ``my name is``, ``this is``, ``Hi``,
    ``Dear``, ``Thanks,``, ``Best,``, ``from``, ``for``, ``tell``…), before ``here`` / ``again`` /
    ``speaking``, alone on a line (a signature), as a vocative (``…, Will.``), or capitalised in the middle
    of a sentence after a lower-case word that is not an article (``ask will`` no, ``email from Will`` yes).
  A common-word part followed by another capitalised word that is not part of the name (``Mark Twain``,
  ``Will Smith``) is someone else's name, or a title.

Measured on ``tests/finetune/fixtures/names.jsonl`` (docs/finetune.md has the numbers).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

# Common English words that are also given names or surnames (lower case), and words that stand in for
# names in test accounts. A part of the owner's name in this list is only taken where a name stands.
COMMON_WORDS = frozenset(
    """
    will mark bill rose grace hope joy faith dawn april may june august summer autumn winter ray sky star
    amber ruby pearl jade crystal ivy holly lily daisy iris violet heather olive hazel ginger honey candy
    cherry angel destiny patience prudence chance chase hunter archer mason carter miles frank grant dean
    earl duke king prince rich rob pat sue jack art bob bud buck buddy guy gene max drew penny cliff dale
    glen rusty sandy sunny stormy river brook forest reed rod don nick wade wren robin jay martin lane page
    cole sterling major justice harmony melody bliss unity charity constance trinity eve kit victor
    young example price hill green walker white black brown gray grey wood woods baker smith cook miller
    fisher taylor turner cooper ward hall bell bush field fields ford fox wolf lamb bird crane swan hawk
    hart park parks rice long short little small strong wise best good goodman cash money love moon stone
    rock rivers banks bridges wells waters marsh pond lake shore house castle church chapel temple knight
    bishop pope abbott cardinal sheriff steward butler chamberlain marshal gold silver steel iron glass
    frost snow rain storm day north south west east english french welsh scott march case key keys law
    lord noble thorn bloom berry root branch wild holiday mayor rider bowman fletcher sawyer weaver dyer
    tanner potter slater thatcher shepherd farmer gardener webb head bone hand foot cross street way power
    powers sharp swift quick sweet bright fair free freeman golden hardy keen merry moody proud ready savage
    bacon wine mills bolt bond burns cannon coffee cotton dance drake duck fountain gamble gay gross hale
    hay heart hood horn hunt jolly kidd lemon mayo mint nash oak paris parker pike plum pool ridge ring
    roach rush salt sands seal shaw shield ship silk slate spear spring stack stamp stock strange tower
    trout vale vine warden watt wax wing worth wright
    test tester user admin demo sample default anonymous guest student owner name person account
    """.split()  # noqa: SIM905  (a word list reads better as text than as 300 quoted strings)
)

_TITLE = r"(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame|Madam)\.?\s+$"
# what comes before a given name used as a name (matched against the end of the text before it)
_CUE_BEFORE = re.compile(
    r"(?:\b(?:I'm|I’m|Im|I am|my name is|my name's|my name’s|name's|name’s|call me|called|this is|it's|it’s|"
    r"it is|signed|as|from|for|to|with|ask|tell|thanks|thank you|hi|hello|hey|dear|dearest|cheers|regards|"
    r"best|love|yours|sincerely|warmly)[,:;!.]?\s*['\"“‘]?|" + _TITLE + r")$",
    re.IGNORECASE,
)
_TITLE_BEFORE = re.compile(_TITLE)
_CUE_AFTER = re.compile(r"^\s+(?:here|again|speaking)\b", re.IGNORECASE)
_NOT_NAME_BEFORE = frozenset(
    {"the", "a", "an", "this", "that", "these", "those", "my", "your", "our", "their", "his", "her", "its"}
    | {"each", "every", "no", "any", "some", "which", "what", "whose", "of"}
)
_AROUND = 80
_SENTENCE_END = ".!?:;\n\"'(“‘[*#>-|"


@dataclass(frozen=True)
class _Part:
    text: str
    given: bool  # the first part of a name of several, or a name of one part
    common: bool
    siblings: tuple[str, ...]  # the other parts of the same name, lower case


def _as_a_name(found: str, part: str, common: bool) -> bool:
    """Capitalised as a name: as given, Title case or UPPER case; lower case only for uncommon parts."""
    if found in (part, part.upper()) or found == part[:1].upper() + part[1:].lower():
        return True
    return found == part.lower() and not common


class NameMatcher:
    """Finds the owner's names in text; :meth:`find` returns ``(start, end)`` spans, in text order."""

    def __init__(self, names: Sequence[str]) -> None:
        self._fulls: list[tuple[re.Pattern[str], tuple[str, ...]]] = []
        self._parts: dict[str, list[_Part]] = {}
        for name in names:
            parts = tuple(p for p in name.split() if p)
            if not parts:
                continue
            lowered = tuple(p.lower() for p in parts)
            if len(parts) > 1:
                joined = r"\s+".join(re.escape(p) for p in parts)
                initial = re.escape(parts[0][0]) + r"\.\s*" + r"\s+".join(re.escape(p) for p in parts[1:])
                either = rf"(?<!\w)(?:(?P<full>{joined})|(?P<initial>{initial}))(?!\w)"
                pattern = re.compile(either, re.IGNORECASE)
                self._fulls.append((pattern, parts))
            for i, part in enumerate(parts):
                if len(part) < 3:
                    continue
                siblings = tuple(p for j, p in enumerate(lowered) if j != i)
                entry = _Part(part, i == 0, part.lower() in COMMON_WORDS, siblings)
                self._parts.setdefault(part.lower(), []).append(entry)
        alternatives = "|".join(re.escape(p) for p in sorted(self._parts, key=len, reverse=True))
        self._one = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE) if alternatives else None

    def __bool__(self) -> bool:
        return bool(self._fulls or self._one)

    def find(self, text: str) -> list[tuple[int, int]]:
        whole = list(self._whole(text))
        spans = list(whole)
        if self._one is not None:
            for m in self._one.finditer(text):
                inside = any(s <= m.start() < e for s, e in whole)
                if not inside and self._is_name(text, m):
                    spans.append(m.span())
        return sorted(spans)

    def _whole(self, text: str) -> Iterator[tuple[int, int]]:
        for pattern, parts in self._fulls:
            common = all(p.lower() in COMMON_WORDS for p in parts)
            for m in pattern.finditer(text):
                if m.group("full") is not None:
                    words, expected = m.group().split(), parts
                else:  # "W. Young": the initial, then the other parts
                    initial, rest = m.group().split(".", 1)
                    words, expected = [initial, *rest.split()], (parts[0][0], *parts[1:])
                if len(words) == len(expected) and all(
                    _as_a_name(w, p, common) for w, p in zip(words, expected, strict=True)
                ):
                    yield m.span()

    def _is_name(self, text: str, m: re.Match[str]) -> bool:
        found = m.group()
        candidates = [p for p in self._parts.get(found.lower(), ()) if _as_a_name(found, p.text, p.common)]
        if not candidates:
            return False
        if any(not p.common for p in candidates):
            return True
        # what the rules look at: the words around (bounded, so a long text costs no more per name)
        before, after = text[max(0, m.start() - _AROUND) : m.start()], text[m.end() : m.end() + _AROUND]
        if any(_beside(before, after, p.siblings) for p in candidates):
            return True
        if _TITLE_BEFORE.search(before[-12:]):
            return True
        if not any(p.given for p in candidates) or found.islower():
            return False
        if _next_is_another_name(after, candidates):
            return False
        return (
            bool(_CUE_BEFORE.search(before[-24:]))
            or bool(_CUE_AFTER.match(after))
            or _alone_on_a_line(before, after)
            or _vocative(before, after)
            or _mid_sentence(before, found)
        )


def _beside(before: str, after: str, siblings: tuple[str, ...]) -> bool:
    """Next to another part of the same name: ``Young, Will``, ``YOUNG WILL``."""
    if not siblings:
        return False
    prev = re.search(r"(\w+)(?:,\s*|\s+)$", before)
    nxt = re.match(r"(?:,\s*|\s+)(\w+)", after)
    return bool((prev and prev.group(1).lower() in siblings) or (nxt and nxt.group(1).lower() in siblings))


def _next_is_another_name(after: str, candidates: list[_Part]) -> bool:
    """``Mark Twain``, ``Will Smith``: followed by a capitalised word that is not part of the name."""
    nxt = re.match(r" ([A-Z][\w'’-]*)", after)
    if nxt is None:
        return False
    word = nxt.group(1).lower().removesuffix("'s").removesuffix("’s")
    return not any(word in p.siblings for p in candidates)


def _alone_on_a_line(before: str, after: str) -> bool:
    """A signature: the name alone on its line (after an optional dash)."""
    line_before = before.rsplit("\n", 1)[-1]
    line_after = after.split("\n", 1)[0]
    return bool(re.fullmatch(r"\s*(?:[-—–]\s*)?", line_before)) and bool(re.fullmatch(r"[\s.!]*", line_after))


def _vocative(before: str, after: str) -> bool:
    """``Good question, Will.``: after a comma, at the end of a sentence."""
    return bool(re.search(r",\s*$", before)) and bool(re.match(r"[.!?]*(?:\s|$)", after)) and after[:1] != " "


def _mid_sentence(before: str, found: str) -> bool:
    """Capitalised in the middle of a sentence, after a lower-case word that is not an article: ``an email
    from Will``, not ``Will you…``, ``the Will section``."""
    if not found[:1].isupper() or found.isupper():
        return False
    stripped = before.rstrip(" \t")
    if not stripped or stripped[-1] in _SENTENCE_END or stripped != before.rstrip():
        return False
    prev = re.search(r"([A-Za-z'’]+),?$", stripped)
    if prev is None:
        return False
    word = prev.group(1)
    return word[:1].islower() and word.lower() not in _NOT_NAME_BEFORE
