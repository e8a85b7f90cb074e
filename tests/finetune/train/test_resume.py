"""A real run on SmolLM2-135M: interrupted at step 10 and resumed, it ends where an uninterrupted run does."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from finetune.train.conftest import FACTS, write_dataset
from groupqwen.config import Hyperparameters
from groupqwen.errors import FinetuneError
from groupqwen.finetune.train import checkpoints
from groupqwen.finetune.train.events import Event, JsonlLog, read_log
from groupqwen.finetune.train.trainer import RunSpec, train

pytestmark = pytest.mark.integration

HYPER = Hyperparameters(
    epochs=10, max_steps=20, batch_size=2, learning_rate=1e-3, eval_every=5, checkpoint_every=5,
    keep_checkpoints=2, max_seq_length=128, lora_r=4, target_modules=("q_proj", "v_proj"),
)  # fmt: skip


def test_interrupted_and_resumed_equals_uninterrupted(smol_base: Path, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "train.jsonl", FACTS[:6])
    val = write_dataset(tmp_path / "val.jsonl", FACTS[6:8])
    whole = train(RunSpec(smol_base, data, tmp_path / "whole", HYPER, val), sinks=[], stop=threading.Event())
    assert whole.status == "succeeded" and whole.step == 20
    assert whole.val_loss is not None and whole.val_loss_before is not None
    assert whole.val_loss < whole.val_loss_before

    run = RunSpec(smol_base, data, tmp_path / "parts", HYPER, val)
    stop = threading.Event()

    def stop_at_10(event: Event) -> None:
        if event.data.get("step") == 10 and "train_loss" in event.data:
            stop.set()  # as SIGINT does: the step ends, a checkpoint is written, the run returns

    log = JsonlLog(tmp_path / "parts" / "events.jsonl")
    first = train(run, sinks=[log, stop_at_10], stop=stop)
    assert first.status == "interrupted" and first.step == 10 and first.adapter is None
    last = checkpoints.latest(run.out)
    assert last is not None and last.step == 10
    with pytest.raises(FinetuneError, match="already holds checkpoints"):
        train(run, sinks=[], stop=threading.Event())

    second = train(run, sinks=[log], stop=threading.Event(), resume=True)
    assert second.status == "succeeded" and second.step == 20
    assert second.train_loss == pytest.approx(whole.train_loss, abs=1e-4)
    assert second.val_loss == pytest.approx(whole.val_loss, abs=1e-4)
    assert second.adapter is not None and (second.adapter / "adapter_model.safetensors").is_file()
    # the last 2 and the best by validation loss
    kept = [c.step for c in checkpoints.listed(run.out)]
    assert kept[-2:] == [15, 20] and len(kept) <= 3
    steps = [e.data["step"] for e in read_log(log.path) if e.type == "metrics" and "train_loss" in e.data]
    assert steps == list(range(1, 21))
    assert any("resumed from step 10" in e.message for e in read_log(log.path))
