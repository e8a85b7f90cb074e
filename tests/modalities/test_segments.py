"""Format-preserving segmentation (``modalities/segments.py``): the pieces give the document back, prose
is all that is marked for translation, and a translation that keeps the protected spans keeps the
document's structure, on this repository's own documents."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from groupqwen.modalities.segments import Piece, accepts, gaps, protected, split, structure, wrapped

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md", ROOT / "CHANGELOG.md"]


def _translate(piece: Piece) -> str:
    """A stand-in translation that rewrites every word of prose and keeps the protected spans."""
    return "".join(part if kept else part.upper().replace("E", "É") for part, kept in gaps(piece.source))


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_real_documents_come_back_whole_and_keep_their_structure(path: Path) -> None:
    document = path.read_text(encoding="utf-8")
    pieces = split(document)
    assert "".join(p.text for p in pieces) == document
    assert any(p.translate for p in pieces)
    for piece in pieces:
        if piece.translate:
            assert accepts(piece, _translate(piece)) is None, piece.source
    translated = "".join(wrapped(p, _translate(p)) if p.translate else p.text for p in pieces)
    assert translated != document
    assert structure(translated) == structure(document)


def test_code_and_layout_are_never_offered_for_translation() -> None:
    document = (
        "# Title #\n\n> quoted *line* one\n> line two\n\n| Setting | Meaning \\| more |\n|---|---|\n"
        "| `n_ctx` | The window |\n\n```python\nprint('hello')\n```\n\n    indented code\n\n---\n\n"
        '- item one\n  continues\n1. first\n\n<p align="center">Some <b>bold</b> text</p>\n\n'
        "<pre>kept as is</pre>\n\n[ref]: https://example.com\n"
    )
    pieces = split(document)
    assert "".join(p.text for p in pieces) == document
    sources = [p.source for p in pieces if p.translate]
    assert sources == [
        "Title",
        "quoted *line* one line two",
        "Setting",
        "Meaning \\| more",
        "The window",
        "item one continues",
        "first",
        '<p align="center">Some <b>bold</b> text</p>',
    ]
    assert [p.cell for p in pieces if p.translate][2:5] == [True, True, True]
    copied = "".join(p.text for p in pieces if not p.translate)
    for kept in ("print('hello')", "indented code", "<pre>kept as is</pre>", "[ref]: https://example.com"):
        assert kept in copied


def test_protected_spans() -> None:
    text = (
        "Run `make test`, see https://x.org/a. Use {name}, %s, %(count)d, %1$s, {{ var }}, {% trans %} and "
        "{n, plural, one {# item} other {# items}} at 3.5 GB; mail a@b.com <b>x</b> [link](http://u/v "
        '"t") &amp; \\* or 50% done'
    )
    assert protected(text) == [
        "`make test`",
        "https://x.org/a",
        "{name}",
        "%s",
        "%(count)d",
        "%1$s",
        "{{ var }}",
        "{% trans %}",
        "{n, plural, one {# item} other {# items}}",
        "3.5",
        "a@b.com",
        "<b>",
        "</b>",
        '](http://u/v "t")',
        "&amp;",
        "\\*",
        "50",
    ]


def test_a_text_with_nothing_but_code_and_numbers_is_not_translated() -> None:
    assert not any(p.translate for p in split("`make` 42 https://example.com\n"))


@pytest.mark.parametrize(
    ("source", "output", "cell", "why"),
    [
        ("Use {name} now", "Utilisez maintenant", False, "these must be copied exactly: {name}"),
        ("Run `make`", "Lancez `faire`", False, "these must be copied exactly: `make`"),
        ("Hello", "", False, "the translation is empty"),
        ("Hello", "Bon\njour", False, "the translation spans several lines"),
        ("Hello world", "# Bonjour", False, "the translation starts like another Markdown block"),
        ("Hello world", "- Bonjour", False, "the translation starts like another Markdown block"),
        ("A cell", "Une | cellule", True, "a table cell's translation may not hold '|'"),
    ],
)
def test_what_a_translation_may_not_do(source: str, output: str, cell: bool, why: str) -> None:
    assert accepts(Piece(source, source, cell), output) == why


def test_a_faithful_translation_is_accepted() -> None:
    source = "Run `make test` with {name} on https://x.org, 3 times"
    assert accepts(Piece(source, source), "Lancez `make test` avec {name} sur https://x.org, 3 fois") is None
    assert accepts(Piece("- item", "- item"), "- élément") is None  # the source began so too


TOKENS = ["a", "B", " ", "\n", "\r", "\r\n", "\x00", "\u2028", "#", "-", "*", ">", "|", "`", "1.", "<b>", "{"]
TOKENS += ["}", "%s", "é", "字", "    ", "\t", "[", "](", ")", "\\", "=", "~", "word ", "http://x.y "]


# the same 300 texts every run (as the API fuzzing's): a random draw made CI fail on whichever rare case it
# met first (several, each now an example below); a wider search is a run with more examples and
# without derandomize (30,000 pass on 2026-12-05)
@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from(TOKENS), max_size=40).map("".join))
@example("a`\n    `")  # inline code across a line break: joining the lines would change it
@example("#\u2028\na")  # a one-character first line: joined, the lines read as a heading ("# a")
@example("aa\n    =")  # an indented "=" line: without its indentation it would underline a heading
@example("``a`a`")  # an unmatched "``" is text: the code span is the later "`a`", not "``a`"
@example("a\n\u2028=")  # U+2028 is no Markdown blank: dropped, "=" would underline a heading
@example("\\``a`")  # an escaped backtick, then the code span "`a`" right after it
@example("aaaaaaaa\n|aa\na -|\na")  # rewrapped, "-|" began a line: a table's delimiter row under "|AA A"
@example("aa-----==aaaaaaaaa\na\na --")  # rewrapped, "--" alone on the last line underlined the one above
@example("==aaaa--aaaa\na\n== -aaaa")  # and "==" alone on a middle line
def test_any_text_comes_back_whole_and_a_faithful_translation_keeps_its_structure(text: str) -> None:
    pieces = split(text)
    assert "".join(p.text for p in pieces) == text
    kept = [p.translate and accepts(p, _translate(p)) is None for p in pieces]
    translated = "".join(
        wrapped(p, _translate(p)) if ok else p.text for p, ok in zip(pieces, kept, strict=True)
    )
    assert structure(translated) == structure(text)


def test_a_paragraph_wrapped_over_lines_comes_back_wrapped_with_its_own_breaks() -> None:
    document = (
        "> The cache keeps answers for a day and the\n> router sends the hard questions to the\n"
        "> larger model.\n"
    )
    (piece,) = [p for p in split(document) if p.translate]
    assert piece.source == (
        "The cache keeps answers for a day and the router sends the hard questions to the larger model."
    )
    assert piece.breaks == ("\n> ", "\n> ")
    french = (
        "Le cache garde les réponses un jour et le routeur envoie les questions difficiles - au grand modèle."
    )
    lines = wrapped(piece, french).split("\n> ")
    assert lines == [
        "Le cache garde les réponses un jour et le",
        "routeur envoie les questions difficiles - au",  # a line starting "- " would be a list item
        "grand modèle.",
    ]
    assert wrapped(piece, "缓存把答案保存一天，路由器把难题交给更大的模型。").count("\n> ") == 2


def test_a_hard_break_and_lines_of_their_own_are_kept_line_by_line() -> None:
    verse = "Roses are red,\nviolets are blue.\nSugar is sweet  \nand so are you\n"
    pieces = [p for p in split(verse) if p.translate]
    assert [p.source for p in pieces] == [
        "Roses are red,",
        "violets are blue.",
        "Sugar is sweet",
        "and so are you",
    ]
    assert "".join(p.text for p in split(verse)) == verse
    wrapped_prose = "A line broken\nin the middle of a sentence  \nwith a hard break.\n"
    (piece,) = [p for p in split(wrapped_prose) if p.translate]  # its first line ends mid-sentence
    assert piece.breaks == ("\n", "  \n")
    assert wrapped(piece, "Une ligne coupée au milieu d'une phrase avec un saut forcé.").count("\n") == 2
