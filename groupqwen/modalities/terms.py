"""Terminology (Qwen-MT's ``terms``): which terms apply to a text, whether a translation holds them, and
the deterministic rewrite the enforcement uses (``modalities.translation``).

- A term **applies** where its source occurs in the text's prose as a word (case and spacing aside, a
  plural ``s``/``es`` allowed): not inside a protected span (``%(name)s`` holds no term "name") and not
  inside another word ("site" is not in "website").
- A translation **holds** a term when its target occurs as a word, a short ending allowed (``Objeto`` is held
  by "objetos", ``Zeit`` by "Zeiten"); "nom" is not held by "nommé".
- Scripts written without spaces (Chinese, Japanese, Thai…) have no word boundaries: there a term is found
  anywhere in the text.
- ``substitute`` writes a term's target where its source stands (in the prose only), the first letter's
  case following the text's (a term listed as "Password" → "Mot de passe" becomes "mot de passe" in the
  middle of a sentence; not for German, whose nouns keep their capital).
"""

from __future__ import annotations

import functools
import re

from groupqwen.messages import Term
from groupqwen.modalities.segments import gaps

_UNSPACED = re.compile(r"[\u0e00-\u0eff\u1000-\u109f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
CAPITALISED_NOUNS = frozenset({"German", "Luxembourgish"})  # a term's capital is kept mid-sentence


def _words(text: str) -> str:
    return r"\s+".join(re.escape(word) for word in text.split())


@functools.lru_cache(maxsize=4096)
def _pattern(text: str, ending: str) -> re.Pattern[str]:
    if _UNSPACED.search(text):
        return re.compile(_words(text), re.IGNORECASE)
    return re.compile(rf"(?<!\w){_words(text)}(?:{ending})?(?!\w)", re.IGNORECASE)


def _source(term: Term) -> re.Pattern[str]:
    return _pattern(term.source, "e?s")


def _target(term: Term) -> re.Pattern[str]:
    return _pattern(term.target, r"es|en|\w")


def _prose(text: str) -> list[str]:
    return [part for part, kept in gaps(text) if not kept]


def applying(terms: tuple[Term, ...] | list[Term], text: str) -> list[Term]:
    """The ``terms`` whose source occurs in ``text``'s prose (see the module's docstring)."""
    prose = _prose(text)
    return [t for t in terms if t.source.strip() and any(_source(t).search(part) for part in prose)]


def missing(answer: str, terms: list[Term]) -> list[Term]:
    """The ``terms`` whose target ``answer`` does not hold."""
    return [t for t in terms if not _target(t).search(answer)]


def substitute(text: str, terms: list[Term], language: str) -> str:
    """``text`` with each term's source, where it occurs in the prose, replaced by the term's target
    written in ``language`` (the first letter's case as the text has it, see the module's docstring)."""
    for term in terms:

        def cased(match: re.Match[str], term: Term = term) -> str:
            return _cased(match.group(0), term, language)

        pattern = _source(term)
        text = "".join(part if kept else pattern.sub(cased, part) for part, kept in gaps(text))
    return text


def _cased(found: str, term: Term, language: str) -> str:
    target = term.target
    if not found[:1].isalpha() or not target[:1].isalpha():
        return target
    if found[0].isupper() and not term.source[0].isupper():
        return target[0].upper() + target[1:]
    if found[0].islower() and term.source[0].isupper() and language not in CAPITALISED_NOUNS:
        return target[0].lower() + target[1:]
    return target
