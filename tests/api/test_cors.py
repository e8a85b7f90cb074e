"""CORS: off by default (no header, a preflight is a 405); with ``server.cors_origins``, the listed origins'
pages may call the API and read its headers (the rate limits' too), errors included; others may not."""

from __future__ import annotations

from pathlib import Path

import pytest

from groupqwen.errors import ConfigError
from groupqwen.testing import fake_services, fake_settings, gateway

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
UI = "http://localhost:5173"
PREFLIGHT = {
    "origin": UI,
    "access-control-request-method": "POST",
    "access-control-request-headers": "authorization, content-type, x-stainless-os",
}


def test_cors_is_off_by_default(tmp_path: Path) -> None:
    with gateway(fake_services(fake_settings(tmp_path))) as client:
        answer = client.post("/v1/chat/completions", json=CHAT, headers={"origin": UI})
        assert answer.status_code == 200
        assert not any(h.startswith("access-control-") for h in answer.headers)
        assert client.options("/v1/chat/completions", headers=PREFLIGHT).status_code == 405


def test_a_listed_origin_may_call_and_read_the_headers(tmp_path: Path) -> None:
    limits = {"anonymous": True, "key": {"requests_per_minute": 100}}
    settings = fake_settings(tmp_path, server={"cors_origins": [UI]}, limits=limits)
    with gateway(fake_services(settings)) as client:
        preflight = client.options("/v1/chat/completions", headers=PREFLIGHT)
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == UI
        assert "x-stainless-os" in preflight.headers["access-control-allow-headers"].lower()
        answer = client.post("/v1/chat/completions", json=CHAT, headers={"origin": UI})
        assert answer.headers["access-control-allow-origin"] == UI
        exposed = answer.headers["access-control-expose-headers"]
        assert "x-ratelimit-remaining-requests" in exposed and "x-request-id" in exposed
        error = client.post("/v1/chat/completions", json={}, headers={"origin": UI})
        assert error.status_code == 400 and error.headers["access-control-allow-origin"] == UI
        other = client.post("/v1/chat/completions", json=CHAT, headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        assert (
            client.options(
                "/v1/chat/completions", headers={**PREFLIGHT, "origin": "https://evil.example"}
            ).status_code
            == 400
        )


@pytest.mark.parametrize(
    "origin", ["localhost:5173", "http://ui.example/", "http://ui.example/app", "ftp://x"]
)
def test_an_origin_that_is_not_one_is_a_config_error(tmp_path: Path, origin: str) -> None:
    with pytest.raises(ConfigError, match="is not an origin: write scheme://host"):
        fake_settings(tmp_path, server={"cors_origins": [origin]})
