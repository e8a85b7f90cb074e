"""Listing, reading and deleting fine-tuning files, and deleting a fine-tuned model, through the ``openai``
SDK against a real gateway on a loopback port (fake models: nothing trains here). A file a queued job needs
is kept (409 naming the job); a deleted model stops being listed and served at once, a request it was
answering finishes, its adapter goes when a job made it, and another gateway on the same data stops serving
it at its next look."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import openai
import pytest
from fastapi import FastAPI
from openai import OpenAI
from waiting import wait_until

from groupqwen.api.app import create_app
from groupqwen.api.services import Services, build_services
from groupqwen.cache.embedders import HashingEmbedder
from groupqwen.catalog import finetuned_record, register_finetuned
from groupqwen.config import Hyperparameters, Settings
from groupqwen.telemetry.service import Telemetry
from groupqwen.testing import fake_services, fake_settings, gateway

Serve = Callable[[FastAPI], AbstractContextManager[str]]


def _row(answer: str) -> bytes:
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": answer}]
    return (json.dumps({"messages": messages}) + "\n").encode()


def _services(settings: Settings) -> Services:
    return build_services(settings, telemetry=Telemetry())


def test_files_are_listed_read_and_deleted(tmp_path: Path, live_server: Serve) -> None:
    settings = fake_settings(tmp_path)
    services = _services(settings)
    assert services.jobs is not None
    store = services.jobs.store
    with live_server(create_app(settings, services)) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        bodies = {f"f{i}.jsonl": _row(f"answer {i}") for i in range(3)}
        uploaded = [client.files.create(file=(n, b), purpose="fine-tune") for n, b in bodies.items()]
        newest_first = [f.id for f in sorted(uploaded, key=lambda f: (f.created_at, f.id), reverse=True)]

        assert [f.id for f in client.files.list().data] == newest_first
        assert [f.id for f in client.files.list(order="asc").data] == newest_first[::-1]
        first = client.files.list(limit=1)
        assert [f.id for f in first.data] == newest_first[:1] and first.has_more
        assert [f.id for f in client.files.list(limit=1)] == newest_first  # the SDK pages with `after`
        assert [f.id for f in client.files.list(after=newest_first[0]).data] == newest_first[1:]
        assert [f.id for f in client.files.list(purpose="fine-tune").data] == newest_first
        assert client.files.list(purpose="batch").data == []
        for bad, param in (({"limit": 0}, "limit"), ({"limit": 10_001}, "limit"), ({"order": "up"}, "order")):
            with pytest.raises(openai.BadRequestError) as refused:
                client.files.list(**bad)  # type: ignore[arg-type]
            assert refused.value.param == param, refused.value.message
        with pytest.raises(openai.NotFoundError):
            client.files.list(after="file-none")

        by_name = {f.filename: f.id for f in uploaded}
        assert client.files.content(by_name["f1.jsonl"]).read() == bodies["f1.jsonl"]
        with pytest.raises(openai.NotFoundError):
            client.files.content("file-none")

        # a queued job trains on f0 (validation) and f1: neither can go while it waits
        hyper = Hyperparameters.model_validate({}).model_dump(mode="json")
        store.create(
            id="ftjob-waiting", model="fake", suffix="custom", training_file=by_name["f1.jsonl"],
            validation_file=by_name["f0.jsonl"], hyperparameters=hyper,
        )  # fmt: skip
        for name in ("f0.jsonl", "f1.jsonl"):
            with pytest.raises(openai.ConflictError, match="'ftjob-waiting' \\(queued\\)"):
                client.files.delete(by_name[name])
        assert client.files.retrieve(by_name["f1.jsonl"]).id == by_name["f1.jsonl"]

        kept = store.file(by_name["f2.jsonl"]).path
        deleted = client.files.delete(by_name["f2.jsonl"])
        assert (deleted.id, deleted.object, deleted.deleted) == (by_name["f2.jsonl"], "file", True)
        assert not kept.exists()
        for call in (client.files.retrieve, client.files.content, client.files.delete):
            with pytest.raises(openai.NotFoundError):
                call(by_name["f2.jsonl"])
        assert by_name["f2.jsonl"] not in {f.id for f in client.files.list().data}

        store.update("ftjob-waiting", status="cancelled")  # a finished job keeps naming its files
        assert client.files.delete(by_name["f1.jsonl"]).deleted
        assert client.fine_tuning.jobs.retrieve("ftjob-waiting").training_file == by_name["f1.jsonl"]


def test_a_fine_tuned_model_is_deleted(tmp_path: Path, live_server: Serve) -> None:
    data = tmp_path / "data"
    registry = data / "finetune" / "models"
    made = data / "finetune" / "jobs" / "ftjob-1" / "adapter.gguf"  # where a job's worker writes it
    made.parent.mkdir(parents=True)
    made.write_bytes(b"GGUF")
    own = tmp_path / "runs" / "mine" / "adapter.gguf"  # `groupqwen train --out runs/mine`
    own.parent.mkdir(parents=True)
    own.write_bytes(b"GGUF")
    register_finetuned(registry, "ft:fake:job:ftjob-1", "fake", made)
    register_finetuned(registry, "ft:fake:mine:mine", "fake", own)
    # the configuration checks a route's model against the catalog's: a catalog base, served by the fake
    register_finetuned(registry, "ft:smollm2-135m:routed:run", "smollm2-135m", own)
    settings = fake_settings(
        tmp_path,
        {"fake": {"fake_reply": "one two three four five six", "fake_delay_s": 0.05}, "smollm2-135m": {}},
        router={"routes": {"auto:mine": "ft:smollm2-135m:routed:run"}},
    )
    other = _services(settings)  # another replica on the same data folder
    with live_server(create_app(settings, _services(settings))) as url, gateway(other) as replica:
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)

        def listed() -> set[str]:
            return {m.id for m in client.models.list().data if m.id.startswith("ft:")}

        assert listed() == {"ft:fake:job:ftjob-1", "ft:fake:mine:mine", "ft:smollm2-135m:routed:run"}
        assert replica.get("/v1/models/ft:fake:job:ftjob-1").status_code == 200

        with pytest.raises(openai.BadRequestError, match="not a fine-tuned model") as refused:
            client.models.delete("fake")
        assert refused.value.param == "model"
        with pytest.raises(openai.NotFoundError, match="does not exist"):
            client.models.delete("ft:fake:none:ftjob-9")
        with pytest.raises(openai.ConflictError, match=r"router\.routes\.auto:mine"):
            client.models.delete("ft:smollm2-135m:routed:run")

        stream = client.chat.completions.create(
            model="ft:fake:job:ftjob-1", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        chunks = iter(stream)
        started = next(chunks)
        deleted = client.models.delete("ft:fake:job:ftjob-1")
        assert (deleted.id, deleted.object, deleted.deleted) == ("ft:fake:job:ftjob-1", "model", True)
        rest = [c.choices[0].delta.content or "" for c in chunks if c.choices]
        text = (started.choices[0].delta.content or "" if started.choices else "") + "".join(rest)
        assert text == "one two three four five six"  # the request in flight finished

        assert listed() == {"ft:fake:mine:mine", "ft:smollm2-135m:routed:run"}
        assert not finetuned_record(registry, "ft:fake:job:ftjob-1").exists()
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("ft:fake:job:ftjob-1")
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(
                model="ft:fake:job:ftjob-1", messages=[{"role": "user", "content": "hi"}]
            )
        with pytest.raises(openai.NotFoundError):
            client.models.delete("ft:fake:job:ftjob-1")
        wait_until(lambda: not made.exists())  # a job's adapter goes once the model is unloaded
        gone = replica.get("/v1/models/ft:fake:job:ftjob-1")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "model_not_found"
        body = {"model": "ft:fake:job:ftjob-1", "messages": [{"role": "user", "content": "hi"}]}
        assert replica.post("/v1/chat/completions", json=body).status_code == 404

        assert client.models.delete("ft:fake:mine:mine").deleted
        assert listed() == {"ft:smollm2-135m:routed:run"}
        assert own.exists()  # an adapter `groupqwen train` wrote where it was told is the user's


def test_a_deleted_models_cached_answers_go(tmp_path: Path) -> None:
    adapter = tmp_path / "adapter.gguf"
    adapter.write_bytes(b"GGUF")
    settings = fake_settings(tmp_path, cache={"backend": "embedded"})
    register_finetuned(settings.finetuned_dir, "ft:fake:mine:run", "fake", adapter)
    with gateway(fake_services(settings, embedder=HashingEmbedder())) as http:
        ask = {"model": "ft:fake:mine:run", "messages": [{"role": "user", "content": "Greet me."}]}
        for model in ("fake", "ft:fake:mine:run"):
            http.post("/v1/chat/completions", json={**ask, "model": model, "temperature": 0})
            again = http.post("/v1/chat/completions", json={**ask, "model": model, "temperature": 0})
            assert again.headers["x-groupqwen-cache"] == "hit"
        assert http.get("/v1/cache/stats").json()["entries"] == 2
        assert http.delete("/v1/models/ft:fake:mine:run").json()["deleted"] is True
        assert http.get("/v1/cache/stats").json()["entries"] == 1  # the base model's answer stays
