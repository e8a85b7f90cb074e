"""``POST /v1/review/{name}/import``: a chat export streamed to disk, imported and curated as the CLI does,
then reviewable; its own size limit; bad uploads are clear 4xx and leave the dataset as it was."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from groupqwen.testing import fake_services, fake_settings, gateway

FIXTURES = Path(__file__).parents[1] / "finetune" / "fixtures"


def _zip(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for file in sorted(folder.iterdir()):
            archive.write(file, file.name)
    return buffer.getvalue()


@pytest.fixture
def http(tmp_path: Path) -> Iterator[TestClient]:
    settings = fake_settings(tmp_path, ui={"max_upload_mb": 1}, max_body_bytes=4096)
    with gateway(fake_services(settings)) as client:
        yield client


def test_a_chatgpt_zip_becomes_a_review_dataset(http: TestClient, tmp_path: Path) -> None:
    body = _zip(FIXTURES / "chatgpt")
    assert len(body) > 4096  # larger than max_body_bytes: uploads have their own limit
    r = http.post("/v1/review/mine/import?filename=export.zip&languages=", content=body)
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["object"] == "review.import" and report["name"] == "mine"
    assert report["formats"] == ["chatgpt"] and report["bytes"] == len(body)
    assert report["imported"] >= report["conversations"] > 0
    page = http.get("/v1/review/mine?status=all&limit=500").json()
    assert page["counts"]["total"] == report["conversations"] == page["counts"]["pending"]
    key = page["data"][0]["key"]
    decided = http.post("/v1/review/mine/decisions", json={"key": key, "verdict": "accept"}).json()
    assert decided["counts"]["accepted"] == 1
    assert not any((tmp_path / "data" / "review" / ".work").iterdir())  # the upload is not kept


def test_a_claude_json_and_a_perplexity_markdown_import(http: TestClient) -> None:
    claude = (FIXTURES / "claude" / "conversations.json").read_bytes()
    r = http.post("/v1/review/c/import?filename=conversations.json&languages=", content=claude)
    assert r.status_code == 200, r.text
    assert r.json()["formats"] == ["claude"]
    md = (FIXTURES / "perplexity" / "tides.md").read_bytes()
    r = http.post("/v1/review/p/import?filename=tides.md&languages=", content=md)
    assert r.status_code == 200, r.text
    assert r.json()["conversations"] == 1


def test_bad_uploads_are_clear_and_keep_the_dataset(http: TestClient) -> None:
    md = (FIXTURES / "perplexity" / "tides.md").read_bytes()
    assert http.post("/v1/review/p/import?filename=tides.md&languages=", content=md).status_code == 200

    def error(url: str, body: bytes, status: int) -> dict[str, str]:
        r = http.post(url, content=body)
        assert r.status_code == status, r.text
        return dict(r.json()["error"])

    assert error("/v1/review/p/import?filename=x.exe", md, 400)["param"] == "filename"
    assert error("/v1/review/p/import", md, 400)["param"] == "filename"
    assert error("/v1/review/p/import?filename=x.json", b"", 400)["param"] == "body"
    assert (
        error("/v1/review/p/import?filename=x.json", b'{"not": "an export"}', 400)["code"] == "invalid_export"
    )
    assert error("/v1/review/p/import?filename=x.zip", b"PK\x03\x04 broken", 400)["code"] in (
        "invalid_export",
        "unsafe_archive",
    )
    assert error("/v1/review/.hidden/import?filename=x.md", md, 400)["param"] == "name"
    # a download cut short: said so, under the name it was sent with, not the gateway's scratch path
    whole = _zip(FIXTURES / "chatgpt")
    cut = error("/v1/review/p/import?filename=chatgpt-export (1).zip", whole[: len(whole) // 2], 400)
    assert cut["code"] == "invalid_export", cut
    assert "chatgpt-export (1).zip: not a readable ZIP archive (cut short or damaged?" in cut["message"]
    assert ".work" not in cut["message"] and "export.zip" not in cut["message"].replace("-export", "")
    big = error("/v1/review/p/import?filename=x.zip", b"x" * (2**20 + 1), 413)
    assert "ui.max_upload_mb" in big["message"]
    # an export without conversations, or one whose every conversation curation rejects, replaces nothing
    empty = error("/v1/review/p/import?filename=conversations.json", b"[]", 400)
    assert empty["code"] == "invalid_export" and "an export without conversations" in empty["message"]
    german = error("/v1/review/p/import?filename=tides.md&languages=de", md, 400)
    assert german["code"] == "invalid_export" and "language en: 1" in german["message"]
    assert "the dataset is unchanged" in german["message"] and "'languages'" in german["message"]
    # an export that breaks off midway (bytes of another encoding, a cut): what was read before the break
    # would replace the dataset's conversations; into a new dataset it is imported, with the warning
    text = (FIXTURES / "chatgpt" / "conversations.json").read_text()
    broken = text[: text.index('"title": "Plain and simple"')].encode() + b'"title": "Caf\xe9"}]'
    stopped = error("/v1/review/p/import?filename=conversations.json", broken, 400)
    assert stopped["code"] == "invalid_export" and "not UTF-8 text" in stopped["message"]
    assert "the dataset, which has conversations, is unchanged" in stopped["message"]
    fresh = http.post("/v1/review/fresh/import?filename=conversations.json&languages=", content=broken)
    assert fresh.status_code == 200, fresh.text
    assert fresh.json()["conversations"] == 1 and "not UTF-8 text" in fresh.json()["warnings"][0]
    assert http.get("/v1/review/p?status=all").json()["counts"]["total"] == 1  # untouched


def test_other_routes_keep_max_body_bytes(http: TestClient) -> None:
    r = http.post("/v1/review/p", content=b"x" * 5000)
    assert r.status_code == 413 and "max_body_bytes" in r.json()["error"]["message"]


def test_the_reviewed_set_builds_into_a_training_zip(http: TestClient) -> None:
    claude = (FIXTURES / "claude" / "conversations.json").read_bytes()
    assert http.post("/v1/review/b/import?filename=c.json&languages=", content=claude).status_code == 200
    page = http.get("/v1/review/b?status=all&limit=500").json()
    rejected = page["data"][0]["key"]
    http.post("/v1/review/b/decisions", json={"key": rejected, "verdict": "reject"})
    r = http.get("/v1/review/b/build?format=sharegpt&val_fraction=0")
    assert r.status_code == 200, r.text
    assert r.headers["content-disposition"] == 'attachment; filename="b-sharegpt.zip"'
    with zipfile.ZipFile(io.BytesIO(r.content)) as archive:
        assert sorted(archive.namelist()) == ["manifest.json", "train.jsonl", "validation.jsonl"]
        train = archive.read("train.jsonl").decode().splitlines()
        manifest = json.loads(archive.read("manifest.json"))
    assert train and all("conversations" in json.loads(line) for line in train)
    assert manifest["settings"]["format"] == "sharegpt"
    ids = {c["conversation"]["id"] for c in page["data"] if c["key"] != rejected}
    assert manifest["files"]["train.jsonl"]["conversations"] == len(ids)  # the rejected one is left out
    rejected_title = page["data"][0]["conversation"]["title"]
    assert all(rejected_title not in line for line in train)
    assert http.get("/v1/review/b/build?format=nope").status_code == 400
    assert http.get("/v1/review/b/build?val_fraction=1").status_code == 400
    assert http.get("/v1/review/none-here/build").json()["error"]["code"] == "not_found"
