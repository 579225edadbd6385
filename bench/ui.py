"""The status page: its weight, time to first render, and progress -> bar delay.

Starts ``framefleet serve`` (its own local Ray), signs a headless Debian chromium in,
then encodes one clip and records, in the page, when each progress bar value appeared;
each value's ffmpeg block time comes from the job's own events (``progress.at``, the
moment framefleet read the block from ffmpeg), read by a second socket in the same page,
so both sides use one clock.

    .venv/bin/python bench/ui.py [--quick]

The baseline for first render is the same page's bytes served as a static file by
Python's http.server on the same machine, loaded the same way: what the page costs over
the cheapest server.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playwright.sync_api import BrowserContext, Response, sync_playwright

from bench.latency import ready, socket_port, stop_gateway
from bench.report import Row, add_arguments, emit
from tests.helpers import make_clip

FRAMEFLEET = str(Path(sys.executable).with_name("framefleet"))
TOKEN = "bench-ui-token-0123456789"  # noqa: S105
UI = Path(__file__).resolve().parents[1] / "api" / "gateway" / "ui"
RECORD = """() => {
  window.__bars = [];  // [percent shown, when]
  window.__blocks = {};  // percent -> when ffmpeg's block was read (progress.at)
  new MutationObserver((changes) => {
    for (const c of changes) {
      if (c.target.tagName === "PROGRESS" && c.target.hasAttribute("value")) {
        window.__bars.push([Number(c.target.getAttribute("value")), Date.now() / 1000]);
      }
    }
  }).observe(document.getElementById("running-rows"),
             { subtree: true, attributes: true, attributeFilter: ["value"] });
  const ws = new WebSocket(`ws://${location.host}/v1/ws`);
  ws.onmessage = (m) => {
    const e = JSON.parse(m.data);
    const p = e.progress;
    if (p && p.percent != null) window.__blocks[p.percent] = p.at;
  };
}"""
FCP = """() => new Promise((done) => {
  const seen = performance.getEntriesByName("first-contentful-paint");
  if (seen.length) return done(seen[0].startTime);
  new PerformanceObserver((list) => done(list.getEntries()[0].startTime))
    .observe({ type: "paint", buffered: true });
})"""


def first_paint(context: BrowserContext, url: str, runs: int) -> tuple[list[float], int]:
    """First-contentful-paint (ms) of ``url`` over ``runs`` fresh pages, and the bytes of
    the page's own files (not the API calls it then makes)."""
    times, weight = [], 0
    for _ in range(runs):
        responses: list[Response] = []
        page = context.new_page()
        page.on("response", functools.partial(_keep, responses))
        page.goto(url, wait_until="load")
        times.append(float(page.evaluate(FCP)))
        weight = sum(len(r.body()) for r in responses if _asset(r.url))
        page.close()
    return times, weight


def _keep(seen: list[Response], response: Response) -> None:
    seen.append(response)


def _asset(url: str) -> bool:
    path = url.split("://", 1)[-1].partition("/")[2]
    return path in ("ui", "ui/") or path.startswith("ui/assets/")


class StaticCopy:
    """The page's files under the same paths, served by http.server (the baseline)."""

    def __init__(self, root: Path) -> None:
        (root / "ui" / "assets").mkdir(parents=True)
        for f in UI.iterdir():
            target = root / "ui" / ("index.html" if f.name == "index.html" else f"assets/{f.name}")
            shutil.copy(f, target)
        handler = lambda *a: http.server.SimpleHTTPRequestHandler(  # noqa: E731
            *a, directory=str(root)
        )
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ui/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clip-s", type=int, default=30)
    add_arguments(ap)
    args = ap.parse_args()
    runs = 3 if args.quick else 10
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("ui: Debian's chromium is missing; run `make setup`")
    work = Path(tempfile.mkdtemp(prefix="ff-bench-ui-"))
    media = work / "media"
    media.mkdir()
    make_clip(media / "clip.mp4", seconds=10 if args.quick else args.clip_s, size="640x360")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEFLEET_")}
    env |= {"FRAMEFLEET_API_TOKENS": TOKEN, "FRAMEFLEET_MEDIA_ROOTS": str(media),
            "FRAMEFLEET_DATA_DIR": str(work / "data")}  # fmt: skip
    env.pop("RAY_ADDRESS", None)
    with socket_port() as port:
        server = subprocess.Popen([FRAMEFLEET, "serve", "--port", str(port)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while not ready(port):
            if time.monotonic() > deadline or server.poll() is not None:
                sys.exit("ui: the gateway did not become ready in 120 s")
            time.sleep(0.2)
        static = StaticCopy(work / "static")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True)
            context = browser.new_context()
            page = context.new_page()
            page.goto(url + "/ui")
            page.get_by_label("API token").fill(TOKEN)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_selector("#conn.live")
            ours, weight = first_paint(context, url + "/ui", runs)
            bare, _ = first_paint(browser.new_context(), static.url, runs)
            page.goto(url + "/ui")
            page.wait_for_selector("#conn.live")
            page.evaluate(RECORD)
            page.wait_for_timeout(500)
            job = {"input": str(media / "clip.mp4"), "output": str(media / "out.mp4"),
                   "hardware": "cpu", "speed": "slow"}  # fmt: skip
            page.evaluate(
                """(job) => fetch("/v1/jobs", {method: "POST", credentials: "same-origin",
                   headers: {"X-Framefleet-UI": "1", "Content-Type": "application/json"},
                   body: JSON.stringify(job)})""",
                job,
            )
            page.wait_for_selector("#finished-rows .status.succeeded", timeout=300_000)
            bars = page.evaluate("window.__bars")
            blocks = page.evaluate("window.__blocks")
            browser.close()
        static.server.shutdown()
    finally:
        stop_gateway(server)
        shutil.rmtree(work, ignore_errors=True)

    delays = sorted(
        (shown - blocks[key]) * 1000
        for value, shown in bars
        for key in [_key(value, blocks)]
        if key is not None and blocks[key] is not None
    )
    if not delays:
        sys.exit("ui: no progress value reached the bar")
    p50 = statistics.median(delays)
    p99 = delays[min(len(delays) - 1, int(0.99 * len(delays)))]
    print(f"page weight: {weight:,} bytes (HTML, CSS, script, icon; uncompressed)")
    print(f"first contentful paint: median {statistics.median(ours):.0f} ms over {runs} loads, "
          f"the same files from http.server {statistics.median(bare):.0f} ms")  # fmt: skip
    print(f"progress block -> bar: {len(delays)} values, p50 {p50:.0f} ms, p99 {p99:.0f} ms")
    print(f"the slowest: {[round(d) for d in delays[-5:]]} ms")
    fcp, fcp_bare = statistics.median(ours), statistics.median(bare)
    emit(
        [
            Row("status page weight", f"{weight:,} B", "-", None, "printed", None),
            Row("status page first contentful paint", f"{fcp:.0f} ms",
                f"{fcp_bare:.0f} ms (http.server)", fcp / fcp_bare if fcp_bare else None,
                "printed", None),
            Row("progress block -> bar on the page, p50", f"{p50:.0f} ms", "-", None,
                "printed", None),
            Row("progress block -> bar on the page, p99", f"{p99:.0f} ms", "-", None,
                "printed", None),
        ],
        args.report,
    )  # fmt: skip


def _key(value: float, blocks: dict[str, float | None]) -> str | None:
    """The event key whose percent the bar shows (JSON keys are strings)."""
    for key in blocks:
        if abs(float(key) - value) < 1e-9:
            return key
    return None


if __name__ == "__main__":
    main()
