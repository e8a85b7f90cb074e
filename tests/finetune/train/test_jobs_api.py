"""The fine-tuning jobs API through the ``openai`` SDK, against a real gateway on a loopback port: files,
jobs on SmolLM2-135M in a worker process, events, checkpoints, the model served on success, bad input;
a job stopped by a gateway shutdown resumes at the next start from its checkpoint, and cancel keeps the
checkpoints."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi import FastAPI
from openai import OpenAI
from waiting import until

from finetune.train.conftest import FACTS, write_dataset
from groupqwen.api.app import create_app
from groupqwen.api.services import build_services
from groupqwen.catalog import ModelSpec
from groupqwen.config import Settings, load_settings
from groupqwen.finetune.jobs import JobStore, job_dir
from groupqwen.telemetry.database import database_url
from groupqwen.telemetry.service import Telemetry

pytestmark = pytest.mark.integration
Serve = Callable[[FastAPI], AbstractContextManager[str]]
SMALL = {"max_seq_length": 128, "lora_r": 4, "learning_rate_multiplier": 10, "eval_every": 2}


def _settings(smol: ModelSpec, data_dir: Path) -> Settings:
    assert smol.path is not None
    return load_settings(
        models_dir=smol.path.parent,
        data_dir=data_dir,
        n_threads=1,
        n_ctx=512,
        cache={"backend": "off"},
        default_model="smollm2-135m",
        finetune={"threads": 1, "cancel_grace_s": 60},  # a busy machine's checkpoint must not be killed
    )


def _app(settings: Settings) -> FastAPI:
    return create_app(settings, build_services(settings, telemetry=Telemetry()))


def _upload(client: OpenAI, path: Path) -> str:
    return client.files.create(file=(path.name, path.read_bytes()), purpose="fine-tune").id


async def test_a_job_trains_and_its_model_is_served(
    smol_gguf: ModelSpec, smol_base: Path, tmp_path: Path, live_server: Serve
) -> None:
    settings = _settings(smol_gguf, tmp_path / "data")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n{oops\n")
    with live_server(_app(settings)) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="line 2: not JSON"):
            _upload(client, bad)
        with pytest.raises(openai.BadRequestError, match="purpose"):
            client.files.create(file=("t.jsonl", b"{}"), purpose="assistants")
        train = _upload(client, write_dataset(tmp_path / "train.jsonl", FACTS[:4]))
        val = _upload(client, write_dataset(tmp_path / "val.jsonl", FACTS[8:10]))
        with pytest.raises(openai.NotFoundError, match="cannot be fine-tuned"):
            client.fine_tuning.jobs.create(model="qwen3-8b", training_file=train)
        with pytest.raises(openai.BadRequestError, match=r"hyperparameters\.lora_r"):
            client.fine_tuning.jobs.create(
                model="smollm2-135m", training_file=train, hyperparameters={"lora_r": 0}
            )  # type: ignore[typeddict-unknown-key]
        with pytest.raises(openai.BadRequestError, match="training_file: no file"):
            client.fine_tuning.jobs.create(model="smollm2-135m", training_file="file-missing")
        with pytest.raises(openai.NotFoundError):
            client.fine_tuning.jobs.retrieve("ftjob-missing")

        hyper: Any = {"n_epochs": 10, "batch_size": 2, "max_steps": 4, "checkpoint_every": 2, **SMALL}
        job = client.fine_tuning.jobs.create(
            model="smollm2-135m",
            training_file=train,
            validation_file=val,
            suffix="habit",
            hyperparameters=hyper,
        )
        assert job.status == "queued" and job.object == "fine_tuning.job"

        def finished() -> bool:
            return client.fine_tuning.jobs.retrieve(job.id).status in ("succeeded", "failed", "cancelled")

        await until(finished, within_s=1200, every_s=1)
        done = client.fine_tuning.jobs.retrieve(job.id)
        assert done.status == "succeeded", done.error
        assert done.fine_tuned_model == f"ft:smollm2-135m:habit:{job.id}"
        assert [j.id for j in client.fine_tuning.jobs.list().data] == [job.id]
        events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
        steps = [e.data["step"] for e in events if e.type == "metrics" and "train_loss" in (e.data or {})]
        assert sorted(steps) == [1, 2, 3, 4]
        assert any("is ready" in e.message for e in events)
        checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
        assert [c.step_number for c in checkpoints] == [4, 2]
        assert checkpoints[0].metrics.valid_loss is not None
        assert done.fine_tuned_model in {m.id for m in client.models.list().data}
        answer = client.chat.completions.create(
            model=done.fine_tuned_model,
            messages=[{"role": "user", "content": "Name a fruit."}],
            max_tokens=24,
        )
        assert answer.choices[0].message.content
        with pytest.raises(openai.BadRequestError, match="training_file: no file"):  # the seed's alias
            client.post(
                "/finetune/start", body={"model": "smollm2-135m", "training_file": "x"}, cast_to=object
            )


async def test_a_job_resumes_after_a_restart_and_cancel_keeps_its_checkpoints(
    smol_gguf: ModelSpec, smol_base: Path, tmp_path: Path, live_server: Serve
) -> None:
    settings = _settings(smol_gguf, tmp_path / "data")
    hyper: Any = {"n_epochs": 100, "batch_size": 1, "max_steps": 500, "checkpoint_every": 100, **SMALL}
    with live_server(_app(settings)) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        train = _upload(client, write_dataset(tmp_path / "train.jsonl", FACTS[:2]))
        job = client.fine_tuning.jobs.create(model="smollm2-135m", training_file=train, hyperparameters=hyper)

        def stepped(at_least: int) -> bool:
            events = client.fine_tuning.jobs.list_events(job.id, limit=5).data
            return any(e.type == "metrics" and (e.data or {}).get("step", 0) >= at_least for e in events)

        await until(lambda: stepped(1), within_s=900, every_s=1)
    # the gateway stopped: the worker checkpointed (on SIGTERM, not by checkpoint_every) and the job waits
    # for the next start
    store = JobStore(database_url(settings))
    assert store.job(job.id).status == "queued"
    store.close()
    kept = sorted(p.name for p in (job_dir(settings, job.id) / "checkpoints").iterdir())
    assert kept and all(name.startswith("step-") for name in kept)

    with live_server(_app(settings)) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)

        def resumed() -> bool:
            return any(
                "resumed from step" in e.message for e in client.fine_tuning.jobs.list_events(job.id).data
            )

        await until(resumed, within_s=900, every_s=1)
        cancelled = client.fine_tuning.jobs.cancel(job.id)
        assert cancelled.status == "cancelled"
        assert client.fine_tuning.jobs.checkpoints.list(job.id).data
        assert client.fine_tuning.jobs.retrieve(job.id).fine_tuned_model is None


async def test_a_job_that_cannot_train_fails_saying_why(
    smol_gguf: ModelSpec, smol_base: Path, tmp_path: Path, live_server: Serve
) -> None:
    settings = _settings(smol_gguf, tmp_path / "data")
    with live_server(_app(settings)) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        train = _upload(client, write_dataset(tmp_path / "train.jsonl", FACTS[:2]))
        hyper: Any = {"max_seq_length": 16}  # shorter than any conversation with its system prompt
        job = client.fine_tuning.jobs.create(model="smollm2-135m", training_file=train, hyperparameters=hyper)

        def finished() -> bool:
            return client.fine_tuning.jobs.retrieve(job.id).status in ("succeeded", "failed", "cancelled")

        await until(finished, within_s=900, every_s=1)
        failed = client.fine_tuning.jobs.retrieve(job.id)
        assert failed.status == "failed" and failed.fine_tuned_model is None
        assert failed.error is not None and failed.error.code == "finetune_error"
        assert "fits max_seq_length 16" in failed.error.message
        assert not any(m.id.startswith("ft:") for m in client.models.list().data)
