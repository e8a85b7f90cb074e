"""Two gateway replicas against one Redis (with vector search) and one PostgreSQL, as docker-compose.yml
runs them: two real ``groupqwen serve`` processes, and they behave as one service — an answer cached
through one is a hit through the other (and a hit served by one, asked again with ``no-cache`` through the
other, tightens its entry's bar for both), both write their telemetry to the one database, an API key created
once works on both, a key's rate limit is counted across both, and a response stored through one is read,
continued and deleted through the other, and a WebSocket generation started on one is resumed through the
other (relayed to the replica running it), by its owner only; its replica gone, the resume is answered
``resume_expired`` (docs/DEPLOYMENT.md, "Several replicas")."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa
from servers import PostgresServer, ValkeyServer
from typer.testing import CliRunner
from waiting import until, wait_until
from websockets.exceptions import ConnectionClosed
from ws_client import abort, ask, open_socket, receive, send, seqs, text_of, until_finished, wait_for

from groupqwen.access.keys import generate_key
from groupqwen.cli.main import app
from groupqwen.telemetry.database import engine_url
from groupqwen.testing import ServedProcess, serve_process

ADMIN = generate_key()
QUESTION = {
    "model": "fake",
    "temperature": 0,
    "messages": [{"role": "user", "content": "What is a replica?"}],
}
SLOW_REPLY = " ".join(f"s{i}" for i in range(400))
FAKES: dict[str, dict[str, Any]] = {
    "fake": {"fake_reply": "Another copy."},
    "slow": {"fake_reply": SLOW_REPLY, "fake_delay_s": 0.02, "max_parallel": 4},  # still running when resumed
}


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = ValkeyServer(tmp_path_factory.mktemp("replicas-redis"), search=True)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def shared_database(postgres: PostgresServer) -> str:
    """A database of its own on the suite's PostgreSQL, made afresh."""
    if not postgres.is_running():
        postgres.start()
    engine = sa.create_engine(engine_url(postgres.url), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text("DROP DATABASE IF EXISTS groupqwen_replicas"))
        conn.execute(sa.text("CREATE DATABASE groupqwen_replicas"))
    engine.dispose()
    return postgres.url.rsplit("/", 1)[0] + "/groupqwen_replicas"


@pytest.fixture(scope="module")
def settings(shared_redis: str, shared_database: str) -> dict[str, Any]:
    """What docker/groupqwen.yaml and the compose file's environment give every replica."""
    return {
        "auth": {"mode": "keys", "bootstrap_admin_key": ADMIN},
        "cache": {"backend": "redis", "redis_url": shared_redis},
        "limits": {"redis_url": shared_redis},
        "telemetry": {"database_url": shared_database},
        "responses": {"redis_url": shared_redis},
        "ws": {"redis_url": shared_redis},  # advertise_url: http://127.0.0.1:<port>, from host and port
    }


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, settings: dict[str, Any]
) -> Iterator[tuple[ServedProcess, ServedProcess]]:
    with ExitStack() as stack:
        a, b = (
            stack.enter_context(serve_process(tmp_path_factory.mktemp(name), FAKES, **settings))
            for name in ("replica-a", "replica-b")
        )
        yield a, b


def chat(replica: ServedProcess, key: str, body: dict[str, Any] = QUESTION, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{replica.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}", **headers},
        timeout=60,
    )


def create_key(tmp_path: Path, settings: dict[str, Any], *options: str) -> str:
    """``groupqwen keys create`` run once, against the shared database (as an operator would)."""
    config = tmp_path / "admin.yaml"
    config.write_text(json.dumps({**settings, "data_dir": str(tmp_path / "data")}), encoding="utf-8")
    result = CliRunner().invoke(
        app, ["keys", "create", "--name", "replicas", "--json", "-c", str(config), *options]
    )
    assert result.exit_code == 0, result.output
    key: str = json.loads(result.stdout)["key"]
    return key


