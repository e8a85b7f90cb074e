"""What the router knows about a request: measures of its text and its number of images (no I/O but the
language-ID model's one load, ``modalities.langid``).

``extract`` reads a ``ChatRequest`` into ``Features``; ``vector`` turns them into the classifier's input:
a few dense, human-readable measures (their names in ``DENSE``) followed by hashed word unigrams and
bigrams of the latest user turn (``zlib.crc32``, stable across processes and machines).
"""

from __future__ import annotations

import itertools
import math
import re
import unicodedata
import zlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from groupqwen.messages import ChatRequest
from groupqwen.modalities import langid

HASH_BUCKETS = 256

_CODE = re.compile(
    r"```|\bdef |\bclass |\bfunction\b|\breturn\b|;\s*$|[{}]|\bimport\b|\bSELECT\b|\bpython\b|\bjavascript\b"
    r"|\bjava\b|\brust\b|\bsql\b|\bregex\b|\bcode\b|\bbug\b|\bcompile|\bapi\b|\bscript\b|\balgorithm",
    re.IGNORECASE | re.MULTILINE,
)
_MATH = re.compile(
    r"\d\s*[-+*/^×÷=]\s*\d|\bsolve\b|\bequation|\bintegral|\bderivative|\bprove\b|\bproof\b|\btheorem"
    r"|\bprobability|\bsum of\b|\bproduct of\b|\bpercent|\bcalculate|\bcompute|\bhow many\b|\bsqrt|√|∑|∫",
    re.IGNORECASE,
)
_REASONING = re.compile(
    r"\bwhy\b|\bstep[- ]by[- ]step\b|\bexplain\b|\breason|\bcompare\b|\banaly[sz]e|\btrade-?offs?\b"
    r"|\bpros and cons\b|\bdesign\b|\bplan\b|\bevaluate\b|\bpuzzle|\blogic|\bdeduce|\bif\b.*\bthen\b"
    r"|\bwhat would happen\b|\bimplications?\b|\boptimi[sz]e",
    re.IGNORECASE,
)
_LONG_OUTPUT = re.compile(
    r"\b(essay|article|report|story|detailed|in detail|thorough|comprehensive|\d{3,} words|pages?)\b",
    re.IGNORECASE,
)
_TRANSLATE = re.compile(
    r"\b(?:translate|translation of|übersetze|traduis|traduce|traduzir)\b.*?\b(?:to|into|in|en|auf|nach)\s+"
    r"([A-Za-zÀ-ÿ]+)",
    re.IGNORECASE | re.DOTALL,
)
_INTEGER = re.compile(r"(?<![\d.])\d{1,18}(?![\d.])")
_WORD = re.compile(r"[^\W_]+|\d+|[-+*/=^<>{}()\[\]#`]", re.UNICODE)

DENSE = (
    "bias_one",
    "log_user_chars",
    "log_words",
    "turns",
    "has_system",
    "code_markers",
    "math_markers",
    "reasoning_markers",
    "numbers",
    "operators",
    "questions",
    "lines",
    "list_items",
    "long_output_markers",
    "log_max_tokens",
    "json_output",
    "non_english",
    "single_operation",
    "multi_step",
    "operand_digits",
    "one_digit_operands",
    "round_operands",
)


@dataclass(frozen=True)
class Features:
    """The measures of one request; ``words`` are the latest user turn's lowercased words."""

    chars: int
    words: tuple[str, ...]
    user_chars: int  # of the latest user turn (a fixed system prompt says little about difficulty)
    est_prompt_tokens: int
    turns: int
    has_system: bool
    code_markers: int
    math_markers: int
    reasoning_markers: int
    numbers: int
    operators: int
    questions: int
    lines: int
    list_items: int
    long_output_markers: int
    max_tokens: int | None
    json_output: bool
    json_schema: bool
    script: str  # "latin", "cyrillic", "cjk", "arabic", … of the latest user turn
    non_english: bool
    translate_to: str | None  # an explicit translation request's target language
    operands: tuple[int, ...] = ()  # the integers of the latest user turn (at most 12)
    images: int = 0  # image parts in the whole conversation (they need a model that takes images)


