"""A fine-tuned model recorded while ``groupqwen serve`` runs (by ``groupqwen train``, or a job of another
gateway sharing the data folder) is listed and served without a restart: ``/v1/models``, ``GET
/v1/models/{id}`` and a chat naming it look at the folder again."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from groupqwen.catalog import register_finetuned
from groupqwen.testing import fake_settings, serve_process


def _chat(url: str, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)


def _listed(url: str) -> set[str]:
    return {m["id"] for m in httpx.get(f"{url}/v1/models", timeout=30).json()["data"]}


def test_a_model_recorded_while_the_gateway_runs_is_served(tmp_path: Path) -> None:
    registry = tmp_path / "data" / "finetune" / "models"
    adapter = tmp_path / "adapter.gguf"
    adapter.write_bytes(b"GGUF" + bytes(60))
    with serve_process(tmp_path) as served:
        assert not any(m.startswith("ft:") for m in _listed(served.url))
        missing = _chat(served.url, "ft:fake:late:run1")
        assert missing.status_code == 404 and "does not exist" in missing.json()["error"]["message"]

        register_finetuned(registry, "ft:fake:late:run1", "fake", adapter)  # as `groupqwen train` does
        model = httpx.get(f"{served.url}/v1/models/ft:fake:late:run1", timeout=30)
        assert model.status_code == 200, model.text
        assert model.json()["groupqwen"]["base_model"] == "fake"
        assert "ft:fake:late:run1" in _listed(served.url)

        register_finetuned(registry, "ft:fake:later:run2", "fake", adapter)
        answer = _chat(served.url, "ft:fake:later:run2")  # named before any listing
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == "ft:fake:later:run2"
        assert {"ft:fake:late:run1", "ft:fake:later:run2"} <= _listed(served.url)

        # a record whose base is not served here, or whose adapter is gone, is not a model
        register_finetuned(registry, "ft:nope:x:run3", "nope", adapter)
        register_finetuned(registry, "ft:fake:gone:run4", "fake", tmp_path / "missing.gguf")
        listed = _listed(served.url)
        assert "ft:nope:x:run3" not in listed and "ft:fake:gone:run4" not in listed
        assert _chat(served.url, "ft:fake:gone:run4").status_code == 404


def test_an_adapter_given_by_a_relative_path_is_served_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`groupqwen train … --out runs/mine` records runs/mine/adapter.gguf: the gateway, started from another
    folder, must still find it (it listed nothing, silently)."""
    settings = fake_settings(tmp_path)
    (tmp_path / "runs" / "mine").mkdir(parents=True)
    (tmp_path / "runs" / "mine" / "adapter.gguf").write_bytes(b"GGUF" + bytes(60))
    monkeypatch.chdir(tmp_path)
    register_finetuned(settings.finetuned_dir, "ft:fake:mine:mine", "fake", Path("runs/mine/adapter.gguf"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    served = settings.available()
    assert "ft:fake:mine:mine" in served
    assert served["ft:fake:mine:mine"].lora_path == tmp_path / "runs" / "mine" / "adapter.gguf"
