"""The training file's checks (before any work) and tokenization with the loss on the answers only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from finetune.train.conftest import FACTS, SIGN_OFF, write_dataset
from groupqwen.config import Hyperparameters
from groupqwen.errors import FinetuneError, InvalidRecords
from groupqwen.finetune.train import data


def test_a_bad_line_is_named(tmp_path: Path) -> None:
    path = write_dataset(tmp_path / "t.jsonl", FACTS[:2])
    with path.open("a") as f:
        f.write("{not json\n")
        f.write(json.dumps({"messages": [{"role": "user", "content": "only a question"}]}) + "\n")
    with pytest.raises(InvalidRecords) as caught:
        data.check(path)
    assert "line 3: not JSON" in caught.value.message
    assert "line 4:" in caught.value.message


def test_a_file_in_another_format_says_which_format_to_build(tmp_path: Path) -> None:
    """`data build --format sharegpt` (or chatml) output named every line "a sharegpt record in a openai
    file", not what to do."""
    sharegpt = tmp_path / "train.jsonl"
    rows = [
        {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]} for q, a in FACTS[:7]
    ]
    sharegpt.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(InvalidRecords) as caught:
        data.check(sharegpt)
    assert caught.value.message == (
        f"training file {sharegpt} is in the sharegpt format: training reads OpenAI's messages format, which "
        "`groupqwen data build … --format openai` writes"
    )
    with sharegpt.open("a") as f:  # one line of the right format: the lines are named again
        f.write(
            json.dumps(
                {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
            )
        )
    with pytest.raises(InvalidRecords, match="line 1: a sharegpt record in an openai file; line 2"):
        data.check(sharegpt)


def test_empty_and_missing_files_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(FinetuneError, match="is empty"):
        data.check(empty)
    with pytest.raises(FinetuneError, match="no such file"):
        data.check(tmp_path / "missing.jsonl")


def test_hyperparameters_are_checked() -> None:
    with pytest.raises(ValueError, match="learning_rate"):
        Hyperparameters(learning_rate=0)
    with pytest.raises(ValueError, match="lora_r"):
        Hyperparameters(lora_r=0)
    with pytest.raises(ValueError, match="not a module name"):
        Hyperparameters(target_modules=("q_proj", "bad name"))
    with pytest.raises(ValueError, match="Extra inputs"):
        Hyperparameters(epoch=3)  # type: ignore[call-arg]


@pytest.fixture(scope="module")
def tokenizer(smol_base: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smol_base)


def test_only_the_answers_carry_labels(tokenizer: Any) -> None:
    messages = [
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello. " + SIGN_OFF},
        {"role": "user", "content": "And?"},
        {"role": "assistant", "content": "Bye."},
    ]
    example = data.encode(tokenizer, messages)
    whole = tokenizer.apply_chat_template(messages, tokenize=False)
    assert tokenizer.decode(list(example.input_ids)) == whole
    answers = [i for i, label in zip(example.input_ids, example.labels, strict=True) if label != data.IGNORE]
    assert tokenizer.decode(answers) == f"Hello. {SIGN_OFF}<|im_end|>\nBye.<|im_end|>\n"


def test_nothing_that_fits_is_an_error(tokenizer: Any, tmp_path: Path) -> None:
    conversations = data.check(write_dataset(tmp_path / "t.jsonl", FACTS[:3]))
    with pytest.raises(FinetuneError, match="no example of the training file fits max_seq_length 16"):
        data.tokenize(tokenizer, conversations, 16)
    assert data.tokenize(tokenizer, conversations, 1024).too_long == 0
