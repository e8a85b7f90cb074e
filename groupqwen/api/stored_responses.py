"""``ResponseStore``: the responses the Responses API keeps (``store: true``, its default) so that
``previous_response_id`` can continue a conversation and ``GET /v1/responses/{id}`` can read one back.

Kept in the gateway's memory, bounded by count (``responses.max_stored``) and by an estimate of the text
and images they hold (``responses.max_bytes``), the oldest dropped first, each for ``responses.ttl_s``.
A response belongs to the tenant that made it: another tenant's id reads as not found. Lost on restart
and not shared between replicas (docs/api.md, "Responses").
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from groupqwen.clock import SYSTEM_CLOCK, Clock
from groupqwen.errors import NotFound
from groupqwen.messages import Message


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
    expires_at: float


def size_of(conversation: tuple[Message, ...]) -> int:
    """Bytes a conversation's text and image URLs hold (an estimate, for the store's bound)."""
    return sum(len(m.content) + sum(len(image.url) for image in m.images) + 64 for m in conversation)


class ResponseStore:
    def __init__(self, max_stored: int, max_bytes: int, ttl_s: float, clock: Clock = SYSTEM_CLOCK) -> None:
        self._max_stored = max_stored
        self._max_bytes = max_bytes
        self._ttl_s = ttl_s
        self._clock = clock
        self._items: OrderedDict[str, StoredResponse] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(
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
        self._items[response["id"]] = StoredResponse(
            tenant, response, conversation, input_items, size, expires_at
        )
        self._bytes += size
        while len(self._items) > self._max_stored or self._bytes > self._max_bytes:
            self._drop(next(iter(self._items)))

    def get(self, response_id: str, tenant: str, param: str | None = None) -> StoredResponse:
        """The stored response, or ``NotFound`` (also for another tenant's, and for an expired one)."""
        stored = self._items.get(response_id)
        if stored is not None and stored.expires_at <= self._clock.monotonic():
            self._drop(response_id)
            stored = None
        if stored is None or stored.tenant != tenant:
            raise NotFound(f"No response with id {response_id!r} is stored here", param=param)
        return stored

    def delete(self, response_id: str, tenant: str) -> None:
        self.get(response_id, tenant)
        self._drop(response_id)

    def _drop(self, response_id: str) -> None:
        stored = self._items.pop(response_id, None)
        if stored is not None:
            self._bytes -= stored.size
