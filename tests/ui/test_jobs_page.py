"""The jobs page in Chromium against ``groupqwen serve`` with the real SmolLM2-135M: a job started from a
reviewed dataset (built on the gateway) trains in its worker, its loss curve, events and checkpoints show
while it runs, "Chat with this model" opens the chat on the ``ft:`` model, which answers; a second job,
queued behind it, is cancelled from the page. The page (a finished job shown) has no serious axe-core
violation and no sideways scroll at 390 and 1440 px."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from groupqwen.catalog import builtin_catalog
from groupqwen.config import load_settings
from groupqwen.finetune.records import Conversation, Turn, dumps
from groupqwen.pool.bundled import ensure_bundled
from groupqwen.testing import ServedProcess, serve_process
from ui.conftest import DIST, assert_fits_and_is_accessible, get_json, screenshot

pytest.importorskip("torch", reason="the train extra (make setup installs it)")
pytestmark = pytest.mark.integration

# few, short steps: the page is what is tested here (training itself: tests/finetune/train/)
HYPER = {"max_steps": 4, "batch_size": 2, "max_seq_length": 128, "lora_r": 4, "eval_every": 2,
         "checkpoint_every": 2, "learning_rate": 2e-3}  # fmt: skip
PAIRS = [("What is two plus two?", "Four."), ("Name a colour.", "Blue."), ("Say hello.", "Hello.")]


@pytest.fixture(scope="module")
def training_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedProcess]:
    if not (DIST / "index.html").is_file():
        pytest.fail("the web UI is not built: `make ui` builds frontend/dist")
    spec = builtin_catalog()["smollm2-135m"]
    gguf = ensure_bundled(spec, load_settings().models_dir)
    folder = tmp_path_factory.mktemp("jobs-ui")
    with serve_process(
        folder,
        ui={"dist": str(DIST)},
        models_dir=str(gguf.parent),
        n_threads=1,
        n_ctx=512,
        finetune={"threads": 1, "hyperparameters": HYPER},
        start_within=120,
    ) as served:
        yield served


def _review_dataset(url: str, name: str) -> None:
    """A dataset on the Data page's review, as an import leaves it (nothing decided yet)."""
    body = "".join(
        dumps(Conversation(f"c{i}", "chatgpt", (Turn("user", q), Turn("assistant", a)), title=q)) + "\n"
        for i, (q, a) in enumerate(PAIRS)
    )
    request = urllib.request.Request(f"{url}/v1/review/{name}", body.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


def test_a_job_started_on_the_page_trains_and_its_model_chats(
    browser: Any, training_gateway: ServedProcess
) -> None:
    url = training_gateway.url
    _review_dataset(url, "mine")
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        page.goto(url + "/jobs")
        expect(page.get_by_label("Base model")).to_have_value("smollm2-135m")
        page.get_by_label("Dataset name").fill("no-such-dataset")
        page.get_by_role("button", name="Start training").click()
        expect(page.get_by_role("alert")).to_contain_text("no-such-dataset")  # the server's message
        page.get_by_label("Dataset name").fill("mine")
        page.get_by_label("Suffix").fill("page")
        page.get_by_label("Epochs").fill("2")
        page.get_by_role("button", name="Start training").click()
        expect(page.get_by_test_id("job-status")).to_be_visible()
        first = page.url.rsplit("/", 1)[1]
        job = get_json(f"{url}/v1/fine_tuning/jobs/{first}")
        assert job["hyperparameters"]["n_epochs"] == 2 and job["suffix"] == "page"
        assert job["validation_file"] is None or job["validation_file"].startswith("file-")

        # a second job waits behind the first: cancelled from its page
        page.get_by_label("Suffix").fill("spare")
        page.get_by_role("button", name="Start training").click()
        expect(page).not_to_have_url(f"{url}/jobs/{first}")
        expect(page.get_by_test_id("job-status")).to_have_text("queued")
        second = page.url.rsplit("/", 1)[1]
        page.get_by_role("button", name="Cancel").click()
        expect(page.get_by_test_id("job-status")).to_have_text("cancelled")
        assert get_json(f"{url}/v1/fine_tuning/jobs/{second}")["status"] == "cancelled"

        page.get_by_role("button", name=first).click()  # the first job, from the list
        expect(page.get_by_test_id("job-progress")).to_contain_text("step", timeout=900_000)
        expect(page.locator("figure").first.locator("canvas")).to_be_visible()
        expect(page.get_by_test_id("job-status")).to_have_text("succeeded", timeout=900_000)
        expect(page.get_by_test_id("job-progress")).to_contain_text("step 4/4")
        expect(page.get_by_test_id("checkpoints")).to_contain_text("step 4")
        expect(page.get_by_test_id("events")).to_contain_text("is ready")
        screenshot(page, "jobs-succeeded")
        for width in (390, 1440):
            page.set_viewport_size({"width": width, "height": 900})
            assert_fits_and_is_accessible(page, f"jobs (a finished job) at {width}px")

        model = f"ft:smollm2-135m:page:{first}"
        page.get_by_role("button", name="Chat with this model").click()
        expect(page).to_have_url(re.compile(r"/chat/[0-9a-f-]+$"))
        expect(page.get_by_label("Model", exact=True)).to_have_value(model)
        page.get_by_label("Message", exact=True).fill("Name a fruit.")
        page.get_by_label("Message", exact=True).press("Enter")
        done = page.locator("[data-testid=assistant-message][data-state=done]")
        expect(done).to_have_count(1, timeout=120_000)
        answer = page.locator("[data-testid=assistant-message]").first.inner_text()
        assert answer.strip()
        screenshot(page, "jobs-chat")
    finally:
        context.close()
