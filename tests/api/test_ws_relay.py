"""``api/ws_directory.py`` and ``api/ws_relay.py`` alone, against a real Redis: a session published by its
replica is found by its token (never stored in clear) and goes when withdrawn or when its replica stops;
the refresh writes back an entry Redis lost; Redis down is a lookup that finds nothing, logged once, and
a gateway that serves as a lone replica; a relay is opened only for the session's owner, never to this
replica itself, and a holder that cannot be reached is no relay. What a relay carries is tested with real
replicas in tests/deploy/test_replicas.py."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import ValidationError
from servers import free_port
from starlette.requests import HTTPConnection
from waiting import until

from groupqwen.api.ws_directory import Directory, Entry, advertised_url
from groupqwen.api.ws_relay import open_relay
from groupqwen.config import WsConfig, load_settings
from groupqwen.errors import ConfigError
from groupqwen.testing import FakeClock, fake_services, fake_settings, gateway

HERE = "http://10.0.0.5:8000"
USER = {"role": "user", "content": "hello"}


@pytest.fixture
def plain(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def config(url: str, **fields: Any) -> WsConfig:
    return WsConfig.model_validate({"redis_url": url, **fields})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def directory(redis_url: str, clock: FakeClock) -> AsyncIterator[Directory]:
    made = Directory(config(redis_url, heartbeat_s=10), HERE, clock)
    yield made
    await made.close()


async def test_a_published_session_is_found_by_its_token_until_withdrawn(
    directory: Directory, plain: redis.Redis
) -> None:
    directory.publish("the-token", "owner-hash")
    await until(lambda: bool(plain.keys("groupqwen:ws:session:*")))
    [key] = plain.keys("*")
    assert "the-token" not in key and "the-token" not in plain.get(key)  # a secret: only its hash
    assert 0 < plain.pttl(key) <= 20_000  # 2 × heartbeat_s: a dead replica's sessions go with it
    assert await directory.lookup("the-token") == Entry(HERE, "owner-hash")
    assert await directory.lookup("another-token") is None
    directory.withdraw("the-token")
    await until(lambda: not plain.keys("*"))
    assert await directory.lookup("the-token") is None


async def test_the_refresh_writes_back_what_redis_lost_and_close_deletes_it(
    directory: Directory, plain: redis.Redis, clock: FakeClock
) -> None:
    directory.publish("t", "o")
    await until(lambda: bool(plain.keys("*")))
    plain.flushall()  # expired, or Redis restarted empty
    await until(lambda: clock.sleepers == 1)
    clock.advance(5)  # heartbeat_s / 2
    await until(lambda: bool(plain.keys("*")))
    await directory.close()
    assert plain.keys("*") == []


async def test_redis_down_finds_nothing_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    down = Directory(config(f"redis://127.0.0.1:{free_port()}/0", redis_timeout_s=0.5), HERE, FakeClock())
    try:
        down.publish("t", "o")
        assert await down.lookup("t") is None
        assert await down.lookup("t") is None
    finally:
        await down.close()
    warnings = [r for r in caplog.records if r.getMessage().startswith("websocket directory unavailable")]
    assert len(warnings) == 1


def client(authorization: str | None = None) -> HTTPConnection:
    headers = [] if authorization is None else [(b"authorization", authorization.encode())]
    return HTTPConnection({"type": "websocket", "headers": headers, "path": "/v1/ws"})


async def found(directory: Directory, token: str) -> None:
    """Until ``token``'s entry (written in the background) is in Redis."""
    for _ in range(10_000):
        if await directory.lookup(token) is not None:
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"{token!r} was never published")


RELAY = WsConfig.model_validate(
    {"relay_timeout_s": 30}
)  # generous: the failures below are refusals, never timeouts


