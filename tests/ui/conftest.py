"""The browser tests' parts: the UI's build, Debian's chromium driven by Playwright, and a real
``groupqwen serve`` (fake models) serving both. ``make test`` builds the UI and installs chromium first."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from groupqwen.testing import ServedProcess, serve_process

REPO = Path(__file__).resolve().parents[2]
DIST = REPO / "frontend" / "dist"
AXE = REPO / "frontend" / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = REPO / "test-artifacts" / "ui"  # screenshots, kept after the run (git-ignored)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LONG_REPLY = " ".join(f"word{i}" for i in range(400))  # 400 words at 25 ms: ~10 s, stopped long before
COUNT_REPLY = " ".join(f"n{i}" for i in range(150))  # numbered words: a gap or a repeat shows in the text
MODELS = {
    "fake": {
        "fake_reply": "Hello **there**. " + "streaming " * 30 + "\n\n```python\nprint('hi')\n```",
        "fake_delay_s": 0.02,
    },
    "slow": {"fake_reply": LONG_REPLY, "fake_delay_s": 0.025},
    "count": {"fake_reply": COUNT_REPLY, "fake_delay_s": 0.015},
    "spare": {"keep_alive": -1},
    # a Qwen3-VL stand-in: takes images, and its answer points at a box (0–1000 of the image's sides)
    "seeing": {
        "vision": True,
        "family": "qwen3-vl",
        "fake_reply": 'It is here: [{"bbox_2d": [250, 250, 750, 750], "label": "square"}]',
        "fake_delay_s": 0.01,
    },
}


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed: `make chromium` (as root) installs Debian's package")
    return path


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def post_json(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), headers={"content-type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


@pytest.fixture(scope="package")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedProcess]:
    if not (DIST / "index.html").is_file():
        pytest.fail("the web UI is not built: `make ui` builds frontend/dist")
    folder = tmp_path_factory.mktemp("ui-gateway")
    with serve_process(folder, MODELS, ui={"dist": str(DIST)}) as process:
        yield process


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=20_000)  # a busy machine: assertions poll longer, they never time the UI

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (its own IndexedDB and localStorage) at 1440 × 900."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(20_000)
    yield opened
    context.close()


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def by_transport(served: ServedProcess, transport: str) -> int:
    """The gateway's count of requests that came over ``transport`` (http, ws) in the last hour."""
    groups = get_json(served.url + "/v1/metrics?window=1h")["by_transport"]
    return int(groups.get(transport, {}).get("requests", 0))


def start_chat(page: Any, served: ServedProcess, model: str = "fake") -> None:
    page.goto(served.url + "/")
    page.get_by_role("button", name="Start a chat").click()
    page.get_by_label("Model", exact=True).select_option(model)


def new_chat(page: Any) -> None:
    """A new conversation, shown: its composer is the one ``ask`` then types into."""
    from playwright.sync_api import expect

    before = page.url
    page.get_by_role("button", name="New chat").click()
    expect(page).not_to_have_url(before)
    expect(page.get_by_test_id("messages").locator("article")).to_have_count(0)


def ask(page: Any, text: str) -> None:
    page.get_by_label("Message", exact=True).fill(text)
    page.get_by_label("Message", exact=True).press("Enter")


def assert_fits_and_is_accessible(page: Any, label: str) -> None:
    """No sideways scroll and no serious or critical axe-core violation on ``page`` as it is now."""
    overflow = page.evaluate("(e => e.scrollWidth - e.clientWidth)(document.documentElement)")
    assert overflow <= 0, f"{label} scrolls sideways by {overflow}px"
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    bad = [
        f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert not bad, f"{label}: " + "; ".join(bad)
