"""Where the rate limits' counts live: ``MemoryBuckets`` (this process) or ``RedisBuckets`` (shared by every
replica; each operation one Lua script, so that checking and taking are atomic across replicas).

Two kinds of count, taken together or not at all:

- a ``Bucket``: a token bucket holding up to ``capacity``, refilled evenly (``capacity`` a minute); a
  request takes ``amount`` from it if it holds that much. ``give_back`` adds to it (a reservation's
  unused part) or takes more (usage beyond it: the level may go below zero, a debt repaid by the refill).
- ``Slots``: requests in progress, at most ``limit``; each held by a lease that ends when the request does,
  or at its expiry (a replica that died mid-request frees its slots that way).

Times are the caller's clock (``Clock.time()``: the wall clock, which replicas share), passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from groupqwen import redis_client

SLOT_WAIT_S = (
    1.0  # what a request refused for its concurrency is told to wait: no one knows when a slot frees
)


@dataclass(frozen=True)
class Bucket:
    name: str
    capacity: int
    amount: float  # what this request takes (take) or gives back, negative for more used (give_back)

    @property
    def per_second(self) -> float:
        return self.capacity / 60.0


@dataclass(frozen=True)
class Slots:
    name: str
    limit: int


@dataclass(frozen=True)
class Taken:
    """``levels``: each bucket's level after the take (before it, when refused); ``counts``: each
    ``Slots``' requests in progress, likewise; ``refused``: the index (buckets first, then slots) of the
    first count that refused, -1 when all was taken; ``wait_s``: how long until it would not."""

    levels: tuple[float, ...]
    counts: tuple[int, ...]
    refused: int = -1
    wait_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.refused < 0


class BucketStore(Protocol):
    async def take(
        self, buckets: Sequence[Bucket], slots: Sequence[Slots], lease: str, now: float, expiry: float
    ) -> Taken:
        """Take every bucket's ``amount`` and a slot in every ``Slots`` (held by ``lease`` until
        ``expiry``), or nothing if any of them is short."""
        ...

    async def give_back(
        self, buckets: Sequence[Bucket], slots: Sequence[Slots], lease: str, now: float
    ) -> None:
        """Add each bucket's ``amount`` (up to its capacity) and free ``lease``'s slots."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


def refilled(level: float, updated: float, capacity: int, now: float) -> float:
    return min(float(capacity), level + max(0.0, now - updated) * capacity / 60.0)


class MemoryBuckets:
    """The counts in this process (one gateway); ``max_names`` bounds the buckets kept: past it, full
    buckets (which hold nothing a new one would not) and expired leases are dropped."""

    def __init__(self, max_names: int = 10_000) -> None:
        self._levels: dict[str, tuple[float, float]] = {}  # name → (level, when)
        self._leases: dict[str, dict[str, float]] = {}  # name → lease → expiry
        self._max_names = max_names

    def _level(self, bucket: Bucket, now: float) -> float:
        state = self._levels.get(bucket.name)
        return float(bucket.capacity) if state is None else refilled(*state, bucket.capacity, now)

    def _live(self, name: str, now: float) -> dict[str, float]:
        leases = self._leases.get(name, {})
        for lease in [lease for lease, expiry in leases.items() if expiry <= now]:
            del leases[lease]
        return leases

    async def take(
        self, buckets: Sequence[Bucket], slots: Sequence[Slots], lease: str, now: float, expiry: float
    ) -> Taken:
        levels = [self._level(b, now) for b in buckets]
        counts = [len(self._live(s.name, now)) for s in slots]
        for i, (bucket, level) in enumerate(zip(buckets, levels, strict=True)):
            if level < bucket.amount:
                return Taken(tuple(levels), tuple(counts), i, (bucket.amount - level) / bucket.per_second)
        for j, (slot, count) in enumerate(zip(slots, counts, strict=True)):
            if count >= slot.limit:
                return Taken(tuple(levels), tuple(counts), len(buckets) + j, SLOT_WAIT_S)
        self._tidy(now)
        for bucket, level in zip(buckets, levels, strict=True):
            self._levels[bucket.name] = (level - bucket.amount, now)
        for slot in slots:
            self._leases.setdefault(slot.name, {})[lease] = expiry
        return Taken(
            tuple(level - b.amount for b, level in zip(buckets, levels, strict=True)),
            tuple(count + 1 for count in counts),
        )

    async def give_back(
        self, buckets: Sequence[Bucket], slots: Sequence[Slots], lease: str, now: float
    ) -> None:
        self.give_back_now(buckets, slots, lease, now)

    def give_back_now(
        self, buckets: Sequence[Bucket], slots: Sequence[Slots], lease: str, now: float
    ) -> None:
        """``give_back`` at once (nothing here waits): the next request sees it."""
        for bucket in buckets:
            level = min(float(bucket.capacity), self._level(bucket, now) + bucket.amount)
            self._levels[bucket.name] = (level, now)
        for slot in slots:
            leases = self._leases.get(slot.name, {})
            leases.pop(lease, None)
            if not leases:
                self._leases.pop(slot.name, None)

    def _tidy(self, now: float) -> None:
        if len(self._levels) + len(self._leases) < self._max_names:
            return
        # a bucket refills fully within a minute of its last change (more for a debt: kept up to 10)
        self._levels = {n: s for n, s in self._levels.items() if now - s[1] < 600}
        self._leases = {n: live for n in list(self._leases) if (live := self._live(n, now))}

    @property
    def size(self) -> int:
        """Buckets and slot sets held (for tests of the bound)."""
        return len(self._levels) + len(self._leases)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


