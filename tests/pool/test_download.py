"""`models pull` against a real local HTTP server that serves a GGUF and can drop the connection mid-file."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import free_port
from typer.testing import CliRunner

from groupqwen.catalog import builtin_catalog
from groupqwen.cli.main import app
from groupqwen.errors import DownloadError, InvalidRequest
from groupqwen.pool.download import Source, download, resolve

PAYLOAD = b"GGUF" + bytes(range(256)) * 4096  # ~1 MB that starts like a GGUF


class Server:
    """Serves PAYLOAD at /model.gguf with Range support; ``drop_after`` cuts the next N responses short."""

    def __init__(self) -> None:
        self.drops: list[int] = []  # byte counts after which to close the connection, one per request
        self.ranges: list[str | None] = []
        self.support_range = True
        self.etag: str | None = None
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.path != "/model.gguf":
                    self.send_error(404)
                    return
                requested = self.headers.get("Range")
                server.ranges.append(requested)
                start = 0
                if requested and server.support_range:
                    start = int(requested.removeprefix("bytes=").split("-")[0])
                    if start >= len(PAYLOAD):
                        self.send_response(416)
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
                else:
                    self.send_response(200)
                body = PAYLOAD[start:]
                self.send_header("Content-Length", str(len(body)))
                if server.etag:
                    self.send_header("X-Linked-Etag", f'"{server.etag}"')
                self.end_headers()
                if server.drops:
                    body = body[: server.drops.pop(0)]
                self.wfile.write(body)
                self.wfile.flush()
                self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/model.gguf"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.httpd.shutdown()


SHA = hashlib.sha256(PAYLOAD).hexdigest()


def test_a_dropped_connection_is_resumed_with_a_range_request(server: Server, tmp_path: Path) -> None:
    server.drops = [300_000, 200_000]
    seen: list[int] = []
    path = download(
        Source(server.url, "model.gguf"), tmp_path, sha256=SHA, progress=lambda d, t: seen.append(d)
    )
    assert path.read_bytes() == PAYLOAD
    assert server.ranges == [None, "bytes=300000-", "bytes=500000-"]
    assert seen[-1] == len(PAYLOAD)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.gguf"]


def test_a_partial_file_from_an_earlier_run_is_resumed(server: Server, tmp_path: Path) -> None:
    (tmp_path / "model.gguf.partial").write_bytes(PAYLOAD[:123_456])
    download(Source(server.url, "model.gguf"), tmp_path, sha256=SHA)
    assert server.ranges == ["bytes=123456-"]
    assert (tmp_path / "model.gguf").read_bytes() == PAYLOAD


def test_a_server_without_range_support_restarts_from_zero(server: Server, tmp_path: Path) -> None:
    server.support_range = False
    (tmp_path / "model.gguf.partial").write_bytes(b"junk" * 1000)
    download(Source(server.url, "model.gguf"), tmp_path, sha256=SHA)
    assert (tmp_path / "model.gguf").read_bytes() == PAYLOAD


def test_a_checksum_mismatch_leaves_nothing_under_either_name(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="sha256"):
        download(Source(server.url, "model.gguf"), tmp_path, sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_the_checksum_can_come_from_hugging_faces_etag(server: Server, tmp_path: Path) -> None:
    server.etag = "f" * 64
    with pytest.raises(DownloadError, match="sha256"):
        download(Source(server.url, "model.gguf"), tmp_path)
    server.etag = SHA
    assert download(Source(server.url, "model.gguf"), tmp_path).read_bytes() == PAYLOAD


def test_giving_up_keeps_the_partial_file_for_the_next_run(server: Server, tmp_path: Path) -> None:
    server.drops = [100_000] * 3
    with pytest.raises(DownloadError, match="resume"):
        download(Source(server.url, "model.gguf"), tmp_path, retries=2)
    assert (tmp_path / "model.gguf.partial").stat().st_size == 300_000
    assert not (tmp_path / "model.gguf").exists()


def test_a_missing_file_and_a_non_gguf_are_clear_errors(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(Source(server.url.replace("model", "nothing"), "x.gguf"), tmp_path)


def test_resolve_knows_catalog_ids_hf_and_urls() -> None:
    catalog = builtin_catalog()
    source = resolve("qwen3-8b", catalog)
    assert source.url == "https://huggingface.co/Qwen/Qwen3-8B-GGUF/resolve/main/Qwen3-8B-Q4_K_M.gguf"
    assert source.filename == "Qwen3-8B-Q4_K_M.gguf"
    assert (
        resolve("hf:Org/Repo/sub/f.gguf", catalog).url
        == "https://huggingface.co/Org/Repo/resolve/main/sub/f.gguf"
    )
    page = "https://huggingface.co/Org/Repo/blob/main/f.gguf"
    assert resolve(page, catalog).url == "https://huggingface.co/Org/Repo/resolve/main/f.gguf"
    for bad in ("smollm2-135m", "nonsense", "hf:Org/only", "https://example.com/"):
        with pytest.raises(InvalidRequest):
            resolve(bad, catalog)


def test_cli_pull_downloads_into_models_dir(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GROUPQWEN_MODELS_DIR", str(tmp_path))
    server.drops = [400_000]
    result = CliRunner().invoke(app, ["models", "pull", server.url, "--sha256", SHA])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "model.gguf").read_bytes() == PAYLOAD
    result = CliRunner().invoke(app, ["models", "pull", "not-a-model"])
    assert result.exit_code == 1
    assert "neither a catalog id" in result.output


def test_an_unreachable_host_is_one_clear_error_after_a_bounded_wait(tmp_path: Path) -> None:
    """Nothing listens on the port: a few quick retries (the sleep is injected), then one line naming the
    host, and no ``.partial`` file left behind (nor a FileNotFoundError about one)."""
    url = f"http://127.0.0.1:{free_port()}/model.gguf"
    slept: list[float] = []
    with pytest.raises(DownloadError) as info:
        download(Source(url, "model.gguf"), tmp_path, sleep=slept.append)
    message = info.value.message
    assert message.startswith("cannot reach 127.0.0.1:")
    assert "refused" in message.lower()
    assert "\n" not in message and "resume" not in message
    assert len(slept) == 2 and sum(slept) < 1
    assert list(tmp_path.iterdir()) == []


def test_cli_pull_from_an_unreachable_host_prints_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import groupqwen.pool.download as module

    monkeypatch.setenv("GROUPQWEN_MODELS_DIR", str(tmp_path))
    slept: list[float] = []
    monkeypatch.setattr(module, "download", functools.partial(module.download, sleep=slept.append))
    port = free_port()
    for what in (f"http://127.0.0.1:{port}/model.gguf", f"https://127.0.0.1:{port}/x/y.gguf"):
        result = CliRunner().invoke(app, ["models", "pull", what])
        assert result.exit_code == 1
        assert result.exception is None or isinstance(result.exception, SystemExit)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert lines == [lines[0]] and lines[0].startswith(f"error: cannot reach 127.0.0.1:{port}")
    assert slept  # retried, without waiting
