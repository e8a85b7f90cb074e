"""Shared fixtures: every test starts from an environment without ``GROUPQWEN_*`` variables, with its data in
a temporary folder; ``live_server`` serves an app on a real loopback socket; ``postgres`` is the suite's real
PostgreSQL (a throwaway cluster on loopback, started once and stopped at the end); ``valkey`` is a real
Redis-protocol server for the session, and ``redis_url`` its URL, emptied (and the server started again if
a test stopped it)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
import redis
import uvicorn
from fastapi import FastAPI
from servers import PostgresServer, ValkeyServer, free_port


@pytest.fixture(autouse=True)
def _clean_groupqwen_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No ``GROUPQWEN_*`` variables, and the default ``data_dir`` in the session's temporary folder, never
    the user's ``~/.local/share`` (models stay in the shared ``~/.cache``: fetched once by ``make``)."""
    for name in list(os.environ):
        if name.upper().startswith("GROUPQWEN_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.getbasetemp() / "xdg-data"))


@contextmanager
def _serve(app: FastAPI) -> Iterator[str]:
    """``app`` served by uvicorn on a loopback port in a thread: real sockets, so a client can really go
    away mid-stream (httpx's ``ASGITransport`` buffers the whole response)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60  # the app's startup, on a busy machine
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(120)  # the app's shutdown waits for what it stops (a fine-tuning worker's checkpoint)
        sock.close()


@pytest.fixture
def live_server() -> Callable[[FastAPI], AbstractContextManager[str]]:
    """``with live_server(app) as url:`` — the app on a real loopback port for the block."""
    return _serve


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    root = Path(tempfile.mkdtemp(prefix="groupqwen-pg-"))
    server = PostgresServer(root, free_port())
    if server.user is not None:
        shutil.chown(root, server.user)
    server.init()
    try:
        yield server
    finally:
        if server.is_running():
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyServer]:
    server = ValkeyServer(tmp_path_factory.mktemp("valkey"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(valkey: ValkeyServer) -> str:
    if valkey.process is None:
        valkey.start()
    client = redis.Redis.from_url(valkey.url)
    client.flushall()
    client.close()
    return valkey.url


@pytest.fixture(scope="session")
def tiny_vlm_files() -> tuple[Path, Path]:
    """The tiny random-weight Qwen2-VL model (``model.gguf``, ``mmproj.gguf``), built once and cached
    (tests/tiny_vlm.py)."""
    from tiny_vlm import tiny_vlm

    from groupqwen.catalog import builtin_catalog
    from groupqwen.config import load_settings
    from groupqwen.pool.bundled import ensure_bundled

    qwen = ensure_bundled(builtin_catalog()["qwen2.5-coder-0.5b"], load_settings().models_dir)
    return tiny_vlm(qwen)
