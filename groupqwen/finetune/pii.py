"""Personal data: find it with checked patterns, replace it with placeholders consistent per conversation.

Detectors are regular expressions whose hits are validated where a checksum or a grammar exists (Luhn for
card numbers, mod-97 for IBANs, ``ipaddress`` for IPs, digit counts and date shapes for phone numbers). The
export owner's own name, e-mail and phone (from the export's user file) get their own placeholders; the name
is matched as a name (:mod:`groupqwen.finetune.names`), not as every word it is made of. When
Presidio and a spaCy model are installed, :class:`PresidioDetector` adds names and places (NER).

Overlapping hits are resolved by priority (a key beats an e-mail inside it, a card number beats a phone).
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Protocol

from groupqwen.finetune.names import NameMatcher
from groupqwen.finetune.records import Attachment, Conversation, Identity, Turn


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    kind: str  # EMAIL, PHONE, CREDIT_CARD, IBAN, IP_ADDRESS, API_KEY, ADDRESS, USER_NAME, USER_EMAIL …
    text: str


class Detector(Protocol):
    def find(self, text: str) -> list[Span]: ...


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(candidate: str) -> bool:
    s = candidate.replace(" ", "").upper()
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


_KEY_PATTERNS = [
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
    r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}",
    r"\bgh[pousr]_[A-Za-z0-9]{30,}",
    r"\bgithub_pat_[A-Za-z0-9_]{22,}",
    r"\bglpat-[A-Za-z0-9_-]{20,}",
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    r"\bAIza[0-9A-Za-z_-]{35}",
    r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
    r"\bhf_[A-Za-z0-9]{30,}",
    r"\b(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}",
    r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
]
_KEY_PREFIXES = (
    "sk-",
    "gh",
    "github_pat_",
    "glpat-",
    "AKIA",
    "ASIA",
    "AIza",
    "xox",
    "hf_",
    "_live_",
    "_test_",
    "eyJ",
    "-----BEGIN",
)
_SECRET_WORDS = ("key", "secret", "token", "passw", "pwd", "bearer")
_KEY = re.compile("|".join(f"(?:{p})" for p in _KEY_PATTERNS))
# The value after "api_key = ", "password: ", "Authorization: Bearer " …
_ASSIGNED_SECRET = re.compile(
    r"(?i:\b(?:[a-z0-9]{1,24}[_-]){0,4}(?:api[_-]?key|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token|"
    r"token|password|passwd|pwd)(?:[_-][a-z0-9]{1,24}){0,4}[\"']?\s*[:=]\s*[\"']?|\bbearer\s+)"
    r"([A-Za-z0-9._~+/=!@#$%^&*-]{8,})"
)  # a name may be part of a longer one: AWS_SECRET_ACCESS_KEY=…, client_secret: …, DB_PASSWORD=…; the parts
# are bounded, else a long run of "abc1-abc1-…" is quadratic (58 s for 100 kB)
# The password in a URL's user part: postgres://app:s3cret@db/…
_URL_PASSWORD = re.compile(r"\b[a-z][a-z0-9+.-]{0,30}://[^\s:/@]{1,128}:([^\s:/@]{3,256})@", re.IGNORECASE)
_DIGIT = re.compile(r"\d")
_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}\b")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_PHONE = re.compile(
    r"(?<![\w+-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?\d{2,5}(?:[ .-]\d{2,5}){1,4}(?![\w-]|\.\d)"
)
# A trunk prefix or a country code, an area code, then one long group: 030 12345678, +49 30 12345678
_PHONE_LONG = re.compile(r"(?<![\w+.#-])(?:\+\d{1,3}[ .-]?\d{1,4}|0\d{1,4})[ ./-]?\d{5,8}(?![\w-]|\.\d)")
_DATE_LIKE = re.compile(r"^\d{4}[-./]\d{1,2}[-./]\d{1,2}$|^\d{1,2}[-./]\d{1,2}[-./]\d{2,4}$")
_STREET = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|Terrace|Way|"
    r"Square|Sq|Parkway|Pkwy|Highway|Hwy)"
)
_DE_TOWN = r"(?:,\s+\d{5}\s+[A-ZÄÖÜ][a-zäöüß]+)?"  # a German address's ", 60311 Frankfurt"
_ADDRESS = re.compile(
    rf"\b\d{{1,5}}[A-Za-z]?\s+(?:[A-Z][a-z]+\.?\s+){{1,3}}{_STREET}\b\.?(?:\s+[NS]?[EW]\b|\s+[NS]\b)?"
    r"(?:,?\s+(?:Apt|Apartment|Suite|Unit|Flat)\.?\s*#?\w+)?"
    r"(?:,\s+[A-Z][a-z]+(?:\s[A-Z][a-z]+)?(?:,\s+[A-Z]{2})?\s+\d{5}(?:-\d{4})?)?"
    r"|\b[A-ZÄÖÜ][a-zäöüß]+(?:straße|strasse|str\.|weg|platz|gasse|allee|ring|damm)\s+\d{1,4}[a-z]?\b"
    rf"{_DE_TOWN}"
    # the name in words of their own: Berliner Straße 12, Am Alten Markt 3 is not taken (no street word)
    r"|\b[A-ZÄÖÜ][a-zäöüß]+\s+(?:Straße|Strasse|Str\.|Weg|Platz|Gasse|Allee|Ring|Damm)\s+\d{1,4}[a-z]?\b"
    rf"{_DE_TOWN}"
)  # a US street may end with its quarter (1600 Pennsylvania Avenue NW, Washington, DC 20500)

_PRIORITY = ["USER_EMAIL", "API_KEY", "EMAIL", "IBAN", "CREDIT_CARD", "USER_PHONE", "IP_ADDRESS", "PHONE"]


def _rank(kind: str) -> int:
    return _PRIORITY.index(kind) if kind in _PRIORITY else len(_PRIORITY)


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


class PatternDetector:
    """The built-in detectors, plus the export owner's identity."""

    def __init__(self, identity: Identity | None = None) -> None:
        identity = identity or Identity()
        self._user_emails = {e.lower() for e in identity.emails}
        self._user_phones = {_digits(p)[-9:] for p in identity.phones if len(_digits(p)) >= 7}
        self._names = NameMatcher(identity.names)

    def find(self, text: str) -> list[Span]:
        spans: list[Span] = []

        def add(kind: str, m: re.Match[str], group: int = 0) -> None:
            spans.append(Span(m.start(group), m.end(group), kind, m.group(group)))

        if any(prefix in text for prefix in _KEY_PREFIXES):  # the alternation is slow: look first
            for m in _KEY.finditer(text):
                add("API_KEY", m)
        lower = text.lower()
        for m in _ASSIGNED_SECRET.finditer(text) if any(w in lower for w in _SECRET_WORDS) else ():
            # "password: hunter2x" is a secret, "token: required" is not, nor "token_count = 12345678"
            value = m.group(1)
            if (not value.isalpha() or len(value) >= 16) and not value.isdigit():
                add("API_KEY", m, 1)
        if "://" in text:
            for m in _URL_PASSWORD.finditer(text):
                add("API_KEY", m, 1)
        if "@" in text:
            spans.extend(self._emails(text))
        if _DIGIT.search(text):
            spans.extend(self._numbers(text))
        if self._names:
            spans.extend(Span(s, e, "USER_NAME", text[s:e]) for s, e in self._names.find(text))
        return resolve(spans)

    def _emails(self, text: str) -> Iterator[Span]:
        for m in _EMAIL.finditer(text):
            kind = "USER_EMAIL" if m.group().lower() in self._user_emails else "EMAIL"
            yield Span(m.start(), m.end(), kind, m.group())

    def _numbers(self, text: str) -> list[Span]:
        spans: list[Span] = []

        def add(kind: str, m: re.Match[str]) -> None:
            spans.append(Span(m.start(), m.end(), kind, m.group()))

        not_phones: list[tuple[int, int]] = []  # IBAN-shaped text that fails its checksum
        for m in _IBAN.finditer(text):
            if iban_ok(m.group()):
                add("IBAN", m)
            else:
                not_phones.append(m.span())
        for m in _CARD.finditer(text):
            digits = _digits(m.group())
            if 13 <= len(digits) <= 19 and luhn_ok(digits) and len(set(digits)) > 1:
                add("CREDIT_CARD", m)
        for m in _IPV4.finditer(text):
            try:
                ip = ipaddress.IPv4Address(m.group())
            except ValueError:
                continue
            if not (ip.is_loopback or ip.is_unspecified) and not _version_before(text, m.start()):
                add("IP_ADDRESS", m)
        for m in _IPV6.finditer(text):
            if m.group().count(":") >= 2 and any(c.isalnum() for c in m.group()):
                try:
                    ip6 = ipaddress.IPv6Address(m.group())
                except ValueError:
                    continue
                if not (ip6.is_loopback or ip6.is_unspecified):
                    add("IP_ADDRESS", m)
        for m in itertools.chain(_PHONE.finditer(text), _PHONE_LONG.finditer(text)):
            inside = any(s <= m.start() < e for s, e in not_phones)
            if self._phone_like(m.group()) and not inside and not _after_digits(text, m.start()):
                tail = _digits(m.group())[-9:]
                add("USER_PHONE" if tail in self._user_phones else "PHONE", m)
        for m in _ADDRESS.finditer(text):
            add("ADDRESS", m)
        return spans

    @staticmethod
    def _phone_like(candidate: str) -> bool:
        digits = _digits(candidate)
        if not 7 <= len(digits) <= 15 or _DATE_LIKE.match(candidate):
            return False
        if candidate.startswith("+") or "(" in candidate:
            return True
        groups = re.split(r"[ .-]", candidate)
        if "." in candidate and (len(groups) < 3 or (len(groups) == 4 and all(len(g) <= 3 for g in groups))):
            return False  # a decimal number, a dotted quad
        # national formats: 555-123-4567, 030 1234 5678, 06 12 34 56 78 — not "2 300 000" or "10 000"
        return len(digits) >= 9 and len(groups[0]) >= 2 and not all(len(g) == 3 for g in groups[1:])


