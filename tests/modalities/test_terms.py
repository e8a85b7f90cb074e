"""Terminology (``modalities/terms.py``): where a term applies, when a translation holds it, the rewrite
that writes a target where its source stands; and the enforcement in ``modalities/translation.py``
(substituted, retried, pinned), with how each term came to be held."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from groupqwen.messages import Message, Term, TranslationOptions, Usage
from groupqwen.modalities.terms import applying, missing, substitute
from groupqwen.modalities.translation import Generated, Translator


def test_a_term_applies_to_a_word_of_prose_only() -> None:
    name, site, objects = Term("name", "nom"), Term("site", "sitio"), Term("Object", "Objet")
    terms = (name, site, objects)
    # inside a placeholder, or inside another word, a term is no term of the text
    assert applying(terms, "%(name)s was deleted from the website %(site_name)s.") == []
    assert applying(terms, "Give the site a NAME.") == [name, site]
    assert applying(terms, "Related objects are kept.") == [objects]  # a plural
    assert applying(terms, "`name` and https://example.com/site stay as they are") == []
    assert applying((Term("password  reset", "x"),), "A Password\nreset was asked.") != []
    assert applying((Term("缓存", "cache"),), "请清空缓存。") == [Term("缓存", "cache")]


def test_a_term_is_held_by_its_target_as_a_word_with_a_short_ending() -> None:
    objeto, nom, zeit = Term("object", "objeto"), Term("name", "nom"), Term("time", "Zeit")
    assert missing("Los Objetos relacionados", [objeto]) == []
    assert missing("Die Zeiten ändern sich", [zeit]) == []
    assert missing("un fichier nommé x", [nom]) == [nom]
    assert missing("le nom du fichier", [nom]) == []
    assert missing("请清空缓存。", [Term("cache", "缓存")]) == []


@pytest.mark.parametrize(
    ("text", "term", "language", "out"),
    [
        ("The objects of %(objects)s", Term("Objects", "Objetos"), "Spanish", "The objetos of %(objects)s"),
        ("Password reset asked", Term("password reset", "mot de passe"), "French", "Mot de passe asked"),
        ("related objects", Term("Objects", "Objekte"), "German", "related Objekte"),
        ("a `cache` and a cache", Term("cache", "antémémoire"), "French", "a `cache` and a antémémoire"),
        ("two caches", Term("cache", "c\\1"), "French", "two c\\1"),
    ],
)
def test_substitute_writes_the_target_where_the_source_stands(
    text: str, term: Term, language: str, out: str
) -> None:
    assert substitute(text, [term], language) == out


def _translator(answer: Callable[[str, str], str], *terms: Term) -> tuple[Translator, list[str]]:
    """A translator whose model answers ``answer(system prompt, text)``; the texts asked, in order."""
    asked: list[str] = []

    async def generate(messages: tuple[Message, ...], max_tokens: int) -> Generated:
        asked.append(messages[-1].content)
        return Generated(answer(messages[0].content, messages[-1].content), Usage(10, 5))

    options = TranslationOptions("Spanish", "English", terms=terms)
    return Translator(options, generate, budget_chars=1000), asked


async def _run(translator: Translator, text: str) -> str:
    return "".join([c.text async for c in translator.stream(text)])


async def test_a_term_the_model_leaves_in_the_source_language_is_substituted() -> None:
    translator, asked = _translator(lambda _, text: "La cache está llena.", Term("cache", "caché"))
    assert await _run(translator, "The cache is full.") == "La caché está llena."
    report = translator.report()
    assert (report.terms_expected, report.terms_held, len(asked)) == (1, 1, 1)
    assert dict(report.terms_held_by) == {"prompt": 0, "retry": 0, "pinned": 0, "substituted": 1}


async def test_a_term_missed_twice_is_pinned_in_the_text() -> None:
    """The model ignores the term list (it writes "memoria") but keeps a word already written in Spanish:
    the third generation, asked with the term pinned in the text, holds it."""

    def answer(system: str, text: str) -> str:
        return text.replace("The", "La").replace("cache", "memoria").replace("is full", "está llena")

    translator, asked = _translator(answer, Term("cache", "caché"))
    assert await _run(translator, "The cache is full.") == "La caché está llena."
    assert asked == ["The cache is full.", "The cache is full.", "The caché is full."]
    report = translator.report()
    assert (report.terms_expected, report.terms_held, report.retried) == (1, 1, 1)
    assert dict(report.terms_held_by) == {"prompt": 0, "retry": 0, "pinned": 1, "substituted": 0}


async def test_a_retry_that_holds_the_term_ends_it_and_is_counted_as_the_retry() -> None:
    def answer(system: str, text: str) -> str:
        return "La caché está llena." if "rejected" in system else "La memoria está llena."

    translator, asked = _translator(answer, Term("cache", "caché"), Term("printer", "impresora"))
    assert await _run(translator, "The cache is full.") == "La caché está llena."
    assert len(asked) == 2  # "printer" is not in the text: no term of it
    assert dict(translator.report().terms_held_by)["retry"] == 1
