"""``auth: keys`` through the whole gateway: the ``openai`` SDK with a good and a bad key, model
allow-lists, the key's tenant owning its cached answers (``user`` narrows it, never widens it), and an
audit log that names keys by id and never holds one."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi import FastAPI, WebSocket
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from groupqwen import log
from groupqwen.api import auth
from groupqwen.api.app import create_app
from groupqwen.api.services import Services
from groupqwen.cache import CachePolicy, EmbeddedStore, SemanticCache
from groupqwen.cache.embedders.fake import HashingEmbedder
from groupqwen.config import CacheConfig
from groupqwen.testing import fake_services, fake_settings

from .conftest import key_store, keyed_services

Serve = Callable[[FastAPI], AbstractContextManager[str]]


def new_key(services: Services, name: str, **fields: Any) -> str:
    return key_store(services).create(name, now=time.time(), **fields)[1]


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_the_openai_sdk_with_a_key_and_with_a_bad_one(tmp_path: Path, live_server: Serve) -> None:
    services = keyed_services(tmp_path, ["fake", "other"])
    key = new_key(services, "sdk", models=["fake"])
    admin = new_key(services, "ops", scopes=["admin"])
    with live_server(create_app(services.settings, services)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
        reply = client.chat.completions.create(model="fake", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content
        assert [m.id for m in client.models.list()] == ["fake"]  # only what the key may use

        with pytest.raises(openai.PermissionDeniedError, match="may not use the model 'other'") as denied:
            client.chat.completions.create(model="other", messages=[{"role": "user", "content": "hi"}])
        assert denied.value.code == "model_not_allowed" and denied.value.status_code == 403
        with pytest.raises(openai.PermissionDeniedError, match="Missing scope: admin"):
            client.post("/models/fake/unload", cast_to=object)

        for bad in (key[:-2] + "zz", "sk-not-ours", admin.split(".")[0]):
            wrong = openai.OpenAI(base_url=f"{url}/v1", api_key=bad, max_retries=0)
            with pytest.raises(openai.AuthenticationError) as failed:
                wrong.chat.completions.create(model="fake", messages=[{"role": "user", "content": "hi"}])
            assert failed.value.status_code == 401 and failed.value.code == "invalid_api_key"

        ops = openai.OpenAI(base_url=f"{url}/v1", api_key=admin, max_retries=0)
        with pytest.raises(openai.PermissionDeniedError, match="Missing scope: chat"):
            ops.chat.completions.create(model="fake", messages=[{"role": "user", "content": "hi"}])


def test_auto_is_allowed_only_when_the_key_names_it(tmp_path: Path) -> None:
    services = keyed_services(
        tmp_path, ["fake", "other"], router={"tiers": [{"model": "fake"}], "routes": {}}
    )
    plain = new_key(services, "plain", models=["fake"])
    routed = new_key(services, "routed", models=["auto"])
    with TestClient(create_app(services.settings, services)) as client:
        ask: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
        refused = client.post("/v1/chat/completions", json={**ask, "model": "auto"}, headers=bearer(plain))
        assert refused.status_code == 403 and "'auto'" in refused.json()["error"]["message"]
        assert refused.json()["error"]["param"] == "model"
        answered = client.post("/v1/chat/completions", json={**ask, "model": "auto"}, headers=bearer(routed))
        assert answered.status_code == 200 and answered.headers["x-groupqwen-model"] == "fake"
        assert (
            client.post(
                "/v1/chat/completions", json={**ask, "model": "auto:fast"}, headers=bearer(routed)
            ).status_code
            == 403
        )
        assert client.get("/v1/models/other", headers=bearer(plain)).status_code == 403
        assert [m["id"] for m in client.get("/v1/models", headers=bearer(routed)).json()["data"]] == ["auto"]


@pytest.fixture
def cached(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    embedder = HashingEmbedder()
    store = EmbeddedStore(None, embedder.dim, max_entries=1000)
    cache = SemanticCache(store, embedder, CachePolicy.from_config(CacheConfig()))  # type: ignore[call-arg]
    settings = fake_settings(tmp_path, auth="keys")
    services = fake_services(settings, cache=cache)
    keys = {
        name: new_key(services, name, tenant=tenant)
        for name, tenant in (("acme-1", "acme"), ("acme-2", "acme"), ("rival", "rival"))
    }
    with TestClient(create_app(settings, services)) as client:
        yield client, keys


def test_the_keys_tenant_owns_its_cached_answers(cached: tuple[TestClient, dict[str, str]]) -> None:
    client, keys = cached

    def cache(key: str, **body: Any) -> str:
        payload = {"model": "fake", "temperature": 0, "messages": [{"role": "user", "content": "The Moon?"}]}
        response = client.post("/v1/chat/completions", json={**payload, **body}, headers=bearer(keys[key]))
        assert response.status_code == 200, response.text
        return response.headers["x-groupqwen-cache"]

    assert cache("acme-1") == "miss"
    assert cache("acme-2") == "hit"  # one tenant, two keys: its answers are shared
    assert cache("rival") == "miss"  # never another tenant's
    assert cache("rival", user="") == "hit"  # its own now
    assert cache("acme-1", user="alice") == "miss"  # user narrows within the tenant
    assert cache("acme-2", user="alice") == "hit"
    assert cache("rival", user="alice") == "miss"  # and cannot reach into another tenant


def test_the_audit_log_names_keys_by_id_and_never_holds_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    services = keyed_services(tmp_path)
    user = new_key(services, "user", models=["fake"])
    admin = new_key(services, "admin", scopes=["admin"])
    revoked = new_key(services, "gone")
    key_store(services).revoke(revoked[3:19], now=time.time())
    caplog.handler.setFormatter(log.KeyValueFormatter())
    caplog.set_level(logging.DEBUG)
    secrets = [k.split(".")[1] for k in (user, admin, revoked)]
    with TestClient(create_app(services.settings, services)) as client:
        ask = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
        responses = {
            "ok": client.post("/v1/chat/completions", json=ask, headers=bearer(user)),
            "wrong": client.post(
                "/v1/chat/completions",
                json=ask,
                headers=bearer(user[:-1] + ("R" if user.endswith("Q") else "Q")),
            ),
            "revoked": client.post("/v1/chat/completions", json=ask, headers=bearer(revoked)),
            "scope": client.delete("/v1/cache", headers=bearer(user)),
            "model": client.post("/v1/chat/completions", json={**ask, "model": "x"}, headers=bearer(user)),
            "admin": client.delete("/v1/cache", headers=bearer(admin)),
            "none": client.get("/v1/metrics"),
        }
    assert [r.status_code for r in responses.values()] == [200, 401, 401, 403, 403, 200, 401]
    text = caplog.text
    for secret in secrets:
        assert secret not in text
    user_id, admin_id, revoked_id = user[3:19], admin[3:19], revoked[3:19]
    expectations = {  # the request → its audit line's message, action and key id
        "wrong": ("denied", "POST /v1/chat/completions", user_id),  # the id it claimed
        "revoked": ("denied", "POST /v1/chat/completions", revoked_id),
        "scope": ("denied", "DELETE /v1/cache", user_id),
        "model": ("denied", "use model x", user_id),
        "admin": ("admin action", "DELETE /v1/cache", admin_id),
        "none": ("denied", "GET /v1/metrics", "-"),
    }
    audit = [ln for ln in text.splitlines() if "logger=groupqwen.audit" in ln]
    assert len(audit) == len(expectations)
    for name, (message, action, key_id) in expectations.items():
        request_id = responses[name].headers["x-request-id"]
        line = next(ln for ln in audit if f"request_id={request_id} " in ln)
        quoted = f'"{message}"' if " " in message else message
        assert f"msg={quoted} " in line and f'action="{action}"' in line and f"key_id={key_id} " in line


def test_a_websocket_upgrade_is_checked_by_the_same_function(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = keyed_services(tmp_path)
    user = new_key(services, "user", tenant="acme")
    admin = new_key(services, "ops", scopes=["admin"])
    app = create_app(services.settings, services)

    @app.websocket("/v1/echo")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"tenant": auth.principal_of(websocket).tenant})
        await websocket.close()

    with pytest.raises(RuntimeError, match="no rule for: WEBSOCKET /v1/echo"):
        auth.check_rules(app)
    monkeypatch.setitem(auth.RULES, (auth.WEBSOCKET, "/v1/echo"), "chat")
    auth.check_rules(app)
    with TestClient(app) as client:
        with client.websocket_connect("/v1/echo", headers=bearer(user)) as ws:
            assert ws.receive_json() == {"tenant": "acme"}
        for headers, reason in (
            ({}, "You didn't provide an API key"),
            (bearer(admin), "Missing scope: chat"),
        ):
            with (
                pytest.raises(WebSocketDenialResponse) as refused,
                client.websocket_connect("/v1/echo", headers=headers),
            ):
                pass
            assert refused.value.status_code in (401, 403)
            assert reason in refused.value.json()["error"]["message"]


def test_a_key_revoked_or_rotated_stops_working_on_a_websocket_already_open(tmp_path: Path) -> None:
    """Each ``chat.create`` looks the connection's key up again (through the key cache, so within
    ``auth.key_cache_s``: 0 here), as every HTTP request does: a socket opened before the key was revoked
    or rotated gets a 401 for the generation. It used to keep generating for as long as it stayed open."""
    services = keyed_services(tmp_path, auth={"key_cache_s": 0})
    revoked, rotated = new_key(services, "gone"), new_key(services, "turned")
    app = create_app(services.settings, services)

    def create(ws: Any, gid: str) -> dict[str, Any]:
        body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
        ws.send_json({"type": "chat.create", "id": gid, "body": body})
        while (frame := ws.receive_json())["type"] not in ("done", "error"):
            pass
        return dict(frame)

    with TestClient(app) as client:
        for key, change in (
            (revoked, lambda key_id: key_store(services).revoke(key_id, now=time.time())),
            (rotated, lambda key_id: key_store(services).rotate(key_id, now=time.time())),
        ):
            with client.websocket_connect("/v1/ws", headers=bearer(key)) as ws:
                assert ws.receive_json()["type"] == "hello"
                assert create(ws, "before")["type"] == "done"
                change(key[3:19])
                refused = create(ws, "after")
                assert refused["type"] == "error" and refused["id"] == "after" and refused["status"] == 401
                assert refused["error"]["code"] == "invalid_api_key"
                assert f"gq-{key[3:19]}" in refused["error"]["message"]


def test_a_revoked_key_stops_the_live_metrics_stream_it_opened(tmp_path: Path) -> None:
    """``/v1/metrics/stream`` runs for as long as the dashboard is open: before each summary it looks its
    key up again (within ``auth.key_cache_s``: 0 here), and a key revoked meanwhile ends the stream with
    an ``error`` event (OpenAI's error object and the status). It used to stream on (here: to its 50
    events, the bound that keeps this test from waiting forever on such a gateway)."""
    services = keyed_services(tmp_path, auth={"key_cache_s": 0})
    admin = new_key(services, "dashboard", scopes=["admin"])
    with (
        TestClient(create_app(services.settings, services)) as client,
        client.stream("GET", "/v1/metrics/stream?interval=0.1&events=50", headers=bearer(admin)) as stream,
    ):
        assert stream.status_code == 200
        events = stream.iter_lines()
        assert next(line for line in events if line.startswith("event:")) == "event: summary"
        key_store(services).revoke(admin[3:19], now=time.time())
        names, error = [], {}
        for line in events:
            if line.startswith("event:"):
                names.append(line.removeprefix("event: "))
            elif names and names[-1] == "error" and line.startswith("data:"):
                error = json.loads(line.removeprefix("data: "))
                break
        assert names[-1] == "error" and set(names[:-1]) <= {"summary", "request"}
        assert error["status"] == 401 and error["error"]["code"] == "invalid_api_key"
        assert "has been revoked" in error["error"]["message"]
        assert not any(line.startswith("event:") for line in events)  # and it ended there


def test_a_tenants_admin_reads_its_own_tenants_metrics_only(tmp_path: Path) -> None:
    services = keyed_services(tmp_path)
    users = {tenant: new_key(services, f"{tenant} app", tenant=tenant) for tenant in ("acme", "rival")}
    admins = {
        tenant: new_key(services, f"{tenant} ops", tenant=tenant, scopes=["admin"])
        for tenant in ("acme", "default")
    }
    ask = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    with TestClient(create_app(services.settings, services)) as client:
        for tenant, times in (("acme", 2), ("rival", 1)):
            for _ in range(times):
                assert (
                    client.post("/v1/chat/completions", json=ask, headers=bearer(users[tenant])).status_code
                    == 200
                )

        def requests(admin: str) -> tuple[int, int]:
            summary = client.get("/v1/metrics", params={"window": "1h"}, headers=bearer(admin)).json()
            stream = client.get(
                "/v1/metrics/stream", params={"window": "1h", "events": 1}, headers=bearer(admin)
            )
            streamed = json.loads(stream.text.split("data: ", 1)[1])
            return sum(summary["status"].values()), sum(streamed["status"].values())

        assert requests(admins["acme"]) == (2, 2)  # never another tenant's
        assert requests(admins["default"]) == (3, 3)  # the operator's: the whole gateway
        refused = client.get("/metrics", headers=bearer(admins["acme"]))  # gateway-wide counters
        assert refused.status_code == 403 and "needs an admin key of the 'default' tenant" in refused.text
        assert client.delete("/v1/cache", headers=bearer(admins["acme"])).status_code == 403
