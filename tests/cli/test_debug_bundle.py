"""``groupqwen debug-bundle``: an archive of the versions, CPU, settings and a live gateway's health, with
no secret in it (keys, tokens, passwords in URLs), written even when the gateway does not answer."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from groupqwen.access.keys import generate_key
from groupqwen.cli.main import app
from groupqwen.testing import serve_process

PASSWORD = "hunter2hunter2"
TOKEN = "sk-upstream-token-1234"


def bundle(path: Path) -> tuple[dict[str, Any], bytes]:
    with tarfile.open(path) as archive:
        members = [m for m in archive.getmembers() if m.isfile()]
        contents = {Path(m.name).name: archive.extractfile(m).read() for m in members}  # type: ignore[union-attr]
    return {name: json.loads(data) for name, data in contents.items()}, b"".join(contents.values())


def test_the_bundle_holds_the_gateways_health_and_no_secret(tmp_path: Path) -> None:
    admin = generate_key()
    settings = {
        "auth": {"mode": "keys", "bootstrap_admin_key": admin},
        "limits": {"redis_url": f"redis://default:{PASSWORD}@127.0.0.1:1/0"},
        "telemetry": {"database_url": f"sqlite:///{tmp_path / 'records.db'}"},
    }
    fakes = {"fake": {}, "upstream": {"api_key": TOKEN}}
    with serve_process(tmp_path, fakes, **settings) as server:
        output = tmp_path / "bundle.tar.gz"
        result = CliRunner().invoke(
            app,
            [
                "debug-bundle",
                "-c",
                str(tmp_path / "groupqwen.yaml"),
                "--url",
                server.url,
                "--api-key",
                admin,
                "-o",
                str(output),
            ],
        )
    assert result.exit_code == 0, result.output
    assert f"wrote {output}" in result.output
    files, raw = bundle(output)
    assert set(files) == {
        "system.json",
        "settings.json",
        "config-check.json",
        "environment.json",
        "gateway.json",
    }
    gateway = files["gateway.json"]
    assert gateway["/health"]["status"] == 200
    assert gateway["/v1/health"]["body"]["checks"]["models"]["status"] == "ok"
    assert {m["id"] for m in gateway["/v1/models"]["body"]["data"]} >= {"fake", "upstream"}
    assert files["system.json"]["packages"]["groupqwen"]
    assert files["settings.json"]["limits"]["redis_url"] == "redis://default:***@127.0.0.1:1/0"
    assert files["settings.json"]["models"]["upstream"]["api_key"] == "***"
    for secret in (admin, admin.split(".")[1], PASSWORD, TOKEN):
        assert secret.encode() not in raw


def test_a_gateway_that_does_not_answer_is_recorded_and_the_bundle_still_written(tmp_path: Path) -> None:
    output = tmp_path / "bundle.tar.gz"
    result = CliRunner().invoke(app, ["debug-bundle", "--url", "http://127.0.0.1:1", "-o", str(output)])
    assert result.exit_code == 0, result.output
    files, _ = bundle(output)
    assert "ConnectError" in files["gateway.json"]["/v1/health"]["error"]
