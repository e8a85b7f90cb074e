"""``wants_thinking`` precedence and the streaming ``<think>`` splitter."""

from __future__ import annotations

import random

import pytest

from groupqwen.messages import Message
from groupqwen.orchestrator.thinking import CLOSE, OPEN, ThinkSplitter, wants_thinking


def _user(text: str) -> Message:
    return Message("user", text)


# --------------------------------------------------------------------------------------------------------
# wants_thinking


@pytest.mark.parametrize("explicit", [True, False])
def test_explicit_beats_soft_switch_and_default(explicit: bool) -> None:
    for text in ("please /think", "please /no_think", "plain"):
        for default in (True, False):
            assert wants_thinking((_user(text),), explicit, default) is explicit


@pytest.mark.parametrize("default", [True, False])
def test_no_switch_falls_back_to_default(default: bool) -> None:
    assert wants_thinking((_user("hello"),), None, default) is default
    assert wants_thinking((), None, default) is default


def test_soft_switch_beats_default() -> None:
    assert wants_thinking((_user("why? /think"),), None, False) is True
    assert wants_thinking((_user("why? /no_think"),), None, True) is False


def test_last_switch_in_the_turn_wins() -> None:
    assert wants_thinking((_user("/no_think then /think"),), None, False) is True
    assert wants_thinking((_user("/think then /no_think"),), None, True) is False
    assert wants_thinking((_user("/think\n/no_think"),), None, True) is False


def test_only_the_latest_user_turn_counts() -> None:
    history = (
        Message("system", "/no_think"),
        _user("first /think"),
        Message("assistant", "ok /no_think"),
        _user("second, no switch"),
    )
    assert wants_thinking(history, None, False) is False
    assert wants_thinking(history, None, True) is True
    later = (*history, Message("assistant", "/think"))
    # an assistant message after the last user turn changes nothing
    assert wants_thinking(later, None, False) is False
    switched = (_user("old /no_think"), Message("assistant", "a"), _user("new /think"))
    assert wants_thinking(switched, None, False) is True


def test_system_prompt_switch_is_not_a_user_switch() -> None:
    assert wants_thinking((Message("system", "/think"), _user("hi")), None, False) is False


@pytest.mark.parametrize(
    "text", ["/thinking about it", "a/think", "x /thinker", "/think_hard", "http://x/think", "/no_thinking"]
)
def test_switch_only_as_a_whole_word(text: str) -> None:
    assert wants_thinking((_user(text),), None, False) is False
    assert wants_thinking((_user(text),), None, True) is True


@pytest.mark.parametrize("text", ["/think", " /think ", "tell me\t/think\n", "/think please"])
def test_switch_as_a_word_anywhere(text: str) -> None:
    assert wants_thinking((_user(text),), None, False) is True


# --------------------------------------------------------------------------------------------------------
# ThinkSplitter


def _run(pieces: list[str], inside: bool = False) -> tuple[str, str, list[tuple[str, str]]]:
    splitter = ThinkSplitter(inside=inside)
    outputs = [splitter.feed(p) for p in pieces]
    outputs.append(splitter.flush())
    return "".join(r for r, _ in outputs), "".join(c for _, c in outputs), outputs


TEXT = "<think>\nFirst, plan the reply: a < b and b > c.\n</think>\n\nThe answer is 42 <b>bold</b>."
REASONING = "First, plan the reply: a < b and b > c.\n"
CONTENT = "The answer is 42 <b>bold</b>."


def _assert_clean(reasoning: str, content: str) -> None:
    for tag in (OPEN, CLOSE):
        assert tag not in reasoning
        assert tag not in content
    assert "plan the reply" not in content
    assert "answer is" not in reasoning


def test_whole_text() -> None:
    reasoning, content, _ = _run([TEXT])
    assert reasoning == REASONING
    assert content == CONTENT


