"""``groupqwen data …`` through typer's ``CliRunner``: import → curate → review → build → validate."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from rich.console import Console
from rich.prompt import Prompt
from typer.testing import CliRunner

from groupqwen.cli.data import data_app
from groupqwen.cli.review import _interactive
from groupqwen.finetune.records import Conversation, Turn, read_jsonl, write_jsonl
from groupqwen.finetune.review import ReviewStore

runner = CliRunner()


def test_the_whole_pipeline(fixtures: Path, tmp_path: Path) -> None:
    convs = tmp_path / "conversations.jsonl"
    result = runner.invoke(
        data_app, ["import", str(fixtures / "chatgpt"), str(fixtures / "claude"), "-o", str(convs)]
    )
    assert result.exit_code == 0, result.output
    assert "chatgpt/conversations.json" in result.output and "records rejected" in result.output
    assert "conv-no-mapping" in result.output and "export owner: 1 name(s)" in result.output

    curated = tmp_path / "curated.jsonl"
    result = runner.invoke(
        data_app, ["curate", str(convs), "-o", str(curated), "--rejected", str(tmp_path / "rej.jsonl")]
    )
    assert result.exit_code == 0, result.output
    assert "Curated into" in result.output and "kept" in result.output

    dataset = tmp_path / "dataset"
    result = runner.invoke(
        data_app, ["build", str(curated), "-o", str(dataset), "--format", "chatml", "--val-fraction", "0"]
    )
    assert result.exit_code == 0, result.output
    assert "train.jsonl" in result.output
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["settings"]["format"] == "chatml"

    result = runner.invoke(data_app, ["validate", str(dataset / "train.jsonl")])
    assert result.exit_code == 0 and result.output.strip().endswith("train.jsonl: ok")


def test_cli_errors_are_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "conversations.json"
    bad.write_text("nope")
    result = runner.invoke(data_app, ["import", str(bad), "-o", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 1 and "error: " in result.output and "not valid JSON" in result.output
    result = runner.invoke(data_app, ["build", str(tmp_path / "o.jsonl"), "--format", "alpaca"])
    assert (
        result.exit_code == 1
        and "--format must be one of openai, sharegpt, chatml, not 'alpaca'" in result.output
    )
    lines = tmp_path / "d.jsonl"
    lines.write_text('{"messages": []}\n\n')
    result = runner.invoke(data_app, ["validate", str(lines)])
    assert result.exit_code == 1
    assert f"{lines}:1: no messages" in result.output and f"{lines}:2: empty line" in result.output


def _conv(conv_id: str) -> Conversation:
    return Conversation(conv_id, "chatgpt", (Turn("user", "q?"), Turn("assistant", "a.")))


def _three(tmp_path: Path) -> Path:
    source = tmp_path / "in.jsonl"
    write_jsonl(
        source,
        [
            Conversation(f"c{i}", "chatgpt", (Turn("user", f"q{i}?"), Turn("assistant", f"a{i}.")))
            for i in range(3)
        ],
    )
    return source


def test_batch_review_and_apply(tmp_path: Path) -> None:
    source = _three(tmp_path)
    decisions = tmp_path / "decisions.jsonl"
    (tmp_path / "reject.txt").write_text("c1\n")
    result = runner.invoke(
        data_app,
        [
            "review",
            str(source),
            "--decisions",
            str(decisions),
            "--reject-ids",
            str(tmp_path / "reject.txt"),
            "--accept-all",
            "--apply",
            str(tmp_path / "out.jsonl"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "accepted 2, rejected 1" in result.output
    assert [c.id for c in read_jsonl(tmp_path / "out.jsonl")] == ["c0", "c2"]


def test_interactive_review_resumes_and_edits(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    source = _three(tmp_path)
    store = ReviewStore(tmp_path / "decisions.jsonl")
    answers = iter(["a", "q"])
    _interactive(store, source, ask=lambda *a, **k: next(answers))
    assert len(ReviewStore(tmp_path / "decisions.jsonl")) == 1  # stored as it went

    edited = json.dumps(
        {
            "id": "c1",
            "source": "chatgpt",
            "turns": [{"role": "user", "content": "q1?"}, {"role": "assistant", "content": "EDITED"}],
        }
    )
    monkeypatch.setattr("click.edit", lambda *a, **k: edited)
    answers = iter(["e", "r"])
    store = ReviewStore(tmp_path / "decisions.jsonl")  # resumes at c1
    _interactive(store, source, ask=lambda *a, **k: next(answers))
    kept = list(ReviewStore(tmp_path / "decisions.jsonl").apply(read_jsonl(source)))
    assert [(c.id, c.turns[1].content) for c in kept] == [("c0", "a0."), ("c1", "EDITED")]


def test_a_bad_decisions_file_names_its_line(tmp_path: Path) -> None:
    source = _three(tmp_path)
    decisions = tmp_path / "decisions.jsonl"
    decisions.write_text('{"key": "c0#0", "verdict": "accept"}\n{"key": "c1#0", "verdict": "maybe"}\n')
    result = runner.invoke(data_app, ["review", str(source), "--decisions", str(decisions), "--accept-all"])
    assert result.exit_code == 1
    assert "decisions.jsonl:2: 'verdict' must be one of accept, reject, edit, not 'maybe'" in result.output


_COMMANDS = {
    "curate": ["curate", "{input}", "-o", "{tmp}/curated.jsonl"],
    "build": ["build", "{input}", "-o", "{tmp}/dataset"],
    "review": ["review", "{input}", "--decisions", "{tmp}/decisions.jsonl", "--accept-all"],
    "review-apply": ["review", "{input}", "--decisions", "{tmp}/decisions.jsonl", "--apply", "{tmp}/o"],
    "validate": ["validate", "{input}"],
    "import": ["import", "{input}", "-o", "{tmp}/conversations.jsonl"],
}


def _one_error_line(result: Result, *needles: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("command", sorted(_COMMANDS))
@pytest.mark.parametrize("problem", ["missing", "folder", "unreadable"])
def test_every_data_command_says_in_one_line_what_is_wrong_with_its_input(
    command: str, problem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / ("conversations.json" if command == "import" else "conversations.jsonl")
    if problem == "folder":
        source.mkdir()
    elif problem == "unreadable":  # the tests run as root, where chmod 000 does not stop a read
        write_jsonl(source, [_conv("a")])
        real_open = Path.open

        def refuse(self: Path, *args: Any, **kwargs: Any) -> Any:
            if self == source:
                raise PermissionError(13, "Permission denied", str(self))
            return real_open(self, *args, **kwargs)

        monkeypatch.setattr(Path, "open", refuse)
    argv = [a.format(input=source, tmp=tmp_path) for a in _COMMANDS[command]]
    result = runner.invoke(data_app, argv)
    expected = {"missing": "no such file", "folder": "", "unreadable": "permission denied"}[problem]
    if command == "import" and problem == "folder":  # a folder of exports is a valid input; empty here
        _one_error_line(result, "no chat export found")
    else:
        _one_error_line(result, str(source), expected)


def test_files_next_to_the_input_are_checked_as_well(tmp_path: Path) -> None:
    source = tmp_path / "curated.jsonl"
    write_jsonl(source, [_conv("a")])
    missing = tmp_path / "nope.txt"
    for argv in (
        ["review", str(source), "--decisions", str(tmp_path / "d.jsonl"), "--reject-ids", str(missing)],
        ["review", str(source), "--decisions", str(tmp_path / "d.jsonl"), "--accept-ids", str(missing)],
        ["build", str(source), "-o", str(tmp_path / "ds"), "--tokenizer", str(missing)],
    ):
        _one_error_line(runner.invoke(data_app, argv), str(missing), "no such file")
    _one_error_line(
        runner.invoke(data_app, ["review", str(source), "--decisions", str(tmp_path), "--accept-all"]),
        str(tmp_path),
        "folder",
    )
    _one_error_line(
        runner.invoke(data_app, ["curate", str(source), "-o", str(tmp_path / "no" / "out.jsonl")]),
        str(tmp_path / "no"),
    )


def test_an_input_that_is_not_utf8_names_the_file_and_line(tmp_path: Path) -> None:
    source = tmp_path / "binary.jsonl"
    write_jsonl(source, [_conv("a")])
    with source.open("ab") as f:
        f.write(b"\xff\xfe\x00garbage\n")
    for command in ("curate", "build", "review"):
        argv = [command, str(source)] + (["--accept-all"] if command == "review" else [])
        argv += ["--decisions", str(tmp_path / "d.jsonl")] if command == "review" else []
        argv += ["-o", str(tmp_path / f"{command}.out")] if command != "review" else []
        _one_error_line(runner.invoke(data_app, argv), f"{source}:2: not UTF-8")


def test_the_review_prompt_shows_its_keys(tmp_path: Path) -> None:
    """Rich markup must not swallow ``[a]`` and friends: the rendered prompt reads as written."""
    source = _three(tmp_path)
    console = Console(file=io.StringIO(), record=True, width=200)

    def ask(prompt: str, **kwargs: Any) -> str:
        return Prompt.ask(prompt, console=console, stream=io.StringIO("q\n"), **kwargs)

    _interactive(ReviewStore(tmp_path / "decisions.jsonl"), source, ask=ask)
    assert "[a]ccept [r]eject [e]dit [s]kip [q]uit [a/r/e/s/q] (a): " in console.export_text()


def test_skipping_review_passes_the_conversations_through(tmp_path: Path) -> None:
    """Review is optional: ``--apply`` with no decisions keeps everything, and a build from it has samples."""
    source = _three(tmp_path)
    reviewed = tmp_path / "reviewed.jsonl"
    decisions = tmp_path / "decisions.jsonl"
    result = runner.invoke(
        data_app, ["review", str(source), "--decisions", str(decisions), "--apply", str(reviewed)]
    )
    assert result.exit_code == 0, result.output
    assert [c.id for c in read_jsonl(reviewed)] == ["c0", "c1", "c2"]
    assert "3 conversation(s) written" in result.output and "3 not reviewed" in result.output

    result = runner.invoke(
        data_app, ["build", str(reviewed), "-o", str(tmp_path / "ds"), "--val-fraction", "0"]
    )
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "ds" / "train.jsonl").read_text().splitlines()) == 3


def test_apply_leaves_out_only_what_was_rejected(tmp_path: Path) -> None:
    source = _three(tmp_path)
    decisions = tmp_path / "decisions.jsonl"
    (tmp_path / "reject.txt").write_text("c1\n")
    (tmp_path / "accept.txt").write_text("c2\n")
    base = ["review", str(source), "--decisions", str(decisions)]
    result = runner.invoke(data_app, [*base, "--reject-ids", str(tmp_path / "reject.txt")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(data_app, [*base, "--accept-ids", str(tmp_path / "accept.txt")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(data_app, [*base, "--apply", str(tmp_path / "all.jsonl")])
    assert [c.id for c in read_jsonl(tmp_path / "all.jsonl")] == ["c0", "c2"]
    assert "1 accepted, 0 edited, 1 not reviewed; 1 rejected left out" in result.output
    result = runner.invoke(data_app, [*base, "--apply", str(tmp_path / "only.jsonl"), "--reviewed-only"])
    assert [c.id for c in read_jsonl(tmp_path / "only.jsonl")] == ["c2"]
    result = runner.invoke(data_app, [*base, "--apply", str(tmp_path / "kept.jsonl"), "--keep-pending"])
    assert [c.id for c in read_jsonl(tmp_path / "kept.jsonl")] == ["c0", "c2"]


def test_a_curation_that_keeps_nothing_says_why(tmp_path: Path) -> None:
    """A German history through the default `--lang en` became an empty file, said only by "kept 0"."""
    source = tmp_path / "in.jsonl"
    german = "Wie kann ich in Python eine Liste umdrehen, ohne die ursprüngliche Liste zu verändern?"
    answer = (
        "Mit der Slice-Schreibweise bekommst du eine umgedrehte Kopie der Liste zurück, das Original bleibt."
    )
    write_jsonl(source, [Conversation("de1", "chatgpt", (Turn("user", german), Turn("assistant", answer)))])
    out = tmp_path / "curated.jsonl"
    result = runner.invoke(data_app, ["curate", str(source), "-o", str(out)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert (
        f"warning: {out} is empty: every conversation was rejected: --lang names the languages kept" in said
    )
    result = runner.invoke(data_app, ["curate", str(source), "-o", str(out), "--lang", "de"])
    assert "warning" not in result.output and len(list(read_jsonl(out))) == 1


def test_a_split_that_leaves_training_empty_is_said(tmp_path: Path) -> None:
    result = runner.invoke(
        data_app, ["build", str(_three(tmp_path)), "-o", str(tmp_path / "ds"), "--val-fraction", "0.99"]
    )
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "warning: train.jsonl is empty: the split put all 3 conversation(s) in validation" in said
    result = runner.invoke(data_app, ["build", str(_three(tmp_path)), "-o", str(tmp_path / "ds")])
    assert "warning" not in result.output


def test_an_empty_result_is_said_clearly(tmp_path: Path) -> None:
    source = _three(tmp_path)
    decisions = tmp_path / "decisions.jsonl"
    (tmp_path / "reject.txt").write_text("c0\nc1\nc2\n")
    empty = tmp_path / "reviewed.jsonl"
    argv = [
        "review",
        str(source),
        "--decisions",
        str(decisions),
        "--reject-ids",
        str(tmp_path / "reject.txt"),
    ]
    result = runner.invoke(data_app, [*argv, "--apply", str(empty)])
    assert result.exit_code == 0, result.output
    assert f"warning: {empty} is empty: nothing was kept" in result.output

    result = runner.invoke(data_app, ["build", str(empty), "-o", str(tmp_path / "ds")])
    assert result.exit_code == 1
    assert f"error: no samples built from {empty}: it holds no conversations" in result.output

    long = tmp_path / "long.jsonl"
    write_jsonl(
        long,
        [
            Conversation(
                f"c{i}", "chatgpt", (Turn("user", "why? " * 40), Turn("assistant", "because. " * 40))
            )
            for i in range(3)
        ],
    )
    result = runner.invoke(
        data_app,
        ["build", str(long), "-o", str(tmp_path / "ds"), "--max-tokens", "16", "--overflow", "drop"],
    )
    assert result.exit_code == 1
    assert "every conversation was dropped (3 over max_tokens)" in result.output