def _after_digits(text: str, start: int) -> bool:
    """Is the candidate the tail of a longer code ("1Z 999 AA1 01 2345 6784")?"""
    return bool(re.search(r"\w*\d\w*[ -]$", text[max(0, start - 20) : start]))


def _version_before(text: str, start: int) -> bool:
    before = text[max(0, start - 9) : start].lower()
    return before.endswith(("v", "version ", "version: "))


def resolve(spans: Sequence[Span]) -> list[Span]:
    """Non-overlapping spans: by priority of kind, then longer first; returned in text order."""
    chosen: list[Span] = []
    for span in sorted(spans, key=lambda s: (_rank(s.kind), -(s.end - s.start), s.start)):
        if all(span.end <= c.start or span.start >= c.end for c in chosen):
            chosen.append(span)
    return sorted(chosen, key=lambda s: s.start)


class PresidioDetector:
    """Names and places from Presidio's NER; only when ``presidio_analyzer`` and a spaCy model load."""

    KINDS: ClassVar[dict[str, str]] = {"PERSON": "PERSON", "LOCATION": "LOCATION"}

    def __init__(self) -> None:
        try:
            from presidio_analyzer import AnalyzerEngine  # type: ignore[import-not-found, unused-ignore]

            self._engine: Any = AnalyzerEngine()
        except Exception as exc:  # ImportError, or OSError when no spaCy model is installed
            raise RuntimeError(f"Presidio NER is not available here: {exc}") from None

    def find(self, text: str) -> list[Span]:
        results = self._engine.analyze(text=text, entities=list(self.KINDS), language="en")
        return [Span(r.start, r.end, self.KINDS[r.entity_type], text[r.start : r.end]) for r in results]


