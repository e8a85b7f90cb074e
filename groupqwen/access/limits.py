"""``RateLimiter``: requests and tokens per minute and concurrent requests, per API key and per tenant
(``limits:``), as token buckets (``buckets.py``) in memory or in Redis.

A limited route asks ``admit(principal, tokens)`` once it has parsed the body: every bucket of the key and
of its tenant takes its share (one request; ``tokens``, the estimate, reserved), and a slot of each
concurrency limit is held — all of it or nothing. Refused, it raises ``RateLimited`` (429) with
``Retry-After`` and OpenAI's ``x-ratelimit-*`` headers; admitted, it returns an ``Admission`` whose
``headers`` go on the response and whose ``settle(used)`` (called once the answer ended, however it
ended) gives back the reservation's unused part, or takes the excess, and frees the slots.

Requests without a key (``auth: off``: ``ANONYMOUS``) are limited only with ``limits.anonymous``. With the
counts in Redis, a failed call opens a breaker for ``redis_retry_after_s``; meanwhile limited requests
pass unlimited (``on_redis_down: open``) or get a 503 (``closed``), and health says ``degraded``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from redis.exceptions import RedisError

from groupqwen import log
from groupqwen.access.buckets import Bucket, BucketStore, MemoryBuckets, RedisBuckets, Slots, Taken
from groupqwen.access.principal import Principal
from groupqwen.clock import SYSTEM_CLOCK, Clock
from groupqwen.config import LimitsConfig, RatesConfig
from groupqwen.errors import LimitsUnavailable, RateLimited
from groupqwen.messages import ChatRequest

_log = log.get(__name__)
T = TypeVar("T")
Kind = Literal["requests", "tokens"]


def duration(seconds: float) -> str:
    """A wait as OpenAI's ``x-ratelimit-reset-*`` headers write it (Go's durations): ``12ms``, ``1.5s``,
    ``6m0s``, ``1h2m3s``."""
    ms = max(0, math.ceil(seconds * 1000))
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def estimate_tokens(request: ChatRequest) -> int:
    """What a chat request is reserved in tokens before it runs: its text at ~4 characters a token, a few
    tokens a message for the template, each image at a vision model's typical cost, plus ``max_tokens``
    when sent (without it the completion is counted when the answer settles)."""
    chars = sum(len(m.content) for m in request.messages)
    images = sum(len(m.images) for m in request.messages)
    return (
        math.ceil(chars / 4) + 4 * len(request.messages) + 256 * images + (request.sampling.max_tokens or 0)
    )


@dataclass(frozen=True)
class _Limited:
    """One owner's limits (a key's, or its tenant's): its bucket names and whose they are, in words."""

    name: str  # "key:<id>" or "tenant:<name>"
    whose: str
    rates: RatesConfig


@dataclass
class Admission:
    """An admitted request: ``headers`` for its response; ``settle(used)`` once it ended."""

    headers: dict[str, str]
    _settle: Callable[[int], None] | None = None

    def settle(self, used_tokens: int) -> None:
        """Give back what was reserved beyond ``used_tokens`` (take the excess) and free the slots; once."""
        settle, self._settle = self._settle, None
        if settle is not None:
            settle(used_tokens)


UNLIMITED = Admission({})


class _StoreDown(Exception):
    pass


