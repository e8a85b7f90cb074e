"""The web UI against a gateway that requires keys (``auth: keys``), in Chromium with a real ``groupqwen
serve``: without a key the chat shows the server's refusal and says where the key goes (the server's own
message asks for an ``Authorization`` header, which a page's user cannot send); with the key entered in
Settings the connection test passes and the answer streams (over SSE: a browser cannot send
``Authorization`` on a WebSocket); the dashboard's live stream, its key revoked, ends with the server's
message."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect
from typer.testing import CliRunner

from groupqwen.access.keys import generate_key
from groupqwen.cli.main import app
from groupqwen.testing import ServedProcess, serve_process
from ui.conftest import DIST, MODELS, ask, screenshot

KEY = generate_key()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedProcess]:
    folder = tmp_path_factory.mktemp("ui-keys")
    auth = {"mode": "keys", "bootstrap_admin_key": KEY, "key_cache_s": 0}  # a revocation shows at once
    with serve_process(folder, MODELS, ui={"dist": str(DIST)}, auth=auth) as process:
        yield process


def test_without_a_key_the_page_says_where_it_goes_and_with_it_the_chat_answers(
    page: Any, keyed: ServedProcess
) -> None:
    page.goto(keyed.url + "/")
    page.get_by_role("button", name="Start a chat").click()
    ask(page, "Hello?")
    refused = page.get_by_test_id("answer-error")
    expect(refused).to_contain_text("You didn't provide an API key")  # the server's own message
    expect(refused).to_contain_text("Settings")  # and where a page's user puts the key
    screenshot(page, "keys-refused")

    page.get_by_role("link", name="Settings").click()
    page.get_by_label("API key").fill(KEY)
    page.get_by_role("button", name="Test connection").click()
    expect(page.get_by_test_id("connection")).to_contain_text("Connected")

    page.get_by_role("link", name="Chat").click()
    page.get_by_role("button", name="New chat").click()
    page.get_by_label("Model", exact=True).select_option("fake")
    ask(page, "Hello again")
    done = page.locator("[data-testid=assistant-message][data-state=done]")
    expect(done).to_contain_text("Hello there")
    metrics = httpx.get(f"{keyed.url}/v1/metrics?window=1h", headers={"authorization": f"Bearer {KEY}"})
    assert metrics.json()["by_transport"]["http"]["requests"] >= 1  # with a key set, the page uses SSE


def test_the_dashboard_says_so_when_its_key_is_revoked(page: Any, keyed: ServedProcess) -> None:
    config = str(keyed.log_path.parent / "groupqwen.yaml")  # serve_process's: the gateway's database
    created = CliRunner().invoke(app, ["keys", "create", "--name", "dash", "--scopes", "admin", "-c", config])
    assert created.exit_code == 0, created.stderr
    key = created.stdout.strip()
    page.goto(keyed.url + "/settings")
    page.get_by_label("API key").fill(key)
    page.get_by_role("link", name="Dashboard").click()
    expect(page.get_by_test_id("stat-rps")).not_to_contain_text("—")  # a summary came
    revoked = CliRunner().invoke(app, ["keys", "revoke", key[3:19], "-c", config])
    assert revoked.exit_code == 0, revoked.stderr
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text(f"The API key gq-{key[3:19]} has been revoked.")
    expect(alert).to_contain_text("Check the API key in Settings.")
    screenshot(page, "keys-dashboard-revoked")
