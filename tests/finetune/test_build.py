"""Building training sets: formats, thinking, split, token budget, augmentation, manifest, validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from groupqwen.config import default_models_dir
from groupqwen.finetune.dataset import BuildConfig, build_dataset, fit, split_of
from groupqwen.finetune.formats import render, validate_dataset
from groupqwen.finetune.records import Attachment, Conversation, Turn, write_jsonl
from groupqwen.finetune.tokens import ApproxCounter, GGUFCounter

THOUGHTFUL = Conversation(
    "t",
    "claude",
    (
        Turn("user", "What is 2+2?"),
        Turn("assistant", "4.", reasoning="Add them."),
        Turn("user", "And 3+3?", attachments=(Attachment("sums.txt", "3+3=?"),)),
        Turn("assistant", "6.", reasoning="Add again."),
    ),
)


def test_openai_format() -> None:
    assert render(THOUGHTFUL, "openai") == {
        "messages": [
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4."},
            {"role": "user", "content": '<attachment name="sums.txt">\n3+3=?\n</attachment>\n\nAnd 3+3?'},
            {"role": "assistant", "content": "6."},
        ]
    }
    kept = render(THOUGHTFUL, "openai", thinking="keep", attachments=False)
    assert kept["messages"][3] == {"role": "assistant", "content": "6.", "reasoning_content": "Add again."}
    assert kept["messages"][2]["content"] == "And 3+3?"


def test_sharegpt_format() -> None:
    out = render(THOUGHTFUL, "sharegpt", thinking="keep", attachments=False)
    assert out == {
        "conversations": [
            {"from": "human", "value": "What is 2+2?"},
            {"from": "gpt", "value": "<think>\nAdd them.\n</think>\n\n4."},
            {"from": "human", "value": "And 3+3?"},
            {"from": "gpt", "value": "<think>\nAdd again.\n</think>\n\n6."},
        ]
    }


def test_chatml_follows_qwen3_thinking_rules() -> None:
    non_thinking = render(THOUGHTFUL, "chatml", attachments=False)["text"]
    assert non_thinking == (
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n4.<|im_end|>\n"
        "<|im_start|>user\nAnd 3+3?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n6.<|im_end|>\n"
    )
    thinking = render(THOUGHTFUL, "chatml", thinking="keep", attachments=False)["text"]
    assert "Add them." not in thinking  # earlier answers lose their reasoning, as in Qwen3's template
    assert thinking.endswith("<|im_start|>assistant\n<think>\nAdd again.\n</think>\n\n6.<|im_end|>\n")


def _convs(n: int) -> list[Conversation]:
    return [
        Conversation(
            f"c{i}",
            "chatgpt",
            (Turn("user", f"Question number {i}?"), Turn("assistant", f"Answer number {i}."))
            + ((Turn("user", "More?"), Turn("assistant", "More words here " * 30)) if i % 5 == 0 else ()),
        )
        for i in range(n)
    ]


def test_split_is_deterministic_and_by_conversation(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    write_jsonl(
        source,
        [
            *_convs(200),
            Conversation("c7", "chatgpt", (Turn("user", "x?"), Turn("assistant", "y.")), branch=1),
        ],
    )
    first = build_dataset(source, tmp_path / "a", BuildConfig(val_fraction=0.2, seed=3))
    second = build_dataset(source, tmp_path / "b", BuildConfig(val_fraction=0.2, seed=3))
    assert first == second
    for name in ("train.jsonl", "validation.jsonl", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    val = first["files"]["validation.jsonl"]["conversations"]
    assert 20 <= val <= 60  # about 20% of 200
    # both branches of c7 went to the same split
    split = split_of("c7", 3, 0.2)
    lines = (tmp_path / "a" / f"{split}.jsonl").read_text()
    assert "Question number 7?" in lines and '"x?"' in lines
    other = build_dataset(source, tmp_path / "c", BuildConfig(val_fraction=0.2, seed=4))
    assert other["files"]["validation.jsonl"]["sha256"] != first["files"]["validation.jsonl"]["sha256"]


def test_manifest(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    write_jsonl(source, _convs(10))
    manifest = build_dataset(source, tmp_path / "out", BuildConfig(format="sharegpt", val_fraction=0.0))
    assert manifest["settings"]["format"] == "sharegpt" and manifest["tokenizer"] == "approx"
    assert manifest["source"]["path"] == "in.jsonl" and len(manifest["source"]["sha256"]) == 64
    train = manifest["files"]["train.jsonl"]
    assert train["samples"] == 10 and train["conversations"] == 10
    assert train["tokens"]["min"] <= train["tokens"]["p50"] <= train["tokens"]["max"]
    assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == manifest


def test_over_long_conversations() -> None:
    long = _convs(1)[0]  # c0: two exchanges, the second long
    counter = ApproxCounter()
    assert fit(long.turns, BuildConfig(), counter) == [long.turns]
    small = BuildConfig(max_tokens=40)
    assert fit(long.turns, small, counter) == [long.turns[:2]]  # truncated to what fits
    assert fit(long.turns, BuildConfig(max_tokens=40, overflow="drop"), counter) == []
    split = fit(long.turns, BuildConfig(max_tokens=110, overflow="split"), counter)
    assert split == [long.turns[:2], long.turns[2:]]


def test_system_prompt_augmentation(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    write_jsonl(source, _convs(20))
    config = BuildConfig(val_fraction=0.25, system_prompts=("You are helpful.", "Be brief."), augment=2)
    manifest = build_dataset(source, tmp_path / "out", config)
    train = [json.loads(x) for x in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    val = manifest["files"]["validation.jsonl"]["samples"]
    assert len(train) == 2 * (20 - val)  # two copies of each training conversation, one of each validation
    firsts = {(t["messages"][1]["content"], t["messages"][0]["content"]) for t in train}
    assert len(firsts) == len(train)  # each copy has the other system prompt
    with pytest.raises(ValueError, match="augment > 1 needs at least two system prompts"):
        BuildConfig(augment=2)


def test_qwen_tokenizer_from_the_bundled_gguf() -> None:
    """The target model's tokenizer when its GGUF is there (``make test`` fetches the bundled models)."""
    counter = GGUFCounter(default_models_dir() / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
    assert counter.count("<|im_start|>user\nHello world, how are you?<|im_end|>\n") == 12
    assert ApproxCounter().count("Hello world, how are you?") == 7


# --------------------------------------------------------------------------------------------------------
# Validation


def test_built_files_validate(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    write_jsonl(source, _convs(10))
    for fmt in ("openai", "sharegpt", "chatml"):
        build_dataset(source, tmp_path / fmt, BuildConfig(format=fmt, val_fraction=0.0))  # type: ignore[arg-type]
        assert validate_dataset(tmp_path / fmt / "train.jsonl") == []


def test_validate_reports_each_problem_with_its_line(tmp_path: Path) -> None:
    lines = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        "{not json",
        "",
        [1, 2],
        {"messages": [{"role": "user", "content": "hi"}]},
        {"messages": [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "x"}]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}]},
        {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "x"}]},
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "x"}]},
        {"foo": 1},
        {
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"},
            ]
        },
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    assert [str(p) for p in validate_dataset(path)] == [
        "line 2: not JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        "line 3: empty line",
        "line 4: not a JSON object",
        "line 5: the last message is not an assistant answer",
        "line 6: message 0 is 'assistant' where 'user' belongs",
        "line 7: messages[1].role must be system, user or assistant, not 'bot'",
        "line 8: messages[0].content must be a non-empty string",
        "line 9: a sharegpt record in an openai file",
        "line 10: neither 'messages', 'conversations' nor 'text'",
    ]


def test_validate_chatml_and_sharegpt(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(
        json.dumps({"text": "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\na"})
        + "\n"
        + json.dumps({"text": "<|im_start|>robot\nq<|im_end|>\n"})
        + "\n"
    )
    assert [str(p) for p in validate_dataset(path)] == [
        "line 1: unbalanced <|im_start|> and <|im_end|>",
        "line 2: unknown role 'robot' after <|im_start|>",
    ]
    path.write_text(
        json.dumps({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": " "}]}) + "\n"
    )
    assert [str(p) for p in validate_dataset(path)] == [
        "line 1: conversations[1].value must be a non-empty string"
    ]
