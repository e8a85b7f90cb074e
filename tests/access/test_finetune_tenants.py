"""Fine-tuning files and jobs belong to the key's tenant: another tenant lists none of them and gets a 404
for each (as for an id that does not exist), a job cannot train on another tenant's file, and the gateway's
own keys (tenant ``default``) see every tenant's."""

from __future__ import annotations

import time
from pathlib import Path

from groupqwen.config import Hyperparameters
from groupqwen.testing import gateway

from .conftest import key_store, keyed_services

ROW = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'


def test_files_and_jobs_are_the_tenants_own(tmp_path: Path) -> None:
    gguf = tmp_path / "base.gguf"  # a base model that may be named (no job here trains it)
    gguf.write_bytes(b"GGUF")
    services = keyed_services(tmp_path, {"fake": {}, "base": {"backend": "llamacpp", "path": str(gguf)}})
    keys = key_store(services)
    now = time.time()
    headers = {
        name: {"authorization": f"Bearer {keys.create(name, now=now, tenant=tenant, scopes=['finetune'])[1]}"}
        for name, tenant in (("acme", "acme"), ("rival", "rival"), ("operator", "default"))
    }
    assert services.jobs is not None
    store = services.jobs.store
    hyper = Hyperparameters.model_validate({}).model_dump(mode="json")
    for tenant in ("acme", "rival"):  # ended jobs: the gateway starting runs neither
        job = store.create(
            id=f"ftjob-{tenant}", model="base", suffix="custom", training_file="file-x",
            validation_file=None, hyperparameters=hyper, tenant=tenant,
        )  # fmt: skip
        store.update(job.id, status="cancelled")
        store.add_event(job.id, "info", "message", f"{tenant}'s event", {})

    with gateway(services) as client:

        def get(url: str, who: str) -> int:
            return client.get(url, headers=headers[who]).status_code

        def listed(who: str) -> list[str]:
            r = client.get("/v1/fine_tuning/jobs", headers=headers[who])
            assert r.status_code == 200, r.text
            return sorted(job["id"] for job in r.json()["data"])

        upload = {"data": {"purpose": "fine-tune"}, "files": {"file": ("t.jsonl", ROW)}}
        r = client.post("/v1/files", **upload, headers=headers["acme"])  # type: ignore[arg-type]
        assert r.status_code == 200, r.text
        acme_file = r.json()["id"]
        assert [get(f"/v1/files/{acme_file}", who) for who in ("acme", "rival", "operator")] == [
            200,
            404,
            200,
        ]
        missing = client.get(f"/v1/files/{acme_file}", headers=headers["rival"]).json()["error"]
        assert missing["message"] == f"No file {acme_file!r}: upload it with POST /v1/files"

        # a job on another tenant's file is refused before it is made, as for a file that does not exist
        r = client.post(
            "/v1/fine_tuning/jobs",
            json={"model": "base", "training_file": acme_file},
            headers=headers["rival"],
        )
        assert (
            r.status_code == 400 and r.json()["error"]["message"] == f"training_file: no file {acme_file!r}"
        )
        r = client.post(
            "/v1/fine_tuning/jobs",
            json={"model": "base", "training_file": "file-rival", "validation_file": acme_file},
            headers=headers["rival"],
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "training_file"

        assert listed("acme") == ["ftjob-acme"]
        assert listed("rival") == ["ftjob-rival"]
        assert listed("operator") == ["ftjob-acme", "ftjob-rival"]
        for path in ("", "/events", "/checkpoints"):
            url = f"/v1/fine_tuning/jobs/ftjob-acme{path}"
            assert [get(url, who) for who in ("acme", "rival", "operator")] == [200, 404, 200], url
        events = client.get("/v1/fine_tuning/jobs/ftjob-acme/events", headers=headers["acme"]).json()
        assert [e["message"] for e in events["data"]] == ["acme's event"]
        r = client.post("/v1/fine_tuning/jobs/ftjob-acme/cancel", headers=headers["rival"])
        assert r.status_code == 404
        assert get("/v1/fine_tuning/jobs?after=ftjob-acme", "rival") == 404  # its place in a list too
        assert get("/v1/fine_tuning/jobs?after=ftjob-acme", "acme") == 200
