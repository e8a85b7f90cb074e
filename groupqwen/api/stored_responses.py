"""``ResponseStore``: the responses the Responses API keeps (``store: true``, its default) so that
``previous_response_id`` can continue a conversation and ``GET /v1/responses/{id}`` can read one back.

``ResponseStore`` keeps them in the gateway's memory, bounded by count (``responses.max_stored``) and by
an estimate of the text and images they hold (``responses.max_bytes``), the oldest dropped first, each for
``responses.ttl_s``: lost on restart and seen by this replica only. ``RedisResponseStore``
(``responses.redis_url``) keeps them in Redis, where every replica reads them (docs/DEPLOYMENT.md). A
response belongs to the tenant that made it: another tenant's id reads as not found.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from redis.exceptions import RedisError

from groupqwen import log, redis_client
from groupqwen.clock import SYSTEM_CLOCK, Clock
from groupqwen.errors import NotFound, ResponsesUnavailable
from groupqwen.messages import ImagePart, Message, ToolCall

_log = log.get(__name__)


@dataclass(frozen=True)
class StoredResponse:
    """``conversation``: what a follow-up continues (earlier turns, this input, this answer; never the
    ``instructions``, which hold for one response only); ``input_items``: this request's input as
    ``GET /v1/responses/{id}/input_items`` lists it."""

    tenant: str
    response: dict[str, Any]
    conversation: tuple[Message, ...]
    input_items: tuple[dict[str, Any], ...]
    size: int


def size_of(conversation: tuple[Message, ...]) -> int:
    """Bytes a conversation's text and image URLs hold (an estimate, for the store's bound)."""
    return sum(len(m.content) + sum(len(image.url) for image in m.images) + 64 for m in conversation)


class StoredResponses(Protocol):
    async def put(
        self,
        response: dict[str, Any],
        tenant: str,
        conversation: tuple[Message, ...],
        input_items: tuple[dict[str, Any], ...],
    ) -> None: ...

    async def get(self, response_id: str, tenant: str, param: str | None = None) -> StoredResponse: ...

    async def delete(self, response_id: str, tenant: str) -> None: ...

    async def close(self) -> None: ...


def _not_found(response_id: str, param: str | None) -> NotFound:
    return NotFound(f"No response with id {response_id!r} is stored here", param=param)


class ResponseStore:
    def __init__(self, max_stored: int, max_bytes: int, ttl_s: float, clock: Clock = SYSTEM_CLOCK) -> None:
        self._max_stored = max_stored
        self._max_bytes = max_bytes
        self._ttl_s = ttl_s
        self._clock = clock
        self._items: OrderedDict[str, tuple[StoredResponse, float]] = OrderedDict()  # with its expiry
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    async def put(
        self,
        response: dict[str, Any],
        tenant: str,
        conversation: tuple[Message, ...],
        input_items: tuple[dict[str, Any], ...],
    ) -> None:
        """Keep ``response`` (by its ``id``); the oldest go when a bound is reached. A conversation larger
        than the whole store is not kept."""
        size = size_of(conversation)
        if size > self._max_bytes:
            return
        expires_at = self._clock.monotonic() + self._ttl_s
        self._drop(response["id"])
        stored = StoredResponse(tenant, response, conversation, input_items, size)
        self._items[response["id"]] = (stored, expires_at)
        self._bytes += size
        while len(self._items) > self._max_stored or self._bytes > self._max_bytes:
            self._drop(next(iter(self._items)))

    async def get(self, response_id: str, tenant: str, param: str | None = None) -> StoredResponse:
        """The stored response, or ``NotFound`` (also for another tenant's, and for an expired one)."""
        item = self._items.get(response_id)
        if item is not None and item[1] <= self._clock.monotonic():
            self._drop(response_id)
            item = None
        if item is None or item[0].tenant != tenant:
            raise _not_found(response_id, param)
        return item[0]

    async def delete(self, response_id: str, tenant: str) -> None:
        await self.get(response_id, tenant)
        self._drop(response_id)

    async def close(self) -> None:
        pass

    def _drop(self, response_id: str) -> None:
        item = self._items.pop(response_id, None)
        if item is not None:
            self._bytes -= item[0].size


_REDIS_DOWN = (RedisError, OSError, TimeoutError)  # what a call to an unreachable or slow Redis raises


def _unavailable(exc: BaseException) -> ResponsesUnavailable:
    return ResponsesUnavailable(f"The stored responses' Redis cannot be reached ({exc}): try again")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _message(data: dict[str, Any]) -> Message:
    parts = tuple(p if isinstance(p, str) else ImagePart(**p) for p in data["parts"])
    calls = tuple(ToolCall(**c) for c in data["tool_calls"])
    return Message(data["role"], data["content"], parts, calls, data["tool_call_id"])


class RedisResponseStore:
    """The stored responses in Redis under ``prefix``, shared by every replica: one JSON value per response
    that expires after ``ttl_s`` (Redis's clock), and an index of the ids in the order they were stored;
    beyond ``max_stored`` the oldest go. A conversation over ``max_bytes`` is not kept (the total of the
    others is Redis's ``maxmemory`` to bound). Redis unreachable: reads are a 503 ``responses_unavailable``,
    a response that cannot be stored is logged (its answer was already given)."""

    def __init__(
        self, url: str, *, prefix: str, max_stored: int, max_bytes: int, ttl_s: float, timeout_s: float
    ) -> None:
        self._redis = redis_client.bounded(url, timeout_s=timeout_s, pool_wait_s=timeout_s)
        self._prefix = prefix
        self._index = prefix + "index"
        self._max_stored = max_stored
        self._max_bytes = max_bytes
        self._ttl_ms = max(1, round(ttl_s * 1000))

    async def put(
        self,
        response: dict[str, Any],
        tenant: str,
        conversation: tuple[Message, ...],
        input_items: tuple[dict[str, Any], ...],
    ) -> None:
        size = size_of(conversation)
        if size > self._max_bytes:
            return
        value = {
            "tenant": tenant,
            "response": response,
            "conversation": [asdict(m) for m in conversation],
            "input_items": list(input_items),
            "size": size,
        }
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(self._prefix + response["id"], json.dumps(value), px=self._ttl_ms)
                pipe.zadd(self._index, {response["id"]: await self._redis.incr(self._prefix + "seq")})
                pipe.zcard(self._index)
                *_, count = await pipe.execute()
            if count > self._max_stored:
                oldest = await self._redis.zpopmin(self._index, count - self._max_stored)
                await self._redis.delete(*(self._prefix + _text(item[0]) for item in oldest))
        except _REDIS_DOWN as exc:
            _log.warning("a response could not be stored", response=response["id"], error=str(exc))

    async def get(self, response_id: str, tenant: str, param: str | None = None) -> StoredResponse:
        try:
            raw = await self._redis.get(self._prefix + response_id)
        except _REDIS_DOWN as exc:
            raise _unavailable(exc) from exc
        if raw is None:
            raise _not_found(response_id, param)
        value = json.loads(raw)
        if value["tenant"] != tenant:
            raise _not_found(response_id, param)
        conversation = tuple(_message(m) for m in value["conversation"])
        items = tuple(value["input_items"])
        return StoredResponse(tenant, value["response"], conversation, items, value["size"])

    async def delete(self, response_id: str, tenant: str) -> None:
        await self.get(response_id, tenant)
        try:
            await self._redis.delete(self._prefix + response_id)
            await self._redis.zrem(self._index, response_id)
        except _REDIS_DOWN as exc:
            raise _unavailable(exc) from exc

    async def close(self) -> None:
        await self._redis.aclose()
