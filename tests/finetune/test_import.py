"""Importers: ChatGPT branch selection and content types, Claude formats, Perplexity, reports, errors."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest

from groupqwen.errors import InvalidExport
from groupqwen.finetune.importers import ImportOptions, import_paths
from groupqwen.finetune.importers.base import Tally
from groupqwen.finetune.importers.chatgpt import read_chatgpt
from groupqwen.finetune.records import Meta, read_jsonl


def _lines(path: Path) -> dict[str, dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {f"{r['id']}/{r['branch']}": r for r in rows}


def _texts(row: dict[str, Any]) -> list[tuple[str, str]]:
    return [(t["role"], t["content"]) for t in row["turns"]]


# --------------------------------------------------------------------------------------------------------
# ChatGPT


def test_chatgpt_keeps_the_current_branch_only(fixtures: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.jsonl"
    report = import_paths([fixtures / "chatgpt"], out)
    rows = _lines(out)
    conv = rows["chatgpt:conv-branches/0"]
    assert _texts(conv) == [
        ("user", "[image]\nWhat is 2+2? See the photo of my homework."),
        ("assistant", "2 + 2 = 4."),
        ("user", "Compute 3*7 with Python please."),
        ("assistant", "3 * 7 = 21."),
    ]
    assert "ABANDONED" not in out.read_text()  # neither the regeneration nor the edit
    assert conv["turns"][0]["flags"] == ["image"]
    assert conv["turns"][1]["reasoning"] == "Two plus two makes four."  # thoughts → reasoning, not content
    assert conv["turns"][1]["model"] == "o3" and conv["model"] == "gpt-4o"
    assert conv["created_at"] == 1717000000.0 and conv["turns"][0]["created_at"] == 1717000010.0
    assert conv["title"] == "Arithmetic with a regeneration and an edit"
    (file,) = report.files
    dropped = dict(file.turns_dropped)
    assert dropped == {
        "other branch": 3,  # the abandoned regeneration, the edited question and its answer
        "hidden context": 2,  # the hidden system root and the user_editable_context
        "tool output": 2,  # execution_output, tether_browsing_display
        "tool call": 1,  # the code message addressed to python
        "reasoning recap": 1,
        "system message": 1,  # conv-hidden's custom-instructions message (that record is then rejected)
    }


def test_chatgpt_report_rejects_malformed_records_and_goes_on(fixtures: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.jsonl"
    report = import_paths([fixtures / "chatgpt" / "conversations.json"], out)
    (file,) = report.files
    assert file.format == "chatgpt"
    assert file.conversations == 2 and file.written == 2 and file.turns_kept == 6
    reasons = {r.record: r.reason for r in file.rejected}
    assert reasons == {
        "conv-no-mapping": "'mapping' is not an object",
        "conv-dangling": "'current_node' 'missing' is not a node of 'mapping'",
        "conv-hidden": "no user or assistant text",
        "conv-cycle": "'mapping' has a cycle through node 'p'",
        "#6": "the conversation is not an object",
    }
    assert file.error is None
    assert sorted(_lines(out)) == ["chatgpt:conv-branches/0", "chatgpt:conv-plain/0"]


def test_chatgpt_all_branches_exports_each_path(fixtures: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.jsonl"
    import_paths([fixtures / "chatgpt"], out, ImportOptions(all_branches=True))
    rows = _lines(out)
    assert _texts(rows["chatgpt:conv-branches/0"])[-1] == ("assistant", "3 * 7 = 21.")  # kept branch first
    others = [_texts(r) for k, r in rows.items() if k.startswith("chatgpt:conv-branches/") and r["branch"]]
    assert len(others) == 2
    assert [
        ("user", "[image]\nWhat is 2+2? See the photo of my homework."),
        ("assistant", "ABANDONED REGENERATION: it is 5."),
    ] in others
    assert any(
        ("user", "ABANDONED EDIT: and 10+10?") in t and ("assistant", "ABANDONED ANSWER: 20.") in t
        for t in others
    )


def test_chatgpt_user_file_gives_the_identity(fixtures: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.jsonl"
    report = import_paths([fixtures / "chatgpt"], out)
    assert report.identity.emails == ("jane.doe@example.com",)
    assert Meta.read(out).identity == report.identity
    assert ("chatgpt/chat.html", "not a chat export file") in report.skipped


def test_chatgpt_import_streams(tmp_path: Path) -> None:
    """The first conversation comes out long before the file has been read."""
    conv = {
        "conversation_id": "x",
        "current_node": "b",
        "mapping": {
            "a": {
                "parent": None,
                "children": ["b"],
                "message": {
                    "author": {"role": "user"},
                    "content": {"content_type": "text", "parts": ["hi " * 50]},
                },
            },
            "b": {
                "parent": "a",
                "children": [],
                "message": {
                    "author": {"role": "assistant"},
                    "content": {"content_type": "text", "parts": ["yo " * 50]},
                },
            },
        },
    }
    data = (
        "[" + ",".join(json.dumps(conv | {"conversation_id": str(i)}) for i in range(2000)) + "]"
    ).encode()

    class Spy(io.BytesIO):
        consumed = 0

        def read(self, size: int | None = -1) -> bytes:
            chunk = super().read(size)
            Spy.consumed += len(chunk)
            return chunk

    stream = Spy(data)
    first = next(read_chatgpt(stream, Tally(), ImportOptions()))
    assert first.id == "chatgpt:0"
    assert Spy.consumed < len(data) / 10, (Spy.consumed, len(data))


def test_truncated_chatgpt_file_keeps_what_was_read(fixtures: Path, tmp_path: Path) -> None:
    text = (fixtures / "chatgpt" / "conversations.json").read_text()
    cut = text.index('"title": "Plain and simple"')  # after conv-branches and three rejects
    (tmp_path / "conversations.json").write_text(text[: cut + 40])
    report = import_paths([tmp_path / "conversations.json"], tmp_path / "out.jsonl")
    (file,) = report.files
    assert file.written == 1
    assert file.error is not None and file.error.startswith("invalid JSON after 1 conversation(s)")
    assert [c.id for c in read_jsonl(tmp_path / "out.jsonl")] == ["chatgpt:conv-branches"]


def test_bytes_in_another_encoding_are_said_plainly(fixtures: Path, tmp_path: Path) -> None:
    """The parser's complaint was its raw bytes (``b'lexical error: invalid bytes in UTF8 string.\\n …'``)."""
    text = (fixtures / "chatgpt" / "conversations.json").read_text()
    cut = text.index('"title": "Plain and simple"')
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes(text[:cut].encode() + '"title": "Caf\u00e9"}]'.encode("latin-1"))
    (file,) = import_paths([latin1], tmp_path / "out.jsonl").files
    assert file.written == 1
    assert file.error == "not UTF-8 text (saved in another encoding?) after 1 conversation(s)"
    utf16 = tmp_path / "utf16.json"
    utf16.write_bytes(text.encode("utf-16"))
    with pytest.raises(InvalidExport, match=r"^utf16.json: not UTF-8 text \(saved in another encoding\?\)$"):
        import_paths([utf16], tmp_path / "out.jsonl")
    broken = tmp_path / "broken.json"
    broken.write_text("[nope]")
    with pytest.raises(InvalidExport) as caught:
        import_paths([broken], tmp_path / "out.jsonl")
    assert (
        caught.value.message
        == "broken.json: not valid JSON: lexical error: invalid string in json text. near '[nope]'"
    )


