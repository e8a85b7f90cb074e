"""Translation with Qwen-MT's ``translation_options`` on a model that does not take them itself: the
options are compiled into its prompt, and the document's format is kept by construction.

1. The text (the request's one user turn) is cut into pieces (``segments.split``): only prose is
   translated, one block (paragraph, heading, list item, table cell) at a time, a block longer than the
   budget (from the model's context) in runs of sentences. Code, markup and layout are copied.
2. Each piece is translated with a prompt built from the options: the languages (``auto``: read from the
   whole text by ``langid``), ``domains``, the ``terms`` that occur in the piece, the ``tm_list`` entries
   closest to it as examples (an exact match is used as it is, without the model).
3. The answer is checked (``segments.accepts``: every protected span kept, no new block; and every term
   translated as asked). A term the model left untranslated is replaced by its target (the constrained
   fix); any other miss is retried once with the problem named; a piece that still loses a protected span
   is translated piece by piece between its spans, and failing that kept as it was.
4. Pieces are yielded in order as they are done; the last chunk carries the summed usage, and
   ``report()`` says how it went (``messages.TranslationReport``).
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass

from groupqwen.messages import Chunk, Message, Term, TranslationOptions, TranslationReport, Usage
from groupqwen.modalities import langid, languages
from groupqwen.modalities.segments import Piece, accepts, gaps, has_prose, protected_spans, split

MAX_EXAMPLES = 3  # tm_list entries shown to the model for one piece
MAX_GROWTH = 4  # a translation longer than this many times its text (plus a little) is no translation


@dataclass(frozen=True)
class Generated:
    """One answer of the model: its text (reasoning removed) and usage."""

    text: str
    usage: Usage


# the model's answer to ``messages`` within ``max_tokens``
Generate = Callable[[tuple[Message, ...], int], Awaitable[Generated]]

_SENTENCE_END = re.compile(r"(?<=[.!?。！？;])\s+")
_LABEL = re.compile(r"^(?:translation|translated text|traduction|übersetzung|traducción)\s*:\s*", re.I)
_QUOTES = {'"': '"', "“": "”", "«": "»", "「": "」", "'": "'"}
_WORD = re.compile(r"\w+")


def _fold(text: str) -> str:
    return " ".join(text.casefold().split())


def system_prompt(
    options: TranslationOptions, source: str | None, terms: list[Term], problem: str | None
) -> str:
    """The instructions that stand for Qwen-MT's options: languages, domain, terminology, and on a retry
    what was wrong with the first answer."""
    origin = f"from {source} " if source else ""
    lines = [
        f"You are a professional translator. Translate the user's text {origin}into {options.target}.",
        "Reply with the translation only: no notes, no quotes, no explanations.",
        "Copy these exactly as they are: inline code in backticks, URLs, e-mail addresses, numbers, "
        "placeholders such as {name}, %s or {{var}}, HTML tags and Markdown link targets.",
    ]
    if options.domains:
        lines.append(f"Domain and style: {options.domains}")
    if terms:
        lines.append("Terminology: translate these terms exactly as given.")
        lines.extend(f"- {t.source} → {t.target}" for t in terms)
    if problem:
        lines.append(f"A previous translation was rejected: {problem}. Fix that.")
    return "\n".join(lines)


class Translator:
    """Translates one text with ``options`` through ``generate`` (see the module's docstring).
    ``budget_chars``: the most characters of prose asked in one generation."""

    def __init__(self, options: TranslationOptions, generate: Generate, *, budget_chars: int) -> None:
        self._options = options
        self._generate = generate
        self._budget = max(64, budget_chars)
        self._source: str | None = None if options.source == "auto" else options.source
        self._done: dict[str, str] = {}  # prose already translated in this text (repeated table cells…)
        self._prompt, self._completion = 0, 0
        self._pieces = self._retried = self._piecewise = self._untranslated = 0
        self._expected = self._held = 0

    def report(self) -> TranslationReport:
        return TranslationReport(
            self._source,
            self._pieces,
            self._retried,
            self._piecewise,
            self._untranslated,
            self._expected,
            self._held,
        )

    async def stream(self, text: str) -> AsyncGenerator[Chunk, None]:
        """The translation of ``text``, a piece of prose at a time (with the layout before it); the last
        chunk has ``finish_reason`` and the usage of every generation."""
        if self._options.source == "auto":
            found = langid.identify(text)
            language = languages.find(found.code) if found is not None else None
            self._source = language.name if language is not None else None
        copied: list[str] = []
        for piece in split(text):
            if not piece.translate:
                copied.append(piece.text)
                continue
            copied.append(await self._piece(piece))
            yield Chunk(text="".join(copied))
            copied.clear()
        usage = Usage(self._prompt, self._completion)
        yield Chunk(text="".join(copied), finish_reason="stop", usage=usage)

    async def _piece(self, piece: Piece) -> str:
        self._pieces += 1
        if piece.source in self._done:
            return self._done[piece.source]
        parts = _runs(piece.source, self._budget)
        out = [await self._translated(Piece(part, part, piece.cell)) for part in parts]
        if any(o is None for o in out):
            self._untranslated += 1
            result = piece.text
        else:
            result = " ".join(o for o in out if o is not None)
        self._done[piece.source] = result
        return result

    async def _translated(self, piece: Piece) -> str | None:
        """``piece``'s translation that keeps its format, or ``None`` when none could be had."""
        remembered = self._remembered(piece.source)
        if remembered is not None and accepts(piece, remembered) is None:
            return remembered
        terms = self._terms(piece.source)
        problem: str | None = None
        answer = ""
        if "\n" in piece.source:  # an HTML block: its text between the tags, its layout kept
            self._piecewise += 1
            answer = await self._by_parts(piece.source, terms)
            return self._counted(answer, terms) if accepts(piece, answer) is None else self._lost(terms)
        for attempt in range(2):
            if attempt:
                self._retried += 1
            answer = self._fix_terms(await self._ask(piece.source, terms, problem), terms)
            problem = accepts(piece, answer) or _rambles(piece.source, answer) or _missed(answer, terms)
            if problem is None:
                break
        if _rambles(piece.source, answer):
            return self._lost(terms)
        if accepts(piece, answer) is not None:
            self._piecewise += 1
            answer = await self._by_parts(piece.source, terms)
            if accepts(piece, answer) is not None:
                return self._lost(terms)
        return self._counted(answer, terms)

    def _counted(self, answer: str, terms: list[Term]) -> str:
        self._expected += len(terms)
        self._held += len(terms) - len(missing(answer, terms))
        return answer

    def _lost(self, terms: list[Term]) -> str | None:
        """No translation of a piece kept its format (``None``: it stays as it was); its terms count as
        missed."""
        self._expected += len(terms)
        return None

    async def _by_parts(self, source: str, terms: list[Term]) -> str:
        """``source`` translated between its protected spans, which are copied."""
        out = []
        for part, kept in gaps(source):
            if kept or not has_prose(part):
                out.append(part)
                continue
            lead, core, trail = _strip(part)
            relevant = applying(tuple(terms), core)
            answer = self._fix_terms(await self._ask(core, relevant, None), relevant)
            out.append(lead + (core if _rambles(core, answer) else answer) + trail)
        return "".join(out)

    async def _ask(self, text: str, terms: list[Term], problem: str | None) -> str:
        messages = [Message("system", system_prompt(self._options, self._source, terms, problem))]
        for example in self._examples(text):
            messages += [Message("user", example.source), Message("assistant", example.target)]
        messages.append(Message("user", text))
        estimate = len(text.encode()) // 3 + 16
        answer = await self._generate(tuple(messages), 2 * estimate + 32)
        self._prompt += answer.usage.prompt_tokens
        self._completion += answer.usage.completion_tokens
        return _clean(answer.text, text)

    # -- options -------------------------------------------------------------------------------------------

    def _terms(self, text: str) -> list[Term]:
        return applying(self._options.terms, text)

    def _fix_terms(self, answer: str, terms: list[Term]) -> str:
        """Replace a missed term left untranslated by its target, outside the protected spans."""
        for term in missing(answer, terms):
            pattern = re.compile(re.escape(term.source), re.IGNORECASE)
            target = term.target.replace("\\", "\\\\")  # a replacement template: backslashes doubled
            answer = "".join(part if kept else pattern.sub(target, part) for part, kept in gaps(answer))
        return answer

    def _remembered(self, text: str) -> str | None:
        folded = _fold(text)
        return next((m.target for m in self._options.memory if _fold(m.source) == folded), None)

    def _examples(self, text: str) -> list[Term]:
        """The ``tm_list`` entries sharing the most words with ``text`` (at least one)."""
        words = set(_WORD.findall(text.casefold()))
        scored = [
            (len(words & set(_WORD.findall(m.source.casefold()))), i)
            for i, m in enumerate(self._options.memory)
        ]
        best = sorted((s for s in scored if s[0] > 0), key=lambda s: (-s[0], s[1]))[:MAX_EXAMPLES]
        return [self._options.memory[i] for _, i in sorted(best, key=lambda s: s[1])]


def applying(terms: tuple[Term, ...], text: str) -> list[Term]:
    """The ``terms`` whose source occurs in ``text`` (case and spacing aside)."""
    folded = _fold(text)
    return [t for t in terms if _fold(t.source) in folded]


def missing(answer: str, terms: list[Term]) -> list[Term]:
    """The ``terms`` whose target ``answer`` does not hold."""
    folded = _fold(answer)
    return [t for t in terms if _fold(t.target) not in folded]


def _missed(answer: str, terms: list[Term]) -> str | None:
    lost = missing(answer, terms)
    if not lost:
        return None
    return "these terms must be translated as given: " + "; ".join(f"{t.source} → {t.target}" for t in lost)


def _rambles(source: str, answer: str) -> str | None:
    """A problem when ``answer`` is far longer than a translation of ``source`` can be (a small model
    that talks about the text instead of translating it)."""
    if len(answer) > MAX_GROWTH * len(source) + 16:
        return "the answer is much longer than the text: give its translation only"
    return None


def _strip(text: str) -> tuple[str, str, str]:
    core = text.strip()
    start = text.find(core)
    return text[:start], core, text[start + len(core) :]


def _clean(answer: str, source: str) -> str:
    """The model's answer as one line: no label, no quotes the source did not have."""
    text = re.sub(r"\s*\n\s*", " ", answer.strip())
    text = _LABEL.sub("", text)
    if len(text) >= 2 and _QUOTES.get(text[0]) == text[-1] and not source.lstrip().startswith(text[0]):
        text = text[1:-1].strip()
    return text


def _runs(text: str, budget: int) -> list[str]:
    """``text`` in runs of whole sentences of at most ``budget`` characters (a longer sentence alone), never
    cut inside a protected span."""
    if len(text) <= budget:
        return [text]
    spans = protected_spans(text)
    cuts = [m.start() for m in _SENTENCE_END.finditer(text) if not any(a < m.start() < b for a, b in spans)]
    runs, start, last = [], 0, 0
    for cut in [*cuts, len(text)]:
        if cut - start > budget and last > start:
            runs.append(text[start:last].strip())
            start = last
        last = cut
    runs.append(text[start:].strip())
    return [r for r in runs if r]
