"""JSON that Python parses but no layer can use, refused once at the edge (``api/body.py``) with a 400 that
names the field: lone UTF-16 surrogates (not encodable as UTF-8) and integers too long to convert; every
route that reads a JSON body, with the semantic cache on, so a cacheable request reaches the cache key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from groupqwen.api.body import MAX_INT_DIGITS, MAX_JSON_DEPTH
from groupqwen.backends.fake import FakeBackend
from groupqwen.cache import CachePolicy, EmbeddedStore, SemanticCache
from groupqwen.cache.embedders import HashingEmbedder
from groupqwen.config import CacheConfig
from groupqwen.finetune.records import Conversation, Turn, dumps
from groupqwen.testing import fake_services, fake_settings, gateway

LONE = "\ud800"  # json.dumps writes it as the escape "\ud800"
HUGE = "<an integer one digit too long>"  # json.dumps cannot write it: post() puts it in the text
_HUGE_TEXT = "9" * (MAX_INT_DIGITS + 1)
CHAT: dict[str, Any] = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
CONVERSATION = Conversation(
    id="c1",
    source="chatgpt",
    title="t",
    created_at=1.0,
    branch=0,
    turns=(Turn("user", "q"), Turn("assistant", "a")),
)


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One gateway with the cache on (embedded store, hashing embedder): every bad body hits it."""
    embedder = HashingEmbedder()
    cache = SemanticCache(
        EmbeddedStore(None, embedder.dim, max_entries=1000), embedder, CachePolicy.from_config(CacheConfig())
    )
    settings = fake_settings(tmp_path_factory.mktemp("bodies"))
    with gateway(fake_services(settings, FakeBackend(model_id="fake"), cache=cache)) as client:
        yield client


def post(http: TestClient, url: str, body: Any) -> Any:
    # json.dumps escapes a lone surrogate (ensure_ascii); httpx's json= would fail to encode it
    raw = json.dumps(body).replace(f'"-{HUGE}"', "-" + _HUGE_TEXT).replace(f'"{HUGE}"', _HUGE_TEXT)
    return http.post(url, content=raw, headers={"content-type": "application/json"})


