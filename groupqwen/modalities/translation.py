"""Translation with Qwen-MT's ``translation_options`` on a model that does not take them itself: the
options are compiled into its prompt, and the document's format is kept by construction.

1. The text (the request's one user turn) is cut into pieces (``segments.split``): only prose is
   translated, one block (paragraph, heading, list item, table cell) at a time, a block longer than the
   budget (from the model's context) in runs of sentences. Code, markup and layout are copied.
2. Each piece is translated with a prompt built from the options: the languages (``auto``: read from the
   whole text by ``langid``), ``domains``, the ``terms`` that occur in the piece, the ``tm_list`` entries
   closest to it as examples (an exact match is used as it is, without the model).
3. The answer is checked (``segments.accepts``: every protected span kept, no new block; and every term
   held, ``terms``). Terms are enforced: a term the model left in the source language is replaced by its
   target (substituted); any miss is retried once with the problem named; terms still missed after that
   are written in the target language into the text itself and it is asked once more (pinned), the
   answer that keeps the format and holds the most terms kept. A piece that still loses a protected span
   is translated piece by piece between its spans (terms enforced the same way), and failing that kept as
   it was.
4. Pieces are yielded in order as they are done; the last chunk carries the summed usage, and
   ``report()`` says how it went (``messages.TranslationReport``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass

from groupqwen.messages import Chunk, Message, Term, TranslationOptions, TranslationReport, Usage
from groupqwen.modalities import langid, languages
from groupqwen.modalities.segments import (
    Piece,
    accepts,
    gaps,
    has_prose,
    protected_spans,
    split,
    wrapped,
)
from groupqwen.modalities.terms import applying, missing, substitute

MAX_EXAMPLES = 3  # tm_list entries shown to the model for one piece
MAX_GROWTH = 4  # a translation longer than this many times its text (plus a little) is no translation


STAGES = ("prompt", "retry", "pinned")  # the generations of one piece, in order (see ``_enforced``)
HELD_BY = (*STAGES, "substituted")  # how a term came to be held


@dataclass(frozen=True)
class Attempt:
    """One answer for a text: ``text`` (a term left in the source language already substituted), the
    ``stage`` that generated it, the terms the model's own answer ``missed``, and what is wrong with it
    (``problem``: ``None`` when its format is kept)."""

    text: str
    stage: str
    missed: frozenset[Term]
    problem: str | None

    def better_than(self, other: Attempt, terms: list[Term]) -> bool:
        """Kept format first, then more terms held; the earlier answer on a tie."""
        mine, theirs = len(missing(self.text, terms)), len(missing(other.text, terms))
        return (self.problem is None, -mine) > (other.problem is None, -theirs)

    def tally(self, terms: list[Term]) -> Counter[str]:
        """``terms`` counted as expected, and each one held by the stage or the substitution that put it
        in ``text``."""
        tally: Counter[str] = Counter(expected=len(terms))
        for term in terms:
            if term in missing(self.text, [term]):
                continue
            tally["substituted" if term in self.missed else self.stage] += 1
        return tally


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
        # prose already translated in this text (repeated table cells…); None: no translation kept its format
        self._done: dict[str, str | None] = {}
        self._prompt, self._completion = 0, 0
        self._pieces = self._retried = self._piecewise = self._untranslated = 0
        self._tally: Counter[str] = Counter()  # terms expected, and held by each stage

    def report(self) -> TranslationReport:
        return TranslationReport(
            self._source,
            self._pieces,
            self._retried,
            self._piecewise,
            self._untranslated,
            self._tally["expected"],
            sum(self._tally[stage] for stage in HELD_BY),
            tuple((stage, self._tally[stage]) for stage in HELD_BY),
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
        """``piece``'s translation, wrapped over lines as the piece is (``segments.wrapped``), or its own
        text when none kept the format."""
        self._pieces += 1
        if piece.source not in self._done:
            parts = _runs(piece.source, self._budget)
            out = [await self._translated(Piece(part, part, piece.cell)) for part in parts]
            if any(o is None for o in out):
                self._untranslated += 1
            self._done[piece.source] = None if None in out else " ".join(o for o in out if o is not None)
        result = self._done[piece.source]
        return piece.text if result is None else wrapped(piece, result)

    async def _translated(self, piece: Piece) -> str | None:
        """``piece``'s translation that keeps its format, or ``None`` when none could be had."""
        remembered = self._remembered(piece.source)
        if remembered is not None and accepts(piece, remembered) is None:
            return remembered
        terms = self._terms(piece.source)
        if "\n" in piece.source:  # an HTML block: its text between the tags, its layout kept
            return await self._piecewise_translation(piece, terms)
        best = await self._enforced(piece.source, terms, lambda answer: accepts(piece, answer))
        if _rambles(piece.source, best.text):
            return self._lost(terms)
        if best.problem is None:
            return self._counted(best.text, best.tally(terms))
        return await self._piecewise_translation(piece, terms)

    async def _piecewise_translation(self, piece: Piece, terms: list[Term]) -> str | None:
        """``piece`` translated between its protected spans (``_by_parts``), if that keeps its format."""
        self._piecewise += 1
        answer, tally = await self._by_parts(piece.source, terms)
        return self._counted(answer, tally) if accepts(piece, answer) is None else self._lost(terms)

    async def _enforced(self, text: str, terms: list[Term], check: Callable[[str], str | None]) -> Attempt:
        """The best translation of ``text`` (``check`` says what is wrong with one): asked once, retried
        once with the problem named, and when only terms are still missing asked a third time with those
        terms already written in the target language in the text (pinned). In every answer a term left
        in the source language is replaced by its target (substituted)."""
        best: Attempt | None = None
        problem: str | None = None
        for stage in STAGES:
            asked = text
            if stage == "pinned":
                assert best is not None
                lost = missing(best.text, terms)
                if best.problem is not None or not lost:
                    break
                asked = substitute(text, lost, self._options.target)
                problem = _pinned(lost)
            elif stage == "retry":
                self._retried += 1
            raw = await self._ask(asked, terms, problem)
            missed = missing(raw, terms)
            fixed = substitute(raw, missed, self._options.target)
            attempt = Attempt(fixed, stage, frozenset(missed), check(fixed) or _rambles(text, fixed))
            best = attempt if best is None or attempt.better_than(best, terms) else best
            if attempt.problem is None and not missing(fixed, terms):
                break
            problem = attempt.problem or _missed(fixed, terms)
        assert best is not None
        return best

    def _counted(self, answer: str, tally: Counter[str]) -> str:
        self._tally.update(tally)
        return answer

    def _lost(self, terms: list[Term]) -> str | None:
        """No translation of a piece kept its format (``None``: it stays as it was); its terms count as
        missed."""
        self._tally["expected"] += len(terms)
        return None

    async def _by_parts(self, source: str, terms: list[Term]) -> tuple[str, Counter[str]]:
        """``source`` translated between its protected spans, which are copied; how its terms held."""
        out = []
        tally: Counter[str] = Counter()
        for part, kept in gaps(source):
            if kept or not has_prose(part):
                out.append(part)
                continue
            lead, core, trail = _strip(part)
            relevant = applying(terms, core)
            best = await self._enforced(core, relevant, lambda _: None)
            if _rambles(core, best.text):
                out.append(part)
                tally["expected"] += len(relevant)
            else:
                out.append(lead + best.text + trail)
                tally.update(best.tally(relevant))
        return "".join(out), tally

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


def _pinned(terms: list[Term]) -> str:
    return "these terms are already written in the target language in the text: keep them as they are: " + (
        "; ".join(t.target for t in terms)
    )


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
