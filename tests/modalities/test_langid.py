"""Language identification on chat-sized texts: the shipped fastText model, and the rules for short,
unsure and code-laden texts."""

from __future__ import annotations

import pytest

from groupqwen.modalities import langid


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Name three prime numbers.", "en"),  # was taken for non-English by a word-list heuristic
        ("What is the capital of France?", "en"),
        ("Quelle est la capitale de la France ?", "fr"),
        ("Wie spät ist es jetzt bitte in der Stadt Berlin?", "de"),
        ("¿Cuántos años tienes tú?", "es"),
        ("Сколько будет два плюс два?", "ru"),
        ("東京の天気はどうですか？", "ja"),
        ("今天北京的天气怎么样？", "zh"),
        ("Translate 'good morning' into French", "en"),
    ],
)
def test_the_language_of_real_prompts(text: str, code: str) -> None:
    assert langid.detect(text).code == code


@pytest.mark.parametrize(
    "text", ["7 times 8", "hi", "Bonjour", "Explain recursion", "", "12 + 30 = ?", "```x```"]
)
def test_short_or_empty_latin_text_is_english_by_default(text: str) -> None:
    assert langid.identify(text) is None
    assert langid.detect(text).english


def test_short_text_in_another_script_is_still_identified() -> None:
    assert langid.detect("Привет").code == "ru"


def test_code_urls_and_numbers_are_no_evidence() -> None:
    code = "```python\nfor i in range(10):\n    print(i)\n```"
    assert langid.detect(f"Pourquoi ce code affiche-t-il dix lignes ? {code}").code == "fr"
    assert langid.detect(f"See https://example.fr/la-page-de-la-documentation and {code}").english
    assert langid.identify("`x = y` 42 https://a.b/c d@e.fr") is None


def test_the_model_knows_176_languages() -> None:
    known = langid.languages()
    assert len(known) == 176 and {"en", "fr", "zh", "yue", "als"} <= known
