"""Modes and start-up: ``auth: off`` refused on an address other machines reach unless allowed (with a
message that says how), the bootstrap admin key from the environment, and ``groupqwen keys``."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from groupqwen.access.keys import generate_key
from groupqwen.api.app import create_app
from groupqwen.cli.checks import exposure_problems, is_loopback
from groupqwen.cli.main import app
from groupqwen.config import load_settings
from groupqwen.errors import InvalidRequest
from groupqwen.testing import fake_services, fake_settings, serve_process

from .conftest import key_store

runner = CliRunner()


def fake_config(tmp_path: Path, **extra: object) -> Path:
    config = {
        "models": {"fake": {"backend": "fake"}},
        "default_model": "fake",
        "models_dir": str(tmp_path / "models"),
        "data_dir": str(tmp_path / "data"),
        **extra,
    }
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_hosts_need_no_keys(host: str) -> None:
    assert is_loopback(host) and exposure_problems(load_settings(host=host)) == []


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "gateway.example.com"])
def test_other_hosts_need_keys_or_an_explicit_allowance(host: str) -> None:
    [problem] = exposure_problems(load_settings(host=host))
    assert problem.severity == "error" and "auth: keys" in problem.message
    assert "auth.allow_unauthenticated_network: true" in problem.message
    assert exposure_problems(load_settings(host=host, auth="keys")) == []
    allowed = load_settings(host=host, auth={"allow_unauthenticated_network": True})
    assert exposure_problems(allowed) == []


def test_serve_refuses_to_start_open_to_the_network(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", "-c", str(fake_config(tmp_path)), "--host", "0.0.0.0"])
    assert result.exit_code == 1
    assert "refusing to start: host '0.0.0.0' is reachable from other machines" in result.stderr
    assert "GROUPQWEN_AUTH__ALLOW_UNAUTHENTICATED_NETWORK=true" in result.stderr
    checked = runner.invoke(app, ["config", "check", str(fake_config(tmp_path, host="0.0.0.0"))])
    assert checked.exit_code == 1 and "config error: auth: host '0.0.0.0'" in checked.stderr


def test_the_yaml_shorthand(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("auth: off\n", encoding="utf-8")  # YAML reads it as false
    (tmp_path / "b.yaml").write_text("auth: keys\n", encoding="utf-8")
    assert load_settings(tmp_path / "a.yaml").auth.mode == "off"
    assert load_settings(tmp_path / "b.yaml").auth.mode == "keys"


def test_the_bootstrap_key_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = generate_key()
    monkeypatch.setenv("GROUPQWEN_AUTH__MODE", "keys")
    monkeypatch.setenv("GROUPQWEN_AUTH__BOOTSTRAP_ADMIN_KEY", key)
    settings = fake_settings(tmp_path)
    assert key not in repr(settings)  # a secret: never printed with the settings
    for _ in range(2):  # a restart ensures the same key, never a second one
        services = fake_services(settings)
        with TestClient(create_app(settings, services)) as client:
            assert (
                client.post("/v1/models/fake/load", headers={"authorization": f"Bearer {key}"}).status_code
                == 200
            )
            assert client.post("/v1/models/fake/load").status_code == 401
            assert [r.name for r in key_store(services).list()] == ["bootstrap"]
    assert key.split(".")[1].encode() not in (tmp_path / "data" / "telemetry.db").read_bytes()


def test_a_malformed_bootstrap_key_stops_the_start(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path, auth={"mode": "keys", "bootstrap_admin_key": "changeme"})
    app = create_app(settings, fake_services(settings))
    with pytest.raises(InvalidRequest, match="groupqwen keys generate"), TestClient(app):
        pass


def test_a_real_server_with_keys(tmp_path: Path) -> None:
    key = generate_key()
    with serve_process(tmp_path, auth={"mode": "keys", "bootstrap_admin_key": key}) as server:
        assert httpx.get(f"{server.url}/health").status_code == 200  # probes need no key
        refused = httpx.get(f"{server.url}/v1/models")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        models = httpx.get(f"{server.url}/v1/models", headers={"authorization": f"Bearer {key}"})
        assert models.status_code == 200
        # the commands that talk to a gateway send the key (--api-key or GROUPQWEN_API_KEY)
        chat = ["chat", "hi", "-m", "fake", "--url", server.url]
        refused = runner.invoke(app, chat)
        assert refused.exit_code == 1 and "You didn't provide an API key" in refused.stderr
        answered = runner.invoke(app, [*chat, "--api-key", key])
        assert answered.exit_code == 0 and answered.stdout.strip(), answered.stderr
        listed = runner.invoke(app, ["models", "--url", server.url], env={"GROUPQWEN_API_KEY": key})
        assert listed.exit_code == 0 and "MODEL" in listed.stdout, listed.stderr
        wrong = runner.invoke(
            app, ["models", "--url", server.url, "--api-key", key[:-1] + ("y" if key.endswith("x") else "x")]
        )
        assert wrong.exit_code == 1 and "error: Incorrect API key provided" in wrong.stderr
    assert key.split(".")[1] not in server.log_path.read_text()


def test_the_keys_commands(tmp_path: Path) -> None:
    config = str(fake_config(tmp_path))
    created = runner.invoke(
        app,
        [
            "keys",
            "create",
            "--name",
            "ci",
            "--tenant",
            "acme",
            "--scopes",
            "chat",
            "--models",
            "fake",
            "--expires",
            "30d",
            "--requests-per-minute",
            "60",
            "-c",
            config,
        ],
    )
    assert created.exit_code == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("gq-") and "\n" not in key  # alone on stdout
    assert "shown only this once" in created.stderr and "tenant acme" in created.stderr
    key_id = key[3:19]

    listed = runner.invoke(app, ["keys", "list", "--json", "-c", config])
    [row] = json.loads(listed.stdout)
    assert row["id"] == key_id and row["status"] == "active" and row["limits"] == {"requests_per_minute": 60}
    assert key.split(".")[1] not in listed.stdout
    table = runner.invoke(app, ["keys", "list", "-c", config]).stdout
    assert f"gq-{key_id}" in table and "active" in table

    rotated = runner.invoke(app, ["keys", "rotate", key_id, "-c", config])
    assert (
        rotated.exit_code == 0
        and rotated.stdout.strip() != key
        and rotated.stdout.startswith(f"gq-{key_id}.")
    )
    revoked = runner.invoke(app, ["keys", "revoke", f"gq-{key_id}", "-c", config])
    assert revoked.exit_code == 0 and "revoked" in revoked.stderr
    assert (
        json.loads(runner.invoke(app, ["keys", "list", "--json", "-c", config]).stdout)[0]["status"]
        == "revoked"
    )

    for args, message in [
        (["keys", "revoke", "feedfeedfeedfeed"], "error: There is no key 'feedfeedfeedfeed'"),
        (["keys", "create", "--name", "x", "--scopes", "root"], "'scopes': root"),
        (["keys", "create", "--name", "x", "--models", "gpt-4"], "'models': gpt-4; known models and routes"),
        (["keys", "create", "--name", "x", "--expires", "2001-01-01"], "is in the past"),
    ]:
        failed = runner.invoke(app, [*args, "-c", config])
        assert failed.exit_code == 1 and message in failed.stderr, failed.stderr
    assert runner.invoke(app, ["keys", "generate"]).stdout.startswith("gq-")


def test_a_real_server_refuses_a_websocket_upgrade_with_the_errors_status_and_message(tmp_path: Path) -> None:
    """A refused ``/v1/ws`` upgrade is answered as the same request over HTTP would be (a WebSocket can
    only be closed once accepted): the error's status, its headers and OpenAI's error JSON. It used to
    be a bare 403 with an empty body for every refusal, a missing key included, though Starlette's test
    client showed a close with 1008 and the message."""
    key = generate_key()
    with serve_process(tmp_path, auth={"mode": "keys", "bootstrap_admin_key": key}) as server:
        config = str(tmp_path / "groupqwen.yaml")  # serve_process's: the same database
        create = ["keys", "create", "--name", "e", "--scopes", "embeddings", "-c", config]
        created = runner.invoke(app, create)
        assert created.exit_code == 0, created.stderr
        embeddings_only = created.stdout.strip()
        url = f"ws://127.0.0.1:{server.port}/v1/ws"
        for headers, status, message in (
            ({}, 401, "You didn't provide an API key"),
            ({"authorization": "Bearer sk-nope"}, 401, "it is not a GroupQwen key"),
            ({"authorization": f"Bearer {embeddings_only}"}, 403, "Missing scope: chat"),
        ):
            with pytest.raises(InvalidStatus) as refused:
                connect(url, additional_headers=headers, open_timeout=60)
            response = refused.value.response
            assert response.status_code == status
            error = json.loads(response.body)["error"]
            assert message in error["message"]
            assert error["code"] == ("invalid_api_key" if status == 401 else "insufficient_permissions")
            if status == 401:
                assert response.headers["www-authenticate"].startswith("Bearer")
        with connect(url, additional_headers={"authorization": f"Bearer {key}"}, open_timeout=60) as ws:
            assert json.loads(ws.recv(timeout=60))["type"] == "hello"
    assert key.split(".")[1] not in server.log_path.read_text()
    assert embeddings_only.split(".")[1] not in server.log_path.read_text()


def test_a_key_created_while_auth_is_off_says_the_gateway_will_not_ask_for_it(tmp_path: Path) -> None:
    """``keys create`` with a configuration whose ``auth`` is off (the README's commands set
    ``GROUPQWEN_AUTH__MODE=keys``; forgetting it is easy) makes the key, and says on stderr that the
    gateway does not ask for keys until ``auth: keys``: it used to say nothing, and a gateway started the
    same way served everyone."""
    off = runner.invoke(app, ["keys", "create", "--name", "a", "-c", str(fake_config(tmp_path))])
    assert off.exit_code == 0 and off.stdout.startswith("gq-"), off.stderr
    assert "auth is off" in off.stderr and "GROUPQWEN_AUTH__MODE=keys" in off.stderr
    on = runner.invoke(app, ["keys", "create", "--name", "b", "-c", str(fake_config(tmp_path, auth="keys"))])
    assert on.exit_code == 0 and "auth is off" not in on.stderr, on.stderr