def test_an_answer_cached_through_one_replica_is_a_hit_through_the_other(
    replicas: tuple[ServedProcess, ServedProcess],
) -> None:
    a, b = replicas
    first = chat(a, ADMIN)
    assert first.status_code == 200, first.text
    assert first.headers["x-groupqwen-cache"] == "miss"
    second = chat(b, ADMIN)
    assert second.status_code == 200, second.text
    assert second.headers["x-groupqwen-cache"] == "hit"
    assert second.json()["choices"][0]["message"]["content"] == "Another copy."


def test_a_hit_on_one_replica_asked_again_through_the_other_tightens_its_entry_for_both(
    replicas: tuple[ServedProcess, ServedProcess], shared_redis: str
) -> None:
    """vCache-style bars shared through Redis: A serves a near miss, the client asks B again with
    ``no-cache`` (its fresh answer not stored: TTL 0), and A no longer serves that entry for the question."""
    a, b = replicas
    loose = {"x-groupqwen-cache-max-false-hit-rate": "1"}  # the verifier's lowest bar: the near miss hits

    def asking(text: str) -> dict[str, Any]:
        return {**QUESTION, "messages": [{"role": "user", "content": text}]}

    near = asking("What is the best way to learn cooking?")
    assert chat(a, ADMIN, asking("How do I learn to cook?")).headers["x-groupqwen-cache"] == "miss"
    served = chat(a, ADMIN, near, **loose)  # A reads its own write back
    assert served.headers["x-groupqwen-cache"] == "hit", served.headers
    assert served.headers["x-groupqwen-cache-stage"] == "verifier"
    raw = redis.Redis.from_url(shared_redis)
    wait_until(lambda: any(raw.scan_iter("groupqwen:cache:s:q:*")))  # A remembers the serve in the background
    again = chat(b, ADMIN, near, **{"cache-control": "no-cache", "x-groupqwen-cache-ttl": "0"})
    assert again.status_code == 200 and again.headers["x-groupqwen-cache"] == "bypass"
    unstored = {**loose, "x-groupqwen-cache-ttl": "0"}  # a miss's answer would be an exact hit next
    for replica in (a, b):
        assert chat(replica, ADMIN, near, **unstored).headers["x-groupqwen-cache"] == "miss"
        stats = httpx.get(
            f"{replica.url}/v1/cache/stats", headers={"Authorization": f"Bearer {ADMIN}"}
        ).json()
        assert stats["learned_bars"] == 1 and stats["regenerated"] == (replica is b)
    raw.close()


def test_a_key_created_once_works_on_both_and_its_rate_limit_is_shared(
    replicas: tuple[ServedProcess, ServedProcess], settings: dict[str, Any], tmp_path: Path
) -> None:
    a, b = replicas
    key = create_key(tmp_path, settings, "--requests-per-minute", "2")
    assert chat(a, key).status_code == 200
    assert chat(b, key).status_code == 200
    third = chat(a, key)  # the third within the minute, whichever replica counts it
    assert third.status_code == 429, third.text
    assert third.json()["error"]["code"] == "rate_limit_exceeded"
    assert chat(b, key).status_code == 429
    assert chat(b, "gq-0123456789abcdef." + "x" * 43).status_code == 401  # and an unknown one nowhere


def test_both_replicas_write_their_telemetry_to_the_one_database(
    replicas: tuple[ServedProcess, ServedProcess], shared_database: str
) -> None:
    a, b = replicas
    engine = sa.create_engine(engine_url(shared_database))
    with engine.connect() as conn:
        before = conn.execute(sa.text("SELECT count(*) FROM request_records")).scalar_one()
    for replica in (a, b):
        body = {**QUESTION, "messages": [{"role": "user", "content": f"Which one am I, {replica.port}?"}]}
        assert chat(replica, ADMIN, body).status_code == 200

    def both_recorded() -> bool:
        with engine.connect() as conn:
            return (
                int(conn.execute(sa.text("SELECT count(*) FROM request_records")).scalar_one()) >= before + 2
            )

    asyncio.run(until(both_recorded, within_s=60, every_s=0.2))
    stored = httpx.get(
        f"{b.url}/v1/metrics",
        params={"window": "1h", "source": "store"},
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=30,
    )
    assert stored.status_code == 200, stored.text
    engine.dispose()


