"""The rate limits' counts, in memory and in a real Redis (the Lua scripts), held to the same behaviour; the
time is passed in, so nothing sleeps."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from groupqwen.access.buckets import SLOT_WAIT_S, Bucket, BucketStore, MemoryBuckets, RedisBuckets, Slots
from groupqwen.access.limits import duration

NOW = 1_767_225_600.25


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[BucketStore]:
    if request.param == "memory":
        yield MemoryBuckets()
        return
    redis_url: str = request.getfixturevalue("redis_url")
    buckets = RedisBuckets(redis_url, prefix="test:limits:", timeout_s=5.0)
    yield buckets
    await buckets.close()


async def test_a_bucket_allows_its_burst_then_refills_evenly(store: BucketStore) -> None:
    rpm = Bucket("key:a:requests", 60, 1)
    for i in range(60):
        taken = await store.take([rpm], [], "l", NOW, NOW + 600)
        assert taken.ok and taken.levels == (59 - i,)
    refused = await store.take([rpm], [], "l", NOW, NOW + 600)
    assert refused.refused == 0 and refused.wait_s == pytest.approx(1.0) and refused.levels == (0,)
    assert not (await store.take([rpm], [], "l", NOW + 0.5, NOW + 600)).ok  # half a request refilled
    taken = await store.take([rpm], [], "l", NOW + 1.0, NOW + 600)
    assert taken.ok and taken.levels[0] == pytest.approx(0)
    full = await store.take([rpm], [], "l", NOW + 1000, NOW + 1600)  # never above the capacity
    assert full.levels[0] == pytest.approx(59)


async def test_all_or_nothing_and_the_first_refusal_named(store: BucketStore) -> None:
    requests = Bucket("key:b:requests", 10, 1)
    tokens = Bucket("key:b:tokens", 100, 80)
    assert (await store.take([requests, tokens], [], "l", NOW, NOW + 600)).ok
    refused = await store.take([requests, tokens], [], "l", NOW, NOW + 600)
    assert refused.refused == 1 and refused.levels == (9, 20)
    assert refused.wait_s == pytest.approx(60 * 60 / 100)  # 60 tokens missing, 100 a minute
    again = await store.take([requests], [], "l", NOW, NOW + 600)  # the refused take took nothing
    assert again.ok and again.levels == (8,)


async def test_give_back_returns_the_unused_part_or_takes_the_excess(store: BucketStore) -> None:
    tokens = Bucket("key:c:tokens", 1000, 600)
    assert (await store.take([tokens], [], "l", NOW, NOW + 600)).ok
    await store.give_back([Bucket(tokens.name, 1000, 600 - 100)], [], "l", NOW)  # used 100 of 600
    assert (await store.take([Bucket(tokens.name, 1000, 0)], [], "l", NOW, NOW + 600)).levels == (900,)
    await store.give_back([Bucket(tokens.name, 1000, -1500)], [], "l", NOW)  # used 1500 more: a debt
    refused = await store.take([Bucket(tokens.name, 1000, 1)], [], "l", NOW, NOW + 600)
    assert refused.levels == (-600,) and refused.wait_s == pytest.approx(601 * 60 / 1000)
    await store.give_back([Bucket(tokens.name, 1000, 5000)], [], "l", NOW)
    assert (await store.take([Bucket(tokens.name, 1000, 0)], [], "l", NOW, NOW + 600)).levels == (1000,)


async def test_slots_are_held_until_given_back_or_their_lease_expires(store: BucketStore) -> None:
    slots = Slots("key:d:concurrent", 2)
    assert (await store.take([], [slots], "one", NOW, NOW + 600)).counts == (1,)
    assert (await store.take([], [slots], "two", NOW, NOW + 10)).counts == (2,)
    refused = await store.take([], [slots], "three", NOW, NOW + 600)
    assert refused.refused == 0 and refused.wait_s == SLOT_WAIT_S and refused.counts == (2,)
    await store.give_back([], [slots], "one", NOW)
    assert (await store.take([], [slots], "three", NOW, NOW + 600)).ok
    assert not (await store.take([], [slots], "four", NOW + 9, NOW + 600)).ok
    assert (await store.take([], [slots], "four", NOW + 11, NOW + 600)).ok  # "two" died: its lease ended


async def test_memory_buckets_stay_bounded() -> None:
    store = MemoryBuckets(max_names=100)
    for i in range(1000):
        await store.take([Bucket(f"key:{i}:requests", 60, 1)], [], "l", NOW + i, NOW + i + 1)
    assert store.size <= 700  # only those changed in the last 10 minutes are kept


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0ms"),
        (0.0121, "13ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (8.64, "8.64s"),
        (360, "6m0s"),
        (3723, "1h2m3s"),
    ],
)
def test_durations_are_written_as_openai_writes_them(seconds: float, text: str) -> None:
    assert duration(seconds) == text