def test_every_two_way_split() -> None:
    for i in range(len(TEXT) + 1):
        reasoning, content, outputs = _run([TEXT[:i], TEXT[i:]])
        assert (reasoning, content) == (REASONING, CONTENT), i
        for r, c in outputs:  # no piece ever carries tag characters or reasoning into content
            assert "<think" not in c and "</th" not in c
            assert "/think>" not in r and "<thi" not in r
            _assert_clean(r, c)


def test_random_many_way_splits() -> None:
    rng = random.Random(1234)
    for _ in range(500):
        k = rng.randint(2, 25)
        cuts = sorted(rng.sample(range(1, len(TEXT)), k - 1))
        pieces = [TEXT[a:b] for a, b in zip([0, *cuts], [*cuts, len(TEXT)], strict=True)]
        reasoning, content, outputs = _run(pieces)
        assert (reasoning, content) == (REASONING, CONTENT), pieces
        for r, c in outputs:
            _assert_clean(r, c)


def test_character_by_character() -> None:
    reasoning, content, outputs = _run(list(TEXT))
    assert (reasoning, content) == (REASONING, CONTENT)
    assert all("<" not in c for _, c in outputs[: TEXT.index(CLOSE) + len(CLOSE)])


def test_text_before_the_think_block_is_content() -> None:
    text = "Intro. <think>hidden</think> outro"
    for i in range(len(text) + 1):
        reasoning, content, _ = _run([text[:i], text[i:]])
        assert reasoning == "hidden"
        assert content == "Intro. outro"


def test_starting_inside_thinking() -> None:
    text = "  \nreasoning here</think>\n\nanswer"
    for i in range(len(text) + 1):
        reasoning, content, _ = _run([text[:i], text[i:]], inside=True)
        assert reasoning == "reasoning here"
        assert content == "answer"


def test_unterminated_think_is_reasoning() -> None:
    text = "<think>still thinking when the tokens ran out"
    for i in range(len(text) + 1):
        reasoning, content, _ = _run([text[:i], text[i:]])
        assert reasoning == "still thinking when the tokens ran out"
        assert content == ""
    reasoning, content, _ = _run(["partial only"], inside=True)
    assert (reasoning, content) == ("partial only", "")


def test_empty_think_block() -> None:
    text = "<think>\n\n</think>\n\nJust the answer."
    for i in range(len(text) + 1):
        assert _run([text[:i], text[i:]])[:2] == ("", "Just the answer.")


@pytest.mark.parametrize(
    "text",
    [
        "a < b",
        "x <thinking> y",
        "<",
        "<t",
        "<thin",
        "ends with <th",
        "<<>>",
        "</think> alone",
        "if a<b and c>d",
    ],
)
def test_angle_brackets_that_are_not_an_open_tag_stay_content(text: str) -> None:
    for i in range(len(text) + 1):
        reasoning, content, _ = _run([text[:i], text[i:]])
        assert reasoning == ""
        assert content == text
    assert _run(list(text))[:2] == ("", text)


def test_partial_close_tag_inside_reasoning_stays_reasoning() -> None:
    text = "<think>a </thin b</think>c"
    for i in range(len(text) + 1):
        assert _run([text[:i], text[i:]])[:2] == ("a </thin b", "c")


def test_whitespace_after_tags_is_stripped() -> None:
    reasoning, content, _ = _run(["<think>", " \n\t ", "idea", "</think>", "\n", "\n  ", "answer"])
    assert reasoning == "idea"
    assert content == "answer"
    # whitespace inside the answer is kept
    assert _run(["<think>x</think>\n\nline 1\n\nline 2 "])[1] == "line 1\n\nline 2 "


def test_held_back_prefix_is_released_when_it_is_not_a_tag() -> None:
    splitter = ThinkSplitter()
    assert splitter.feed("hello <th") == ("", "hello ")
    assert splitter.feed("ere") == ("", "<there")
    assert splitter.flush() == ("", "")