class RateLimiter:
    def __init__(self, config: LimitsConfig, store: BucketStore, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.config = config
        self.store = store
        self.shared = not isinstance(store, MemoryBuckets)
        self._clock = clock
        self._down_until = 0.0  # on clock.monotonic(); Redis is not asked before then
        self._down_reason = ""
        self._pending: set[asyncio.Task[None]] = set()
        self.failures = 0  # store calls that failed

    @classmethod
    def from_config(cls, config: LimitsConfig, *, clock: Clock = SYSTEM_CLOCK) -> RateLimiter:
        store: BucketStore = MemoryBuckets()
        if config.redis_url:
            store = RedisBuckets(
                config.redis_url, prefix=config.redis_prefix, timeout_s=config.redis_timeout_s
            )
        return cls(config, store, clock=clock)

    def _owners(self, principal: Principal) -> list[_Limited]:
        if principal.key_id is None and not self.config.anonymous:
            return []
        own = principal.limits
        default = self.config.key
        key = RatesConfig(
            requests_per_minute=own.requests_per_minute or default.requests_per_minute,
            tokens_per_minute=own.tokens_per_minute or default.tokens_per_minute,
            concurrent_requests=own.concurrent_requests or default.concurrent_requests,
        )
        if principal.key_id is None:
            owners = [_Limited("anonymous", "requests without a key", key)]
        else:
            owners = [_Limited(f"key:{principal.key_id}", f"key {principal.name!r}", key)]
        if principal.tenant:
            tenant = self.config.tenants.get(principal.tenant, self.config.tenant)
            owners.append(_Limited(f"tenant:{principal.tenant}", f"tenant {principal.tenant!r}", tenant))
        return owners

    async def admit(self, principal: Principal, tokens: int) -> Admission:
        """Take one request and ``tokens`` (reserved) from the principal's buckets and a slot of each of its
        concurrency limits, or raise ``RateLimited``; ``LimitsUnavailable`` while Redis is down with
        ``on_redis_down: closed``."""
        owners = self._owners(principal)
        buckets: list[tuple[Kind, _Limited, Bucket]] = []
        slots: list[tuple[_Limited, Slots]] = []
        for owner in owners:
            rpm, tpm = owner.rates.requests_per_minute, owner.rates.tokens_per_minute
            if rpm is not None:
                buckets.append(("requests", owner, Bucket(f"{owner.name}:requests", rpm, 1)))
            if tpm is not None:  # a request larger than the bucket would wait forever: it takes it whole
                buckets.append(("tokens", owner, Bucket(f"{owner.name}:tokens", tpm, min(tokens, tpm))))
            if owner.rates.concurrent_requests is not None:
                slots.append((owner, Slots(f"{owner.name}:concurrent", owner.rates.concurrent_requests)))
        if not buckets and not slots:
            return UNLIMITED
        lease = secrets.token_hex(16)
        now = self._clock.time()
        plain = [b for _, _, b in buckets]
        slot_sets = [s for _, s in slots]
        try:
            taken = await self._guarded(
                lambda: self.store.take(plain, slot_sets, lease, now, now + self.config.lease_ttl_s)
            )
        except _StoreDown:
            if self.config.on_redis_down == "open":
                return UNLIMITED
            raise LimitsUnavailable(
                "Rate limits cannot be checked: their Redis is unavailable (limits.on_redis_down: closed); "
                "retry shortly",
                retry_after_s=self.config.redis_retry_after_s,
            ) from None
        headers = _headers(buckets, taken)
        if not taken.ok:
            raise _refusal(buckets, slots, taken, headers)
        reserved = [b for kind, _, b in buckets if kind == "tokens"]

        def settle(used: int) -> None:
            back = [Bucket(b.name, b.capacity, b.amount - used) for b in reserved]
            if isinstance(self.store, MemoryBuckets):  # at once: the client's next request sees it
                self.store.give_back_now(back, slot_sets, lease, self._clock.time())
            elif back or slot_sets:  # a moment later (the client may be faster, by a round trip)
                self._spawn(lambda: self.store.give_back(back, slot_sets, lease, self._clock.time()))

        return Admission(headers, settle)

    def _spawn(self, work: Callable[[], Awaitable[None]]) -> None:
        async def run() -> None:
            with contextlib.suppress(_StoreDown):  # the reservation stands; slots free at their lease's end
                await self._guarded(work)

        task = asyncio.get_running_loop().create_task(run())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _guarded(self, call: Callable[[], Awaitable[T]]) -> T:
        if not self.shared:
            return await call()
        if self._down_until > self._clock.monotonic():
            raise _StoreDown
        try:
            async with asyncio.timeout(self.config.redis_timeout_s):
                return await call()
        except (RedisError, OSError, TimeoutError) as exc:
            self.failures += 1
            self._down_until = self._clock.monotonic() + self.config.redis_retry_after_s
            self._down_reason = f"{type(exc).__name__}: {exc}"[:200]
            _log.warning(
                "rate limits' redis unavailable", error=self._down_reason, mode=self.config.on_redis_down
            )
            raise _StoreDown from None

    async def probe(self) -> tuple[Literal["ok", "degraded"], str | None]:
        """For the health endpoint: Redis pinged (once the breaker's wait is over: until then, degraded)."""
        if not self.shared:
            return "ok", None
        try:
            await self._guarded(self.store.ping)
        except _StoreDown:
            passing = "pass unlimited" if self.config.on_redis_down == "open" else "get a 503"
            return (
                "degraded",
                f"the rate limits' Redis is unavailable ({self._down_reason}); limited requests {passing}",
            )
        return "ok", None

    async def close(self) -> None:
        if self._pending:
            await asyncio.wait(self._pending, timeout=self.config.redis_timeout_s * 2)
        await self.store.close()


def _state(bucket: Bucket, level: float) -> tuple[int, int, str]:
    """(limit, remaining, time until full) of a bucket at ``level``."""
    return bucket.capacity, max(0, math.floor(level)), duration((bucket.capacity - level) / bucket.per_second)


def _headers(buckets: list[tuple[Kind, _Limited, Bucket]], taken: Taken) -> dict[str, str]:
    """``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, each of the tightest bucket of its kind."""
    headers: dict[str, str] = {}
    for kind in ("requests", "tokens"):
        states = [_state(b, taken.levels[i]) for i, (k, _, b) in enumerate(buckets) if k == kind]
        if states:
            limit, remaining, reset = min(states, key=lambda s: s[1])
            headers[f"x-ratelimit-limit-{kind}"] = str(limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(remaining)
            headers[f"x-ratelimit-reset-{kind}"] = reset
    return headers


def _refusal(
    buckets: list[tuple[Kind, _Limited, Bucket]],
    slots: list[tuple[_Limited, Slots]],
    taken: Taken,
    headers: dict[str, str],
) -> RateLimited:
    wait = duration(taken.wait_s)
    if taken.refused < len(buckets):
        kind, owner, bucket = buckets[taken.refused]
        per_minute = "requests per minute (RPM)" if kind == "requests" else "tokens per minute (TPM)"
        used = bucket.capacity - max(0, math.floor(taken.levels[taken.refused]))
        message = (
            f"Rate limit reached for {per_minute} of {owner.whose}: limit {bucket.capacity}, used {used}, "
            f"requested {math.ceil(bucket.amount)}. Please try again in {wait}."
        )
        return RateLimited(message, kind=kind, retry_after_s=taken.wait_s, limit_headers=headers)
    owner, slot = slots[taken.refused - len(buckets)]
    message = (
        f"Too many concurrent requests for {owner.whose}: limit {slot.limit}. Please try again in {wait}, "
        "once one of them has ended."
    )
    return RateLimited(message, kind="requests", retry_after_s=taken.wait_s, limit_headers=headers)
