"""Semantic duplicates with the cache's real embedder: rewordings caught, neighbours on a topic kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from groupqwen.cache.embedders import HashingEmbedder, MiniLMEmbedder
from groupqwen.cli.data import data_app
from groupqwen.finetune.curate import SEMANTIC_BATCH, CurateConfig, Curator
from groupqwen.finetune.records import Conversation, Turn, read_jsonl, write_jsonl
from groupqwen.finetune.semantic import DEFAULT_THRESHOLD, SemanticDeduplicator, semantic_text

REVERSE = (
    "How do I reverse a list in Python?",
    "Use my_list.reverse() to reverse it in place, or my_list[::-1] to get a reversed copy.",
)
REVERSE_REWORDED = (
    "What's the way to reverse a Python list?",
    "Call my_list.reverse() to reverse it in place, or use slicing, my_list[::-1], for a reversed copy.",
)
SORT = (
    "How do I sort a list in Python?",
    "Use sorted(my_list) to get a new sorted list, or my_list.sort() to sort it in place.",
)
REVERSE_STRING = (
    "How do I reverse a string in Python?",
    "Use slicing: my_string[::-1] returns the string reversed, since strings have no reverse() method.",
)


def conv(cid: str, question: str, answer: str) -> Conversation:
    return Conversation(cid, "chatgpt", (Turn("user", question), Turn("assistant", answer)))


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder()


def run(convs: list[Conversation], **config: object) -> tuple[list[str], dict[str, tuple[str, str | None]]]:
    curator = Curator(CurateConfig(pii=False, **config), embedder=HashingEmbedder())  # type: ignore[arg-type]
    rejected: dict[str, tuple[str, str | None]] = {}
    kept = [c.id for c in curator.run(convs, lambda c, why, of: rejected.__setitem__(c.id, (why, of)))]
    return kept, rejected


def test_a_rewording_is_caught_and_a_neighbouring_topic_is_not(minilm: MiniLMEmbedder) -> None:
    dedupe = SemanticDeduplicator(minilm, DEFAULT_THRESHOLD)
    convs = [conv("a", *REVERSE), conv("b", *SORT), conv("c", *REVERSE_REWORDED), conv("d", *REVERSE_STRING)]
    results = dedupe.check(convs)
    assert [d.of if d else None for d in results] == [None, None, "a", None]
    assert results[2] is not None and results[2].kind == "semantic"
    # the same decisions when the earlier conversations come in an earlier batch
    later = SemanticDeduplicator(minilm, DEFAULT_THRESHOLD)
    assert later.check(convs[:2]) == [None, None]
    assert [d.of if d else None for d in later.check(convs[2:])] == ["a", None]


def test_the_curator_counts_and_records_semantic_duplicates(minilm: MiniLMEmbedder) -> None:
    convs = [conv("a", *REVERSE), conv("b", *SORT), conv("c", *REVERSE_REWORDED)]
    curator = Curator(CurateConfig(semantic_threshold=DEFAULT_THRESHOLD), embedder=minilm)
    rejected: list[tuple[str, str, str | None]] = []
    kept = [c.id for c in curator.run(convs, lambda c, why, of: rejected.append((c.id, why, of)))]
    assert kept == ["a", "b"] and rejected == [("c", "semantic duplicate", "a")]
    assert dict(curator.report().rejected) == {"semantic duplicate": 1}
    assert curator.report().kept == 2


def test_off_by_default_nothing_is_dropped_as_semantic() -> None:
    assert CurateConfig().semantic_threshold is None
    kept, rejected = run([conv("a", *REVERSE), conv("c", *REVERSE_REWORDED)])
    assert kept == ["a", "c"] and rejected == {}


def test_first_occurrence_kept_across_batches_in_input_order() -> None:
    """The hashing fake gives identical word bags similarity 1.0: every copy repeats the first one."""
    convs = [
        conv(f"c{i}", f"Question number {i % 3} about lists?", "An answer about lists.") for i in range(600)
    ]
    kept, rejected = run(convs, dedupe=False, semantic_threshold=0.99)
    assert kept == ["c0", "c1", "c2"] and len(convs) > 2 * SEMANTIC_BATCH
    assert rejected["c3"] == ("semantic duplicate", "c0") and rejected["c599"] == ("semantic duplicate", "c2")


def test_the_text_is_the_first_exchange_truncated() -> None:
    c = Conversation(
        "x",
        "chatgpt",
        (
            Turn("system", "Be brief."),
            Turn("user", "q" * 900),
            Turn("assistant", "a" * 900),
            Turn("user", "more"),
        ),
    )
    text = semantic_text(c)
    assert text.startswith("q" * 500 + "\na") and len(text) == 1200 and "more" not in text


@pytest.mark.parametrize("bad", [1.5, -1.0, 0.0])
def test_a_bad_threshold_is_a_clear_error(bad: float) -> None:
    with pytest.raises(
        ValueError, match=f"semantic_threshold must be greater than 0 and at most 1, not {bad}"
    ):
        CurateConfig(semantic_threshold=bad)


def test_the_cli_option_end_to_end(tmp_path: Path) -> None:
    source = tmp_path / "conversations.jsonl"
    write_jsonl(source, [conv("a", *REVERSE), conv("b", *SORT), conv("c", *REVERSE_REWORDED)])
    out, rejected = tmp_path / "curated.jsonl", tmp_path / "rejected.jsonl"
    runner = CliRunner()
    args = ["curate", str(source), "-o", str(out), "--rejected", str(rejected)]

    result = runner.invoke(data_app, args)
    assert result.exit_code == 0, result.output
    assert [c.id for c in read_jsonl(out)] == ["a", "b", "c"]

    result = runner.invoke(data_app, [*args, "--semantic-dedupe"])
    assert result.exit_code == 0, result.output
    assert [c.id for c in read_jsonl(out)] == ["a", "b"]
    assert "semantic duplicate" in result.output
    assert [json.loads(x) for x in rejected.read_text().splitlines()] == [
        {"id": "c", "branch": 0, "reason": "semantic duplicate", "of": "a"}
    ]

    for bad in ("1.5", "-1"):
        result = runner.invoke(data_app, [*args, "--semantic-dedupe", "--semantic-threshold", bad])
        assert result.exit_code == 1
        assert f"error: --semantic-threshold must be greater than 0 and at most 1, not {float(bad)}" in (
            result.output
        )