# --------------------------------------------------------------------------------------------------------
# Claude


def test_claude_old_and_new_formats(fixtures: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.jsonl"
    report = import_paths([fixtures / "claude"], out)
    rows = _lines(out)
    assert _texts(rows["claude:c-old/0"]) == [
        ("user", "What is the boiling point of water at sea level?"),
        ("assistant", "100 °C (212 °F) at standard atmospheric pressure."),
    ]
    new = rows["claude:c-blocks/0"]
    user, answer = new["turns"]
    # the answer is built from the text blocks: no thinking, no tool plumbing mixed in
    assert answer["content"] == "The meeting moved to Friday and the budget was approved."
    assert answer["reasoning"] == "Let me think about the notes."
    assert "PLUMBING" not in out.read_text()
    assert user["attachments"] == [
        {"name": "notes.txt", "content": "Meeting moved to Friday. Budget approved."}
    ]
    assert set(user["flags"]) == {"attachment", "image"} and user["content"].startswith("[image]")
    assert new["created_at"] == 1748768400.0  # 2025-06-01T09:00:00Z
    assert report.identity.names == ("Jane Doe",)
    assert report.identity.phones == ("+44 20 7946 0958",)
    assert ("claude/projects.json", "not a chat export file") in report.skipped


def test_claude_branches(fixtures: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.jsonl"
    report = import_paths([fixtures / "claude" / "conversations.json"], out)
    rows = _lines(out)
    assert _texts(rows["claude:c-branch/0"])[-1] == ("assistant", "42")  # current_leaf_message_uuid wins
    assert _texts(rows["claude:c-newest/0"])[-1] == ("assistant", "Hi!")  # else the newest leaf
    assert "ABANDONED" not in out.read_text()
    (file,) = report.files
    assert dict(file.turns_dropped) == {"other branch": 3}
    assert {r.record: r.reason for r in file.rejected} == {
        "c-bad": "'chat_messages' is not a list",
        "c-orphan": "message 'o1' has a parent 'nowhere' not in the conversation",
    }
    everything = tmp_path / "all.jsonl"
    import_paths([fixtures / "claude" / "conversations.json"], everything, ImportOptions(all_branches=True))
    branches = [r for k, r in _lines(everything).items() if k.startswith("claude:c-branch/")]
    assert sorted(_texts(r)[-1][1] for r in branches) == [
        "42",
        "ABANDONED: 13 (newest, not current)",
        "ABANDONED: 7",
    ]


# --------------------------------------------------------------------------------------------------------
# Perplexity


def test_perplexity_markdown(fixtures: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.jsonl"
    report = import_paths([fixtures / "perplexity" / "tides.md"], out)
    (row,) = _lines(out).values()
    assert row["title"] == "What causes ocean tides?"
    assert _texts(row) == [
        ("user", "What causes ocean tides?"),
        (
            "assistant",
            "Tides are caused mainly by the Moon's gravity pulling on the oceans. The Sun contributes too, "
            "which is why spring tides happen at new and full moon.",
        ),
        ("user", "How often do they happen?"),
        (
            "assistant",
            "Most coasts see two high tides and two low tides every lunar day, about 24 hours 50 minutes.",
        ),
    ]
    assert all(t["flags"] == ["citations"] for t in row["turns"][1::2])
    assert dict(report.files[0].turns_dropped) == {"exchange without a query heading": 1}


def test_a_sources_heading_is_dropped_with_its_list(tmp_path: Path) -> None:
    """Perplexity's answers copied as Markdown end with a "## Sources" heading over the numbered list."""
    thread = tmp_path / "everest.md"
    thread.write_text(
        "# How tall is Mount Everest?\n\nMount Everest is 8,849 metres tall [1][2].\n\n## Sources\n\n"
        "1. https://example.com/everest\n2. https://example.org/height\n"
    )
    import_paths([thread], tmp_path / "out.jsonl")
    (conv,) = read_jsonl(tmp_path / "out.jsonl")
    assert conv.turns[1].content == "Mount Everest is 8,849 metres tall."
    assert conv.turns[1].flags == ("citations",)


def test_perplexity_thread_json(fixtures: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.jsonl"
    report = import_paths([fixtures / "perplexity" / "thread.json"], out)
    (row,) = _lines(out).values()
    assert row["id"] == "perplexity:rust-ownership-AbCd" and row["title"] == "Rust ownership"
    assert _texts(row) == [
        ("user", "Explain Rust ownership in one paragraph."),
        (
            "assistant",
            "Every value has a single owner; when the owner goes out of scope the value is dropped.",
        ),
        ("user", "And borrowing?"),
        ("assistant", "References borrow a value without taking ownership."),
    ]
    assert row["turns"][1]["model"] == "sonar-pro"
    assert dict(report.files[0].turns_dropped) == {"entry without 'query_str'": 1}


# --------------------------------------------------------------------------------------------------------
# Bad files


def test_a_file_that_is_not_json_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "conversations.json"
    bad.write_text("this is not JSON at all")
    with pytest.raises(InvalidExport, match=r"conversations.json: not valid JSON"):
        import_paths([bad], tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "out.jsonl.partial").exists()


def test_json_that_is_no_export_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "data.json"
    bad.write_text(json.dumps([{"foo": 1}, {"bar": 2}]))
    with pytest.raises(InvalidExport, match=r"no chat export found in .*data.json"):
        import_paths([bad], tmp_path / "out.jsonl")


@pytest.mark.parametrize(
    ("name", "text", "why"),
    [
        ("conversations.json", "[]", "conversations.json: an export without conversations"),
        ("thread.json", '{"entries": []}', r"thread.json: 1 record\(s\) rejected, the first .*no user or"),
        ("thread.md", "", r"thread.md: 1 record\(s\) rejected"),
    ],
)
def test_an_export_without_conversations_is_an_error_and_keeps_the_earlier_output(
    tmp_path: Path, name: str, text: str, why: str
) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text('{"earlier": "import"}\n')
    (tmp_path / name).write_text(text)
    with pytest.raises(InvalidExport, match=rf"no conversations found in .*{name} \({why}"):
        import_paths([tmp_path / name], out)
    assert out.read_text() == '{"earlier": "import"}\n' and not (tmp_path / "out.jsonl.partial").exists()
    assert not (tmp_path / "out.jsonl.meta.json").exists()


def test_empty_side_files_of_an_export_are_no_rows_of_their_own(fixtures: Path, tmp_path: Path) -> None:
    """A ChatGPT export holds `[]` in message_feedback.json, shared_conversations.json … when there is
    nothing to list: they were reported as files of the format "empty"."""
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(fixtures / "chatgpt" / "conversations.json", "conversations.json")
        zf.writestr("message_feedback.json", "[]")
        zf.writestr("shared_conversations.json", "[]")
    report = import_paths([archive], tmp_path / "out.jsonl")
    assert [f.format for f in report.files] == ["chatgpt"]
    assert ("export.zip:shared_conversations.json", "an empty list") in report.skipped


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InvalidExport, match="no such file or folder"):
        import_paths([tmp_path / "nope.zip"], tmp_path / "out.jsonl")


def test_a_folder_mixing_formats(fixtures: Path, tmp_path: Path) -> None:
    mixed = tmp_path / "mixed"
    for name in ("chatgpt", "claude", "perplexity"):
        shutil.copytree(fixtures / name, mixed / name)
    report = import_paths([mixed], tmp_path / "out.jsonl")
    assert sorted(f.format for f in report.files) == ["chatgpt", "claude", "perplexity-json", "perplexity-md"]
    assert report.written == 2 + 4 + 1 + 1
    assert report.identity.emails == ("jane.doe@example.com",)  # the same person in both exports, once


@pytest.mark.parametrize(
    "name", ["chatgpt/conversations.json", "claude/conversations.json", "perplexity/tides.md"]
)
def test_a_utf8_byte_order_mark_is_read_past(fixtures: Path, tmp_path: Path, name: str) -> None:
    """A file saved by an editor that marks UTF-8 (EF BB BF first) was `not valid JSON`, or lost its first
    Markdown exchange."""
    plain = fixtures / name
    marked = tmp_path / "marked" / plain.name
    marked.parent.mkdir()
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    expected = import_paths([plain], tmp_path / "plain.jsonl")
    got = import_paths([marked], tmp_path / "marked.jsonl")
    assert got.written == expected.written > 0
    assert (tmp_path / "marked.jsonl").read_text() == (tmp_path / "plain.jsonl").read_text()
