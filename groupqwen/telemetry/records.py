"""``RequestRecord`` (one finished chat completion, numbers only) and the JSON summary over a window.

Percentiles are nearest-rank (the smallest value with at least p% of the values at or below it), so they
are always a value that was observed. Latency and TTFT percentiles cover successful requests (status <
400); error rate counts every status ≥ 400 (client disconnects, 499, included). Cache hits never enter the
decode speed (nothing was generated): the ``cache`` part reports them apart, with the completion tokens
they served and their latency.
"""

from __future__ import annotations

import math
import operator
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import fields
from typing import Any

from groupqwen.errors import InvalidRequest
from groupqwen.messages import value

PERCENTILES = (50, 95, 99)
CACHE_RESULTS = ("hit", "miss", "bypass")


@value
class RequestRecord:
    id: str  # unique per record (the primary key; makes retried batch writes idempotent)
    request_id: str
    started_at: float  # wall-clock seconds
    tenant: str
    model: str
    route: str
    stream: bool
    escalations: int
    cache: str
    status: int
    error: str | None
    queue_wait_s: float | None
    ttft_s: float | None
    latency_s: float
    prompt_tokens: int
    completion_tokens: int
    tokens_per_s: float | None
    transport: str = "http"  # how the client asked: http (JSON or SSE) | ws (a WebSocket generation)

    @property
    def ok(self) -> bool:
        return self.status < 400

    @property
    def hit(self) -> bool:
        """Answered from the cache: nothing was generated, so it has no decode speed (records stored
        before hits were told apart kept one; the summary ignores it)."""
        return self.cache == "hit"

    @property
    def finished_at(self) -> float:
        return self.started_at + self.latency_s

    def size_bytes(self) -> int:
        """Memory this record holds (the object, its strings and numbers; ``None``, booleans and the empty
        string are shared), plus a container's slot: an estimate that errs on the high side (a string
        shared with other records, such as a model id, is counted for each, and every number as an int's
        28 bytes, a float's being 24 and a small int shared)."""
        numbers = len(_NUMBER_FIELDS) - _NUMBERS(self).count(None)
        return _OWN_BYTES + sum(map(sys.getsizeof, filter(None, _TEXTS(self)))) + _NUMBER_BYTES * numbers


# a record's fields by what they hold, for ``size_bytes`` (read together: one call for each kind)
_TEXT_FIELDS = ("id", "request_id", "tenant", "model", "route", "cache", "error", "transport")
_NUMBER_FIELDS = (
    "started_at",
    "escalations",
    "status",
    "queue_wait_s",
    "ttft_s",
    "latency_s",
    "prompt_tokens",
    "completion_tokens",
    "tokens_per_s",
)
_TEXTS, _NUMBERS = operator.attrgetter(*_TEXT_FIELDS), operator.attrgetter(*_NUMBER_FIELDS)
_NUMBER_BYTES = sys.getsizeof(2**20)
_OWN_BYTES = 8 + sys.getsizeof(
    RequestRecord("", "", 0.0, "", "", "", False, 0, "", 0, None, None, None, 0.0, 0, 0, None)
)
if {f.name for f in fields(RequestRecord)} != {*_TEXT_FIELDS, *_NUMBER_FIELDS, "stream"}:
    raise RuntimeError("telemetry/records.py: size_bytes does not know every field of RequestRecord")


_WINDOW = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)?$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_window(text: str, *, maximum: float, param: str = "window") -> float:
    """``"90"``, ``"90s"``, ``"5m"``, ``"1h"``, ``"7d"`` → seconds; anything else: a 400 naming ``param``."""
    match = _WINDOW.match(text.strip())
    if match is None:
        raise InvalidRequest(
            f"Invalid value for '{param}': {text!r} is not a duration like 90s, 5m, 1h or 7d", param=param
        )
    seconds = float(match.group(1)) * _UNIT[match.group(2) or "s"]
    if not 0 < seconds <= maximum:
        raise InvalidRequest(
            f"Invalid value for '{param}': {text!r} must be more than 0 and at most {maximum:g} seconds",
            param=param,
        )
    return seconds


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of already sorted values; ``None`` for no values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _percentiles(values: Iterable[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    return {f"p{p}": percentile(ordered, p) for p in PERCENTILES}


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _group(records: Sequence[RequestRecord], total: int) -> dict[str, Any]:
    ok = [r for r in records if r.ok]
    speeds = [r.tokens_per_s for r in ok if r.tokens_per_s is not None and not r.hit]
    prompt = sum(r.prompt_tokens for r in records)
    completion = sum(r.completion_tokens for r in records)
    errors = len(records) - len(ok)
    return {
        "requests": len(records),
        "errors": errors,
        "error_rate": _ratio(errors, len(records)),
        "share": _ratio(len(records), total),
        "latency_seconds": _percentiles(r.latency_s for r in ok),
        "ttft_seconds": _percentiles(r.ttft_s for r in ok if r.ttft_s is not None),
        "queue_wait_seconds": _percentiles(r.queue_wait_s for r in ok if r.queue_wait_s is not None),
        "tokens": {"prompt": prompt, "completion": completion, "total": prompt + completion},
        "tokens_per_second_mean": sum(speeds) / len(speeds) if speeds else None,
    }


def summarize(records: Sequence[RequestRecord], *, window_s: float, until: float) -> dict[str, Any]:
    """The JSON summary of the records that finished in ``(until - window_s, until]``."""
    since = until - window_s
    chosen = [r for r in records if since < r.finished_at <= until]
    total = len(chosen)
    cache = {result: sum(1 for r in chosen if r.cache == result) for result in CACHE_RESULTS}
    looked_up = cache["hit"] + cache["miss"]
    escalated = sum(1 for r in chosen if r.escalations > 0)
    statuses: dict[str, int] = {}
    for r in chosen:
        statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
    hits = [r for r in chosen if r.hit and r.ok]
    overall = _group(chosen, total)
    del overall["share"]
    return {
        "window_seconds": window_s,
        "since": since,
        "until": until,
        **overall,
        "status": dict(sorted(statuses.items())),
        "cache": {
            **cache,
            "hit_rate": _ratio(cache["hit"], looked_up),
            "served_tokens": sum(r.completion_tokens for r in hits),
            "hit_latency_seconds": _percentiles(r.latency_s for r in hits),
        },
        "escalations": sum(r.escalations for r in chosen),
        "escalation_rate": _ratio(escalated, total),
        "by_model": {
            model: _group([r for r in chosen if r.model == model], total)
            for model in sorted({r.model for r in chosen})
        },
        "by_route": {
            route: _group([r for r in chosen if r.route == route], total)
            for route in sorted({r.route for r in chosen})
        },
        "by_transport": {
            transport: _group([r for r in chosen if r.transport == transport], total)
            for transport in sorted({r.transport for r in chosen})
        },
    }
