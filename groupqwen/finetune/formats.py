"""Training-set formats, and validation of a dataset file line by line.

* ``openai``: ``{"messages": [{"role", "content"}…]}``, the canonical form; kept reasoning goes to
  ``reasoning_content`` as vLLM and the gateway return it.
* ``sharegpt``: ``{"conversations": [{"from": "system"|"human"|"gpt", "value"}…]}``.
* ``chatml``: ``{"text": "<|im_start|>user\\n…<|im_end|>\\n…"}`` rendered as Qwen3's template does: reasoning
  only on the last answer (earlier answers lose it), and in non-thinking mode that answer opens with an
  empty ``<think>\\n\\n</think>\\n\\n``, the form Qwen3 is trained on when thinking is off.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from groupqwen.finetune.records import Conversation, Turn

Format = Literal["openai", "sharegpt", "chatml"]
Thinking = Literal["drop", "keep"]
FORMATS: tuple[Format, ...] = ("openai", "sharegpt", "chatml")
_SHAREGPT_FROM = {"system": "system", "user": "human", "assistant": "gpt"}


def _content(turn: Turn, attachments: bool) -> str:
    if not attachments or not turn.attachments:
        return turn.content
    files = "".join(f'<attachment name="{a.name}">\n{a.content}\n</attachment>\n\n' for a in turn.attachments)
    return files + turn.content


def _think(reasoning: str) -> str:
    return f"<think>\n{reasoning.strip()}\n</think>\n\n" if reasoning.strip() else "<think>\n\n</think>\n\n"


def render(
    conv: Conversation, fmt: Format, thinking: Thinking = "drop", attachments: bool = True
) -> dict[str, Any]:
    turns = conv.turns
    keep = thinking == "keep"
    if fmt == "openai":
        messages: list[dict[str, str]] = []
        for t in turns:
            message = {"role": t.role, "content": _content(t, attachments)}
            if keep and t.reasoning:
                message["reasoning_content"] = t.reasoning
            messages.append(message)
        return {"messages": messages}
    if fmt == "sharegpt":
        return {
            "conversations": [
                {
                    "from": _SHAREGPT_FROM[t.role],
                    "value": (_think(t.reasoning) if keep and t.reasoning else "") + _content(t, attachments),
                }
                for t in turns
            ]
        }
    return {"text": chatml(turns, thinking, attachments)}


def chatml(turns: tuple[Turn, ...], thinking: Thinking = "drop", attachments: bool = True) -> str:
    last = max((i for i, t in enumerate(turns) if t.role == "assistant"), default=-1)
    parts: list[str] = []
    for i, t in enumerate(turns):
        body = _content(t, attachments)
        if i == last:
            body = _think(t.reasoning if thinking == "keep" else "") + body
        parts.append(f"<|im_start|>{t.role}\n{body}<|im_end|>\n")
    return "".join(parts)


# ---------------------------------------------------------------------------------------------------------
# Validation


@dataclass(frozen=True)
class Problem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def _check_sequence(roles: list[str]) -> str | None:
    if not roles:
        return "no messages"
    body = roles[1:] if roles[0] == "system" else roles
    if "system" in body:
        return "a system message after the first position"
    if not body:
        return "only a system message"
    for i, role in enumerate(body):
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            return f"message {i + (len(roles) - len(body))} is {role!r} where {expected!r} belongs"
    if body[-1] != "assistant":
        return "the last message is not an assistant answer"
    return None


def _check_openai(data: dict[str, Any]) -> str | None:
    messages = data.get("messages")
    if not isinstance(messages, list):
        return "'messages' must be a list"
    roles: list[str] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            return f"messages[{i}] is not an object"
        if m.get("role") not in ("system", "user", "assistant"):
            return f"messages[{i}].role must be system, user or assistant, not {m.get('role')!r}"
        if not isinstance(m.get("content"), str) or not m["content"].strip():
            return f"messages[{i}].content must be a non-empty string"
        roles.append(m["role"])
    return _check_sequence(roles)


def _check_sharegpt(data: dict[str, Any]) -> str | None:
    conversations = data.get("conversations")
    if not isinstance(conversations, list):
        return "'conversations' must be a list"
    back = {v: k for k, v in _SHAREGPT_FROM.items()}
    roles: list[str] = []
    for i, m in enumerate(conversations):
        if not isinstance(m, dict) or m.get("from") not in back:
            return f"conversations[{i}].from must be system, human or gpt"
        if not isinstance(m.get("value"), str) or not m["value"].strip():
            return f"conversations[{i}].value must be a non-empty string"
        roles.append(back[m["from"]])
    return _check_sequence(roles)


def _check_chatml(data: dict[str, Any]) -> str | None:
    text = data.get("text")
    if not isinstance(text, str):
        return "'text' must be a string"
    if text.count("<|im_start|>") != text.count("<|im_end|>"):
        return "unbalanced <|im_start|> and <|im_end|>"
    roles: list[str] = []
    for block in text.split("<|im_start|>")[1:]:
        role = block.split("\n", 1)[0]
        if role not in ("system", "user", "assistant"):
            return f"unknown role {role!r} after <|im_start|>"
        roles.append(role)
    return _check_sequence(roles)


def detect(data: dict[str, Any]) -> Format | None:
    if "messages" in data:
        return "openai"
    if "conversations" in data:
        return "sharegpt"
    return "chatml" if "text" in data else None


def validate_dataset(path: Path, fmt: Format | None = None) -> list[Problem]:
    """Every problem of a dataset file with its line number (an empty list: the file is fine)."""
    problems: list[Problem] = []
    expected = fmt
    checks = {"openai": _check_openai, "sharegpt": _check_sharegpt, "chatml": _check_chatml}
    with path.open(encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                problems.append(Problem(number, "empty line"))
                continue
            try:
                data = json.loads(line)
            except ValueError as exc:
                problems.append(Problem(number, f"not JSON: {exc}"))
                continue
            if not isinstance(data, dict):
                problems.append(Problem(number, "not a JSON object"))
                continue
            found = detect(data)
            if found is None:
                problems.append(Problem(number, "neither 'messages', 'conversations' nor 'text'"))
                continue
            expected = expected or found
            if found != expected:
                problems.append(Problem(number, f"{_a(found)} record in {_a(expected)} file"))
                continue
            problem = checks[found](data)
            if problem is not None:
                problems.append(Problem(number, problem))
    return problems


def _a(name: str) -> str:
    return f"{'an' if name[:1] in 'aeiou' else 'a'} {name}"
