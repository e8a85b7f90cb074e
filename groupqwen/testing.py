"""Test helpers for code written against GroupQwen: the real gateway assembled around fakes.

::

    from groupqwen.backends.fake import FakeBackend
    from groupqwen.testing import fake_services, fake_settings, gateway

    def test_hello(tmp_path):
        backend = FakeBackend(model_id="fake", tokens=["Hello", "!"])
        with gateway(fake_services(fake_settings(tmp_path), backend)) as client:
            answer = client.post("/v1/chat/completions", json={"model": "fake", "messages": [...]})

``fake_settings`` gives settings whose catalog serves fake models only; ``fake_services`` is
``build_services`` with those backends (and telemetry in memory); ``gateway`` serves the app in-process
for the block; ``FakeClock`` stands in for the clock of the pool and the cache (``fake_services(...,
clock=...)``), so idle expiry, cache TTLs and the Redis store's breaker are tested without sleeping.
``serve_process`` runs a real ``groupqwen serve`` process on loopback for what needs real sockets and a
process of its own (slow clients, soak runs).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from groupqwen.api.app import create_app
from groupqwen.api.services import Services, build_services
from groupqwen.backends.base import Backend
from groupqwen.catalog import ModelSpec
from groupqwen.config import Settings, load_settings
from groupqwen.telemetry.service import Telemetry

__all__ = ["FakeClock", "ServedProcess", "fake_services", "fake_settings", "gateway", "serve_process"]


def fake_settings(
    directory: Path, fakes: Iterable[str] | Mapping[str, Mapping[str, Any]] = ("fake",), **overrides: Any
) -> Settings:
    """Settings serving the models ``fakes`` names with the fake backend (a mapping gives each one's other
    ``models:`` fields, e.g. ``{"seeing": {"vision": True}}``), and nothing else: the models folder is
    ``directory`` (so no real GGUF is found), data goes to ``directory / "data"``, the first model is the
    default, models never idle out, and the cache is off. ``overrides`` are any other settings, and win
    (``models=`` replaces the fake models)."""
    configs = dict(fakes) if isinstance(fakes, Mapping) else {model_id: {} for model_id in fakes}
    fake_models = {model_id: {"backend": "fake", **cfg} for model_id, cfg in configs.items()}
    overrides.setdefault("models", fake_models)
    overrides.setdefault("default_model", next(iter(configs)))
    overrides.setdefault("models_dir", directory)
    overrides.setdefault("data_dir", directory / "data")
    overrides.setdefault("keep_alive", -1)
    overrides.setdefault("cache", {"backend": "off"})
    return load_settings(**overrides)


def fake_services(
    settings: Settings,
    backends: Backend | Mapping[str, Backend] | None = None,
    *,
    telemetry: Telemetry | None = None,
    **parts: Any,
) -> Services:
    """``build_services(settings)`` with every model served by ``backends`` (one backend for all, or one
    per model id; ``None``: the fake backends the settings describe), telemetry in memory unless given,
    and any other part of ``build_services`` (``cache``, ``embedder``, ``clock``) passed on."""
    if backends is None:
        factory = None
    elif isinstance(backends, Mapping):
        by_id = backends

        def factory(spec: ModelSpec) -> Backend:
            return by_id[spec.id]
    else:
        single = backends

        def factory(spec: ModelSpec) -> Backend:
            return single

    return build_services(
        settings,
        backend_factory=factory,
        telemetry=telemetry if telemetry is not None else Telemetry(),
        **parts,
    )


@contextmanager
def gateway(services: Services) -> Iterator[TestClient]:
    """The gateway over ``services``, started (lifespan included) for the block: a ``TestClient``."""
    with TestClient(create_app(services.settings, services)) as client:
        yield client


class FakeClock:
    """A ``Clock`` that moves only when told: ``advance(seconds)`` moves it and wakes the sleepers whose
    time has come (they run at the event loop's next turns)."""

    def __init__(self, start: float = 1000.0, wall: float = 1_767_225_600.0) -> None:
        self.now = start
        self._wall_offset = wall - start
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now + self._wall_offset

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        sleeper = (self.now + seconds, woken)
        self._sleepers.append(sleeper)
        try:
            await woken
        finally:
            if sleeper in self._sleepers:
                self._sleepers.remove(sleeper)

    @property
    def sleepers(self) -> int:
        """How many ``sleep`` calls are waiting for the clock."""
        return len(self._sleepers)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for deadline, woken in list(self._sleepers):
            if deadline <= self.now and not woken.done():
                woken.set_result(None)


@dataclass(frozen=True)
class ServedProcess:
    url: str  # http://127.0.0.1:<port>
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path


@contextmanager
def serve_process(
    directory: Path,
    fakes: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    start_within: float = 60.0,
    **settings: Any,
) -> Iterator[ServedProcess]:
    """``groupqwen serve`` as a subprocess on a free loopback port for the block, serving the fake models
    ``fakes`` names (default: one ``fake``) with ``settings`` on top (written to a YAML file in
    ``directory``; data in ``directory / "data"``, the cache off unless given). Stopped with SIGTERM
    (then killed) at the end; its output is in ``log_path``."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    models = {model_id: {"backend": "fake", **cfg} for model_id, cfg in (fakes or {"fake": {}}).items()}
    config: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "models": models,
        "default_model": next(iter(models)),
        "models_dir": str(directory / "models"),
        "data_dir": str(directory / "data"),
        "keep_alive": -1,
        "cache": {"backend": "off"},
        **settings,
    }
    config_path = directory / "groupqwen.yaml"
    config_path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    log_path = directory / "server.log"
    package_root = str(Path(__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("GROUPQWEN_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    command = [
        sys.executable,
        "-c",
        "from groupqwen.cli.main import app; app()",
        "serve",
        "-c",
        str(config_path),
    ]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_within
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"groupqwen serve did not start:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield ServedProcess(url, port, process, log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
