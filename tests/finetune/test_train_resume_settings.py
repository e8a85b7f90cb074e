"""``groupqwen train --resume`` goes on with the settings the run started with (``<run>/run.json``): the
command the interruption prints (train file, ``--out``, ``--resume``) is enough, and a setting given again
with another value is refused before any work, instead of silently changing the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from groupqwen.cli.main import app
from groupqwen.cli.train import RUN_FILE, RunSettings, run_settings
from groupqwen.config import Hyperparameters
from groupqwen.errors import FinetuneError
from groupqwen.testing import fake_settings


def _started(run: Path, validation: Path | None = None) -> RunSettings:
    """A run started as `groupqwen train … -m smollm2-135m --suffix mine --batch-size 2 --max-steps 20`."""
    started = RunSettings("smollm2-135m", "mine", validation, Hyperparameters(batch_size=2, max_steps=20))
    started.write(run)
    return started


def test_resume_takes_the_runs_own_settings(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    val = tmp_path / "validation.jsonl"
    val.write_text("")
    started = _started(tmp_path / "run", val)
    stored = json.loads((tmp_path / "run" / RUN_FILE).read_text())
    assert stored["validation"] == str(val.resolve()) and stored["hyperparameters"]["batch_size"] == 2

    resumed = run_settings(settings, tmp_path / "run", True, None, None, None, {})
    assert resumed.model == "smollm2-135m" and resumed.suffix == "mine"
    assert resumed.hyper == started.hyper and resumed.validation == val.resolve()
    # the same values again are fine, and so is how often it evaluates and checkpoints
    again = run_settings(
        settings,
        tmp_path / "run",
        True,
        "smollm2-135m",
        "mine",
        None,
        {"batch_size": 2, "checkpoint_every": 5},
    )
    assert again.hyper.batch_size == 2 and again.hyper.checkpoint_every == 5 and again.hyper.max_steps == 20


def test_resume_refuses_other_settings(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    _started(tmp_path / "run")
    with pytest.raises(
        FinetuneError, match=r"suffix 'other' \(the run has 'mine'\), batch_size 4 \(the run has 2\)"
    ):
        run_settings(settings, tmp_path / "run", True, None, "other", None, {"batch_size": 4})


def test_without_resume_the_defaults_and_what_is_given(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    _started(tmp_path / "run")
    fresh = run_settings(settings, tmp_path / "new", False, None, None, None, {"epochs": 1})
    assert (fresh.model, fresh.suffix, fresh.hyper.epochs, fresh.hyper.batch_size) == (
        "smollm2-135m",
        "custom",
        1,
        4,
    )


def test_the_command_line_says_what_differs_before_any_work(tmp_path: Path) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text(
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
    )
    _started(tmp_path / "run")
    result = CliRunner().invoke(
        app, ["train", str(data), "--out", str(tmp_path / "run"), "--resume", "--max-steps", "9"]
    )
    assert result.exit_code == 1
    assert "max_steps 9 (the run has 20)" in " ".join(result.output.split())


def test_a_second_run_is_refused_the_name_of_anothers_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`groupqwen train a/train.jsonl` and then `b/train.jsonl` (both into their default folder, `run`) were
    both served as ft:smollm2-135m:custom:run: the second replaced the first's record, after training."""
    from groupqwen.catalog import register_finetuned

    monkeypatch.setenv("GROUPQWEN_DATA_DIR", str(tmp_path / "data"))
    first = tmp_path / "a" / "run" / "adapter.gguf"
    first.parent.mkdir(parents=True)
    first.write_bytes(b"GGUF")
    registry = tmp_path / "data" / "finetune" / "models"
    register_finetuned(registry, "ft:smollm2-135m:custom:run", "smollm2-135m", first)
    data = tmp_path / "b" / "train.jsonl"
    data.parent.mkdir()
    data.write_text(
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
    )
    result = CliRunner().invoke(app, ["train", str(data)])
    assert result.exit_code == 1
    said = " ".join(result.output.split())
    assert f"ft:smollm2-135m:custom:run is already the model of another run (its adapter: {first})" in said
    assert "give another --suffix or --out folder name" in said
    assert not (tmp_path / "b" / "run").exists()  # refused before any work
