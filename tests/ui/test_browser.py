"""The web UI in Chromium against a real ``groupqwen serve`` (fake models): streaming, stop, history,
models, errors, the dashboard and the data page. Screenshots go to test-artifacts/ui/."""

from __future__ import annotations

import json
import urllib.error
import zipfile
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import expect
from waiting import wait_until

from groupqwen.testing import ServedProcess
from ui.conftest import ask, by_transport, get_json, new_chat, post_json, screenshot, start_chat

FIXTURES = Path(__file__).parents[1] / "finetune" / "fixtures"

# counts the distinct texts the streaming answer shows before it is done
OBSERVE = """() => {
  window.__paints = new Set();
  new MutationObserver(() => {
    const m = document.querySelector('[data-testid=assistant-message][data-state=streaming]');
    if (m) window.__paints.add(m.innerText);
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def status_count(served: ServedProcess, status: str) -> int:
    return int(get_json(served.url + "/v1/metrics?window=1h")["status"].get(status, 0))


def test_an_answer_streams_in_with_its_footer(page: Any, served: ServedProcess) -> None:
    start_chat(page, served)
    page.evaluate(OBSERVE)
    ask(page, "Say hello")
    answer = page.locator("[data-testid=assistant-message][data-state=done]")
    expect(answer).to_contain_text("Hello there.")
    assert page.evaluate("window.__paints.size") >= 3  # painted piece by piece, not all at the end
    expect(answer.locator("pre")).to_contain_text("print('hi')")  # Markdown: a highlighted code block
    expect(answer.get_by_role("button", name="Copy")).to_be_visible()
    footer = answer.get_by_test_id("answer-footer")
    expect(footer).to_contain_text("model fake")
    expect(footer).to_contain_text("route explicit")  # a named model
    expect(footer).to_contain_text("tokens")
    expect(footer).to_contain_text("TTFT")
    screenshot(page, "chat-answer")


def test_stop_cancels_the_generation_on_the_server(page: Any, served: ServedProcess) -> None:
    before, over_ws = status_count(served, "499"), by_transport(served, "ws")
    start_chat(page, served, "slow")
    ask(page, "Count for me")
    streaming = page.locator("[data-testid=assistant-message][data-state=streaming]")
    expect(streaming).to_contain_text("word3")
    page.get_by_role("button", name="Stop").click()
    stopped = page.locator("[data-testid=assistant-message][data-state=stopped]")
    expect(stopped).to_contain_text("Stopped")
    assert "word399" not in stopped.inner_text()
    wait_until(lambda: status_count(served, "499") == before + 1)  # the gateway recorded the client leaving
    assert by_transport(served, "ws") == over_ws + 1  # a generation on the socket, ended by its cancel frame
    expect(page.get_by_role("button", name="Send")).to_be_visible()


def test_history_survives_a_reload_renamed_searched_deleted(page: Any, served: ServedProcess) -> None:
    start_chat(page, served)
    ask(page, "Remember the tides")
    expect(page.locator("[data-testid=assistant-message][data-state=done]")).to_have_count(1)
    page.reload()
    expect(page.get_by_test_id("user-message")).to_contain_text("Remember the tides")
    expect(page.locator("[data-testid=assistant-message]")).to_contain_text("Hello there.")
    conversations = page.get_by_test_id("conversation-list")
    expect(conversations).to_contain_text("Remember the tides")
    page.get_by_role("button", name="Rename Remember the tides").click()
    page.get_by_label("New title").fill("Ocean notes")
    page.get_by_label("New title").press("Enter")
    expect(conversations).to_contain_text("Ocean notes")
    new_chat(page)
    ask(page, "Something else")
    expect(conversations.get_by_role("listitem")).to_have_count(2)
    page.get_by_label("Search conversations").fill("tides")  # searches the messages too
    expect(conversations.get_by_role("listitem")).to_have_count(1)
    expect(conversations).to_contain_text("Ocean notes")
    page.get_by_label("Search conversations").fill("")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete Ocean notes").click()
    expect(conversations.get_by_role("listitem")).to_have_count(1)
    page.reload()
    expect(page.get_by_test_id("conversation-list").get_by_role("listitem")).to_have_count(1)


def test_regenerate_and_edit_and_resend(page: Any, served: ServedProcess) -> None:
    start_chat(page, served)
    ask(page, "First question")
    expect(page.locator("[data-testid=assistant-message][data-state=done]")).to_have_count(1)
    page.get_by_role("button", name="Regenerate").click()
    expect(page.locator("[data-testid=assistant-message][data-state=done]")).to_have_count(1)
    page.get_by_role("button", name="Edit").click()
    page.get_by_label("Edit message").fill("Edited question")
    page.get_by_role("button", name="Save and send").click()
    expect(page.get_by_test_id("user-message")).to_have_text("Edited questionEdit")
    expect(page.locator("[data-testid=assistant-message][data-state=done]")).to_have_count(1)
    served_prompts = [json.dumps(r) for r in get_json(served.url + "/v1/metrics?window=1h")["by_model"]]
    assert served_prompts  # the requests reached the gateway


def test_load_and_unload_from_the_picker_change_v1_models(page: Any, served: ServedProcess) -> None:
    def status() -> str:
        models = get_json(served.url + "/v1/models")["data"]
        return str(next(m for m in models if m["id"] == "spare")["groupqwen"]["status"])

    # no polling: the statuses the picker shows come from its own actions and answers, nothing else
    page.goto(served.url + "/settings")
    page.get_by_label("Model status refresh (seconds)").fill("0")
    start_chat(page, served)
    page.get_by_role("button", name="Models").click()
    panel = page.get_by_test_id("models-panel")
    expect(panel).to_contain_text("spare")
    if status() == "loaded":
        page.get_by_role("button", name="Unload spare").click()
        wait_until(lambda: status() == "unloaded")
    page.get_by_role("button", name="Load spare").click()
    wait_until(lambda: status() == "loaded")
    expect(page.get_by_test_id("model-spare").get_by_test_id("model-status")).to_have_text("loaded")
    screenshot(page, "chat-models")
    page.get_by_role("button", name="Unload spare").click()
    wait_until(lambda: status() == "unloaded")
    expect(page.get_by_test_id("model-spare").get_by_test_id("model-status")).to_have_text("unloaded")
    # an answer from the unloaded model loads it: the picker re-reads the statuses once the answer comes
    page.get_by_role("button", name="Models").click()
    page.get_by_label("Model", exact=True).select_option("spare")
    ask(page, "Hello spare")
    expect(page.locator("[data-testid=assistant-message][data-state=done]")).to_have_count(1)
    assert status() == "loaded"
    expect(page.get_by_role("option", name="spare (loaded)")).to_have_count(1)


def test_an_unknown_model_shows_the_servers_message(page: Any, served: ServedProcess) -> None:
    start_chat(page, served)
    # a conversation kept from a gateway that served another model
    page.evaluate(
        """() => new Promise((resolve, reject) => {
          const open = indexedDB.open('groupqwen');
          open.onsuccess = () => {
            const tx = open.result.transaction('conversations', 'readwrite');
            const store = tx.objectStore('conversations');
            store.getAll().onsuccess = (e) => {
              for (const c of e.target.result) store.put({...c, model: 'gone-model'});
            };
            tx.oncomplete = () => resolve(null);
            tx.onerror = () => reject(tx.error);
          };
        })"""
    )
    page.reload()  # Dexie sees writes made past it on its next read
    expect(page.get_by_label("Model", exact=True)).to_have_value("gone-model")
    ask(page, "Anyone there?")
    error = page.get_by_test_id("answer-error")
    expect(error).to_contain_text("The model 'gone-model' does not exist")
    expect(error).to_contain_text("GET /v1/models lists the models served here")
    screenshot(page, "chat-error")


def test_the_dashboard_moves_after_requests(page: Any, served: ServedProcess) -> None:
    page.goto(served.url + "/dashboard")
    requests = page.get_by_test_id("stat-requests")
    expect(requests).not_to_have_text("—")
    before = int(requests.inner_text())
    for _ in range(3):
        post_json(
            served.url + "/v1/chat/completions",
            {"model": "fake", "messages": [{"role": "user", "content": "hi"}]},
        )
    expect(requests).to_have_text(str(before + 3), timeout=30_000)
    expect(page.get_by_test_id("health-status")).to_have_text("ok")
    expect(page.get_by_text("Share per model")).to_be_visible()
    # a request for a model not served fails before a model is chosen: an error, not a model named "none"
    with pytest.raises(urllib.error.HTTPError):
        post_json(
            served.url + "/v1/chat/completions",
            {"model": "gone", "messages": [{"role": "user", "content": "hi"}]},
        )
    expect(requests).to_have_text(str(before + 4), timeout=30_000)
    shares = page.locator("div", has=page.get_by_role("heading", name="Share per model"))
    expect(shares.last.get_by_test_id("failed-before-routing")).to_contain_text(
        "failed before a model was chosen"
    )
    expect(shares.last.get_by_role("listitem").filter(has_text="none")).to_have_count(0)
    screenshot(page, "dashboard")


def test_an_export_uploads_and_its_review_round_trips(page: Any, served: ServedProcess) -> None:
    page.goto(served.url + "/data")
    page.get_by_label("Dataset").fill("ui-test")
    page.get_by_role("button", name="Open").click()
    page.get_by_label("Upload a ChatGPT").set_input_files(str(FIXTURES / "claude" / "conversations.json"))
    screenshot(page, "data-upload")
    expect(page.get_by_test_id("import-report")).to_contain_text("claude")
    items = page.get_by_test_id("review-item")
    expect(items.first).to_be_visible()
    pending = int(page.get_by_test_id("count-pending").inner_text())
    key = items.first.get_attribute("data-key")
    items.first.get_by_role("button", name="Accept").click()
    expect(page.get_by_test_id("count-accepted")).to_have_text("1")
    expect(page.get_by_test_id("count-pending")).to_have_text(str(pending - 1))
    page.keyboard.press("r")  # the keyboard: reject the item now first
    expect(page.get_by_test_id("count-rejected")).to_have_text("1")
    review = get_json(served.url + "/v1/review/ui-test?status=accepted")
    assert [item["key"] for item in review["data"]] == [key]
    screenshot(page, "data-review")
    page.get_by_label("Format").select_option("sharegpt")
    with page.expect_download() as downloading:
        page.get_by_role("button", name="Build and download").click()
    download = downloading.value
    assert download.suggested_filename == "ui-test-sharegpt.zip"
    with zipfile.ZipFile(download.path()) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    assert manifest["settings"]["format"] == "sharegpt"
    built = sum(f["conversations"] for f in manifest["files"].values())
    everything = get_json(served.url + "/v1/review/ui-test?status=all")["data"]
    kept = {item["conversation"]["id"] for item in everything if item["status"] != "rejected"}
    assert built == len(kept)  # the rejected one is left out


def test_a_vision_answers_boxes_are_drawn_on_the_image(
    page: Any, served: ServedProcess, tmp_path: Path
) -> None:
    picture = tmp_path / "square.png"
    Image.new("RGB", (200, 100), (20, 120, 220)).save(picture)
    start_chat(page, served, "seeing")
    page.get_by_label("Image", exact=True).set_input_files(str(picture))
    expect(page.get_by_role("button", name="Remove attachment 1")).to_be_visible()
    ask(page, "Where is the square?")
    answer = page.locator("[data-testid=assistant-message][data-state=done]")
    expect(answer).to_contain_text("It is here")
    box = answer.get_by_test_id("answer-box")
    expect(box).to_have_count(1)
    # the gateway maps 250…750 of 1000 to the picture's own pixels: 200 × 100
    expect(box).to_have_attribute("data-box", "50,25,150,75")
    expect(box).to_have_attribute("data-label", "square")
    expect(answer.get_by_role("img", name="The image the answer points at: square")).to_be_visible()
    page.reload()  # kept with the answer in the browser's history
    expect(page.get_by_test_id("answer-box")).to_have_attribute("data-box", "50,25,150,75")
    screenshot(page, "chat-boxes")


def test_images_for_a_model_that_takes_none_are_held_back_with_a_reason(
    page: Any, served: ServedProcess, tmp_path: Path
) -> None:
    """The picker offers images only for a model that takes them; an image attached for one, then the
    model changed to one that takes none, is not sent (it used to go, to the server's 400), and an image
    pasted for such a model is not dropped without a word: the composer says why."""
    picture = tmp_path / "dot.png"
    Image.new("RGB", (20, 20), (200, 30, 30)).save(picture)
    start_chat(page, served, "seeing")
    page.get_by_label("Image", exact=True).set_input_files(str(picture))
    expect(page.get_by_role("button", name="Remove attachment 1")).to_be_visible()
    page.get_by_label("Model", exact=True).select_option("fake")
    ask(page, "What is in it?")
    problem = page.get_by_test_id("composer-problem")
    expect(problem).to_contain_text("fake does not take images")
    expect(page.get_by_test_id("user-message")).to_have_count(0)  # nothing was sent
    page.get_by_role("button", name="Remove attachment 1").click()
    page.get_by_role("button", name="Send").click()  # the text is still there
    expect(page.locator("[data-testid=assistant-message][data-state=done]")).to_contain_text("Hello there")
    expect(problem).to_have_count(0)
    # pasted: a file in the clipboard, as a screenshot pasted from the system
    page.get_by_label("Message", exact=True).evaluate(
        """(area) => {
            const data = new DataTransfer();
            data.items.add(new File([new Uint8Array([137, 80, 78, 71])], "shot.png", {type: "image/png"}));
            area.dispatchEvent(new ClipboardEvent("paste", {clipboardData: data, bubbles: true}));
        }"""
    )
    expect(problem).to_contain_text("fake does not take images")
    expect(page.get_by_role("button", name="Remove attachment 1")).to_have_count(0)
