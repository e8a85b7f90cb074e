"""Qwen-MT's ``translation_options`` on a chat request (→ ``messages.TranslationOptions``): ``source_lang``
(or ``auto``), ``target_lang``, ``terms`` and ``tm_list`` ([{source, target}]), ``domains`` (a text that
describes the domain and style). Languages are read from the table of the 92 Qwen-MT supports
(``modalities.languages``: names, codes and aliases); anything else is a 400 that lists them."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from groupqwen.api.schemas import Wire
from groupqwen.errors import InvalidRequest, UnsupportedParameter
from groupqwen.messages import ChatRequest, Term, TranslationOptions, TranslationReport
from groupqwen.modalities import languages

PARAM = "translation_options"
MAX_TERMS = 1000  # terms and tm_list entries, each
MAX_PAIR_CHARS = 2000  # one side of a pair
MAX_DOMAINS_CHARS = 2000


class TranslationPair(Wire):
    model_config = ConfigDict(extra="forbid", strict=True)
    source: str = Field(min_length=1, max_length=MAX_PAIR_CHARS)
    target: str = Field(min_length=1, max_length=MAX_PAIR_CHARS)


class TranslationOptionsIn(Wire):
    model_config = ConfigDict(extra="forbid", strict=True)
    source_lang: str = Field("auto", min_length=1, max_length=64)
    target_lang: str = Field(min_length=1, max_length=64)
    terms: list[TranslationPair] | None = Field(None, max_length=MAX_TERMS)
    tm_list: list[TranslationPair] | None = Field(None, max_length=MAX_TERMS)
    domains: str | None = Field(None, max_length=MAX_DOMAINS_CHARS)


def _language(value: str, field: str) -> str:
    found = languages.find(value)
    if found is None:
        raise UnsupportedParameter(
            f"{PARAM}.{field} is {value[:64]!r}, which is not a language Qwen-MT translates. Name one of "
            f"these (its name or code): {languages.supported()}"
            + ("; or 'auto' to detect it" if field == "source_lang" else ""),
            param=f"{PARAM}.{field}",
        )
    return found.name


def options_of(wire: TranslationOptionsIn | None) -> TranslationOptions | None:
    """The options of a request's ``translation_options`` (``None`` when it has none), their languages
    read from the table; an unknown language is a 400 naming the field."""
    if wire is None:
        return None
    source = (
        "auto" if wire.source_lang.strip().lower() == "auto" else _language(wire.source_lang, "source_lang")
    )
    target = _language(wire.target_lang, "target_lang")
    if source == target:
        raise UnsupportedParameter(
            f"{PARAM}: source_lang and target_lang are both {target}: name two different languages, or "
            "source_lang 'auto'",
            param=f"{PARAM}.target_lang",
        )
    return TranslationOptions(
        target=target,
        source=source,
        terms=tuple(Term(p.source, p.target) for p in wire.terms or ()),
        memory=tuple(Term(p.source, p.target) for p in wire.tm_list or ()),
        domains=wire.domains or None,
    )


def check_translation(
    chat: ChatRequest, *, turns: str = "messages", system: str = "a system message"
) -> None:
    """What a translation request may carry, as Qwen-MT's API defines it: one user message (the text to
    translate; ``turns`` names the request's field for them, ``system`` what makes a system turn), no
    tools, images, JSON format or log-probabilities."""
    if chat.translation is None:
        return
    roles = [m.role for m in chat.messages]
    if roles != ["user"]:
        raise InvalidRequest(
            f"{PARAM}: {turns} must be a single user message holding the text to translate (as Qwen-MT "
            f"takes it), without {system} or earlier turns; this request has {', '.join(roles)}",
            param=turns,
        )
    refused = {
        "tools": chat.tools is not None,
        "image_url": bool(chat.images),
        "response_format": chat.response_format is not None,
        "logprobs": chat.logprobs,
    }
    for name, present in refused.items():
        if present:
            raise UnsupportedParameter(
                f"'{name}' cannot be combined with {PARAM}: a translation answers with the translated "
                "text only",
                param=name,
            )


def translation_json(report: TranslationReport) -> dict[str, object]:
    """How an in-process translation went, in the ``groupqwen`` object: the source language read for
    ``auto``, the pieces of prose, those retried, translated between their protected spans or left as they
    were, and the terms that applied and held (``terms_hit_rate``: ``null`` when none applied), and how
    each held (``terms_held_by``: the first prompt, the retry, the pinned attempt, the substitution)."""
    rate = report.terms_held / report.terms_expected if report.terms_expected else None
    return {
        "source_lang": report.source,
        "pieces": report.pieces,
        "retried": report.retried,
        "piecewise": report.piecewise,
        "untranslated": report.untranslated,
        "terms_expected": report.terms_expected,
        "terms_held": report.terms_held,
        "terms_hit_rate": None if rate is None else round(rate, 4),
        "terms_held_by": dict(report.terms_held_by),
    }
