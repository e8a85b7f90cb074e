"""The precision guard refuses minimal pairs and lets paraphrases through."""

from __future__ import annotations

import pytest

from groupqwen.cache.guard import LexicalGuard, NoGuard, parse


@pytest.mark.parametrize(
    ("query", "cached", "reason"),
    [
        ("Is it safe to eat raw eggs?", "Is it not safe to eat raw eggs?", "negation"),
        ("Why does my code work?", "Why doesn't my code work?", "negation"),
        ("Is it legal to record a call?", "Is it illegal to record a call?", "negation"),
        ("What is 15% of 200?", "What is 20% of 200?", "numbers"),
        ("How do I install Python 3.12?", "How do I install Python 3.11?", "numbers"),
        ("How do I convert Celsius to Fahrenheit?", "How do I convert Fahrenheit to Celsius?", "order"),
        ("Is Python faster than Java?", "Is Java faster than Python?", "order"),
        ("Did Germany beat Brazil in 2014?", "Did Brazil beat Germany in 2014?", "order"),
        ("What is the capital of France?", "What is the capital of Germany?", "substitution"),
        ("How do I reverse a list in Python?", "How do I sort a list in Python?", "substitution"),
    ],
)
def test_refuses_minimal_pairs(query: str, cached: str, reason: str) -> None:
    verdict = LexicalGuard().check(query, cached)
    assert not verdict.ok
    assert verdict.reason == reason


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        ("How do I convert Celsius to Fahrenheit?", "What is the formula to change Celsius into Fahrenheit?"),
        ("How do I reverse a list in Python?", "What's the way to reverse a Python list?"),
        ("How does a vaccine work?", "How do vaccines work?"),
        ("What is the capital of France?", "Which city is the capital of France?"),
        ("how do i delete a git branch", "How can I remove a branch in git?"),
        ("Translate 'good morning' into Spanish.", "Translate 'good morning' into Spanish"),
    ],
)
def test_lets_paraphrases_through(query: str, cached: str) -> None:
    assert LexicalGuard().check(query, cached).ok


def test_no_guard_accepts_everything() -> None:
    assert NoGuard().check("is it safe", "is it not safe").ok


def test_parse_reads_a_text_once_and_shares_an_immutable_result() -> None:
    text = "how do i convert 3 feet to meters without a calculator"
    first = parse(text)
    assert parse(text) is first  # the guard and the verifier read the same query: parsed once
    assert first.words == (
        "how",
        "do",
        "i",
        "convert",
        "3",
        "feet",
        "to",
        "meter",
        "without",
        "a",
        "calculator",
    )
    assert first.numbers == frozenset({"3"}) and first.negations == 1
    assert first.content == ("convert", "feet", "meter", "calculator")
