"""The web UI's own cost, in Chromium against a real `groupqwen serve`, side by side in one run.

    .venv/bin/python bench/ui.py [--runs 5] [--tokens 2000] [--delay-ms 5] [--dist frontend/dist]

1. The build's sizes: every JS/CSS file with its gzipped size, and the initial JS (the entry script and the
   chunks index.html preloads) against the 250 kB gzipped goal.
2. Send → first token painted vs the gateway's own time to first token on the same request (its telemetry
   record, matched by x-request-id through /v1/metrics/stream), `--runs` times: what the page adds; split
   into the page's own parts (the Enter key → the `chat.create` frame sent; the first token's frame
   received → in the DOM (the page's work) → painted (the wait for the next frame and its drawing)) and
   what lies between (the WebSocket both ways, the gateway before and after its TTFT's clock). The load
   average is printed with it: on a shared machine the waits for a CPU are most of it.
3. Main-thread long tasks (PerformanceObserver "longtask", over 50 ms) while a `--tokens`-word answer streams
   in, word by word every `--delay-ms`, in paragraphs of 50 words; and the main thread's CPU time meanwhile
   (Chromium's own counters in thread ticks: long tasks are wall time, which a busy machine inflates).

The model is a served fake (`fake_delay_s` between words), so the numbers are the UI's and the gateway's,
not a model's. Needs `make ui` and chromium.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

from groupqwen.testing import serve_process

REPO = Path(__file__).resolve().parents[1]
DIST = REPO / "frontend" / "dist"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
GOAL_KB = 250

# before the page's scripts: when the WebSocket sends a chat.create, and receives its first token's frame
TIMES = """(() => {
  window.__t = {};
  const key = (e) => { if (e.key === 'Enter') window.__t = {key: performance.now()}; };
  document.addEventListener('keydown', key, {capture: true});
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    if (String(data).includes('"chat.create"')) window.__t.sent = performance.now();
    return send.call(this, data);
  };
  const onmessage = Object.getOwnPropertyDescriptor(WebSocket.prototype, 'onmessage');
  Object.defineProperty(WebSocket.prototype, 'onmessage', {
    get() { return onmessage.get.call(this); },
    set(handler) {
      onmessage.set.call(this, (e) => {
        const token = /"content":"[^"]/.test(e.data);
        if (token && window.__t.sent && !window.__t.first) window.__t.first = performance.now();
        return handler(e);
      });
    },
  });
})()"""

FIRST_PAINT = """() => {
  window.__firstPaint = null;
  window.__firstDom = null;
  let sent = 0;
  const input = document.querySelector('#prompt');
  const mark = (e) => { if (e.key === 'Enter') sent = performance.now(); };
  input.addEventListener('keydown', mark, {capture: true, once: true});
  const seen = new Set(document.querySelectorAll('[data-testid=assistant-message]'));
  const observer = new MutationObserver(() => {
    for (const m of document.querySelectorAll('[data-testid=assistant-message][data-state=streaming]')) {
      const text = m.querySelector('.prose-chat');  // the answer's text, not its footer (headers come first)
      if (seen.has(m) || !text || !text.innerText.trim()) continue;
      observer.disconnect();
      window.__firstDom = performance.now() - sent;  // React has committed it: the frame is still to come
      const painted = () => { window.__firstPaint = performance.now() - sent; };
      requestAnimationFrame(() => setTimeout(painted, 0));  // after the frame that shows it
      return;
    }
  });
  observer.observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def sizes(dist: Path) -> tuple[list[tuple[str, int, int]], int]:
    rows = []
    for path in sorted((dist / "assets").iterdir()):
        raw = path.read_bytes()
        rows.append((path.name, len(raw), len(gzip.compress(raw, 9))))
    index = (dist / "index.html").read_text()
    initial = set(re.findall(r'(?:src|href)="/assets/([^"]+\.js)"', index))
    initial_gz = sum(gz for name, _, gz in rows if name in initial)
    return rows, initial_gz


class Records:
    """The gateway's request records, from /v1/metrics/stream, by request id."""

    def __init__(self, url: str) -> None:
        self.by_id: dict[str, dict[str, Any]] = {}
        self._response = urllib.request.urlopen(url + "/v1/metrics/stream?interval=60", timeout=600)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            self._lines()
        except (OSError, ValueError, AttributeError):  # closed from the main thread at the end
            return

    def _lines(self) -> None:
        event = ""
        for raw in self._response:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "request":
                record = json.loads(line[6:])
                self.by_id[record["request_id"]] = record

    def close(self) -> None:
        self._response.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--delay-ms", type=float, default=5.0)
    parser.add_argument(
        "--dist", type=Path, default=DIST, help="the build to serve (another commit's, to compare)"
    )
    args = parser.parse_args()
    dist = args.dist.resolve()

    rows, initial_gz = sizes(dist)
    print("| file | bytes | gzipped |\n|---|---:|---:|")
    for name, raw, gz in rows:
        print(f"| {name} | {raw:,} | {gz:,} |")
    verdict = "within" if initial_gz <= GOAL_KB * 1000 else "OVER"
    print(f"\ninitial JS gzipped: {initial_gz / 1000:.1f} kB ({verdict} the {GOAL_KB} kB goal)\n")

    # paragraphs of 50 words, as a long answer has them
    long_reply = " ".join(f"w{i}" + ("\n\n" if i % 50 == 49 else "") for i in range(args.tokens))
    models = {
        "short": {"fake_reply": "Hello there, this is a short answer.", "fake_delay_s": 0.01},
        "long": {"fake_reply": long_reply, "fake_delay_s": args.delay_ms / 1000},
    }
    with (
        tempfile.TemporaryDirectory() as folder,
        serve_process(Path(folder), models, ui={"dist": str(dist)}) as srv,
    ):
        records = Records(srv.url)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.add_init_script(TIMES)
            page.set_default_timeout(120_000)
            page.goto(srv.url + "/")
            page.get_by_role("button", name="Start a chat").click()
            page.get_by_label("Model", exact=True).select_option("short")
            page.wait_for_timeout(1000)  # the Markdown chunk is preloaded after the first paint
            print(
                "| run | send → first token painted (ms) | gateway TTFT (ms) | added (ms) "
                "| page: key → sent (ms) | sent → token frame (ms) | page: frame → in the DOM (ms) "
                "| page: DOM → painted (ms) |"
            )
            print("|---:|---:|---:|---:|---:|---:|---:|---:|")
            added, own = [], []
            for run in range(args.runs):
                page.evaluate(FIRST_PAINT)
                page.get_by_label("Message", exact=True).fill(f"Question {run}")
                page.get_by_label("Message", exact=True).press("Enter")
                done = page.locator("[data-testid=assistant-message][data-state=done]")
                done.nth(run).wait_for()
                page.wait_for_function("window.__firstPaint !== null")
                ui_ms = float(page.evaluate("window.__firstPaint"))
                dom_ms = float(page.evaluate("window.__firstDom"))
                rid = str(done.nth(run).get_attribute("data-request-id"))
                gateway_ms = waited(records.by_id.get, rid)["ttft_s"] * 1000
                t = page.evaluate("window.__t")
                added.append(ui_ms - gateway_ms)
                parts = "| — | — | — | — |"  # an answer that did not come over the WebSocket (another build)
                if "sent" in t and "first" in t:
                    sent, between = t["sent"] - t["key"], t["first"] - t["sent"]
                    dom = t["key"] + dom_ms - t["first"]
                    own.append(sent + dom + ui_ms - dom_ms)
                    parts = f"| {sent:.1f} | {between:.1f} | {dom:.1f} | {ui_ms - dom_ms:.1f} |"
                print(f"| {run + 1} | {ui_ms:.1f} | {gateway_ms:.1f} | {ui_ms - gateway_ms:.1f} {parts}")
            print(
                f"\nmedian added: {statistics.median(added):.1f} ms (goal ≤ 20 ms); the page's own parts: "
                f"{statistics.median(own) if own else float('nan'):.1f} ms; load average "
                f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n"
            )

            before = page.url
            page.get_by_role("button", name="New chat").click()
            page.wait_for_url(lambda url: url != before)
            page.locator("[data-testid=messages] article").first.wait_for(state="detached")
            page.get_by_label("Model", exact=True).select_option("long")
            page.evaluate(
                "() => { window.__long = []; new PerformanceObserver((l) => { for (const e of l.getEntries())"
                " window.__long.push(e.duration); }).observe({type: 'longtask'}); }"
            )
            # the main thread's CPU time (thread ticks): what the page spends, however busy the machine
            cdp = page.context.new_cdp_session(page)
            cdp.send("Performance.enable", {"timeDomain": "threadTicks"})
            before = metrics(cdp)
            page.get_by_label("Message", exact=True).fill("A long answer, please")
            page.get_by_label("Message", exact=True).press("Enter")
            page.locator("[data-testid=assistant-message][data-state=done]").wait_for()
            tasks = page.evaluate("window.__long")
            cpu = {name: (value - before[name]) * 1000 for name, value in metrics(cdp).items()}
            browser.close()
        records.close()
    print("| answer | words | long tasks > 50 ms | longest (ms) | total in long tasks (ms) |")
    print("|---|---:|---:|---:|---:|")
    longest = max(tasks, default=0.0)
    print(f"| streamed | {args.tokens} | {len(tasks)} | {longest:.0f} | {sum(tasks):.0f} |")
    print("\nMain-thread CPU time while it streamed (ms, thread ticks):\n")
    print("| main thread | script | layout | style |\n|---:|---:|---:|---:|")
    print(
        f"| {cpu['ThreadTime']:.0f} | {cpu['ScriptDuration']:.0f} | {cpu['LayoutDuration']:.0f} "
        f"| {cpu['RecalcStyleDuration']:.0f} |"
    )


def metrics(cdp: Any) -> dict[str, float]:
    wanted = {"ThreadTime", "ScriptDuration", "LayoutDuration", "RecalcStyleDuration"}
    return {
        m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"] if m["name"] in wanted
    }


def waited(get: Any, key: str, within_s: float = 30.0) -> Any:
    deadline = time.monotonic() + within_s
    while (value := get(key)) is None:
        if time.monotonic() > deadline:
            raise RuntimeError("the gateway's record never came")
        time.sleep(0.02)
    return value


if __name__ == "__main__":
    main()