def refused(response: Any, param: str | None, says: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_request"
    assert error["param"] == param
    assert says in error["message"]
    if param is not None:
        assert f"'{param}'" in error["message"]


def chat(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(json.dumps(CHAT))
    body.update(changes)
    return body


def message(**fields: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": "hi", **fields}]


SCHEMA = {"type": "json_schema", "json_schema": {"name": LONE, "schema": {"type": "object"}}}

TEXT_FIELDS = [
    ("messages[0].content", chat(messages=message(content=LONE))),
    ("messages[0].content", chat(messages=message(content=f"a lone one {LONE} inside"))),
    ("messages[1].content", chat(messages=[*message(), {"role": "assistant", "content": "x\udfff"}])),
    (
        "messages[0].content[1].text",
        chat(messages=message(content=[{"type": "text", "text": "ok"}, {"type": "text", "text": LONE}])),
    ),
    ("messages[0].content[0].type", chat(messages=message(content=[{"type": LONE, "text": "x"}]))),
    ("messages[0].name", chat(messages=message(name=LONE))),
    ("messages[0].role", chat(messages=[{"role": LONE, "content": "hi"}])),
    ("model", chat(model=LONE)),
    ("user", chat(user=LONE)),
    ("stop", chat(stop=LONE)),
    ("stop[1]", chat(stop=["end", LONE])),
    ("response_format.json_schema.name", chat(response_format=SCHEMA)),
    ("response_format.type", chat(response_format={"type": LONE})),
    ("chat_template_kwargs.note", chat(chat_template_kwargs={"note": LONE})),
    ("chat_template_kwargs", chat(chat_template_kwargs={LONE: True})),  # a key: its object is named
    ("metadata.tags[0]", chat(metadata={"tags": [LONE]})),  # an unknown field is still the body's
]


@pytest.mark.parametrize(
    ("param", "body"), TEXT_FIELDS, ids=[p + f"-{i}" for i, (p, _) in enumerate(TEXT_FIELDS)]
)
@pytest.mark.parametrize("stream", [False, True])
def test_a_lone_surrogate_in_any_chat_field_is_a_400(
    http: TestClient, param: str, body: dict[str, Any], stream: bool
) -> None:
    refused(post(http, "/v1/chat/completions", {**body, "stream": stream}), param, "lone UTF-16 surrogate")


EMBEDDING_FIELDS = [
    ("input", {"input": LONE}),
    ("input[1]", {"input": ["fine", f"not {LONE} fine"]}),
    ("model", {"model": LONE, "input": "x"}),
    ("user", {"input": "x", "user": LONE}),
    ("encoding_format", {"input": "x", "encoding_format": LONE}),
]


@pytest.mark.parametrize(("param", "body"), EMBEDDING_FIELDS, ids=[p for p, _ in EMBEDDING_FIELDS])
def test_a_lone_surrogate_in_any_embeddings_field_is_a_400(
    http: TestClient, param: str, body: dict[str, Any]
) -> None:
    refused(post(http, "/v1/embeddings", {"model": "hashing", **body}), param, "lone UTF-16 surrogate")


@pytest.mark.parametrize(
    ("url", "param", "body"),
    [
        ("/v1/chat/completions", "max_tokens", chat(max_tokens=HUGE)),
        ("/v1/chat/completions", "seed", chat(seed=f"-{HUGE}")),
        (
            "/v1/chat/completions",
            "chat_template_kwargs.deep[0].n",
            chat(chat_template_kwargs={"deep": [{"n": HUGE}]}),
        ),
        ("/v1/embeddings", "dimensions", {"model": "hashing", "input": "x", "dimensions": HUGE}),
        ("/v1/embeddings", "input[0][0]", {"model": "hashing", "input": [[HUGE]]}),
        ("/v1/cache/invalidate", "older_than_s", {"older_than_s": HUGE}),
    ],
)
def test_an_integer_too_long_to_convert_is_a_400(
    http: TestClient, url: str, param: str, body: dict[str, Any]
) -> None:
    refused(post(http, url, body), param, f"an integer with {MAX_INT_DIGITS + 1} digits")


def test_the_longest_integer_allowed_is_judged_by_its_field(http: TestClient) -> None:
    response = post(http, "/v1/chat/completions", chat(max_tokens=10**MAX_INT_DIGITS - 1))
    assert response.status_code == 400, response.text  # the max_output_tokens check's, not the parser's
    error = response.json()["error"]
    assert error["param"] == "max_tokens" and "(max_output_tokens)" in error["message"]


DEEP_ROUTES = ["/v1/chat/completions", "/v1/embeddings", "/v1/cache/invalidate", "/v1/review/chats/decisions"]


def nested(depth: int, inner: str = "1") -> str:
    """``depth`` levels of arrays and objects, alternating, around ``inner``."""
    text = inner
    for level in range(depth):
        text = f"[{text}]" if level % 2 else '{"a": ' + text + "}"
    return text


@pytest.mark.parametrize("url", DEEP_ROUTES)
@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 990, 3000, 100_000])
def test_a_body_nested_too_deeply_is_a_400_on_every_route(http: TestClient, url: str, depth: int) -> None:
    """Regression (issue 22): a few thousand nested ``[`` were a 500 (RecursionError); nesting just under
    Python's recursion limit (990) passed the parser and failed behind it. The depth is judged before
    parsing: one level past ``MAX_JSON_DEPTH`` is a 400, at the limit the body is judged by its fields."""
    raw = '{"model": "fake", "key": "c1#0", "verdict": "accept", "messages": ' + nested(depth - 1) + "}"
    response = http.post(url, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    too_deep = f"JSON nested deeper than {MAX_JSON_DEPTH} levels of arrays and objects"
    assert (too_deep in error["message"]) == (depth > MAX_JSON_DEPTH), error
    assert error["param"] is None or depth <= MAX_JSON_DEPTH


def test_brackets_inside_strings_are_text_not_nesting(http: TestClient) -> None:
    content = "[" * 5000 + '{"\\"' + "]" * 10
    response = post(http, "/v1/chat/completions", chat(messages=message(content=content)))
    assert response.status_code == 200, response.text
    deep_schema = json.loads(nested(MAX_JSON_DEPTH - 3))  # with response_format and json_schema: 64
    body = chat(response_format={"type": "json_schema", "json_schema": {"schema": deep_schema}})
    assert post(http, "/v1/chat/completions", body).status_code == 200


def test_a_review_upload_line_nested_too_deeply_names_the_line(http: TestClient) -> None:
    lines = dumps(CONVERSATION) + "\n" + '{"id": ' + "[" * 3000 + "]" * 3000 + "}\n"
    response = http.post("/v1/review/deep", content=lines, headers={"content-type": "application/x-ndjson"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"].startswith("line 2: Invalid request body: JSON nested deeper")


def test_the_cache_admin_body_names_the_field(http: TestClient) -> None:
    refused(post(http, "/v1/cache/invalidate", {"pattern": LONE}), "pattern", "lone UTF-16 surrogate")
    assert post(http, "/v1/cache/invalidate", {"pattern": "*x*", "older_than_s": 5}).status_code == 200


def test_the_review_api_bodies(http: TestClient) -> None:
    lines = dumps(CONVERSATION) + "\n" + json.dumps({**json.loads(dumps(CONVERSATION)), "title": LONE}) + "\n"
    response = http.post("/v1/review/chats", content=lines, headers={"content-type": "application/x-ndjson"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_records" and error["param"] == "body"
    assert error["message"].startswith("line 2: Invalid value for 'title': the string holds a lone")
    huge = dumps(CONVERSATION).replace('"created_at":1.0', f'"created_at":{_HUGE_TEXT}')
    response = http.post("/v1/review/chats", content=huge, headers={"content-type": "application/x-ndjson"})
    assert (
        response.status_code == 400
        and "line 1: Invalid value for 'created_at'" in response.json()["error"]["message"]
    )

    assert http.post("/v1/review/chats", content=dumps(CONVERSATION)).status_code == 200
    decision = {"key": "c1#0", "verdict": "edit", "conversation": {"title": LONE}}
    refused(post(http, "/v1/review/chats/decisions", decision), "conversation.title", "lone UTF-16 surrogate")
    refused(post(http, "/v1/review/chats/decisions", {"key": LONE, "verdict": "accept"}), "key", "surrogate")
    accepted = post(http, "/v1/review/chats/decisions", {"key": "c1#0", "verdict": "accept"})
    assert accepted.status_code == 200, accepted.text


def test_surrogate_pairs_are_text_and_the_gateway_lives_on(http: TestClient) -> None:
    """An escaped pair is one character (an emoji): accepted, cached and embedded like any text."""
    for _ in range(2):
        response = post(
            http, "/v1/chat/completions", chat(messages=message(content="smile \ud83d\ude00"), user="u")
        )
        assert response.status_code == 200, response.text
    assert response.headers["x-groupqwen-cache"] == "hit"
    embedded = post(http, "/v1/embeddings", {"model": "hashing", "input": ["\ud83d\ude00", "x"]})
    assert embedded.status_code == 200, embedded.text
