"""Quality filters with reasons: each answers "what is wrong with this turn / conversation?" or ``None``.

A bad exchange (a question and its answer) cuts the conversation there: later turns build on earlier ones,
so the conversation keeps only what came before it, and is rejected if nothing is left. The language is
judged on the whole conversation by ``modalities.langid`` (fastText's language-ID model, offline).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from groupqwen.finetune.records import Conversation, Turn
from groupqwen.modalities import langid

_REFUSAL = re.compile(
    r"^\s*(?:I'?m sorry,? but|I am sorry,? but|I apologi[sz]e,? but|Sorry,? (?:but )?I can(?:'|no)t|"
    r"I can(?:'|no)t (?:help|assist|provide|comply|do that)|"
    r"I'?m (?:not able|unable) to (?:help|assist|provide)|"
    r"I won'?t be able to|As an AI(?: language model)?,? I (?:can(?:'|no)t|don'?t|am not))",
    re.IGNORECASE,
)
_MOJIBAKE = re.compile(r"\ufffd|Ã[\x80-\xbf©¨§¤¶¼½]|â€[™œ\x9d“”˜¦]|Â[ \xa0-\xbf]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_FENCE = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)
_URL = re.compile(r"https?://\S+|www\.\S+")


@dataclass(frozen=True)
class QualityConfig:
    min_chars: int = 2  # a question or answer shorter than this is "too short"
    max_chars: int = 32_000  # per turn
    languages: tuple[str, ...] = ("en",)  # ISO 639 codes (``langid.languages()``); empty: any language
    drop_refusals: bool = True
    max_code_fraction: float | None = None  # e.g. 0.9: drop answers that are nearly all code
    max_url_fraction: float | None = 0.5  # drop answers that are mostly links


def code_fraction(text: str) -> float:
    return sum(len(m) for m in _FENCE.findall(text)) / max(len(text), 1)


def url_fraction(text: str) -> float:
    return sum(len(m) for m in _URL.findall(text)) / max(len(text), 1)


def broken_encoding(text: str) -> bool:
    return bool(_MOJIBAKE.search(text) or _CONTROL.search(text))


def is_refusal(text: str) -> bool:
    return bool(_REFUSAL.match(text))


class Quality:
    """The configured filters."""

    def __init__(self, config: QualityConfig) -> None:
        self.config = config
        for code in config.languages:
            if code not in langid.languages():
                raise ValueError(f"unknown language code {code!r}: use an ISO 639 code such as en, fr, zh")

    def language(self, text: str) -> str | None:
        """The language code of ``text`` (500 characters without code and links); ``None``: unsure."""
        found = langid.identify(text, max_chars=500)
        return found.code if found is not None else None

    def turn_problem(self, turn: Turn) -> str | None:
        c = self.config
        text = turn.content
        if not text.strip():
            return "empty turn"
        if len(text.strip()) < c.min_chars:
            return "too short"
        if len(text) > c.max_chars:
            return "too long"
        if broken_encoding(text):
            return "broken encoding"
        if turn.role != "assistant":
            return None
        if c.drop_refusals and is_refusal(text):
            return "refusal"
        if c.max_code_fraction is not None and code_fraction(text) > c.max_code_fraction:
            return "mostly code"
        if c.max_url_fraction is not None and url_fraction(text) > c.max_url_fraction:
            return "mostly links"
        return None

    def conversation_problem(self, conv: Conversation) -> str | None:
        """A reason to reject the whole conversation (its language), else ``None``."""
        if self.config.languages:
            found = self.language(conv.text())
            if found is not None and found not in self.config.languages:
                return f"language {found}"
        return None

    def cut(self, conv: Conversation) -> tuple[Conversation, str | None]:
        """The conversation up to its first bad exchange, and why it was cut (``None``: whole)."""
        turns = conv.turns
        keep = 0
        for i, turn in enumerate(turns):
            problem = self.turn_problem(turn)
            if problem is not None:
                if turn.role == "assistant" and keep > 0 and turns[keep - 1].role == "user":
                    keep -= 1  # the question goes with its bad answer
                return conv.with_turns(_ending_with_answer(turns[:keep])), problem
            keep = i + 1
        return conv.with_turns(_ending_with_answer(turns)), None


def _ending_with_answer(turns: tuple[Turn, ...]) -> tuple[Turn, ...]:
    end = len(turns)
    while end and turns[end - 1].role != "assistant":
        end -= 1
    return turns[:end]
