"""Every page in Chromium at a phone's and a desktop's width: no serious or critical axe-core violation, no
horizontal overflow, and a screenshot of each (test-artifacts/ui/)."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from groupqwen.testing import ServedProcess
from ui.conftest import assert_fits_and_is_accessible, screenshot

PAGES = {
    "chat": "/chat",
    "dashboard": "/dashboard",
    "data": "/data/pages-test",
    "jobs": "/jobs",  # a job shown: tests/ui/test_jobs_page.py
    "settings": "/settings",
}
WIDTHS = (390, 1440)


NAV_CUT = """() => {
  const nav = document.querySelector('nav[aria-label=Pages]');
  const edge = Math.min(nav.getBoundingClientRect().right, document.documentElement.clientWidth);
  return [...nav.querySelectorAll('a')]
    .filter((a) => a.getBoundingClientRect().right > edge + 0.5 || a.scrollWidth > a.clientWidth)
    .map((a) => a.innerText);
}"""


def assert_nav_shows_every_page(page: Any, width: int) -> None:
    """Each page's name in the navigation is whole: neither cut by the nav's edge nor scrolled out of it
    (a nav that scrolls sideways has no overflow of the page, yet hides a name)."""
    assert page.evaluate(NAV_CUT) == [], f"the navigation cuts these at {width}px"
    scroll = page.evaluate(
        "(n => n.scrollWidth - n.clientWidth)(document.querySelector('nav[aria-label=Pages]'))"
    )
    assert scroll <= 0, f"the navigation scrolls by {scroll}px at {width}px"


def _prepare(page: Any, served: ServedProcess, name: str) -> None:
    if name == "chat":  # a conversation with an answer, so the messages and footer are checked too
        page.goto(served.url + "/chat")
        page.get_by_role("button", name="Start a chat").click()
        page.get_by_label("Message", exact=True).fill("Show me code")
        page.get_by_label("Message", exact=True).press("Enter")
        expect(page.locator("[data-testid=assistant-message][data-state=done]")).to_have_count(1)
        return
    page.goto(served.url + PAGES[name])
    if name == "dashboard":
        expect(page.get_by_test_id("stat-requests")).not_to_have_text("—")
    if name == "data":
        expect(page.get_by_label("Upload a ChatGPT")).to_be_visible()
    if name == "jobs":
        expect(page.get_by_text("No jobs yet.")).to_be_visible()


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", list(PAGES))
def test_page_is_accessible_and_fits(browser: Any, served: ServedProcess, name: str, width: int) -> None:
    for theme in ("light", "dark"):
        context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=theme)
        page = context.new_page()
        try:
            _prepare(page, served, name)
            assert_fits_and_is_accessible(page, f"{name} at {width}px ({theme})")
            assert_nav_shows_every_page(page, width)
            screenshot(page, f"{name}-{width}-{theme}")
        finally:
            context.close()