async def test_a_relay_is_opened_for_the_sessions_owner_only(directory: Directory, redis_url: str) -> None:
    holder = socket.socket()  # listens, never answers: a connection to it would be seen
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    holder.setblocking(False)
    elsewhere = Directory(config(redis_url), f"http://127.0.0.1:{holder.getsockname()[1]}", FakeClock())
    try:
        elsewhere.publish("t", "alice")
        await found(directory, "t")
        assert await open_relay(directory, RELAY, client("Bearer x"), "mallory", "t", []) is None
        with pytest.raises(BlockingIOError):
            holder.accept()  # the holder was never asked
    finally:
        await elsewhere.close()
        holder.close()


async def test_no_relay_to_itself_nor_to_a_holder_that_is_gone(
    directory: Directory, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    directory.publish("mine", "alice")  # this replica's own, yet not in its memory: it restarted
    await found(directory, "mine")
    assert await open_relay(directory, RELAY, client(), "alice", "mine", []) is None
    gone = Directory(config(redis_url), f"http://127.0.0.1:{free_port()}", FakeClock())
    try:
        gone.publish("theirs", "alice")
        await found(directory, "theirs")
        assert await open_relay(directory, RELAY, client(), "alice", "theirs", [("g", 3)]) is None
    finally:
        await gone.close()
    [failed] = [r for r in caplog.records if r.getMessage() == "websocket relay failed"]
    assert failed.levelname == "WARNING"


def test_the_advertised_url_comes_from_the_setting_or_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    assert advertised_url(load_settings(ws={"advertise_url": "https://gq-1.internal:8443/"})) == (
        "https://gq-1.internal:8443"
    )
    assert advertised_url(load_settings(host="10.1.2.3", port=9000)) == "http://10.1.2.3:9000"
    assert advertised_url(load_settings(host="::1")) == "http://[::1]:8000"
    monkeypatch.setattr(socket, "gethostname", lambda: "pod-7")
    monkeypatch.setattr(socket, "gethostbyname", lambda name: {"pod-7": "10.4.0.7"}[name])
    assert advertised_url(load_settings(host="0.0.0.0")) == "http://10.4.0.7:8000"

    def unknown(name: str) -> str:
        raise socket.gaierror("Name or service not known")

    monkeypatch.setattr(socket, "gethostbyname", unknown)
    with pytest.raises(ConfigError) as missing:
        advertised_url(load_settings(host="0.0.0.0"))
    assert missing.value.errors[0][0] == "ws.advertise_url"


def test_bad_directory_settings_are_refused() -> None:
    for fields in (
        {"advertise_url": "10.0.0.5:8000"},
        {"advertise_url": "http://10.0.0.5:8000/gateway"},
        {"advertise_url": "ftp://10.0.0.5"},
        {"redis_url": "localhost:6379"},
    ):
        with pytest.raises(ValidationError):
            WsConfig.model_validate(fields)


def test_with_redis_down_a_gateway_serves_as_a_lone_replica(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ws_settings = {"redis_url": f"redis://127.0.0.1:{free_port()}/0", "redis_timeout_s": 0.5}
    settings = fake_settings(tmp_path, ws=ws_settings)
    with gateway(fake_services(settings)) as client:
        with client.websocket_connect("/v1/ws") as ws:
            assert ws.receive_json()["type"] == "hello"
            ws.send_json({"type": "chat.create", "id": "a", "body": {"model": "fake", "messages": [USER]}})
            while (frame := ws.receive_json())["type"] != "done":  # published in vain: logged, not in the way
                assert frame["type"] in ("chunk", "ping"), frame
        with client.websocket_connect("/v1/ws") as ws:
            assert ws.receive_json()["type"] == "hello"
            ws.send_json({"type": "resume", "session": "someone-elses", "generations": [{"id": "b"}]})
            refused = ws.receive_json()  # Redis asked, nothing found: the answer of a lone replica
            assert (refused["id"], refused["error"]["code"]) == ("b", "resume_expired")
    assert any(r.getMessage().startswith("websocket directory unavailable") for r in caplog.records)
