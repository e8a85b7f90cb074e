"""The authorization matrix: every route of the app × {no key, wrong key, revoked, expired, user scopes, admin
scope (the operator's, tenant default), a tenant's admin, finetune scope, another tenant} → the status it must
answer.

``ROUTES`` is this test's own statement of the policy (the scope each route needs, and a request that
succeeds when allowed). It is checked against the app's route table: a route added to the app without a
row here, or without a rule in ``api/auth.py``'s ``RULES``, fails."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from groupqwen.access.principal import SCOPES
from groupqwen.api import auth
from groupqwen.api.app import create_app
from groupqwen.cache.embedders.fake import HashingEmbedder
from groupqwen.config import Hyperparameters
from groupqwen.finetune.records import Conversation, Turn, dumps
from groupqwen.testing import fake_services, fake_settings

from .conftest import key_store

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
JSONL = dumps(
    Conversation(
        id="c1",
        source="chatgpt",
        title="t",
        created_at=1.7e9,
        branch=0,
        turns=(Turn("user", "What is 2+2?"), Turn("assistant", "4")),
    )
)

JSONL_TRAIN = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
PERPLEXITY_MD = (Path(__file__).parents[1] / "finetune" / "fixtures" / "perplexity" / "tides.md").read_text()
FT_JOB = {"model": "fake", "training_file": "file-none"}  # a fake model cannot be fine-tuned: 404


@dataclass(frozen=True)
class Sample:
    rule: str  # public | key | a scope | operator (admin on a key of the default tenant)
    url: str
    body: Any = None
    tenant_data: bool = False  # the acme tenant's dataset or stored response: another tenant gets a 404
    allowed: int = 200  # the status when allowed


ROUTES: dict[tuple[str, str], Sample] = {
    ("GET", "/health"): Sample("public", "/health"),
    ("GET", "/v1/health"): Sample("public", "/v1/health"),
    ("POST", "/v1/chat/completions"): Sample("chat", "/v1/chat/completions", CHAT),
    ("POST", "/v1/completions"): Sample(
        "chat", "/v1/completions", {"model": "fake", "prompt": "hi", "max_tokens": 4}
    ),
    ("POST", "/v1/responses"): Sample(
        "chat", "/v1/responses", {"model": "fake", "input": "hi", "store": False}
    ),
    ("GET", "/v1/responses/{response_id}"): Sample("chat", "/v1/responses/{kept}", tenant_data=True),
    ("GET", "/v1/responses/{response_id}/input_items"): Sample(
        "chat", "/v1/responses/{kept}/input_items", tenant_data=True
    ),
    ("DELETE", "/v1/responses/{response_id}"): Sample("chat", "/v1/responses/{doomed}", tenant_data=True),
    ("POST", "/v1/embeddings"): Sample("embeddings", "/v1/embeddings", {"model": "hashing", "input": "hi"}),
    ("GET", "/v1/models"): Sample("key", "/v1/models"),
    ("GET", "/v1/models/{model_id:path}"): Sample("key", "/v1/models/fake"),
    ("POST", "/v1/models/{model_id:path}/load"): Sample("operator", "/v1/models/fake/load"),
    ("POST", "/v1/models/{model_id:path}/unload"): Sample("operator", "/v1/models/fake/unload"),
    # a base model is not deleted (400): the rule let the key in
    ("DELETE", "/v1/models/{model_id:path}"): Sample("finetune", "/v1/models/fake", allowed=400),
    ("GET", "/v1/metrics"): Sample("admin", "/v1/metrics"),
    ("GET", "/metrics"): Sample("operator", "/metrics"),
    ("GET", "/v1/metrics/stream"): Sample("admin", "/v1/metrics/stream?events=1"),
    ("POST", "/v1/cache/feedback"): Sample(  # no cache here: no hit to dislike
        "chat", "/v1/cache/feedback", {"hit_id": "h1", "rating": "bad"}, allowed=404
    ),
    ("GET", "/v1/cache/stats"): Sample("operator", "/v1/cache/stats"),
    ("POST", "/v1/cache/invalidate"): Sample("operator", "/v1/cache/invalidate", {"model": "fake"}),
    ("DELETE", "/v1/cache"): Sample("operator", "/v1/cache"),
    ("POST", "/v1/review/{name:path}"): Sample("finetune", "/v1/review/mine", JSONL),
    ("GET", "/v1/review/{name:path}"): Sample("finetune", "/v1/review/chats", tenant_data=True),
    ("POST", "/v1/review/{name:path}/decisions"): Sample(
        "finetune", "/v1/review/chats/decisions", {"key": "c1#0", "verdict": "accept"}, tenant_data=True
    ),
    ("GET", "/v1/review/{name:path}/export"): Sample("finetune", "/v1/review/chats/export", tenant_data=True),
    ("GET", "/v1/review/{name:path}/build"): Sample("finetune", "/v1/review/chats/build", tenant_data=True),
    ("POST", "/v1/review/{name:path}/files"): Sample("finetune", "/v1/review/chats/files", tenant_data=True),
    ("POST", "/v1/review/{name:path}/import"): Sample(
        "finetune", "/v1/review/upload/import?filename=tides.md&languages=", PERPLEXITY_MD
    ),
    # fine-tuning: a body that is refused (400) or an id that does not exist (404) shows the rule let it in;
    # acme's file and job (made in matrix_app) are not found by another tenant
    ("POST", "/v1/files"): Sample("finetune", "/v1/files", {"purpose": "fine-tune"}, allowed=400),
    ("GET", "/v1/files"): Sample("finetune", "/v1/files"),
    ("GET", "/v1/files/{file_id}"): Sample("finetune", "/v1/files/{file}", tenant_data=True),
    ("GET", "/v1/files/{file_id}/content"): Sample("finetune", "/v1/files/{file}/content", tenant_data=True),
    ("DELETE", "/v1/files/{file_id}"): Sample("finetune", "/v1/files/file-none", allowed=404),
    ("POST", "/v1/fine_tuning/jobs"): Sample("finetune", "/v1/fine_tuning/jobs", FT_JOB, allowed=404),
    ("POST", "/v1/finetune/start"): Sample("finetune", "/v1/finetune/start", FT_JOB, allowed=404),
    ("GET", "/v1/fine_tuning/jobs"): Sample("finetune", "/v1/fine_tuning/jobs"),
    ("GET", "/v1/fine_tuning/jobs/{job_id}"): Sample(
        "finetune", "/v1/fine_tuning/jobs/{job}", tenant_data=True
    ),
    ("POST", "/v1/fine_tuning/jobs/{job_id}/cancel"): Sample(
        "finetune", "/v1/fine_tuning/jobs/{job}/cancel", tenant_data=True
    ),
    ("GET", "/v1/fine_tuning/jobs/{job_id}/events"): Sample(
        "finetune", "/v1/fine_tuning/jobs/{job}/events", tenant_data=True
    ),
    ("GET", "/v1/fine_tuning/jobs/{job_id}/checkpoints"): Sample(
        "finetune", "/v1/fine_tuning/jobs/{job}/checkpoints", tenant_data=True
    ),
}

# column → the scopes its key holds and its tenant (None: it gets no further than its key)
COLUMNS: dict[str, tuple[frozenset[str], str] | None] = {
    "no key": None,
    "wrong key": None,
    "revoked": None,
    "expired": None,
    "user scopes": (frozenset({"chat", "embeddings"}), "acme"),
    "admin scope": (frozenset({"admin"}), "default"),  # the operator's
    "tenant admin": (frozenset({"admin"}), "acme"),
    "finetune scope": (frozenset({"finetune"}), "acme"),
    "other tenant": (frozenset(SCOPES), "rival"),
}


def expected(sample: Sample, column: str) -> int:
    if sample.rule == "public":
        return 200
    key = COLUMNS[column]
    if key is None:
        return 401
    scopes, tenant = key
    needed = "admin" if sample.rule == "operator" else sample.rule
    if needed != "key" and needed not in scopes:
        return 403
    if sample.rule == "operator" and tenant != "default":
        return 403  # acts on the whole gateway
    if column == "other tenant" and sample.tenant_data:
        return 404  # acme's: to another tenant it does not exist
    return sample.allowed


@pytest.fixture(scope="module")
def matrix_app(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[TestClient, dict[str, str], dict[str, str]]]:
    folder = tmp_path_factory.mktemp("matrix")
    settings = fake_settings(folder, auth="keys")
    services = fake_services(settings, embedder=HashingEmbedder())
    store = key_store(services)
    now = time.time()

    def key(name: str, scopes: Any, tenant: str = "acme", **fields: Any) -> str:
        return store.create(name, now=now, tenant=tenant, scopes=scopes, **fields)[1]

    keys = {
        "user scopes": key("user", ["chat", "embeddings"]),
        "admin scope": key("admin", ["admin"], tenant="default"),
        "tenant admin": key("acme admin", ["admin"]),
        "finetune scope": key("finetune", ["finetune"]),
        "other tenant": key("rival", SCOPES, tenant="rival"),
        "revoked": key("revoked", SCOPES),
        "expired": key("expired", SCOPES, expires_at=now - 1),
    }
    store.revoke(keys["revoked"][3:19], now=now)
    keys["wrong key"] = keys["user scopes"][:-4] + "AAAA"
    headers = {column: {"authorization": f"Bearer {k}"} for column, k in keys.items()}
    headers["no key"] = {}
    assert services.jobs is not None
    job = services.jobs.store.create(  # acme's, already ended: the gateway starting does not run it
        id="ftjob-acme", model="fake", suffix="custom", training_file="file-x", validation_file=None,
        hyperparameters=Hyperparameters.model_validate({}).model_dump(mode="json"), tenant="acme",
    )  # fmt: skip
    services.jobs.store.update(job.id, status="cancelled")
    with TestClient(create_app(settings, services)) as client:
        r = client.post("/v1/review/chats", content=JSONL, headers=headers["finetune scope"])
        assert r.status_code == 200, r.text
        upload = {"data": {"purpose": "fine-tune"}, "files": {"file": ("t.jsonl", JSONL_TRAIN)}}
        r = client.post("/v1/files", **upload, headers=headers["finetune scope"])  # type: ignore[arg-type]
        assert r.status_code == 200, r.text
        stored = {"file": r.json()["id"], "job": job.id}
        for name in ("kept", "doomed"):
            r = client.post(
                "/v1/responses", json={"model": "fake", "input": "hi"}, headers=headers["user scopes"]
            )
            assert r.status_code == 200, r.text
            stored[name] = r.json()["id"]
        yield client, headers, stored  # type: ignore[misc]


def call(
    client: TestClient, sample: Sample, method: str, headers: dict[str, str], stored: dict[str, str]
) -> Any:
    url = sample.url.format(**stored)
    if isinstance(sample.body, str):
        return client.request(method, url, content=sample.body, headers=headers)
    return client.request(method, url, json=sample.body, headers=headers)


# WebSocket routes: allowed, the upgrade is accepted (the server's hello); refused, the HTTP error it would be
WEBSOCKETS: dict[tuple[str, str], Sample] = {(auth.WEBSOCKET, "/v1/ws"): Sample("chat", "/v1/ws")}


def test_every_route_has_a_rule_and_a_row_here() -> None:
    app = create_app(fake_settings(Path("/nonexistent")))
    served = set(auth.routes(app))
    rows = {**ROUTES, **WEBSOCKETS}
    assert served == set(rows), "a route without a row in ROUTES (or a row for a route that is gone)"
    assert served == set(auth.RULES)
    assert {k: auth.RULES[k] for k in rows} == {k: s.rule for k, s in rows.items()}


def test_an_app_with_a_route_no_rule_names_is_not_built() -> None:
    app = create_app(fake_settings(Path("/nonexistent")))

    @app.get("/v1/secret")
    async def secret() -> dict[str, str]:
        return {}

    with pytest.raises(RuntimeError, match="RULES names no rule for: GET /v1/secret"):
        auth.check_rules(app)


@pytest.mark.parametrize("route", list(ROUTES), ids=[f"{m} {p}" for m, p in ROUTES])
def test_matrix(
    matrix_app: tuple[TestClient, dict[str, str], dict[str, str]], route: tuple[str, str]
) -> None:
    client, headers, stored = matrix_app
    method, _ = route
    sample = ROUTES[route]
    got, want = {}, {}
    for column in COLUMNS:
        response = call(client, sample, method, headers[column], stored)  # type: ignore[arg-type]
        got[column], want[column] = response.status_code, expected(sample, column)
        if response.status_code in (401, 403):
            error = response.json()["error"]
            assert error["type"] == "invalid_request_error"
            assert error["code"] == (
                "invalid_api_key" if response.status_code == 401 else "insufficient_permissions"
            )
        if response.status_code == 401:
            assert response.headers["www-authenticate"].startswith("Bearer")
    assert got == want


@pytest.mark.parametrize("route", list(WEBSOCKETS), ids=[p for _, p in WEBSOCKETS])
def test_websocket_matrix(
    matrix_app: tuple[TestClient, dict[str, str], dict[str, str]], route: tuple[str, str]
) -> None:
    client, headers, _ = matrix_app
    sample = WEBSOCKETS[route]
    got, want = {}, {}
    for column in COLUMNS:
        want[column] = expected(sample, column) == sample.allowed
        try:
            with client.websocket_connect(sample.url, headers=headers[column]) as ws:
                got[column] = ws.receive_json()["type"] == "hello"
        except WebSocketDenialResponse as refused:  # answered as over HTTP: the status and the error
            assert refused.status_code == expected(sample, column)
            assert refused.json()["error"]["code"] in ("invalid_api_key", "insufficient_permissions")
            got[column] = False
    assert got == want
