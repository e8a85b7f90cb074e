"""The disk of ``data_dir`` full: a real size-limited filesystem (a 2 MiB tmpfs mounted for the test; it
needs root, which the suite has here) filled to the last byte. Chat requests still succeed; their
telemetry records wait in the buffer (health degraded: database and disk) and are written once space is
back; the review API answers 507 insufficient_storage and leaves its files as they were (no half line)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from waiting import until

from groupqwen.api.app import create_app
from groupqwen.cache.embedders import HashingEmbedder
from groupqwen.cache.stores import COMMIT_AFTER_S, Answer, CacheEntry, EmbeddedStore
from groupqwen.finetune.records import Conversation, Turn, dumps
from groupqwen.telemetry.service import Telemetry
from groupqwen.testing import fake_services, fake_settings

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
CONVERSATION = Conversation(
    id="c1",
    source="chatgpt",
    title="t",
    created_at=1.0,
    branch=0,
    turns=(Turn("user", "q"), Turn("assistant", "a")),
)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(directory: Path) -> Path:
    """A file that takes every free byte left (called again, it takes what was freed since: a database
    dropping its journal frees a few pages)."""
    filler = directory / "filler"
    with filler.open("ab", buffering=0) as f:
        try:
            while f.write(b"\0" * 4096):
                pass
        except OSError:
            pass
    return filler


def until_true(condition: Callable[[], bool], within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.02)


def checks(http: TestClient) -> dict[str, str]:
    report = http.get("/v1/health").json()
    return {name: check["status"] for name, check in report["checks"].items()}


def test_a_full_data_disk_fails_no_chat_request_and_corrupts_nothing(
    small_disk: Path, tmp_path: Path
) -> None:
    settings = fake_settings(tmp_path, data_dir=small_disk / "data")
    services = fake_services(settings, telemetry=Telemetry.from_settings(settings))
    writer = services.telemetry.writer
    assert writer is not None
    with TestClient(create_app(settings, services)) as http:
        assert http.post("/v1/chat/completions", json=CHAT).status_code == 200
        assert http.post("/v1/review/chats", content=dumps(CONVERSATION) + "\n").status_code == 200
        decisions = small_disk / "data" / "review"
        before = {p.name: p.read_bytes() for p in decisions.rglob("*") if p.is_file()}
        filler = fill(small_disk)

        for i in range(20):
            body = {**CHAT, "messages": [{"role": "user", "content": f"question {i} " + "word " * 300}]}
            answer = http.post("/v1/chat/completions", json={**body, "stream": i % 2 == 0})
            assert answer.status_code == 200, answer.text
        until_true(lambda: writer.last_error is not None)
        assert writer.dropped == 0 and writer.pending > 0
        assert "disk is full" in (writer.last_error or "")
        status = checks(http)
        assert status["database"] == "degraded" and status["disk"] == "degraded"

        fill(small_disk)  # what the failed telemetry writes gave back since
        edit = {"key": "c1#0", "verdict": "edit", "conversation": {"title": "x" * 3_000_000}}
        for body in ({"key": "c1#0", "verdict": "accept"}, edit):
            refused = http.post("/v1/review/chats/decisions", json=body)
            if refused.status_code == 413:  # the edit is over max_body_bytes: nothing to write
                continue
            assert refused.status_code == 507, refused.text
            assert refused.json()["error"]["code"] == "insufficient_storage"
        replaced = http.post("/v1/review/chats", content=(dumps(CONVERSATION) + "\n") * 1)
        assert replaced.status_code in (200, 507), replaced.text
        after = {
            p.name: p.read_bytes() for p in decisions.rglob("*") if p.is_file() and "filler" not in p.name
        }
        for name in {*before, *after} - {n for n in after if n.startswith(".")}:  # no half line anywhere
            assert after.get(name, b"") == before.get(name, b""), name

        filler.unlink()
        until_true(lambda: writer.pending == 0)
        assert writer.written == 21 and writer.dropped == 0
        assert checks(http)["database"] == "ok"
        accepted = http.post("/v1/review/chats/decisions", json={"key": "c1#0", "verdict": "accept"})
        assert accepted.status_code == 200, accepted.text
        assert http.get("/v1/review/chats").json()["counts"]["accepted"] == 1


def test_a_full_data_disk_makes_the_import_and_the_build_507_and_changes_nothing(
    small_disk: Path, tmp_path: Path
) -> None:
    export = (Path(__file__).parent / "finetune" / "fixtures" / "claude" / "conversations.json").read_bytes()
    settings = fake_settings(tmp_path, data_dir=small_disk / "data")
    with TestClient(create_app(settings, fake_services(settings))) as http:
        imported = http.post("/v1/review/chats/import?filename=export.json&languages=", content=export)
        assert imported.status_code == 200, imported.text
        dataset = small_disk / "data" / "review" / "chats"
        before = {p.name: p.read_bytes() for p in dataset.iterdir()}
        filler = fill(small_disk)

        again = http.post("/v1/review/chats/import?filename=export.json&languages=", content=export)
        built = http.get("/v1/review/chats/build")
        for refused in (again, built):
            assert refused.status_code == 507, refused.text
            assert refused.json()["error"]["code"] == "insufficient_storage"
            assert "disk of data_dir is full" in refused.json()["error"]["message"]
        assert {p.name: p.read_bytes() for p in dataset.iterdir()} == before
        assert not any((small_disk / "data" / "review" / ".work").iterdir())  # no scratch left behind

        filler.unlink()
        assert (
            http.post("/v1/review/chats/import?filename=export.json&languages=", content=export).status_code
            == 200
        )
        built = http.get("/v1/review/chats/build")
        assert built.status_code == 200 and built.headers["content-type"] == "application/zip"


async def test_a_full_disk_makes_the_embedded_cache_degraded_until_a_commit_succeeds(
    small_disk: Path,
) -> None:
    """The embedded cache store commits its writes together a moment later: a commit the full disk refuses
    shows as ``degraded`` (the answers are still served from memory) until one succeeds again."""
    embedder = HashingEmbedder()
    store = EmbeddedStore(small_disk / "cache.sqlite", embedder.dim, max_entries=1000)

    def entry(n: int) -> CacheEntry:
        text = f"question {n}"
        answer = Answer("x" * 20_000, "", "stop", 1, 1)
        return CacheEntry(f"s:{n}", "s", "m", text, embedder.embed([text])[0], answer, 0.0, None)

    await store.put(entry(0))
    await until(lambda: (small_disk / "cache.sqlite-wal").stat().st_size > 20_000)  # committed
    filler = fill(small_disk)
    written = 1
    while not store.degraded:  # until a commit (or a write) meets the full disk
        with contextlib.suppress(sqlite3.Error):  # the write itself refused
            await store.put(entry(written))
        written += 1
        await asyncio.sleep(COMMIT_AFTER_S / 5)
        assert written < 500, "the full disk never failed a commit"
    assert (await store.get("s:0")) is not None  # served from memory meanwhile
    filler.unlink()
    await store.put(entry(written))
    await until(lambda: not store.degraded)
    await store.close()
