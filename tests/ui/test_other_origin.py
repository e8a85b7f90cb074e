"""The web UI served by one gateway talking to another (Settings, *Gateway URL*), in Chromium with two real
``groupqwen serve``: the other gateway lets the page's origin in (``server.cors_origins`` for its HTTP API,
``ws.allowed_origins`` for its WebSocket), and the page lists its models and chats with them over its
WebSocket."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect
from waiting import wait_until

from groupqwen.testing import ServedProcess, serve_process
from ui.conftest import MODELS, ask, by_transport


@pytest.fixture(scope="module")
def other(served: ServedProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedProcess]:
    folder = tmp_path_factory.mktemp("ui-other-origin")
    allowed = {"cors_origins": [served.url]}
    with serve_process(folder, MODELS, server=allowed, ws={"allowed_origins": [served.url]}) as process:
        yield process


def test_a_page_chats_with_a_gateway_of_another_origin(
    page: Any, served: ServedProcess, other: ServedProcess
) -> None:
    page.goto(served.url + "/settings")
    page.get_by_label("Gateway URL").fill(other.url)
    page.get_by_role("button", name="Test connection").click()
    expect(page.get_by_test_id("connection")).to_contain_text("Connected")
    before = by_transport(other, "ws")
    page.get_by_role("link", name="Chat").click()
    page.get_by_role("button", name="Start a chat").click()
    page.get_by_label("Model", exact=True).select_option("fake")
    ask(page, "Hello over there")
    expect(page.locator("[data-testid=assistant-message][data-state=done]")).to_contain_text("Hello there")
    wait_until(lambda: by_transport(other, "ws") == before + 1)  # the other gateway's own WebSocket answered
