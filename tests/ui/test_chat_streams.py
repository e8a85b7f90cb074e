"""Where an answer goes, and the cache from the chat, in Chromium against a real ``groupqwen serve``: an
answer streams into its own conversation whichever the page shows; a question asked again is answered from
the cache (a new chat samples at 0.5, which the cache reuses); Regenerate asks for a new answer
(``cache-control: no-cache`` on the ``chat.create`` frame, or on the request when the page fell back to
SSE)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import WebSocketRoute, expect
from waiting import wait_until

from groupqwen.testing import ServedProcess, serve_process
from ui.conftest import DIST, MODELS, ask, by_transport, get_json, new_chat, screenshot, start_chat

STREAMING = "[data-testid=assistant-message][data-state=streaming]"
DONE = "[data-testid=assistant-message][data-state=done]"


def test_an_answer_streams_into_its_own_chat(page: Any, served: ServedProcess) -> None:
    start_chat(page, served, "slow")
    ask(page, "Count for me")
    expect(page.locator(STREAMING)).to_contain_text("word3")
    new_chat(page)
    # the other chat: no answer of its own, and the composer is its own (Send, not the other's Stop)
    expect(page.get_by_test_id("messages").get_by_test_id("assistant-message")).to_have_count(0)
    expect(page.get_by_test_id("user-message")).to_have_count(0)
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    page.wait_for_timeout(300)  # a few more words stream meanwhile: none of them may show here
    expect(page.get_by_test_id("assistant-message")).to_have_count(0)
    screenshot(page, "chat-other-while-streaming")
    page.get_by_test_id("conversation-list").get_by_role("link", name="Count for me").click()
    streaming = page.locator(STREAMING)
    expect(streaming).to_contain_text("word20")  # it went on, and shows in its own chat again
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("[data-testid=assistant-message][data-state=stopped]")).to_have_count(1)


@pytest.fixture(scope="module")
def cached(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedProcess]:
    folder = tmp_path_factory.mktemp("ui-cached")
    with serve_process(folder, MODELS, ui={"dist": str(DIST)}, cache={"backend": "embedded"}) as process:
        yield process


def asked_twice(page: Any, served: ServedProcess, question: str) -> Any:
    """``question`` in a new chat (a cache miss), then in another (a hit); the answer's footer."""
    start_chat(page, served)
    ask(page, question)
    footer = page.locator(DONE).get_by_test_id("answer-footer")
    expect(footer).to_contain_text("cache miss")
    new_chat(page)
    ask(page, question)
    expect(footer).to_contain_text("cache hit")
    return footer


def test_a_question_asked_again_comes_from_the_cache_and_regenerate_does_not(
    page: Any, cached: ServedProcess
) -> None:
    footer = asked_twice(page, cached, "Why is the sea salty?")
    page.get_by_text("Parameters").click()
    expect(page.get_by_label("Temperature")).to_have_value("0.5")  # what let the cache answer
    over_ws = by_transport(cached, "ws")
    page.get_by_role("button", name="Regenerate").click()
    expect(footer).to_contain_text("cache bypass")  # generated anew, not read from the cache
    assert by_transport(cached, "ws") == over_ws + 1  # over the WebSocket: its frame carried the header
    screenshot(page, "chat-regenerated")


def test_regenerate_bypasses_the_cache_over_sse_too(page: Any, cached: ServedProcess) -> None:
    """A proxy that passes no WebSockets: the page falls back to SSE, and Regenerate's request carries
    ``cache-control: no-cache`` as its WebSocket frame would."""

    def refuse(ws: WebSocketRoute) -> None:
        ws.close(code=1011, reason="no WebSockets here")

    page.route_web_socket(re.compile(r"/v1/ws$"), refuse)
    over_ws = by_transport(cached, "ws")
    footer = asked_twice(page, cached, "Why do cats purr?")
    over_http = by_transport(cached, "http")
    page.get_by_role("button", name="Regenerate").click()
    expect(footer).to_contain_text("cache bypass")  # generated anew, not read from the cache
    wait_until(lambda: by_transport(cached, "http") == over_http + 1)  # over SSE
    assert by_transport(cached, "ws") == over_ws


def test_a_reload_mid_answer_keeps_what_had_come(page: Any, served: ServedProcess) -> None:
    """The page reloaded while an answer streams: the text that had come stays in the conversation (its
    draft lived only in memory, and the conversation came back as a question with no answer), marked as
    cut off, with Regenerate to ask again."""
    start_chat(page, served, "slow")
    ask(page, "Count for me")
    expect(page.locator(STREAMING)).to_contain_text("word10")
    page.reload()
    kept = page.locator("[data-testid=assistant-message][data-state=error]")
    expect(kept).to_contain_text("word0 word1")
    expect(kept.get_by_test_id("answer-error")).to_contain_text("The page was reloaded")
    expect(page.get_by_test_id("user-message")).to_have_count(1)
    page.reload()  # kept for good, once
    expect(kept).to_have_count(1)
    expect(kept).to_contain_text("word10")
    page.get_by_role("button", name="Regenerate").click()
    expect(page.locator(STREAMING)).to_contain_text("word3")
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("[data-testid=assistant-message][data-state=stopped]")).to_have_count(1)


def test_a_reload_mid_answer_cancels_it_at_once(page: Any, served: ServedProcess) -> None:
    """The page going away closes its socket as a client that is done (1000), so the gateway cancels the
    answer (a 499) instead of keeping it for a resume that a reloaded page never sends: it went on
    generating, holding its model, until it ended or the resume window passed, and the question asked
    after the reload waited behind it."""

    def counts() -> tuple[int, int]:
        summary = get_json(served.url + "/v1/metrics?window=1h")
        return int(summary["requests"]), int(summary["status"].get("499", 0))

    start_chat(page, served, "slow")
    ask(page, "Count for me")
    expect(page.locator(STREAMING)).to_contain_text("word3")
    requests, cancelled = counts()
    page.reload()
    wait_until(lambda: counts()[0] > requests, within_s=60)  # the answer's record: however it ended
    assert counts()[1] == cancelled + 1  # cancelled, not finished while nobody read it
