"""The chat's transport in Chromium: answers stream over the WebSocket (``GET /v1/ws``); a connection cut
mid-answer is resumed with no gap and no repeat; a socket that cannot open falls back to SSE. Playwright's
``route_web_socket`` sits between the page and the gateway to cut the connection (the context's offline
mode does not touch WebSockets)."""

from __future__ import annotations

import json
import re
from typing import Any

from playwright.sync_api import WebSocketRoute, expect
from waiting import wait_until

from groupqwen.testing import ServedProcess
from ui.conftest import ask, by_transport, post_json, screenshot, start_chat

SOCKET = re.compile(r"/v1/ws$")
QUESTION = "Count for me, please"


def reference(served: ServedProcess) -> str:
    """The same request's text, at temperature 0, over plain HTTP."""
    body = {"model": "count", "messages": [{"role": "user", "content": QUESTION}], "temperature": 0}
    return str(post_json(served.url + "/v1/chat/completions", body)["choices"][0]["message"]["content"])


def answer_text(page: Any) -> str:
    done = page.locator("[data-testid=assistant-message][data-state=done]")
    expect(done).to_have_count(1)
    return " ".join(done.locator(".prose-chat").inner_text().split())


def test_a_connection_cut_mid_answer_resumes_with_no_gap_and_no_repeat(
    page: Any, served: ServedProcess
) -> None:
    connections: list[list[dict[str, Any]]] = []  # per connection: the frames the page sent
    cut_after: list[int] = []  # the seq of the last chunk the page got before the cut

    def route(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()
        sent: list[dict[str, Any]] = []
        connections.append(sent)
        first = len(connections) == 1

        def from_page(message: str | bytes) -> None:
            sent.append(json.loads(message))
            server.send(message)

        def from_server(message: str | bytes) -> None:
            frame = json.loads(message)
            if cut_after and first:
                return  # cut: what the gateway sends now never reaches the page
            ws.send(message)
            if first and frame["type"] == "chunk" and frame["seq"] == 12:
                cut_after.append(frame["seq"])
                ws.close(code=4000, reason="cut by the test")  # the page's side
                server.close(code=4000, reason="cut by the test")  # the gateway's: it parks the answer

        ws.on_message(from_page)
        server.on_message(from_server)

    page.route_web_socket(SOCKET, route)
    ws_before, http_before = by_transport(served, "ws"), by_transport(served, "http")
    start_chat(page, served, "count")
    ask(page, QUESTION)
    text = answer_text(page)

    assert cut_after == [12]  # the cut came mid-answer (150 words, 12 frames in)
    assert len(connections) == 2
    created = [f for f in connections[0] if f["type"] == "chat.create"]
    assert len(created) == 1
    resume = connections[1][0]  # the new connection's first frame: the resume, from the last seq seen
    assert resume["type"] == "resume"
    assert resume["generations"] == [{"id": created[0]["id"], "after_seq": 12}]
    assert not [f for f in connections[1] if f["type"] == "chat.create"]  # not asked again
    assert text == reference(served)  # every word once, in order
    # one generation, over the socket (its record is written just after its last frame); HTTP: the reference
    wait_until(lambda: by_transport(served, "ws") == ws_before + 1)
    wait_until(lambda: by_transport(served, "http") == http_before + 1)
    assert (by_transport(served, "ws"), by_transport(served, "http")) == (ws_before + 1, http_before + 1)
    screenshot(page, "chat-resumed")


def test_a_socket_that_cannot_open_falls_back_to_sse(page: Any, served: ServedProcess) -> None:
    refused: list[str] = []

    def route(ws: WebSocketRoute) -> None:  # a proxy that does not pass WebSockets
        refused.append(ws.url)
        ws.close(code=1011, reason="no WebSockets here")

    page.route_web_socket(SOCKET, route)
    ws_before, http_before = by_transport(served, "ws"), by_transport(served, "http")
    start_chat(page, served, "count")
    ask(page, QUESTION)
    text = answer_text(page)
    assert refused
    wait_until(lambda: by_transport(served, "http") == http_before + 1)  # the answer came over SSE
    assert text == reference(served)
    wait_until(lambda: by_transport(served, "http") == http_before + 2)  # and the reference
    assert by_transport(served, "ws") == ws_before