def _script(text: str) -> str:
    counts: dict[str, int] = {}
    for char in text:
        if char.isalpha():
            name = unicodedata.name(char, "")
            script = "latin" if "LATIN" in name else name.split(" ")[0].lower() if name else "other"
            if script in ("cjk", "hiragana", "katakana", "hangul"):
                script = "cjk"
            counts[script] = counts.get(script, 0) + 1
    return max(counts, key=lambda k: counts[k]) if counts else "latin"


def extract(request: ChatRequest) -> Features:
    last_user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
    everything = "\n".join(m.content for m in request.messages)
    words = tuple(w.lower() for w in _WORD.findall(last_user))
    script = _script(last_user)
    translate = _TRANSLATE.search(last_user)
    fmt = request.response_format
    return Features(
        chars=len(everything),
        words=words,
        user_chars=len(last_user),
        est_prompt_tokens=len(everything) // 3 + 8 * len(request.messages),
        turns=sum(m.role == "user" for m in request.messages),
        has_system=any(m.role == "system" for m in request.messages),
        code_markers=len(_CODE.findall(last_user)),
        math_markers=len(_MATH.findall(last_user)),
        reasoning_markers=len(_REASONING.findall(last_user)),
        numbers=len(re.findall(r"\d+(?:\.\d+)?", last_user)),
        operators=len(re.findall(r"(?<=[\d\s])[-+*/^×÷](?=[\d\s(])", last_user)),
        questions=last_user.count("?"),
        lines=last_user.count("\n") + 1,
        list_items=len(re.findall(r"^\s*(?:[-*•]|\d+[.)])\s", last_user, re.MULTILINE)),
        long_output_markers=len(_LONG_OUTPUT.findall(last_user)),
        max_tokens=request.sampling.max_tokens,
        json_output=fmt is not None,
        json_schema=fmt is not None and fmt.schema is not None,
        script=script,
        non_english=not langid.detect(last_user).english,
        translate_to=translate.group(1).lower() if translate else None,
        operands=tuple(int(n) for n in _INTEGER.findall(last_user)[:12]),
        images=len(request.images),
    )


def _arithmetic(f: Features) -> list[float]:
    """How hard a bare calculation is: one operation or several, operand size, round numbers. (A small
    model fails most calculations; a larger one gets one operation on small or round operands right and
    multi-step ones wrong, so these tell where escalating pays.)"""
    if not f.operands or not f.operators:
        return [0.0, 0.0, 0.0, 0.0, 0.0]
    digits = [len(str(n)) for n in f.operands]
    multi = [n for n in f.operands if n >= 10]
    return [
        float(f.operators == 1 and len(f.operands) == 2),
        float(f.operators >= 2),
        float(min(max(digits), 6)),
        float(max(digits) == 1),
        sum(n % 10 == 0 for n in multi) / len(multi) if multi else 0.0,
    ]


def _bucket(token: str) -> int:
    return zlib.crc32(token.encode("utf-8")) % HASH_BUCKETS


def vector(features: Features) -> npt.NDArray[np.float64]:
    """``DENSE`` measures, then ``HASH_BUCKETS`` hashed unigram/bigram counts (log-scaled)."""
    f = features
    dense = [
        1.0,
        math.log1p(f.user_chars),
        math.log1p(len(f.words)),
        min(f.turns, 10) / 5.0,
        float(f.has_system),
        math.log1p(f.code_markers),
        math.log1p(f.math_markers),
        math.log1p(f.reasoning_markers),
        math.log1p(f.numbers),
        math.log1p(f.operators),
        math.log1p(f.questions),
        math.log1p(f.lines - 1),
        math.log1p(f.list_items),
        math.log1p(f.long_output_markers),
        math.log1p(f.max_tokens) / 5.0 if f.max_tokens is not None else 1.0,
        float(f.json_output) + float(f.json_schema),
        float(f.non_english),
        *_arithmetic(f),
    ]
    hashed = np.zeros(HASH_BUCKETS)
    words = f.words
    for token in (*words, *(f"{a} {b}" for a, b in itertools.pairwise(words))):
        hashed[_bucket("#" if token.isdigit() else token)] += 1.0
    return np.concatenate([np.asarray(dense), np.log1p(hashed)])


def size() -> int:
    return len(DENSE) + HASH_BUCKETS
