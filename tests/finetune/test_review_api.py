"""The review API (``/v1/review/…``): upload, list, decide, export, and sharing decisions with ReviewStore."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from groupqwen.api.app import create_app
from groupqwen.config import load_settings
from groupqwen.finetune.records import Conversation, Turn, dumps, read_jsonl, to_dict
from groupqwen.finetune.review import ReviewStore


def conv(cid: str, question: str, answer: str, branch: int = 0) -> Conversation:
    return Conversation(
        id=cid,
        source="chatgpt",
        title=f"About {cid}",
        created_at=1700000000.0,
        branch=branch,
        turns=(Turn("user", question), Turn("assistant", answer, reasoning="thinking…")),
    )


CONVERSATIONS = [
    conv("c1", "What is a monad?", "A monoid in the category of endofunctors."),
    conv("c2", "Capital of France?", "Paris."),
    conv("c2", "Capital of France?", "It is Paris.", branch=1),
    conv("c3", "2+2?", "4"),
]
JSONL = "".join(dumps(c) + "\n" for c in CONVERSATIONS)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def http(tmp_path: Path, data_dir: Path) -> Iterator[TestClient]:
    settings = load_settings(
        models={"fake": {"backend": "fake"}},
        default_model="fake",
        models_dir=tmp_path,
        data_dir=data_dir,
        cache={"backend": "off"},
    )
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def uploaded(http: TestClient) -> TestClient:
    r = http.post("/v1/review/chats", content=JSONL, headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 200, r.text
    assert r.json() == {"object": "review.dataset", "name": "chats", "conversations": 4}
    return http


def decide(http: TestClient, key: str, verdict: str, **extra: Any) -> Any:
    return http.post("/v1/review/chats/decisions", json={"key": key, "verdict": verdict, **extra})


def error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    return body


def test_upload_writes_the_conversations_file(uploaded: TestClient, data_dir: Path) -> None:
    path = data_dir / "review" / "chats" / "conversations.jsonl"
    assert list(read_jsonl(path)) == CONVERSATIONS
    assert [p.name for p in path.parent.iterdir()] == ["conversations.jsonl"]  # no temp file left


def test_list_pages_and_counts(uploaded: TestClient) -> None:
    page = uploaded.get("/v1/review/chats").json()
    assert page["counts"] == {"pending": 4, "accepted": 0, "rejected": 0, "edited": 0, "total": 4}
    assert page["status"] == "pending" and page["total"] == 4
    assert [i["key"] for i in page["data"]] == ["c1#0", "c2#0", "c2#1", "c3#0"]
    first = page["data"][0]
    assert first["status"] == "pending" and first["edited"] is None
    assert first["conversation"] == to_dict(CONVERSATIONS[0])

    page = uploaded.get("/v1/review/chats", params={"limit": 2, "offset": 1, "status": "all"}).json()
    assert [i["key"] for i in page["data"]] == ["c2#0", "c2#1"]
    assert (page["limit"], page["offset"], page["total"]) == (2, 1, 4)


def test_accept_reject_edit(uploaded: TestClient, data_dir: Path) -> None:
    r = decide(uploaded, "c1#0", "accept")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "accepted"
    assert decide(uploaded, "c2#1", "reject").json()["status"] == "rejected"
    edited_turns = [
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris!"},
    ]
    r = decide(uploaded, "c2#0", "edit", conversation={"turns": edited_turns})
    assert r.status_code == 200, r.text
    assert r.json()["counts"] == {"pending": 1, "accepted": 1, "rejected": 1, "edited": 1, "total": 4}

    by_status = {
        s: [i["key"] for i in uploaded.get("/v1/review/chats", params={"status": s}).json()["data"]]
        for s in ("pending", "accepted", "rejected", "edited")
    }
    assert by_status == {"pending": ["c3#0"], "accepted": ["c1#0"], "rejected": ["c2#1"], "edited": ["c2#0"]}
    item = uploaded.get("/v1/review/chats", params={"status": "edited"}).json()["data"][0]
    assert item["edited"]["turns"] == edited_turns
    assert item["edited"]["title"] == "About c2"  # fields left out keep their value

    # the last decision wins
    assert decide(uploaded, "c2#1", "accept").json()["status"] == "accepted"
    decisions = (data_dir / "review" / "chats" / "decisions.jsonl").read_text().splitlines()
    assert [json.loads(line)["verdict"] for line in decisions] == ["accept", "reject", "edit", "accept"]


def test_export_is_what_apply_writes(uploaded: TestClient) -> None:
    decide(uploaded, "c1#0", "accept")
    decide(uploaded, "c2#1", "reject")
    decide(uploaded, "c3#0", "edit", conversation={"title": "Arithmetic"})
    r = uploaded.get("/v1/review/chats/export", params={"keep_pending": False})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/x-ndjson")
    exported = [json.loads(line) for line in r.text.splitlines()]
    assert [(c["id"], c["branch"], c["title"]) for c in exported] == [
        ("c1", 0, "About c1"),
        ("c3", 0, "Arithmetic"),
    ]

    # by default, as `--apply`: what was not rejected, the conversations not reviewed (c2#0) included
    r = uploaded.get("/v1/review/chats/export")
    exported = [json.loads(line) for line in r.text.splitlines()]
    assert [(c["id"], c["branch"]) for c in exported] == [("c1", 0), ("c2", 0), ("c3", 0)]


def test_resume_with_the_terminal_review(uploaded: TestClient, data_dir: Path) -> None:
    folder = data_dir / "review" / "chats"
    decide(uploaded, "c1#0", "reject")
    store = ReviewStore(folder / "decisions.jsonl")  # what `groupqwen data review` opens
    pending = list(store.pending(read_jsonl(folder / "conversations.jsonl")))
    assert [c.id for c in pending] == ["c2", "c2", "c3"]
    store.decide(pending[0], "accept")

    page = uploaded.get("/v1/review/chats", params={"status": "all"}).json()
    assert {i["key"]: i["status"] for i in page["data"]} == {
        "c1#0": "rejected",
        "c2#0": "accepted",
        "c2#1": "pending",
        "c3#0": "pending",
    }


def test_reupload_keeps_decisions(uploaded: TestClient) -> None:
    decide(uploaded, "c1#0", "accept")
    r = uploaded.post("/v1/review/chats", content=JSONL, headers={"content-type": "text/plain"})
    assert r.status_code == 200
    assert uploaded.get("/v1/review/chats").json()["counts"]["accepted"] == 1


def test_bad_jsonl_line_is_refused_and_nothing_written(uploaded: TestClient, data_dir: Path) -> None:
    path = data_dir / "review" / "chats" / "conversations.jsonl"
    before = path.read_bytes()
    body = dumps(CONVERSATIONS[0]) + "\n\n" + '{"id": "x", "source": "myspace", "turns": []}\n'
    e = error(uploaded.post("/v1/review/chats", content=body), 400)
    assert e["param"] == "body" and e["code"] == "invalid_records"
    assert e["message"].startswith("line 3:") and "source" in e["message"]
    e = error(uploaded.post("/v1/review/chats", content=dumps(CONVERSATIONS[0]) + "\n{not json\n"), 400)
    assert e["message"].startswith("line 2:")
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["conversations.jsonl"]

    e = error(uploaded.post("/v1/review/fresh", content=JSONL + JSONL), 400)
    assert "appears twice" in e["message"]
    error(uploaded.post("/v1/review/fresh", content="\n"), 400)
    error(uploaded.post("/v1/review/fresh", content=b"\xff\xfe"), 400)
    assert not (data_dir / "review" / "fresh").exists()


# A literal ".." never gets here: the client resolves dot segments before sending.
@pytest.mark.parametrize(
    "name", ["%2E%2E", "%2e", ".hidden", "a%2Fb", "a%2F..%2F..%2Fetc", "x" * 65, "a%20b"]
)
def test_bad_names_are_refused(http: TestClient, name: str, data_dir: Path) -> None:
    for method, suffix in (("get", ""), ("post", ""), ("get", "/export"), ("post", "/decisions")):
        r = http.request(method, f"/v1/review/{name}{suffix}", content=JSONL if suffix == "" else "{}")
        e = error(r, 400)
        assert e["param"] == "name", (method, suffix, e)
    assert not data_dir.exists() or not any(data_dir.rglob("*.jsonl"))


def test_unknown_dataset_and_key(uploaded: TestClient) -> None:
    for r in (
        uploaded.get("/v1/review/nope"),
        uploaded.get("/v1/review/nope/export"),
        uploaded.post("/v1/review/nope/decisions", json={"key": "c1#0", "verdict": "accept"}),
    ):
        assert error(r, 404)["code"] == "not_found"
    e = error(decide(uploaded, "c9#0", "accept"), 404)
    assert e["param"] == "key"


def test_bad_decisions(uploaded: TestClient, data_dir: Path) -> None:
    assert error(decide(uploaded, "c1#0", "maybe"), 400)["param"] == "verdict"
    assert error(decide(uploaded, "c1#0", "edit"), 400)["param"] == "conversation"
    assert (
        error(decide(uploaded, "c1#0", "accept", conversation={"title": "x"}), 400)["param"] == "conversation"
    )
    e = error(
        decide(uploaded, "c1#0", "edit", conversation={"turns": [{"role": "robot", "content": "hi"}]}), 400
    )
    assert e["param"] == "conversation" and "role" in e["message"]
    e = error(decide(uploaded, "c1#0", "edit", conversation={"id": "other"}), 400)
    assert e["param"] == "conversation"
    assert (
        error(uploaded.post("/v1/review/chats/decisions", json={"verdict": "accept"}), 400)["param"] == "key"
    )
    assert (
        error(uploaded.post("/v1/review/chats/decisions", content="{oops"), 400)["code"] == "invalid_request"
    )
    assert not (data_dir / "review" / "chats" / "decisions.jsonl").exists()


def test_bad_query(uploaded: TestClient) -> None:
    assert error(uploaded.get("/v1/review/chats", params={"status": "maybe"}), 400)["param"] == "status"
    assert error(uploaded.get("/v1/review/chats", params={"limit": 0}), 400)["param"] == "limit"


def test_body_size_is_capped(tmp_path: Path) -> None:
    settings = load_settings(
        models={"fake": {"backend": "fake"}},
        default_model="fake",
        models_dir=tmp_path,
        data_dir=tmp_path / "data",
        cache={"backend": "off"},
        max_body_bytes=1024,
    )
    with TestClient(create_app(settings)) as client:
        assert error(client.post("/v1/review/chats", content=JSONL * 3), 413)["code"] == "payload_too_large"


def test_concurrent_decisions_do_not_corrupt_the_file(uploaded: TestClient, data_dir: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    keys = ["c1#0", "c2#0", "c2#1", "c3#0"] * 5
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda k: decide(uploaded, k, "accept").status_code, keys))
    assert codes == [200] * len(keys)
    store = ReviewStore(data_dir / "review" / "chats" / "decisions.jsonl")  # every line parses
    assert len(store) == 4
    lines = (data_dir / "review" / "chats" / "decisions.jsonl").read_text().splitlines()
    assert len(lines) == len(keys)


def test_an_edit_holding_a_line_separator_character_survives_a_reload(tmp_path: Path) -> None:
    original = Conversation("c1", "chatgpt", (Turn("user", "hi"), Turn("assistant", "hello")))
    edited = Conversation("c1", "chatgpt", (Turn("user", "hi"), Turn("assistant", "line\u2028break")))
    store = ReviewStore(tmp_path / "decisions.jsonl")
    store.decide(original, "edit", edited)
    reloaded = ReviewStore(tmp_path / "decisions.jsonl").get(original)
    assert reloaded is not None and reloaded.edited == edited


def test_the_reviewed_set_becomes_fine_tune_files(uploaded: TestClient, data_dir: Path) -> None:
    """``POST /v1/review/{name}/files``: the build a job trains on, kept as files (ids for a job)."""
    decide(uploaded, "c1#0", "reject")
    r = uploaded.post("/v1/review/chats/files?val_fraction=0")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "review.files" and body["validation_file"] is None
    training = body["training_file"]
    assert training["purpose"] == "fine-tune" and training["filename"] == "chats-train.jsonl"
    assert uploaded.get(f"/v1/files/{training['id']}").json() == training
    kept = (data_dir / "finetune" / "files" / f"{training['id']}.jsonl").read_text().splitlines()
    assert training["bytes"] == sum(len(line.encode()) + 1 for line in kept)
    messages = [json.loads(line)["messages"] for line in kept]
    assert {m[0]["content"] for m in messages} == {"Capital of France?", "2+2?"}  # c1 rejected
    decide(uploaded, "c1#0", "accept")
    split = uploaded.post("/v1/review/chats/files?val_fraction=0.4").json()
    assert split["validation_file"]["filename"] == "chats-validation.jsonl"
    assert split["training_file"]["id"] != training["id"]
    # a small set whose every conversation the split's hash sends to validation: said, no empty file kept
    all_validation = error(uploaded.post("/v1/review/chats/files?val_fraction=0.99"), 400)
    assert (
        all_validation["param"] == "val_fraction" and "no training conversation" in all_validation["message"]
    )
    for c in ("c1#0", "c2#0", "c2#1", "c3#0"):
        decide(uploaded, c, "reject")
    empty = error(uploaded.post("/v1/review/chats/files"), 400)
    assert "chats-train.jsonl" in empty["message"] and empty["param"] == "file"
    assert error(uploaded.post("/v1/review/none-here/files"), 404)["code"] == "not_found"
    assert error(uploaded.post("/v1/review/chats/files?val_fraction=1"), 400)["param"] == "val_fraction"
    files = data_dir / "finetune" / "files"
    assert [p.name for p in files.iterdir() if not p.name.startswith("file-")] == []  # nothing half-made