def responses(replica: ServedProcess, method: str, path: str = "", **options: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    return httpx.request(method, f"{replica.url}/v1/responses{path}", headers=headers, timeout=60, **options)


def test_a_response_stored_through_one_replica_is_continued_read_and_deleted_through_the_other(
    replicas: tuple[ServedProcess, ServedProcess],
) -> None:
    a, b = replicas
    first = responses(a, "POST", json={"model": "fake", "input": "Remember the number 7."})
    assert first.status_code == 200, first.text
    rid = first.json()["id"]
    follow = {"model": "fake", "input": "Which number?", "previous_response_id": rid}
    second = responses(b, "POST", json=follow)
    assert second.status_code == 200, second.text
    assert second.json()["previous_response_id"] == rid
    # the follow-up's prompt held the first turn: more input tokens than its own question alone
    alone = responses(b, "POST", json={"model": "fake", "input": "Which number?", "store": False})
    assert second.json()["usage"]["input_tokens"] > alone.json()["usage"]["input_tokens"]
    read = responses(b, "GET", f"/{rid}")
    assert read.status_code == 200 and read.json()["output"] == first.json()["output"]
    items = responses(b, "GET", f"/{rid}/input_items").json()["data"]
    assert items[0]["content"][0]["text"] == "Remember the number 7."
    assert responses(b, "DELETE", f"/{rid}").status_code == 200
    gone = responses(a, "GET", f"/{rid}")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"


BEARER = {"Authorization": f"Bearer {ADMIN}"}


def start_and_drop(
    replica: ServedProcess, gid: str, frames: int, max_tokens: int = 150
) -> tuple[str, list[dict[str, Any]]]:
    """A slow generation started on ``replica``, its first ``frames`` frames read, then the connection
    dropped (a reset, no close frame): the session and its frames, the generation still running there."""
    with open_socket(replica, additional_headers=BEARER) as ws:
        session = receive(ws)["session"]
        send(ws, ask(gid, "slow", max_tokens=max_tokens))
        before = [receive(ws) for _ in range(frames)]
        abort(ws)
    return session, before


def resume(session: str, gid: str, after: int) -> dict[str, Any]:
    return {"type": "resume", "session": session, "generations": [{"id": gid, "after_seq": after}]}


def test_a_generation_started_on_one_replica_is_resumed_through_the_other(
    replicas: tuple[ServedProcess, ServedProcess],
) -> None:
    a, b = replicas
    session, before = start_and_drop(a, "g1", 10)
    with open_socket(b, additional_headers=BEARER) as elsewhere:
        assert receive(elsewhere)["type"] == "hello"  # b's own
        send(elsewhere, resume(session, "g1", 10))
        assert receive(elsewhere) == {"type": "resumed", "session": session}
        after = until_finished(elsewhere, ["g1"])
        send(elsewhere, ask("g2", "fake"))  # later generations on the relayed connection run on a
        assert until_finished(elsewhere, ["g2"])[-1]["type"] == "done"
    frames = before + after
    assert seqs(frames, "g1") == list(range(1, len(frames) + 1))  # no gap, no duplicate
    assert text_of(frames, "g1") == " ".join(SLOW_REPLY.split()[:150])
    assert frames[-1]["type"] == "done"


def test_only_its_owner_resumes_a_session_through_another_replica(
    replicas: tuple[ServedProcess, ServedProcess], settings: dict[str, Any], tmp_path: Path
) -> None:
    a, b = replicas
    session, _ = start_and_drop(a, "mine", 2)
    other = {"Authorization": f"Bearer {create_key(tmp_path, settings, '--tenant', 'other')}"}
    for replica in (b, a):
        with open_socket(replica, additional_headers=other) as ws:
            receive(ws)
            send(ws, resume(session, "mine", 0))
            refused = receive(ws)
            assert (refused["type"], refused["error"]["code"]) == ("error", "resume_expired"), refused
            send(ws, {"type": "ping"})
            assert receive(ws) == {"type": "pong"}  # and nothing of the generation came
    with open_socket(b, additional_headers=BEARER) as owner:
        receive(owner)
        send(owner, resume(session, "mine", 2))
        assert receive(owner)["type"] == "resumed"
        send(owner, {"type": "cancel", "id": "mine"})  # relayed to a, which cancels it
        assert until_finished(owner, ["mine"])[-1]["type"] in ("cancelled", "done")


def test_a_relayed_session_resumed_on_its_own_replica_closes_the_relay_with_4001(
    replicas: tuple[ServedProcess, ServedProcess],
) -> None:
    """The client reconnected to the holder itself while the relay's connection lingers: the holder takes
    the session over, as it does from a connection of its own, and the relay passes its 4001 on."""
    a, b = replicas
    session, _ = start_and_drop(a, "moved", 2, max_tokens=400)
    with open_socket(b, additional_headers=BEARER) as relayed:
        receive(relayed)
        send(relayed, resume(session, "moved", 2))
        assert receive(relayed)["type"] == "resumed"
        with open_socket(a, additional_headers=BEARER) as direct:
            receive(direct)
            send(direct, resume(session, "moved", 2))
            assert receive(direct)["type"] == "resumed"
            with pytest.raises(ConnectionClosed) as closed:
                until_finished(relayed, ["moved"])
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
            send(direct, {"type": "cancel", "id": "moved"})
            assert until_finished(direct, ["moved"])[-1]["type"] in ("cancelled", "done")


def running(replica: ServedProcess) -> int:
    """Requests the ``slow`` model of ``replica`` is answering."""
    models = httpx.get(f"{replica.url}/v1/models", headers=BEARER, timeout=60).json()["data"]
    count: int = next(m for m in models if m["id"] == "slow")["groupqwen"]["active_requests"]
    return count


def test_closing_a_relayed_connection_normally_cancels_the_generation_on_its_replica(
    replicas: tuple[ServedProcess, ServedProcess],
) -> None:
    a, b = replicas
    session, _ = start_and_drop(a, "bye", 2, max_tokens=400)
    with open_socket(b, additional_headers=BEARER) as ws:
        receive(ws)
        send(ws, resume(session, "bye", 2))
        assert receive(ws)["type"] == "resumed"
        assert running(a) == 1
    # the block closed the connection with 1000: the client is done, as if it had been connected to a
    wait_for(lambda: running(a) == 0, "the generation ended on a")
    with open_socket(a, additional_headers=BEARER) as ws:
        receive(ws)
        send(ws, resume(session, "bye", 2))
        gone = receive(ws)  # cancelled and forgotten, not finished and kept for the resume window
        assert (gone["type"], gone["error"]["code"]) == ("error", "resume_expired"), gone


def test_when_the_replica_holding_a_session_dies_the_relay_ends_and_a_resume_is_refused(
    replicas: tuple[ServedProcess, ServedProcess], settings: dict[str, Any], tmp_path: Path
) -> None:
    """Relaying, the client's connection is closed with 1001 (going away); its resume then gets a prompt
    ``resume_expired`` (the holder's port refuses the relay), and the connection serves on."""
    _, b = replicas
    with serve_process(tmp_path, FAKES, **settings) as c:
        session, _ = start_and_drop(c, "lost", 2, max_tokens=400)  # 8 s of tokens at least: still running
        with open_socket(b, additional_headers=BEARER) as ws:
            receive(ws)
            send(ws, resume(session, "lost", 2))
            assert receive(ws)["type"] == "resumed"
            c.process.kill()
            c.process.wait()
            with pytest.raises(ConnectionClosed) as closed:
                until_finished(ws, ["lost"])
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    with open_socket(b, additional_headers=BEARER) as ws:
        receive(ws)
        send(ws, resume(session, "lost", 2))
        refused = receive(ws)
        assert (refused["type"], refused["id"], refused["error"]["code"]) == (
            "error",
            "lost",
            "resume_expired",
        )
        send(ws, ask("fresh", "fake"))  # from b itself
        assert until_finished(ws, ["fresh"])[-1]["type"] == "done"
