"""``groupqwen serve --workers N``: refused where a worker would load an in-process model or keep to itself
what must be shared, warned about what each worker keeps; served by N processes on one port otherwise."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from groupqwen.api.app import create_app
from groupqwen.catalog import builtin_catalog
from groupqwen.cli.checks import worker_problems
from groupqwen.cli.main import app
from groupqwen.config import load_settings
from groupqwen.testing import serve_process

runner = CliRunner()
REMOTE = {"backend": "openai_http", "urls": ["http://gpu-1:8000/v1"], "remote_model": "Qwen/Qwen3-8B"}


def http_settings(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    """A deployment whose models are all on servers, cache off: fit for workers."""
    return {
        "models": {"remote": REMOTE},
        "default_model": "remote",
        "router": {"tiers": [{"model": "remote"}], "routes": {}},
        "models_dir": str(tmp_path / "models"),
        "data_dir": str(tmp_path / "data"),
        "cache": {"backend": "off"},
        **extra,
    }


def errors(settings: dict[str, Any], workers: int = 2) -> list[str]:
    loaded = load_settings(**settings, server={"workers": workers})
    return [p.field for p in worker_problems(loaded) if p.severity == "error"]


def test_one_worker_has_nothing_to_say(tmp_path: Path) -> None:
    assert worker_problems(load_settings(cache={"backend": "embedded"})) == []


def test_models_on_servers_with_nothing_in_memory_to_share_may_have_workers(tmp_path: Path) -> None:
    settings = load_settings(**http_settings(tmp_path), server={"workers": 4})
    [warning] = worker_problems(settings)
    assert warning.severity == "warning" and "/v1/metrics" in warning.message


def test_an_in_process_model_the_gateway_serves_is_refused(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    local = {"path": str(gguf), "context_length": 2048}
    settings = http_settings(tmp_path, models={"remote": REMOTE, "local": local})
    cases: list[tuple[dict[str, Any], str]] = [
        ({"default_model": "local"}, "default_model"),
        ({"router": {"tiers": [{"model": "local"}, {"model": "remote"}], "routes": {}}}, "router.tiers[0]"),
        (
            {"router": {"tiers": [{"model": "remote"}], "routes": {"auto:code": "local"}}},
            "router.routes.auto:code",
        ),
    ]
    for extra, field in cases:
        assert errors({**settings, **extra}) == [field]
    loaded = load_settings(**settings, server={"workers": 3})
    warning = next(p for p in worker_problems(loaded) if p.field == "models")
    assert "naming local (in-process" in warning.message and "up to 3 copies" in warning.message


def test_bundled_models_the_configuration_does_not_name_are_not_served_by_workers(tmp_path: Path) -> None:
    """A bundled model fetched into ``models_dir`` is served by one process, but workers leave it out
    rather than warn about it (or load it once per worker); one the configuration names is still refused."""
    smol = builtin_catalog()["smollm2-135m"]
    assert smol.backend == "llamacpp" and smol.filename
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / smol.filename).write_bytes(b"GGUF")
    one = load_settings(**http_settings(tmp_path))
    assert set(one.served_models()) == {"remote", "smollm2-135m"}
    workers = load_settings(**http_settings(tmp_path), server={"workers": 2})
    assert set(workers.served_models()) == {"remote"}
    assert [p.field for p in worker_problems(workers)] == ["server.workers"]
    with TestClient(create_app(workers)) as client:
        listed = [m["id"] for m in client.get("/v1/models").json()["data"]]
        assert "smollm2-135m" not in listed and "remote" in listed
    routed = http_settings(
        tmp_path, router={"tiers": [{"model": "remote"}], "routes": {"auto:code": smol.id}}
    )
    assert errors(routed) == ["router.routes.auto:code"]


def test_state_kept_in_each_process_is_refused(tmp_path: Path) -> None:
    assert errors(http_settings(tmp_path, cache={"backend": "embedded"})) == ["cache.backend"]
    assert errors(http_settings(tmp_path, cache={"backend": "redis"})) == []
    limited = http_settings(tmp_path, limits={"tenant": {"requests_per_minute": 60}})
    assert errors(limited) == ["limits.redis_url"]
    assert (
        errors({**limited, "limits": {"tenant": {"requests_per_minute": 60}, "redis_url": "redis://r"}}) == []
    )
    # a resume is relayed to one process's address: workers share it
    assert errors(http_settings(tmp_path, ws={"redis_url": "redis://r"})) == ["ws.redis_url"]
    keyed = load_settings(**http_settings(tmp_path, auth={"mode": "keys"}), server={"workers": 2})
    assert any(p.field == "limits.redis_url" and p.severity == "warning" for p in worker_problems(keyed))


def test_serve_refuses_and_config_check_says_why(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(http_settings(tmp_path, cache={"backend": "embedded"})), encoding="utf-8")
    result = runner.invoke(app, ["serve", "-c", str(path), "--workers", "2"])
    assert result.exit_code == 1
    assert "refusing to start: the embedded cache keeps its index in each process" in result.stderr
    assert "(cache.backend)" in result.stderr
    path.write_text(json.dumps(http_settings(tmp_path, cache={"backend": "embedded"}, server={"workers": 2})))
    checked = runner.invoke(app, ["config", "check", str(path)])
    assert checked.exit_code == 1 and "config error: cache.backend: the embedded cache" in checked.stderr
    assert runner.invoke(app, ["serve", "-c", str(path), "--workers", "0"]).exit_code == 2


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.integration
def test_workers_serve_on_one_port_share_limits_in_redis_and_stop_together(
    tmp_path: Path, redis_url: str
) -> None:
    """Two workers; a limit of 6 requests a minute counted in Redis holds across both: the 7th is a 429,
    whichever worker takes it (each worker alone would allow 6)."""
    limits = {"anonymous": True, "key": {"requests_per_minute": 6}, "redis_url": redis_url}
    with serve_process(tmp_path, server={"workers": 2}, limits=limits) as served:
        deadline = time.monotonic() + 60  # the workers start after the supervisor answers nothing
        while len(workers := _workers(served.process.pid)) != 2:
            assert time.monotonic() < deadline, f"workers: {workers}"
            time.sleep(0.1)
        body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(6):
            with httpx.Client(base_url=served.url, timeout=30) as client:  # a new connection each
                response = client.post("/v1/chat/completions", json=body)
                assert response.status_code == 200, response.text
                assert response.json()["choices"][0]["message"]["content"]
        refused = httpx.post(served.url + "/v1/chat/completions", json=body, timeout=30)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=30) == 0
    assert not any(_alive(pid) for pid in workers)
    assert "each worker keeps its own recent request records" in served.log_path.read_text()


def _workers(pid: int) -> list[int]:
    """The supervisor's worker processes (multiprocessing also starts a resource tracker)."""
    return [p for p in _children(pid) if b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes()]
