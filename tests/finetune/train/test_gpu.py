"""The GPU path (QLoRA through Unsloth) refuses clearly, before any work, where there is no CUDA."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from finetune.train.conftest import FACTS, write_dataset
from groupqwen.cli.main import app
from groupqwen.config import Hyperparameters
from groupqwen.errors import TrainingUnavailable
from groupqwen.finetune.train.trainer import RunSpec, train

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs the GPU path for real")


def test_the_gpu_path_says_what_is_missing(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "train.jsonl", FACTS[:2])
    run = RunSpec(tmp_path / "no-base", data, tmp_path / "run", Hyperparameters(), device="gpu")
    with pytest.raises(TrainingUnavailable, match=r"QLoRA on a GPU needs (a CUDA device|.*unsloth)"):
        train(run, sinks=[], stop=threading.Event())
    assert not run.out.exists()


def test_the_cli_says_it_in_one_line(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "train.jsonl", FACTS[:2])
    done = CliRunner().invoke(app, ["train", str(data), "--gpu", "--out", str(tmp_path / "run")])
    assert done.exit_code == 1
    assert "error: QLoRA on a GPU needs" in done.output
