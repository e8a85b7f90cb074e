"""Format-preserving segmentation for translation: a Markdown (or plain text, or HTML) document cut into
``Piece``s whose texts, joined, give the document back byte for byte. Only the prose is marked for
translation; everything else is copied.

- **Blocks** come from markdown-it-py (CommonMark with GFM tables and strikethrough): the inline text of
  each paragraph, heading and list item is one piece to translate (its lines joined, since a translation
  rewraps them; the container markers of continuation lines, ``> `` or indentation, go with them), each
  table cell one piece; fenced and indented code blocks, thematic breaks, link reference definitions and
  table delimiter rows are copied; an HTML block is translated between its tags.
- **Inside a piece**, ``protected`` finds what must come out byte-identical: inline code, HTML tags and
  comments, autolinks, link destinations and reference labels, URLs, e-mail addresses, placeholders
  (``{name}``, ``{{var}}``, ``{% tag %}``, ICU messages ``{n, plural, …}``, printf ``%s`` ``%(name)d``
  ``%1$s``), entities, backslash escapes and numbers. ``accepts`` checks a translation keeps every one of
  them and adds no block structure (a leading ``#``, ``-``, ``>``…, a ``|`` in a table cell).
- ``structure`` is a document's block skeleton (types, levels, list markers, table cells, code blocks
  verbatim, inline code spans): what a translation must leave identical.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections import Counter
from dataclasses import dataclass

from markdown_it import MarkdownIt
from markdown_it.token import Token


@dataclass(frozen=True)
class Piece:
    """``text``: the document's own characters. ``source``: for a piece to translate, its prose (lines
    joined by spaces); empty for a piece copied as it is. ``cell``: a table cell (its translation may hold
    no ``|``). A paragraph wrapped over lines has the ``breaks`` between its lines (the line break with the
    spaces or markers around it) and its lines' ``widths`` (see ``wrapped``); ``at``: where ``text``
    starts in the document."""

    text: str
    source: str = ""
    cell: bool = False
    breaks: tuple[str, ...] = ()
    widths: tuple[int, ...] = ()
    at: int = 0

    @property
    def translate(self) -> bool:
        return bool(self.source)


_ICU = re.compile(r"\{\s*[\w.]+\s*,\s*(?:plural|select|selectordinal|number|date|time|spellout|ordinal)\b")
_PROTECTED = re.compile(
    "|".join(
        (
            # inline code: whole backtick runs (an escaped backtick before the opening one is no part of it)
            r"(?<!(?<!\\)`)(?P<ticks>`+)(?!`)[\s\S]*?(?<!`)(?P=ticks)(?!`)",
            r"<!--[\s\S]*?-->",  # HTML comment
            r"<(?:https?|ftp|mailto):[^<>\s]*>",  # autolink
            r"</?[A-Za-z][\w:-]*(?:\s[^<>]*)?/?>",  # HTML tag with its attributes
            # ](destination "title")
            r"\]\([^()\s]*(?:\([^()\s]*\)[^()\s]*)*(?:\s+(?:\"[^\"]*\"|'[^']*'))?\)",
            r"\]\[[^\]]*\]",  # ][reference label]
            r"\{\{[\s\S]*?\}\}|\{%[\s\S]*?%\}",  # Jinja / Mustache / Django templates
            r"\{[^{}\s]*\}",  # {name}, {0}, {}, {name:>10}
            r"%(?:\(\w+\)|\d+\$)?[-+#0]*(?:\d+|\*)?(?:\.\d+)?[hlLqjzt]*[diouxXeEfFgGcrsa%]",  # printf
            r"(?:https?|ftp)://[^\s<>\"'`\])]*[^\s<>\"'`\]).,;:!?]",  # URL
            r"www\.[^\s<>\"'`\])]*[^\s<>\"'`\]).,;:!?]",
            r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+",  # e-mail address
            r"&(?:#\d+|#[xX][0-9a-fA-F]+|[A-Za-z]\w*);",  # entity
            r"\\[!-/:-@\[-`{-~]",  # backslash escape
            r"\d+(?:[.,:]\d+)*",  # number
        )
    )
)
_LETTER = re.compile(r"[^\W\d_]")
# what would turn a translated line into another block: at its start, a heading, quote, list item or
# fence; as the whole line, a break, or a line of "=" or "-" (under a paragraph line: a heading) or of
# "-", "|" and ":" (under one: a table's delimiter row)
_LINE_ALONE = r"(?:[-_*][ \t]*){3,}|=+|[|: \t]*-[-|: \t]*"
_ALONE = re.compile(_LINE_ALONE)
_BLOCK_START = re.compile(
    rf"^(?:#{{1,6}}(?:\s|$)|>|[-*+](?:\s|$)|\d{{1,9}}[.)](?:\s|$)|```|~~~|(?:{_LINE_ALONE})[ \t]*$)"
)
_LINES = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")
_LINE_END = re.compile(r"(?:[.!?;:,…。！？；：，]['\")»”’]?|\\)$")
_VERBATIM_HTML = re.compile(r"<(?:pre|script|style|textarea)\b", re.IGNORECASE)


@functools.cache
def _parser() -> MarkdownIt:
    return MarkdownIt("commonmark").enable(["table", "strikethrough"])


def _icu(text: str) -> list[tuple[int, int]]:
    """The ICU messages of ``text`` (``{count, plural, one {# item} other {# items}}``), whole."""
    spans: list[tuple[int, int]] = []
    for match in _ICU.finditer(text):
        if spans and match.start() < spans[-1][1]:
            continue
        depth, i = 0, match.start()
        while i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
            if depth == 0:
                spans.append((match.start(), i))
                break
    return spans


def protected_spans(text: str) -> list[tuple[int, int]]:
    """Where the spans that must stay byte-identical are, in order, not overlapping."""
    spans = _icu(text)
    taken = list(spans)
    for match in _PROTECTED.finditer(text):
        a, b = match.span()
        if a < b and not any(x < b and a < y for x, y in taken):
            spans.append((a, b))
    return sorted(spans)


def protected(text: str) -> list[str]:
    return [text[a:b] for a, b in protected_spans(text)]


def gaps(text: str) -> list[tuple[str, bool]]:
    """``text`` cut into (part, protected) in order; the parts joined give ``text`` back."""
    out: list[tuple[str, bool]] = []
    pos = 0
    for a, b in protected_spans(text):
        if a > pos:
            out.append((text[pos:a], False))
        out.append((text[a:b], True))
        pos = b
    if pos < len(text):
        out.append((text[pos:], False))
    return out


def has_prose(text: str) -> bool:
    """Whether ``text`` has letters outside its protected spans (else there is nothing to translate)."""
    return any(not kept and _LETTER.search(part) for part, kept in gaps(text))


def accepts(piece: Piece, output: str) -> str | None:
    """Why ``output`` cannot stand for ``piece`` (``None``: it can): a protected span lost or changed, a
    new block marker at its start, a ``|`` in a table cell, a line break, nothing at all."""
    if not output.strip():
        return "the translation is empty"
    if "\n" in output and "\n" not in piece.source:
        return "the translation spans several lines"
    if re.search(r"\n[ \t]*\n", output):  # it would end an HTML block
        return "the translation has a blank line"
    missing = Counter(protected(piece.source)) - Counter(protected(output))
    if missing:
        return "these must be copied exactly: " + ", ".join(sorted(missing))
    if _BLOCK_START.match(output.lstrip()) and not _BLOCK_START.match(piece.source.lstrip()):
        return "the translation starts like another Markdown block"
    if piece.cell and _pipes(output) != _pipes(piece.source):
        return "a table cell's translation may not hold '|'"
    return None


def _pipes(text: str) -> int:
    return sum(1 for part, kept in gaps(text) if not kept for _ in re.finditer(r"\|", part))


# -- splitting ---------------------------------------------------------------------------------------------


def _cells(line: str) -> list[tuple[int, int]]:
    """The cells of a GFM table row: (start, end) of each cell's text without its padding."""
    bounds, i = [], 0
    while i < len(line):
        if line[i] == "\\":
            i += 2
            continue
        if line[i] == "|":
            bounds.append(i)
        i += 1
    edges = [-1, *bounds, len(line)]
    cells = [(a + 1, b) for a, b in itertools.pairwise(edges)]
    if cells and not line[: cells[0][1]].strip():  # a leading pipe
        cells = cells[1:]
    if cells and not line[cells[-1][0] :].strip():  # a trailing pipe
        cells = cells[:-1]
    out = []
    for a, b in cells:
        text = line[a:b]
        lead = len(text) - len(text.lstrip())
        out.append((a + lead, a + len(text.rstrip())))
    return out


def _inline(lines: list[str], first: int, content: str) -> list[tuple[int, int, int]] | None:
    """Where ``content`` (an inline token's text, its lines stripped) lies in ``lines`` from line
    ``first``: (line, start column, end column) of each of its lines without their padding, or ``None``
    when it cannot be placed exactly (the block is then copied, not translated)."""
    parts = content.split("\n")
    last = first + len(parts) - 1
    if last >= len(lines):
        return None
    head = lines[first].rstrip("\r\n")
    start = next((i for i in range(len(head)) if head.startswith(parts[0], i)), None)
    if start is None or not parts[0]:
        return None
    if len(parts) == 1:
        return [(first, start, start + len(parts[0]))]
    out = [(first, start, start + len(parts[0].rstrip()))]
    for k, part in enumerate(parts[1:-1], start=first + 1):
        column = lines[k].find(part.strip())
        if column < 0 or not part.strip():
            return None
        out.append((k, column, column + len(part.strip())))
    tail = lines[last].rstrip("\r\n")
    end = tail.rfind(parts[-1].rstrip())
    if end < 0 or not parts[-1].strip():
        return None
    return [*out, (last, end, end + len(parts[-1].rstrip()))]


def _line_by_line(texts: list[str], breaks: tuple[str, ...]) -> bool:
    """Whether a paragraph's lines are lines of their own (each but the last ends a sentence or a clause,
    or with a hard break: verse, an address, a list without markers), not prose wrapped at a width."""
    return all(
        _LINE_END.search(text) or line_break.startswith("  ")
        for text, line_break in zip(texts, breaks, strict=False)
    )


def wrapped(piece: Piece, translation: str) -> str:
    """``translation`` laid out as ``piece`` is: a paragraph wrapped over n lines is broken into n lines
    again, each break at about the same share of the text, at a space (anywhere in a script without
    spaces) outside the protected spans, never where the next line would start another Markdown block;
    between them the paragraph's own breaks (hard-break spaces, indentation, quote markers)."""
    if not piece.breaks or not translation:
        return translation
    spans = protected_spans(translation)
    spaced = " " in translation.strip()
    cuts = [
        i
        for i in range(1, len(translation) - 1)
        if (translation[i] == " " if spaced else not translation[i].isspace())
        and not any(a < i < b or (a == i and not spaced) for a, b in spans)
    ]
    total, done, start = sum(piece.widths), 0, 0
    out: list[str] = []
    for width, line_break in zip(piece.widths, piece.breaks, strict=False):
        done += width
        goal = len(translation) * done / total
        fits = [
            c
            for c in cuts
            if c > start
            and not _BLOCK_START.match(translation[c:].lstrip())  # the next line's start, or the last line
            and not (out and _ALONE.fullmatch(translation[start:c].strip()))  # the line it ends (not a first)
        ]
        if not fits:
            break
        cut = min(fits, key=lambda c: abs(c - goal))
        out += [translation[start:cut].rstrip(" "), line_break]
        start = cut + 1 if spaced else cut
    return "".join([*out, translation[start:]])


def split(document: str) -> list[Piece]:
    """``document`` cut into pieces (see the module's docstring); their texts joined are ``document``."""
    lines = _LINES.findall(document)  # as markdown-it counts them: \r\n, \r and \n end a line
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    edits: list[Piece] = []  # the pieces to translate, ``at`` their offset
    tokens = _parser().parse(document)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.map is not None and token.map[1] > len(lines):
            pass  # never seen: a block beyond the text's lines is copied, not guessed at
        elif token.type == "tr_open" and token.map is not None:
            row = token.map[0]
            j = i
            while tokens[j].type != "tr_close":
                j += 1
            count = sum(1 for t in tokens[i:j] if t.type == "inline")
            cells = _cells(lines[row].rstrip("\r\n"))
            if len(cells) == count:
                for a, b in cells:
                    text = lines[row][a:b]
                    edits.append(Piece(text, text, cell=True, at=offsets[row] + a))
            i = j
        elif token.type == "inline" and token.map is not None:
            place = _inline(lines, token.map[0], token.content)
            # the lines are joined into one for the model: a protected span across a line break (inline
            # code, a tag) would change, so such a paragraph stays as written
            if place is not None and not any("\n" in span for span in protected(token.content)):
                spans = [(offsets[row] + a, offsets[row] + b) for row, a, b in place]
                # a line's indentation belongs to the break before it (``wrapped`` puts breaks back: an
                # indented "=" must stay indented, or it underlines the line above as a heading)
                spans[1:] = [(b - len(document[a:b].lstrip(" \t")), b) for a, b in spans[1:]]
                texts = [document[a:b] for a, b in spans]
                breaks = tuple(document[b:a] for (_, b), (a, _) in itertools.pairwise(spans))
                if breaks and _line_by_line(texts, breaks):
                    edits += [Piece(text, text, at=a) for (a, _), text in zip(spans, texts, strict=True)]
                else:
                    source = " ".join(text.strip(" \t") for text in texts)  # Markdown's blanks, no more
                    text = document[spans[0][0] : spans[-1][1]]
                    widths = tuple(len(t) for t in texts)
                    edits.append(Piece(text, source, at=spans[0][0], breaks=breaks, widths=widths))
        elif token.type == "html_block" and token.map is not None:
            a, b = token.map
            text = "".join(lines[a:b]).rstrip("\r\n")
            if not _VERBATIM_HTML.match(text.lstrip()):
                edits.append(Piece(text, text, at=offsets[a]))
        i += 1
    pieces: list[Piece] = []
    pos = 0
    for edit in sorted(edits, key=lambda e: e.at):
        if edit.at < pos or not has_prose(edit.source):
            continue
        if edit.at > pos:
            pieces.append(Piece(document[pos : edit.at]))
        pieces.append(edit)
        pos = edit.at + len(edit.text)
    if pos < len(document):
        pieces.append(Piece(document[pos:]))
    return pieces


def structure(document: str) -> list[str]:
    """The block skeleton of ``document``: every block token's type, tag and marker (heading levels, list
    markers, table cells), code blocks with their text, then the inline code spans (sorted)."""
    out: list[str] = []
    code: list[str] = []
    for token in _parser().parse(document):
        if token.type == "inline":
            code.extend(c.content for c in _children(token) if c.type == "code_inline")
            continue
        entry = f"{token.type}:{token.tag}:{token.markup}"
        if token.type in ("fence", "code_block"):
            entry += f":{token.info}:{token.content}"
        out.append(entry)
    return [*out, *sorted(code)]


def _children(token: Token) -> list[Token]:
    return list(token.children or [])
