"""The web UI at ``/`` (api/ui.py): the build's files with cache headers, client routes falling back to
``index.html``, the API's own 404/405 kept, and a page that says so when there is no build."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from groupqwen.testing import fake_services, fake_settings, gateway

INDEX = '<!doctype html><html><body><div id="root"></div><script src="/assets/index-abc123.js"></script>'


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    folder = tmp_path / "dist"
    (folder / "assets").mkdir(parents=True)
    (folder / "index.html").write_text(INDEX)
    (folder / "assets" / "index-abc123.js").write_text("console.log('ui')")
    (folder / "favicon.svg").write_text("<svg/>")
    return folder


def _client(tmp_path: Path, dist: Path) -> Iterator[TestClient]:
    with gateway(fake_services(fake_settings(tmp_path, ui={"dist": str(dist)}))) as client:
        yield client


@pytest.fixture
def http(tmp_path: Path, dist: Path) -> Iterator[TestClient]:
    yield from _client(tmp_path, dist)


def test_index_and_client_routes_serve_the_app_revalidated(http: TestClient) -> None:
    for path in ("/", "/chat", "/chat/abc-123", "/dashboard", "/data/my-set", "/settings"):
        r = http.get(path)
        assert r.status_code == 200, path
        assert r.text == INDEX
        assert r.headers["content-type"].startswith("text/html")
        assert r.headers["cache-control"] == "no-cache"


def test_hashed_assets_are_cached_for_a_year_other_files_revalidated(http: TestClient) -> None:
    r = http.get("/assets/index-abc123.js")
    assert r.status_code == 200 and r.text == "console.log('ui')"
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert "etag" in r.headers
    assert (
        http.get("/assets/index-abc123.js", headers={"if-none-match": r.headers["etag"]}).status_code == 304
    )
    r = http.get("/favicon.svg")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-cache"


def test_a_missing_file_is_a_404_not_the_app(http: TestClient) -> None:
    r = http.get("/assets/gone-999.js")
    assert r.status_code == 404
    assert "cache-control" not in r.headers or "immutable" not in r.headers["cache-control"]
    assert http.get("/robots.txt").status_code == 404


def test_paths_cannot_leave_the_build(http: TestClient, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("secret")
    for path in ("/../secret.txt", "/assets/../../secret.txt", "/%2e%2e/secret.txt"):
        r = http.get(path)
        assert "secret" not in r.text, path


def test_the_api_is_untouched(http: TestClient) -> None:
    assert http.get("/health").json()["status"] == "ok"
    assert http.get("/v1/models").json()["object"] == "list"
    assert http.get("/metrics").status_code == 200
    assert "openapi" in http.get("/openapi.json").json()
    # unknown API paths keep the API's JSON errors, never the app
    r = http.get("/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = http.post("/v1/nothing-here", json={})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = http.get("/v1/chat/completions")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert http.get("/healthz").text == INDEX  # only whole path segments are the API's


def test_writes_to_the_app_are_refused(http: TestClient) -> None:
    assert http.post("/chat", json={}).status_code == 405


def test_without_a_build_the_root_says_so(tmp_path: Path) -> None:
    with gateway(fake_services(fake_settings(tmp_path, ui={"dist": str(tmp_path / "none")}))) as http:
        r = http.get("/")
        assert r.status_code == 503
        assert "not built" in r.text and "make ui" in r.text
        assert http.get("/settings").status_code == 503
        assert http.get("/v1/models").status_code == 200
        assert http.get("/v1/nope").status_code == 404


def test_a_build_made_after_start_is_served(tmp_path: Path, dist: Path) -> None:
    later = tmp_path / "later"
    with gateway(fake_services(fake_settings(tmp_path, ui={"dist": str(later)}))) as http:
        assert http.get("/").status_code == 503
        dist.rename(later)
        assert http.get("/").text == INDEX


def test_the_schema_the_ui_client_is_typed_from_is_fresh() -> None:
    """frontend/openapi.json (behind src/api/schema.d.ts) is the gateway's schema: a route added, renamed or
    changed makes it stale: run scripts/gen_openapi.py, then npm --prefix frontend run gen:api."""
    import subprocess
    import sys

    script = Path(__file__).parents[2] / "scripts" / "gen_openapi.py"
    done = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_served_fake_waits_fake_delay_s_between_words(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path, {"slow": {"fake_reply": "a b c", "fake_delay_s": 0.5}})
    spec = settings.available()["slow"]
    from groupqwen.pool.factory import backend_for

    backend = backend_for(spec, settings)
    assert getattr(backend, "delay", None) == 0.5


def test_a_websocket_to_a_path_no_route_has_is_refused(http: TestClient) -> None:
    from starlette.websockets import WebSocketDisconnect

    for path in ("/chat", "/v1/nope"):
        with pytest.raises(WebSocketDisconnect), http.websocket_connect(path) as socket:
            socket.receive_text()
