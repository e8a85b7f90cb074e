"""The training and validation files: checked before any work, then tokenized with the loss on the
assistant's tokens only.

``check`` reads a file in the OpenAI messages format (what ``groupqwen data build`` writes) and refuses it
with the line and the problem (``InvalidRecords``), or when it holds nothing (``FinetuneError``).
``tokenize`` renders each conversation with the model's own chat template and marks which tokens are the
assistant's: the template is rendered up to each answer (with the generation prompt) and through it, and
the text between the two is the answer as the model must write it (its end-of-turn token included). An
example longer than ``max_seq_length`` is left out and counted; when none fits, that is an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from groupqwen.errors import FinetuneError, InvalidRecords
from groupqwen.finetune.formats import validate_dataset

IGNORE = -100  # the label of a token the loss leaves out
_SHOWN = 5  # problems named in one error


@dataclass(frozen=True)
class Example:
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]  # IGNORE outside the assistant's answers

    @property
    def trained_tokens(self) -> int:
        """Tokens the loss is taken on: answer tokens after the first (each predicted from those before)."""
        return sum(1 for label in self.labels[1:] if label != IGNORE)


@dataclass(frozen=True)
class Tokenized:
    examples: tuple[Example, ...]
    too_long: int  # left out: longer than max_seq_length


Conversation = list[dict[str, str]]


def check(path: Path, what: str = "training file") -> list[Conversation]:
    """The conversations of ``path``; ``InvalidRecords`` naming the bad lines, ``FinetuneError`` when the
    file is missing or empty."""
    if not path.is_file():
        raise FinetuneError(f"{what} {path}: no such file")
    try:
        problems = validate_dataset(path, "openai")
    except OSError as exc:
        raise FinetuneError(f"{what} {path}: {exc.strerror or exc}") from None
    messages = {p.message for p in problems}
    if (
        len(messages) == 1
        and problems[0].message.endswith("record in an openai file")
        and len(problems) == _lines(path)
    ):
        found = problems[0].message.split(" ")[1]  # every line in one other format: the file is in it
        raise InvalidRecords(
            f"{what} {path} is in the {found} format: training reads OpenAI's messages format, which "
            "`groupqwen data build … --format openai` writes"
        )
    if problems:
        shown = "; ".join(f"line {p.line}: {p.message}" for p in problems[:_SHOWN])
        more = f" (and {len(problems) - _SHOWN} more)" if len(problems) > _SHOWN else ""
        raise InvalidRecords(f"{what} {path}: {shown}{more}")
    conversations = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            messages = json.loads(line)["messages"]
            conversations.append([{"role": m["role"], "content": m["content"]} for m in messages])
    if not conversations:
        raise FinetuneError(f"{what} {path} is empty: it needs at least one conversation")
    return conversations


def _lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for _ in f)


def _render(tokenizer: Any, messages: Conversation, prompt: bool) -> str:
    text: str = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
    return text


def segments(tokenizer: Any, messages: Conversation) -> list[tuple[str, bool]]:
    """The rendered conversation as consecutive pieces of text, each marked whether it is an answer."""
    pieces: list[tuple[str, bool]] = []
    done = ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], prompt=True)
        through = _render(tokenizer, messages[: i + 1], prompt=False)
        if not before.startswith(done) or not through.startswith(before):
            raise FinetuneError(
                "the model's chat template does not render a conversation as a sequence of growing "
                "prefixes, so the answers' tokens cannot be told apart"
            )
        pieces.append((before[len(done) :], False))
        pieces.append((through[len(before) :], True))
        done = through
    return [(text, answer) for text, answer in pieces if text]


def encode(tokenizer: Any, messages: Conversation) -> Example:
    ids: list[int] = []
    labels: list[int] = []
    for text, answer in segments(tokenizer, messages):
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids.extend(piece)
        labels.extend(piece if answer else [IGNORE] * len(piece))
    return Example(tuple(ids), tuple(labels))


def tokenize(
    tokenizer: Any, conversations: list[Conversation], max_seq_length: int, what: str = "training file"
) -> Tokenized:
    examples = []
    too_long = 0
    for messages in conversations:
        example = encode(tokenizer, messages)
        if len(example.input_ids) > max_seq_length:
            too_long += 1
        elif example.trained_tokens:
            examples.append(example)
    if not examples:
        raise FinetuneError(
            f"no example of the {what} fits max_seq_length {max_seq_length} tokens "
            f"({too_long} longer): raise max_seq_length or build the dataset with --max-tokens"
        )
    return Tokenized(tuple(examples), too_long)