class Scrubber:
    """Replaces PII in one conversation at a time: the same value gets the same placeholder throughout."""

    def __init__(self, detectors: Sequence[Detector]) -> None:
        self._detectors = detectors
        self.counts: Counter[str] = Counter()

    def scrub(self, conv: Conversation) -> Conversation:
        names: dict[tuple[str, str], str] = {}
        per_kind: Counter[str] = Counter()

        def placeholder(span: Span) -> str:
            self.counts[span.kind] += 1
            if span.kind.startswith("USER_"):
                return f"[{span.kind}]"
            key = (span.kind, _normal(span))
            if key not in names:
                per_kind[span.kind] += 1
                names[key] = f"[{span.kind}_{per_kind[span.kind]}]"
            return names[key]

        def clean(text: str) -> str:
            if not text:
                return text
            spans = resolve([s for d in self._detectors for s in d.find(text)])
            return _replace(text, spans, placeholder)

        def turn(t: Turn) -> Turn:
            return replace(
                t,
                content=clean(t.content),
                reasoning=clean(t.reasoning),
                attachments=tuple(Attachment(clean(a.name), clean(a.content)) for a in t.attachments),
            )

        return replace(conv, title=clean(conv.title), turns=tuple(turn(t) for t in conv.turns))


def _normal(span: Span) -> str:
    if span.kind in ("PHONE", "CREDIT_CARD"):
        return _digits(span.text)
    if span.kind == "IBAN":
        return span.text.replace(" ", "").upper()
    return span.text.lower() if span.kind == "EMAIL" else span.text


def _replace(text: str, spans: Sequence[Span], placeholder: Callable[[Span], str]) -> str:
    out: list[str] = []
    at = 0
    for span in spans:
        out.append(text[at : span.start])
        out.append(placeholder(span))
        at = span.end
    out.append(text[at:])
    return "".join(out)
