"""Property-based fuzzing of the published OpenAPI document (schemathesis): every operation gets requests
generated from its schema — valid ones and invalid ones — in-process (ASGI), against the fake backend, and
every answer must be no 5xx, a documented status, a documented content type and match its schema. The
gateway has the semantic cache on, rate limits on (far above the load, so each answer carries the
headers), a review dataset to find and a hashing embedder, so the cases reach deep into each route.

At least ``MIN_CASES`` cases run across the operations (``test_enough_cases_ran`` counts them); the
deterministic seed keeps the suite reproducible. Found cases are kept as regression tests in
``test_json_bodies.py`` and ``test_bad_input.py``.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from groupqwen.access.keys import generate_key
from groupqwen.api.app import create_app
from groupqwen.backends.fake import FakeBackend
from groupqwen.cache import CachePolicy, EmbeddedStore, SemanticCache
from groupqwen.cache.embedders import HashingEmbedder
from groupqwen.config import CacheConfig
from groupqwen.finetune.records import Conversation, Turn, dumps
from groupqwen.testing import fake_services, fake_settings

MIN_CASES = 1000
KEYED_EXAMPLES = 15  # per operation, with auth: keys
EXAMPLES = 35  # per operation: 23 operations, some with few distinct inputs (about 1,400 cases in all)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
ran: Counter[str] = Counter()


def _app(directory: Path, **settings: Any) -> Any:
    embedder = HashingEmbedder()
    cache = SemanticCache(
        EmbeddedStore(None, embedder.dim, max_entries=1000), embedder, CachePolicy.from_config(CacheConfig())
    )
    limits = {"anonymous": True, "key": dict.fromkeys(("requests_per_minute", "tokens_per_minute"), 10**9)}
    settings_ = fake_settings(directory, limits=limits, **settings)
    services = fake_services(settings_, FakeBackend(model_id="fake"), cache=cache, embedder=embedder)
    return create_app(settings_, services)


def _without_lifespan(app: Any) -> Any:
    """``app`` for a client that runs the lifespan around every request (schemathesis's ASGI transport):
    its end would close the services that the next case needs. They live as long as the module."""

    async def serve(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return

    return serve


@schemathesis.serializer("application/x-ndjson")
def _ndjson(context: schemathesis.SerializationContext, value: Any) -> dict[str, Any]:
    """A review upload's body: the generated text (its schema is a string) as UTF-8."""
    text = value if isinstance(value, str) else json.dumps(value)
    return {"data": text.encode("utf-8", "surrogatepass")}


APP = _app(Path(tempfile.mkdtemp(prefix="groupqwen-fuzz-")))
schema = schemathesis.openapi.from_asgi("/openapi.json", _without_lifespan(APP))
schema.config.generation.update(deterministic=True)
# the same with auth: keys, every case sent with the bootstrap admin key (the operator: every scope)
KEY = generate_key()
KEYED = _app(
    Path(tempfile.mkdtemp(prefix="groupqwen-fuzz-keys-")), auth={"mode": "keys", "bootstrap_admin_key": KEY}
)
keyed_schema = schemathesis.openapi.from_asgi("/openapi.json", _without_lifespan(KEYED))
keyed_schema.config.generation.update(deterministic=True)


@pytest.fixture(scope="module", autouse=True)
def _review_dataset() -> None:
    """A dataset named ``chats`` with one conversation, so the review routes find something."""
    conversation = Conversation(
        id="c1",
        source="chatgpt",
        title="t",
        created_at=1.0,
        branch=0,
        turns=(Turn("user", "q"), Turn("assistant", "a")),
    )
    client = TestClient(_without_lifespan(APP))
    assert client.post("/v1/review/chats", content=dumps(conversation)).status_code == 200
    KEYED.state.services.access.bootstrap(KEY)  # what the lifespan does at start (skipped here)
    keyed = TestClient(_without_lifespan(KEYED))
    headers = {"authorization": f"Bearer {KEY}"}
    assert keyed.post("/v1/review/chats", content=dumps(conversation), headers=headers).status_code == 200


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_every_answer_is_documented_and_no_5xx(case: schemathesis.Case) -> None:
    _check(case, "", {})


def _check(case: schemathesis.Case, label: str, headers: dict[str, str]) -> None:
    if case.path == "/v1/metrics/stream" and isinstance(case.query, dict):
        events = case.query.get("events")
        if events is None or (isinstance(events, int) and events >= 1):
            case.query["events"] = 1  # the live stream is endless without it; one event says enough
    case.call_and_validate(checks=CHECKS, headers=headers)
    ran[label + case.operation.label] += 1


@keyed_schema.parametrize()
@settings(
    max_examples=KEYED_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_with_a_key_every_answer_is_documented_and_no_5xx(case: schemathesis.Case) -> None:
    _check(case, "keyed ", {"authorization": f"Bearer {KEY}"})


def test_enough_cases_ran() -> None:
    """Runs after the fuzzing (pytest keeps a module's order); skipped when it was deselected."""
    if not ran:
        pytest.skip("the fuzzing did not run in this session")
    print(f"fuzzed {sum(ran.values())} cases over {len(ran)} operations: {dict(ran)}")
    assert sum(ran.values()) >= MIN_CASES, ran
    operations = len(list(schema.get_all_operations()))
    assert len(ran) == 2 * operations, ran  # every operation, without a key and with one
