"""The pool with real llama.cpp models: a broken GGUF fails alone, and memory is estimated and measured."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from groupqwen.api.app import create_app
from groupqwen.config import Settings, load_settings
from groupqwen.pool.bundled import ensure_bundled

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def models_dir() -> Path:
    settings = Settings()
    ensure_bundled(settings.catalog()["smollm2-135m"], settings.models_dir)
    return settings.models_dir


def test_a_corrupt_gguf_is_marked_failed_and_others_keep_serving(models_dir: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 2000)  # a GGUF magic, then garbage
    settings = load_settings(
        models_dir=models_dir,
        n_threads=1,
        n_ctx=512,
        default_model="smollm2-135m",
        models={"broken": {"path": str(junk)}},
    )
    with TestClient(create_app(settings)) as client:
        body = {"model": "broken", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == 502
        error = response.json()["error"]
        assert error["code"] == "model_load_failed" and "junk.gguf" in error["message"]

        models = {m["id"]: m["groupqwen"] for m in client.get("/v1/models").json()["data"]}
        assert models["broken"]["status"] == "failed"
        assert "junk.gguf" in models["broken"]["error"]

        response = client.post("/v1/chat/completions", json={**body, "model": "smollm2-135m"})
        assert response.status_code == 200
        models = {m["id"]: m["groupqwen"] for m in client.get("/v1/models").json()["data"]}
        small = models["smollm2-135m"]
        assert small["status"] == "loaded"
        estimated, measured = small["memory"]["estimated_bytes"], small["memory"]["measured_bytes"]
        assert estimated > 98_362_432  # the weights, plus KV cache and buffers
        assert 0 < measured <= estimated * 1.1


def test_admin_load_and_unload_a_real_model(models_dir: Path) -> None:
    settings = load_settings(models_dir=models_dir, n_threads=1, n_ctx=512, default_model="smollm2-135m")
    with TestClient(create_app(settings)) as client:
        loaded = client.post("/v1/models/smollm2-135m/load")
        assert loaded.status_code == 200 and loaded.json()["groupqwen"]["status"] == "loaded"
        unloaded = client.post("/v1/models/smollm2-135m/unload")
        assert unloaded.status_code == 200 and unloaded.json()["groupqwen"]["status"] == "unloaded"
        missing = client.post("/v1/models/nope/load")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
