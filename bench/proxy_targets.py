"""The processes ``bench/proxy.py`` measures: the fake upstream, ``groupqwen serve`` with a configuration, and
LiteLLM's proxy (installed by the benchmark into its own virtual environment under ``bench/.cache/``, never a
dependency of the project); and the CPU time of a process tree read from ``/proc``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"  # gitignored
LITELLM_VENV = CACHE / "litellm-venv"
TICK_S = 1 / os.sysconf("SC_CLK_TCK")


@dataclass
class Target:
    """A server to load: its chat completions URL, the model to ask for, and the process whose CPU counts."""

    name: str
    url: str
    model: str
    pid: int
    cache: str = "off"  # off | miss (every prompt new) | hit (one prompt stored) | semantic (its paraphrase)
    workers: int = 1  # server processes: above 1, ``pid`` is their supervisor


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and every process below it (a server's workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) * TICK_S  # utime, stime
        todo.extend(children.get(current, ()))
    return total


def loop_seconds(pid: int) -> float:
    """User + system CPU of ``pid``'s main thread: a gateway's event loop (the rest of its CPU is its
    threads': the cache's embeddings, the telemetry writer)."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


def _wait(url: str, process: subprocess.Popen[bytes], what: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with status {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{what} did not answer {url} within {timeout_s:g} s")


@contextmanager
def _process(command: list[str], health: str, what: str, env: dict[str, str] | None = None) -> Iterator[int]:
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    try:
        _wait(health, process, what)
        yield process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


@contextmanager
def upstream(tokens: int, delay_ms: float = 0.0) -> Iterator[Target]:
    """The fake upstream (``fake_upstream.py``); ``delay_ms``: each answer that much later."""
    port = free_port()
    command = [sys.executable, str(HERE / "fake_upstream.py"), str(port), "--tokens", str(tokens)]
    command += ["--delay-ms", str(delay_ms)]
    base = f"http://127.0.0.1:{port}/v1"
    with _process(command, base + "/models", "the fake upstream") as pid:
        yield Target("upstream direct", base + "/chat/completions", "fake-upstream", pid)


def gateway_config(upstream_base: str, *, tiers: int, cache: bool, data_dir: Path) -> dict[str, Any]:
    """A gateway whose models are ``tiers`` ``openai_http`` models on the fake upstream; telemetry on (SQLite
    in ``data_dir``), the semantic cache ``cache``."""
    remote = {
        "backend": "openai_http",
        "urls": [upstream_base],
        "remote_model": "fake-upstream",
        "keep_alive": -1,
    }
    models = {f"tier-{i}": dict(remote, max_parallel=256) for i in range(tiers)}
    return {
        "host": "127.0.0.1",
        "log_level": "warning",
        "data_dir": str(data_dir),
        "default_model": "tier-0",
        "models": models,
        "router": {"tiers": [{"model": name} for name in models], "routes": {}},
        "cache": {"backend": "embedded" if cache else "off"},
        "server": {"limit_concurrency": None},
    }


@contextmanager
def gateway(
    name: str,
    config: dict[str, Any],
    model: str,
    cache: str = "off",
    workers: int = 1,
    source: Path | None = None,
) -> Iterator[Target]:
    """``groupqwen serve`` with ``config``; ``source``: another checkout whose ``groupqwen`` it runs (its
    root first on ``PYTHONPATH``), for a before/after comparison in one run."""
    port = free_port()
    path = Path(config["data_dir"]) / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    command = [
        str(Path(sys.executable).with_name("groupqwen")),
        "serve",
        "-c",
        str(path),
        "--port",
        str(port),
    ]
    if workers > 1:
        command += ["--workers", str(workers)]
    base = f"http://127.0.0.1:{port}"
    env = None if source is None else {**os.environ, "PYTHONPATH": str(source.resolve())}
    with _process(command, base + "/health", name, env) as pid:
        yield Target(name, base + "/v1/chat/completions", model, pid, cache, workers)


def litellm_version() -> str:
    python = LITELLM_VENV / "bin" / "python"
    code = "import importlib.metadata as m; print(m.version('litellm'))"
    return subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def ensure_litellm() -> str:
    """LiteLLM's proxy in ``bench/.cache/litellm-venv`` (made on first use, from PyPI); its version."""
    if not (LITELLM_VENV / "bin" / "litellm").exists():
        print(f"installing litellm[proxy] into {LITELLM_VENV} (once) …", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        pip = [str(LITELLM_VENV / "bin" / "pip"), "install", "--quiet", "litellm[proxy]"]
        subprocess.run(pip, check=True)
    return litellm_version()


@contextmanager
def litellm(upstream_base: str, work: Path) -> Iterator[Target]:
    port = free_port()
    config = {
        "model_list": [
            {
                "model_name": "fake-upstream",
                "litellm_params": {
                    "model": "openai/fake-upstream",
                    "api_base": upstream_base,
                    "api_key": "none",
                },
            }
        ],
        "litellm_settings": {"telemetry": False, "drop_params": True},
        # no key, as the gateways here run with auth off (LiteLLM refuses to start without one otherwise)
        "general_settings": {"dangerously_permit_weak_or_unset_master_key": True},
    }
    path = work / "litellm.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [
        str(LITELLM_VENV / "bin" / "litellm"),
        "--config",
        str(path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False"}
    base = f"http://127.0.0.1:{port}"
    with _process(command, base + "/health/liveliness", "LiteLLM", env) as pid:
        yield Target("LiteLLM proxy", base + "/v1/chat/completions", "fake-upstream", pid)
