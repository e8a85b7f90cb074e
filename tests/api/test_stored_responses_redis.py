"""Stored responses in Redis (``responses.redis_url``), against a real Valkey: what is read back is what was
kept (images and tool calls included), another tenant's id is not found, ``max_stored`` holds, a
conversation over ``max_bytes`` is not kept, and with Redis down a read is a 503 ``responses_unavailable``
while new answers are still given. Across two real replicas: tests/deploy/test_replicas.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from servers import ValkeyServer, free_port

from groupqwen.api.stored_responses import RedisResponseStore
from groupqwen.backends.fake import FakeBackend
from groupqwen.errors import NotFound, ResponsesUnavailable
from groupqwen.messages import ImagePart, Message, ToolCall
from groupqwen.testing import fake_services, fake_settings, gateway

CONVERSATION = (
    Message("user", "What is this?", parts=("What is this?", ImagePart("data:image/png;base64,AA", "low"))),
    Message("assistant", "", tool_calls=(ToolCall("call_1", "look", '{"at": "it"}'),)),
    Message("tool", "a cat", tool_call_id="call_1"),
    Message("assistant", "A cat."),
)


def store(url: str, **bounds: Any) -> RedisResponseStore:
    options = {"max_stored": 10, "max_bytes": 1_000_000, "ttl_s": 60.0, **bounds}
    return RedisResponseStore(url, prefix="test:responses:", timeout_s=2.0, **options)


def response(rid: str) -> dict[str, Any]:
    return {"id": rid, "object": "response", "output": []}


def test_a_stored_response_reads_back_whole_and_only_for_its_tenant(redis_url: str) -> None:
    async def scenario() -> None:
        kept = store(redis_url)
        await kept.put(response("resp_1"), "acme", CONVERSATION, ({"id": "msg_1", "type": "message"},))
        again = store(redis_url)  # another replica: its own connections, the same Redis
        read = await again.get("resp_1", "acme")
        assert (read.response, read.conversation) == (response("resp_1"), CONVERSATION)
        assert read.input_items == ({"id": "msg_1", "type": "message"},)
        with pytest.raises(NotFound):
            await again.get("resp_1", "rival")
        with pytest.raises(NotFound):
            await again.delete("resp_1", "rival")
        await again.delete("resp_1", "acme")
        with pytest.raises(NotFound) as missing:
            await kept.get("resp_1", "acme", "previous_response_id")
        assert missing.value.param == "previous_response_id"
        await kept.close()
        await again.close()

    asyncio.run(scenario())


def test_the_oldest_make_room_and_a_conversation_too_large_is_not_kept(redis_url: str) -> None:
    async def scenario() -> None:
        kept = store(redis_url, max_stored=2, max_bytes=500)
        for rid in ("resp_a", "resp_b", "resp_c"):
            await kept.put(response(rid), "t", (Message("user", rid),), ())
        with pytest.raises(NotFound):
            await kept.get("resp_a", "t")
        assert (await kept.get("resp_c", "t")).response["id"] == "resp_c"
        await kept.put(response("resp_big"), "t", (Message("user", "x" * 1000),), ())
        with pytest.raises(NotFound):
            await kept.get("resp_big", "t")
        await kept.close()

    asyncio.run(scenario())


def test_with_redis_down_reads_are_503_and_answers_still_come(tmp_path: Path) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"
    settings = fake_settings(tmp_path, responses={"redis_url": down, "redis_timeout_s": 0.5})
    backend = FakeBackend(model_id="fake", tokens=("Hi",))
    with gateway(fake_services(settings, backend)) as http:
        made = http.post("/v1/responses", json={"model": "fake", "input": "hello"})
        assert made.status_code == 200, made.text
        read = http.get(f"/v1/responses/{made.json()['id']}")
        assert read.status_code == 503, read.text
        assert read.json()["error"]["code"] == "responses_unavailable"
        assert read.headers["retry-after"] == "5"
        follow_up = {"model": "fake", "input": "and?", "previous_response_id": made.json()["id"]}
        follow = http.post("/v1/responses", json=follow_up)
        assert follow.status_code == 503 and follow.json()["error"]["code"] == "responses_unavailable"


def test_an_outage_passes(tmp_path: Path) -> None:
    """Redis stopped and started again (same port): the store answers again without a restart."""
    server = ValkeyServer(tmp_path)
    server.start()

    async def scenario() -> None:
        kept = store(server.url)
        await kept.put(response("resp_1"), "t", (Message("user", "hi"),), ())
        server.stop()
        with pytest.raises(ResponsesUnavailable):
            await kept.get("resp_1", "t")
        server.start()
        await kept.put(response("resp_2"), "t", (Message("user", "hi"),), ())
        assert (await kept.get("resp_2", "t")).response["id"] == "resp_2"
        await kept.close()

    try:
        asyncio.run(scenario())
    finally:
        server.stop()
