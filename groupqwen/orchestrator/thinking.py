"""Qwen3 thinking: decide whether a request thinks, and split ``<think>…</think>`` out of the answer.

The split works on a stream: a tag cut across chunks (``"<thi"`` + ``"nk>"``) is held back until it can be
told apart from ordinary text, so reasoning never leaks into ``content``.
"""

from __future__ import annotations

import re

from groupqwen.messages import Message

OPEN, CLOSE = "<think>", "</think>"
_SOFT_SWITCH = re.compile(r"(?<!\S)/(think|no_think)(?!\S)")


def wants_thinking(messages: tuple[Message, ...], explicit: bool | None, model_default: bool) -> bool:
    """``enable_thinking`` if given; else the last ``/think`` or ``/no_think`` in the latest user turn
    (Qwen3 follows the most recent one); else the model's default."""
    if explicit is not None:
        return explicit
    for message in reversed(messages):
        if message.role == "user":
            switches = _SOFT_SWITCH.findall(message.content)
            if switches:
                return bool(switches[-1] == "think")
            break
    return model_default


def _partial_tag_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    if tag[0] not in text[1 - len(tag) :]:  # nearly every piece: no partial tag without the tag's "<"
        return 0
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


class ThinkSplitter:
    """Feed text pieces; get ``(reasoning, content)`` pieces back. ``flush()`` at the end of the stream.
    ``enabled=False`` (a text completion's output, wanted as written): everything is content."""

    def __init__(self, inside: bool = False, *, enabled: bool = True) -> None:
        self._inside = inside
        self._enabled = enabled
        self._buffer = ""
        self._strip_leading = inside  # whitespace right after a tag is layout, not text

    def feed(self, text: str) -> tuple[str, str]:
        if not self._enabled:
            return "", text
        self._buffer += text
        reasoning: list[str] = []
        content: list[str] = []
        while self._buffer:
            tag = CLOSE if self._inside else OPEN
            out = reasoning if self._inside else content
            if self._strip_leading:
                self._buffer = self._buffer.lstrip()
                if not self._buffer:
                    break
                self._strip_leading = False
            index = self._buffer.find(tag)
            if index >= 0:
                out.append(self._buffer[:index])
                self._buffer = self._buffer[index + len(tag) :]
                self._inside = not self._inside
                self._strip_leading = True
                continue
            keep = _partial_tag_suffix(self._buffer, tag)
            out.append(self._buffer[: len(self._buffer) - keep])
            self._buffer = self._buffer[len(self._buffer) - keep :]
            break
        return "".join(reasoning), "".join(content)

    def flush(self) -> tuple[str, str]:
        rest, self._buffer = self._buffer, ""
        return (rest, "") if self._inside else ("", rest)
