"""Fine-tuning files and jobs belong to the key's tenant: another tenant lists none of them and gets a 404
for each (as for an id that does not exist), a job cannot train on another tenant's file, and the gateway's
own keys (tenant ``default``) see every tenant's."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from groupqwen.api.services import Services
from groupqwen.catalog import register_finetuned
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


def three_tenants(tmp_path: Path, scope: str) -> tuple[Services, dict[str, dict[str, str]]]:
    """A keyed gateway's services and the headers of three keys holding ``scope``: tenants ``acme`` and
    ``rival``, and ``operator`` of the default tenant; an adapter file at ``tmp_path / "adapter.gguf"``."""
    services = keyed_services(tmp_path, ("fake",))
    keys = key_store(services)
    now = time.time()
    headers = {
        name: {"authorization": f"Bearer {keys.create(name, now=now, tenant=tenant, scopes=[scope])[1]}"}
        for name, tenant in (("acme", "acme"), ("rival", "rival"), ("operator", "default"))
    }
    (tmp_path / "adapter.gguf").write_bytes(b"GGUF")
    return services, headers


def test_a_tenants_fine_tuned_model_is_its_own(tmp_path: Path) -> None:
    """A model trained on a tenant's data is listed to and answers that tenant's keys and the gateway's own;
    to another tenant it does not exist (404, the message of an unknown model), named or listed. A model
    the gateway's own training made (no owner) is anyone's."""
    services, headers = three_tenants(tmp_path, "chat")
    adapter = tmp_path / "adapter.gguf"
    registry = services.settings.finetuned_dir
    register_finetuned(registry, "ft:fake:mine:ftjob-1", "fake", adapter, owner="acme")
    register_finetuned(registry, "ft:fake:shared:run", "fake", adapter)  # as `groupqwen train` does

    with gateway(services) as client:

        def listed(who: str) -> set[str]:
            r = client.get("/v1/models", headers=headers[who])
            assert r.status_code == 200, r.text
            return {m["id"] for m in r.json()["data"] if m["id"].startswith("ft:")}

        def chat(who: str, model: str) -> Any:
            body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
            return client.post("/v1/chat/completions", json=body, headers=headers[who])

        assert listed("acme") == listed("operator") == {"ft:fake:mine:ftjob-1", "ft:fake:shared:run"}
        assert listed("rival") == {"ft:fake:shared:run"}
        for who in ("acme", "operator"):
            assert chat(who, "ft:fake:mine:ftjob-1").json()["model"] == "ft:fake:mine:ftjob-1"
            assert client.get("/v1/models/ft:fake:mine:ftjob-1", headers=headers[who]).status_code == 200
        assert chat("rival", "ft:fake:shared:run").status_code == 200
        theirs, unknown = chat("rival", "ft:fake:mine:ftjob-1"), chat("rival", "ft:fake:none:ftjob-9")
        assert theirs.status_code == unknown.status_code == 404
        assert theirs.json()["error"] == {
            **unknown.json()["error"],
            "message": unknown.json()["error"]["message"].replace(
                "ft:fake:none:ftjob-9", "ft:fake:mine:ftjob-1"
            ),
        }
        assert client.get("/v1/models/ft:fake:mine:ftjob-1", headers=headers["rival"]).status_code == 404
        stream = {"model": "ft:fake:mine:ftjob-1", "input": "hi"}
        assert client.post("/v1/responses", json=stream, headers=headers["rival"]).status_code == 404


def test_a_tenant_lists_reads_and_deletes_only_its_own(tmp_path: Path) -> None:
    """Files: another tenant's are not listed and are a 404 to read or delete. Fine-tuned models: a tenant
    deletes its own; another tenant's is a 404 (as a model that does not exist); one the gateway's own
    training made is the default tenant's keys' to delete (403 to a tenant's key, which may use it)."""
    services, headers = three_tenants(tmp_path, "finetune")
    adapter = tmp_path / "adapter.gguf"
    registry = services.settings.finetuned_dir
    register_finetuned(registry, "ft:fake:mine:ftjob-1", "fake", adapter, owner="acme")
    register_finetuned(registry, "ft:fake:theirs:ftjob-2", "fake", adapter, owner="rival")
    register_finetuned(registry, "ft:fake:shared:run", "fake", adapter)

    with gateway(services) as client:
        upload = {"data": {"purpose": "fine-tune"}, "files": {"file": ("t.jsonl", ROW)}}
        ids = {}
        for who in ("acme", "rival"):
            r = client.post("/v1/files", **upload, headers=headers[who])  # type: ignore[arg-type]
            assert r.status_code == 200, r.text
            ids[who] = r.json()["id"]

        def files(who: str) -> list[str]:
            r = client.get("/v1/files", headers=headers[who])
            assert r.status_code == 200, r.text
            return sorted(f["id"] for f in r.json()["data"])

        assert files("acme") == [ids["acme"]] and files("rival") == [ids["rival"]]
        assert files("operator") == sorted(ids.values())
        theirs = ids["acme"]
        assert client.get(f"/v1/files/{theirs}/content", headers=headers["rival"]).status_code == 404
        assert client.get(f"/v1/files?after={theirs}", headers=headers["rival"]).status_code == 404
        r = client.delete(f"/v1/files/{theirs}", headers=headers["rival"])
        assert (
            r.status_code == 404
            and r.json()["error"]["message"] == f"No file {theirs!r}: upload it with POST /v1/files"
        )
        assert client.get(f"/v1/files/{theirs}/content", headers=headers["acme"]).text == ROW
        assert client.delete(f"/v1/files/{theirs}", headers=headers["acme"]).json()["deleted"] is True
        assert client.delete(f"/v1/files/{ids['rival']}", headers=headers["operator"]).status_code == 200

        def delete(model: str, who: str) -> Any:
            return client.delete(f"/v1/models/{model}", headers=headers[who])

        unknown = delete("ft:fake:none:ftjob-9", "rival")
        hidden = delete("ft:fake:mine:ftjob-1", "rival")
        assert hidden.status_code == unknown.status_code == 404
        assert hidden.json()["error"]["code"] == "model_not_found"
        shared = delete("ft:fake:shared:run", "acme")
        assert shared.status_code == 403 and "'default' tenant" in shared.json()["error"]["message"]
        assert delete("ft:fake:mine:ftjob-1", "acme").json() == {
            "id": "ft:fake:mine:ftjob-1",
            "object": "model",
            "deleted": True,
        }
        assert delete("ft:fake:theirs:ftjob-2", "operator").status_code == 200
        assert delete("ft:fake:shared:run", "operator").status_code == 200
        r = client.get("/v1/models", headers=headers["operator"])
        assert not [m["id"] for m in r.json()["data"] if m["id"].startswith("ft:")]
