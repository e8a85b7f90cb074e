"""End to end on SmolLM2-135M: ``groupqwen train`` teaches a habit (every answer signs off "Yours,
Quill."), the adapter becomes a GGUF LoRA, and the gateway serves ``ft:smollm2-135m:habit:<run>`` by name,
as a router tier and as the route ``auto:personal`` (a gateway that was already running when the run
finished serves it too, without a restart); held-out questions show the habit in the fine-tuned
model's answers and never in the base model's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from openai import OpenAI
from typer.testing import CliRunner

from finetune.train.conftest import FACTS, HELD_OUT, SIGN_OFF, write_dataset
from groupqwen.api.services import build_services
from groupqwen.catalog import ModelSpec
from groupqwen.cli.main import app
from groupqwen.config import load_settings
from groupqwen.telemetry.service import Telemetry
from groupqwen.testing import gateway

pytestmark = pytest.mark.integration


def _client(http: TestClient) -> OpenAI:
    return OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=http)


def _ask(client: OpenAI, model: str, question: str) -> str:
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], temperature=0, max_tokens=32
    )
    return answer.choices[0].message.content or ""


def test_a_trained_habit_is_served(
    smol_gguf: ModelSpec, smol_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert smol_gguf.path is not None
    monkeypatch.setenv("GROUPQWEN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GROUPQWEN_MODELS_DIR", str(smol_gguf.path.parent))
    train = write_dataset(tmp_path / "train.jsonl", FACTS[:10])
    val = write_dataset(tmp_path / "val.jsonl", FACTS[10:])
    args = ["train", str(train), "--validation", str(val), "--out", str(tmp_path / "job1")]
    args += ["--suffix", "habit", "--epochs", "10", "--max-steps", "24", "--batch-size", "4"]
    args += ["--learning-rate", "2e-3", "--max-seq-length", "128", "--eval-every", "8"]
    args += ["--checkpoint-every", "100"]
    model_id = "ft:smollm2-135m:habit:job1"
    plain = load_settings(n_threads=1, n_ctx=512, cache={"backend": "off"}, default_model="smollm2-135m")

    # a gateway already running when `groupqwen train` records the model serves it without a restart
    with gateway(build_services(plain, telemetry=Telemetry())) as http:
        client = _client(http)
        assert model_id not in {m.id for m in client.models.list().data}
        done = CliRunner().invoke(app, args)
        assert done.exit_code == 0, done.output
        assert done.output.strip().endswith(model_id)
        listed = {m.id: m for m in client.models.list().data}
        assert listed[model_id].model_extra is not None
        assert listed[model_id].model_extra["groupqwen"]["base_model"] == "smollm2-135m"
        tuned = [_ask(client, model_id, q) for q in HELD_OUT]
        base = [_ask(client, "smollm2-135m", q) for q in HELD_OUT]
    result = json.loads((tmp_path / "job1" / "result.json").read_text())
    print(f"validation loss before {result['val_loss_before']:.3f}, after {result['val_loss']:.3f}")
    assert result["val_loss"] < result["val_loss_before"] / 2

    # as a router tier and a route (their models are checked when the settings load)
    routed_settings = load_settings(
        n_threads=1,
        n_ctx=512,
        cache={"backend": "off"},
        default_model="smollm2-135m",
        router={"tiers": [{"model": model_id}], "routes": {"auto:personal": model_id}},
    )
    with gateway(build_services(routed_settings, telemetry=Telemetry())) as http:
        routed = _ask(_client(http), "auto:personal", "What is the capital of Spain?")
    print("fine-tuned:", tuned, "base:", base, "routed:", routed, sep="\n")
    assert sum(SIGN_OFF in a for a in tuned) >= 0.8 * len(HELD_OUT)
    assert not any("Quill" in a for a in base)
    assert SIGN_OFF in routed