# KEYS: the buckets' hashes (fields l: level, t: when), then the slots' sorted sets (lease → expiry).
# ARGV: now, number of buckets, the wait for a slot, each bucket's capacity and amount, each slot set's
# limit, lease, expiry.
# Returns {refused index (0: none; 1-based), wait in seconds, each bucket's level, each slot set's count},
# numbers as strings (Lua numbers would come back truncated to integers).
_TAKE = """
local now = tonumber(ARGV[1])
local nb = tonumber(ARGV[2])
local levels, counts = {}, {}
local refused, wait = 0, 0
for k = 1, nb do
  local cap, amount = tonumber(ARGV[2 + 2 * k]), tonumber(ARGV[3 + 2 * k])
  local state = redis.call('HMGET', KEYS[k], 'l', 't')
  local level = cap
  if state[1] then
    level = math.min(cap, tonumber(state[1]) + math.max(0, now - tonumber(state[2])) * cap / 60)
  end
  levels[k] = level
  if refused == 0 and level < amount then
    refused, wait = k, (amount - level) * 60 / cap
  end
end
local base = 4 + 2 * nb
for k = nb + 1, #KEYS do
  local limit = tonumber(ARGV[base + 3 * (k - nb - 1)])
  redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', now)
  local count = redis.call('ZCARD', KEYS[k])
  counts[k - nb] = count
  if refused == 0 and count >= limit then
    refused, wait = k, tonumber(ARGV[3])
  end
end
if refused == 0 then
  for k = 1, nb do
    local cap, amount = tonumber(ARGV[2 + 2 * k]), tonumber(ARGV[3 + 2 * k])
    levels[k] = levels[k] - amount
    redis.call('HSET', KEYS[k], 'l', tostring(levels[k]), 't', tostring(now))
    redis.call('PEXPIRE', KEYS[k], math.ceil((cap - levels[k]) * 60000 / cap) + 1000)
  end
  for k = nb + 1, #KEYS do
    local i = base + 3 * (k - nb - 1)
    local expiry = tonumber(ARGV[i + 2])
    redis.call('ZADD', KEYS[k], expiry, ARGV[i + 1])
    local ttl = math.ceil((expiry - now) * 1000) + 1000  -- relative: Redis's clock is not the caller's
    redis.call('PEXPIRE', KEYS[k], ttl, 'NX')
    redis.call('PEXPIRE', KEYS[k], ttl, 'GT')
    counts[k - nb] = counts[k - nb] + 1
  end
end
local out = {tostring(refused), tostring(wait)}
for k = 1, nb do out[#out + 1] = tostring(levels[k]) end
for k = 1, #KEYS - nb do out[#out + 1] = tostring(counts[k]) end
return out
"""

# KEYS: the buckets' hashes, then the slots' sorted sets. ARGV: now, number of buckets, each bucket's
# capacity and amount (added, up to the capacity), the lease.
_GIVE_BACK = """
local now = tonumber(ARGV[1])
local nb = tonumber(ARGV[2])
for k = 1, nb do
  local cap, amount = tonumber(ARGV[1 + 2 * k]), tonumber(ARGV[2 + 2 * k])
  local state = redis.call('HMGET', KEYS[k], 'l', 't')
  local level = cap
  if state[1] then
    level = math.min(cap, tonumber(state[1]) + math.max(0, now - tonumber(state[2])) * cap / 60)
  end
  level = math.min(cap, level + amount)
  redis.call('HSET', KEYS[k], 'l', tostring(level), 't', tostring(now))
  redis.call('PEXPIRE', KEYS[k], math.ceil((cap - level) * 60000 / cap) + 1000)
end
for k = nb + 1, #KEYS do redis.call('ZREM', KEYS[k], ARGV[3 + 2 * nb]) end
return 1
"""


class RedisBuckets:
    """The counts in Redis under ``prefix``, shared by every replica. Every call is bounded by
    ``timeout_s``; a failure (``RedisError``, ``OSError``, ``TimeoutError``) is the caller's to judge."""

    def __init__(self, url: str, *, prefix: str, timeout_s: float, max_connections: int = 64) -> None:
        self._redis = redis_client.bounded(
            url, timeout_s=timeout_s, pool_wait_s=timeout_s, max_connections=max_connections
        )
        self._prefix = prefix
        self._take = self._redis.register_script(_TAKE)  # EVALSHA; loaded again after a restart
        self._give_back = self._redis.register_script(_GIVE_BACK)

    def _keys(self, buckets: Sequence[Bucket], slots: Sequence[Slots]) -> list[str]:
        return [self._prefix + b.name for b in buckets] + [self._prefix + s.name for s in slots]

    async def take(
        self, buckets: Sequence[Bucket], slots: Sequence[Slots], lease: str, now: float, expiry: float
    ) -> Taken:
        args: list[str | float | int] = [repr(now), len(buckets), repr(SLOT_WAIT_S)]
        for bucket in buckets:
            args += [bucket.capacity, repr(float(bucket.amount))]
        for slot in slots:
            args += [slot.limit, lease, repr(expiry)]
        raw = await self._take(keys=self._keys(buckets, slots), args=args)
        values = [float(v) for v in raw]
        n = len(buckets)
        return Taken(
            levels=tuple(values[2 : 2 + n]),
            counts=tuple(int(v) for v in values[2 + n :]),
            refused=int(values[0]) - 1,
            wait_s=values[1],
        )

    async def give_back(
        self, buckets: Sequence[Bucket], slots: Sequence[Slots], lease: str, now: float
    ) -> None:
        args: list[str | float | int] = [repr(now), len(buckets)]
        for bucket in buckets:
            args += [bucket.capacity, repr(float(bucket.amount))]
        await self._give_back(keys=self._keys(buckets, slots), args=[*args, lease])

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()
