"""Curation: quality filters with reasons, exact and near duplicates, PII placeholders and figures."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from groupqwen.errors import InvalidRecords
from groupqwen.finetune.curate import CurateConfig, Curator, curate_file
from groupqwen.finetune.pii import PatternDetector, PresidioDetector, Scrubber, iban_ok, luhn_ok
from groupqwen.finetune.quality import Quality, QualityConfig
from groupqwen.finetune.records import Conversation, Identity, Meta, Turn, read_jsonl, write_jsonl

IDENTITY = Identity(("Jane Doe",), ("jane.doe@example.com",), ("+44 20 7946 0958",))
LONG = (
    "Photosynthesis converts light energy into chemical energy stored in glucose. Plants take in carbon "
    "dioxide through their leaves and water through their roots, and release oxygen as a by-product."
)


def conv(cid: str, *texts: str) -> Conversation:
    roles = ["user", "assistant"] * len(texts)
    return Conversation(cid, "chatgpt", tuple(Turn(r, t) for r, t in zip(roles, texts, strict=False)))  # type: ignore[arg-type]


def run(convs: list[Conversation], **config: object) -> tuple[list[Conversation], dict[str, str]]:
    curator = Curator(CurateConfig(**config), IDENTITY)  # type: ignore[arg-type]
    rejected: dict[str, str] = {}
    kept = list(curator.run(convs, lambda c, why, _of: rejected.__setitem__(c.id, why)))
    return kept, rejected


# --------------------------------------------------------------------------------------------------------
# Quality


def test_quality_reasons() -> None:
    q = Quality(QualityConfig(max_chars=500, max_code_fraction=0.8))
    assert q.turn_problem(Turn("assistant", "   ")) == "empty turn"
    assert q.turn_problem(Turn("assistant", "k")) == "too short"
    assert q.turn_problem(Turn("assistant", "x" * 501)) == "too long"
    assert q.turn_problem(Turn("assistant", "The cafÃ© is open.")) == "broken encoding"
    assert q.turn_problem(Turn("assistant", "Itâ€™s fine")) == "broken encoding"
    assert q.turn_problem(Turn("assistant", "bad \ufffd byte")) == "broken encoding"
    assert q.turn_problem(Turn("assistant", "I'm sorry, but I can't help with that.")) == "refusal"
    assert q.turn_problem(Turn("assistant", "As an AI language model, I cannot browse.")) == "refusal"
    assert (
        q.turn_problem(Turn("user", "I'm sorry, but I can't make it today. Any ideas?")) is None
    )  # users may
    assert q.turn_problem(Turn("assistant", "```python\n" + "x = 1\n" * 40 + "```")) == "mostly code"
    assert (
        q.turn_problem(Turn("assistant", "See https://example.com/a/very/long/path/to/a/page/x.html"))
        == "mostly links"
    )
    assert q.turn_problem(Turn("assistant", "Sorry for the delay — here is the answer: 42.")) is None


def test_a_bad_exchange_cuts_the_conversation() -> None:
    kept, rejected = run(
        [
            conv(
                "a",
                "What is photosynthesis?",
                LONG,
                "And in one word?",
                "I'm sorry, but I can't do that.",
                "ok?",
                "Energy.",
            ),
            conv("b", "Tell me a secret.", "I cannot help with that request."),
        ]
    )
    (a,) = kept
    assert [t.content for t in a.turns] == [
        "What is photosynthesis?",
        LONG,
    ]  # cut before the refused exchange
    assert rejected == {"b": "refusal"}


def test_non_target_languages_are_rejected() -> None:
    french = conv(
        "fr",
        "Peux-tu m'expliquer la photosynthèse ?",
        "La photosynthèse transforme la lumière en énergie chimique dans les feuilles des plantes.",
    )
    english = conv("en", "Can you explain photosynthesis?", LONG)
    kept, rejected = run([french, english])
    assert [c.id for c in kept] == ["en"] and rejected == {"fr": "language fr"}
    kept, _ = run([french, english], quality=QualityConfig(languages=("en", "fr")))
    assert len(kept) == 2
    with pytest.raises(ValueError, match="unknown language code 'xx'"):
        Quality(QualityConfig(languages=("xx",)))


# --------------------------------------------------------------------------------------------------------
# Duplicates


def test_exact_and_near_duplicates() -> None:
    original = conv("orig", "Explain photosynthesis to me.", LONG)
    exact = conv("exact", "explain   PHOTOSYNTHESIS to me!", LONG)  # case, spacing and punctuation only
    near = conv("near", "Explain photosynthesis to me.", LONG + " Most of it happens in the leaves.")
    other = conv(
        "other", "What is the capital of France?", "Paris is the capital and largest city of France."
    )
    kept, rejected = run([original, exact, near, other])
    assert [c.id for c in kept] == ["orig", "other"]
    assert rejected == {"exact": "exact duplicate", "near": "near duplicate"}
    kept, rejected = run([original, exact, near, other], near_dedupe=False)
    assert [c.id for c in kept] == ["orig", "near", "other"]


# --------------------------------------------------------------------------------------------------------
# PII


def test_checksums() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and not iban_ok("GB00 WEST 1234 5698 7654 32")


def test_placeholders_are_consistent_within_a_conversation() -> None:
    scrubber = Scrubber([PatternDetector(IDENTITY)])
    first = conv(
        "a",
        "I'm Jane Doe. Mail bob@example.org, or BOB@example.org, not carol@example.org.",
        "I'll write to bob@example.org and carol@example.org; call +1 415 555 2671.",
        "My card 4111 1111 1111 1111 — same as 4111-1111-1111-1111 — and my email jane.doe@example.com.",
        "Noted.",
    )
    out = scrubber.scrub(first)
    assert [t.content for t in out.turns] == [
        "I'm [USER_NAME]. Mail [EMAIL_1], or [EMAIL_1], not [EMAIL_2].",
        "I'll write to [EMAIL_1] and [EMAIL_2]; call [PHONE_1].",
        "My card [CREDIT_CARD_1] — same as [CREDIT_CARD_1] — and my email [USER_EMAIL].",
        "Noted.",
    ]
    second = scrubber.scrub(conv("b", "Write to carol@example.org", "ok"))
    assert second.turns[0].content == "Write to [EMAIL_1]"  # numbering starts again per conversation
    assert scrubber.counts == Counter(
        {"EMAIL": 6, "USER_NAME": 1, "PHONE": 1, "CREDIT_CARD": 2, "USER_EMAIL": 1}
    )


def test_reasoning_attachments_and_titles_are_scrubbed_too() -> None:
    from groupqwen.finetune.records import Attachment

    c = Conversation(
        "x",
        "claude",
        (
            Turn("user", "See notes", attachments=(Attachment("n.txt", "ip 203.0.113.9"),)),
            Turn("user", "And this", attachments=(Attachment("CV (bob@example.org).txt", "Bob's CV"),)),
            Turn("assistant", "Done", reasoning="the user's key is sk-abcdefghijklmnopqrstuvwx"),
        ),
        title="Mail for bob@example.org",
    )
    out = Scrubber([PatternDetector()]).scrub(c)
    assert out.title == "Mail for [EMAIL_1]"
    assert out.turns[0].attachments[0].content == "ip [IP_ADDRESS_1]"
    assert out.turns[1].attachments[0].name == "CV ([EMAIL_1]).txt"  # a file's name too: it was kept
    assert out.turns[2].reasoning == "the user's key is [API_KEY_1]"


def _precision_recall(path: Path) -> tuple[float, float, dict[str, tuple[int, int, int]]]:
    detector = PatternDetector(IDENTITY)
    per_kind: dict[str, list[int]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        gold = Counter(tuple(p) for p in row["pii"])
        found = Counter((s.kind, s.text) for s in detector.find(row["text"]))
        for key in gold | found:
            tp = min(gold[key], found[key])
            stats = per_kind.setdefault(key[0], [0, 0, 0])
            stats[0] += tp
            stats[1] += found[key] - tp
            stats[2] += gold[key] - tp
    tp, fp, fn = (sum(s[i] for s in per_kind.values()) for i in range(3))
    return tp / (tp + fp), tp / (tp + fn), {k: (s[0], s[1], s[2]) for k, s in per_kind.items()}


def test_pii_precision_and_recall_on_the_labelled_set(fixtures: Path) -> None:
    """55 sentences, 43 labelled values, with hard negatives (dates, versions, ISBNs, bad checksums …).

    The patterns were tuned on this set: it must stay perfect (precision and recall ≥ 0.95)."""
    precision, recall, per_kind = _precision_recall(fixtures / "pii_labelled.jsonl")
    assert precision >= 0.95 and recall >= 0.95, (precision, recall, per_kind)
    assert set(per_kind) >= {
        "EMAIL",
        "PHONE",
        "CREDIT_CARD",
        "IBAN",
        "IP_ADDRESS",
        "API_KEY",
        "ADDRESS",
        "USER_NAME",
    }


def test_pii_precision_and_recall_on_the_held_out_set(fixtures: Path) -> None:
    """25 sentences written after tuning and never tuned on: measured precision 0.95, recall 0.86.

    Known misses: French street names (``8 Rue de Rivoli``), French phone grouping with a one-digit area
    (``+33 1 23 45 67 89``); one false positive: an SSN-shaped ``123-45-6789`` taken for a phone."""
    precision, recall, per_kind = _precision_recall(fixtures / "pii_heldout.jsonl")
    assert precision >= 0.9 and recall >= 0.8, (precision, recall, per_kind)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        # a long subscriber number after a trunk prefix or a country code (Germany, the UK): these leaked
        ("Ruf mich an: 030 12345678", [("PHONE", "030 12345678")]),
        ("Meine Handynummer ist 0171 1234567.", [("PHONE", "0171 1234567")]),
        ("Tel. +49 30 12345678", [("PHONE", "+49 30 12345678")]),
        ("UK mobile 07700 900123", [("PHONE", "07700 900123")]),
        # a secret whose name is part of a longer one, and the password in a URL: these leaked
        ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
         [("API_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")]),
        ("DB_PASSWORD=Sup3rS3cret", [("API_KEY", "Sup3rS3cret")]),
        ("client_secret: 9f8e7d6c5b4a39281716", [("API_KEY", "9f8e7d6c5b4a39281716")]),
        ("DATABASE_URL=mysql://root:hunter22@10.0.0.5/db",
         [("API_KEY", "hunter22"), ("IP_ADDRESS", "10.0.0.5")]),
        ("postgres://admin:S3cretPass@db.example.com:5432/app", [("API_KEY", "S3cretPass")]),
        # and what is none of these
        ("max_tokens = 100000000", []),
        ("token_count: 12345678", []),
        ("The tokenizer: sentencepiece-unigram", []),
        ("git clone https://github.com/user/repo.git", []),
        ("In 2019 12345678 users signed up", []),
        ("ratio 0.05 1234567", []),
        ("order #0042 1234567", []),
        ("The result was 0.123456789", []),
    ],
)  # fmt: skip
def test_long_phone_numbers_and_named_secrets(text: str, found: list[tuple[str, str]]) -> None:
    assert [(s.kind, s.text) for s in PatternDetector().find(text)] == found


@pytest.mark.parametrize(
    ("text", "found"),
    [
        # a US street's quarter cut the match short: "NW, Washington, DC 20500" was left
        ("I live at 1600 Pennsylvania Avenue NW, Washington, DC 20500.",
         ["1600 Pennsylvania Avenue NW, Washington, DC 20500"]),
        # a German street name in words of its own was not taken at all
        ("Wohne in der Berliner Straße 12, 60311 Frankfurt", ["Berliner Straße 12, 60311 Frankfurt"]),
        ("Treffpunkt: Alte Gasse 7", ["Alte Gasse 7"]),
        ("The Main Street W is long", []),
        ("Die Berliner Straße ist lang", []),
    ],
)  # fmt: skip
def test_more_street_addresses(text: str, found: list[str]) -> None:
    assert [s.text for s in PatternDetector().find(text) if s.kind == "ADDRESS"] == found


def test_presidio_without_a_model_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="Presidio NER is not available here"):
        PresidioDetector()


# --------------------------------------------------------------------------------------------------------
# The file stage


def test_curate_file(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    write_jsonl(
        source,
        [
            conv("a", "Hi, I'm Jane. Explain photosynthesis.", LONG),
            conv("b", "Hi, I'm Jane. Explain photosynthesis.", LONG),
            conv("c", "Tell me a secret.", "I'm sorry, but I can't share that."),
            conv("d", "Write to me at jane.doe@example.com about photosynthesis please.", LONG + " More."),
        ],
    )
    Meta(identity=IDENTITY).write(source)
    report = curate_file(source, tmp_path / "out.jsonl", CurateConfig(), rejected=tmp_path / "rejected.jsonl")
    kept = list(read_jsonl(tmp_path / "out.jsonl"))
    assert [c.id for c in kept] == ["a", "d"]
    assert kept[0].turns[0].content == "Hi, I'm [USER_NAME]. Explain photosynthesis."
    assert report.read == 4 and report.kept == 2
    assert dict(report.rejected) == {"exact duplicate": 1, "refusal": 1}
    assert dict(report.pii) == {"USER_NAME": 1, "USER_EMAIL": 1}
    rejected = [json.loads(x) for x in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    assert rejected == [
        {"id": "b", "branch": 0, "reason": "exact duplicate", "of": "a"},
        {"id": "c", "branch": 0, "reason": "refusal"},
    ]
    assert Meta.read(tmp_path / "out.jsonl").identity == IDENTITY


def test_a_bad_line_in_a_stage_file_names_its_line(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(
        json.dumps({"id": "a", "source": "chatgpt", "turns": []})
        + "\n"
        + json.dumps({"id": "b", "source": "chatgpt", "turns": [{"role": "robot", "content": "x"}]})
        + "\n"
    )
    with pytest.raises(
        InvalidRecords,
        match=r"in.jsonl:2: turns\[0\]: 'role' must be one of system, user, assistant, not 'robot'",
    ):
        curate_file(source, tmp_path / "out.jsonl", CurateConfig())
    assert not (tmp_path / "out.jsonl").exists()
