"""The status page (/ui) in a real browser: Playwright driving Debian's chromium against
`framefleet serve` (its own local Ray, a declared GPU) with real encodes.

Screenshots of each view go to ``$FRAMEFLEET_ARTIFACTS/ui`` (default ``test-artifacts/``,
not committed).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page, expect, sync_playwright

from tests.helpers import (
    alive,
    ffmpeg_processes,
    free_port,
    fresh_home_env,
    leftovers,
    make_clip,
    process_tree,
    wait_until,
)
from tests.integration.api.test_cli import FRAMEFLEET, L4_INVENTORY

TOKEN = "ui-test-token-0123456789"  # noqa: S105
HOSTILE = "<img src=x onerror=alert(1)>.mp4"
BAR_VALUE = """(id) => {
  const bar = document.querySelector(`#running-rows tr[data-id='${id}'] progress`);
  return bar && bar.hasAttribute("value") ? bar.getAttribute("value") : null;
}"""
ARTIFACTS = Path(os.environ.get("FRAMEFLEET_ARTIFACTS", "test-artifacts")) / "ui"


class Farm:
    """`framefleet serve` on a fixed port, which can be stopped and started again."""

    def __init__(self, base: Path, media: Path, inventory: Path) -> None:
        self.media, self.port = media, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.argv = [*FRAMEFLEET, "serve", "--port", str(self.port), "--gpu-inventory",
                     str(inventory)]  # fmt: skip
        self.env = fresh_home_env(
            base / "home",
            FRAMEFLEET_API_TOKENS=TOKEN,
            FRAMEFLEET_MEDIA_ROOTS=str(media),
            FRAMEFLEET_DATA_DIR=str(base / "data"),
        )
        self.http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
        )
        self.server: subprocess.Popen[str] | None = None
        self.output = base / "serve.log"

    def start(self) -> None:
        # Its output goes to a file: a pipe read only at the end would fill up with access
        # log lines and block the server mid-request.
        with self.output.open("a") as sink:
            self.server = subprocess.Popen(self.argv, env=self.env, stdout=sink,
                                           stderr=subprocess.STDOUT, text=True)  # fmt: skip
        wait_until(self._ready, timeout=120, step=0.25)

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        assert self.server is not None
        ray_processes = process_tree(self.server.pid)
        self.server.send_signal(signal.SIGTERM)
        self.server.wait(timeout=90)
        log = self.output.read_text()
        wait_until(lambda: alive(ray_processes) == [], timeout=30)
        assert self.server.returncode == 0 and "Traceback" not in log, log

    def submit(self, name: str, output: str, **spec: Any) -> dict[str, Any]:
        body = {"input": str(self.media / name), "output": str(self.media / "out" / output)}
        r = self.http.post("/v1/jobs", json=body | {"hardware": "cpu"} | spec)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def status(self, job_id: str) -> str:
        return str(self.http.get(f"/v1/jobs/{job_id}").json()["status"])


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    base = tmp_path_factory.mktemp("ui")
    media = base / "media"
    (media / "out").mkdir(parents=True)
    make_clip(media / "clip.mp4", seconds=2)
    make_clip(media / "long.mp4", seconds=20, size="640x360")
    inventory = base / "gpus.json"
    inventory.write_text(json.dumps(L4_INVENTORY))
    farm = Farm(base, media, inventory)
    farm.start()
    yield farm
    farm.http.close()
    farm.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: `make setup` installs it"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True)
        yield b
        b.close()


class Console:
    """What the page said on its console, and any uncaught error or dialog."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("dialog", self._dialog)

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def unexpected(self, *refused: int) -> list[str]:
        """Errors other than the browser's own line for a request the test made to be
        refused (``refused``: the HTTP statuses it expects)."""
        allowed = re.compile(
            r"Failed to load resource: the server responded with a status of "
            rf"({'|'.join(map(str, refused)) or 'none'}) "
        )
        return [e for e in self.errors if not allowed.match(e)]


@pytest.fixture
def page(browser: Browser, farm: Farm) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    yield pg
    context.close()


def sign_in(page: Page, farm: Farm) -> Console:
    console = Console(page)
    page.goto(farm.url + "/")
    expect(page.get_by_label("API token")).to_be_visible()
    page.get_by_label("API token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#conn")).to_have_text("live")
    return console


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def row(page: Page, section: str, job_id: str) -> Any:
    return page.locator(f"#{section}-rows tr[data-id='{job_id}']")


def test_the_page_and_its_session_keep_the_token_out_of_reach(farm: Farm) -> None:
    plain = httpx.Client(base_url=farm.url, timeout=30)
    home = plain.get("/", follow_redirects=False)
    assert home.status_code == 307 and home.headers["location"] == "/ui"
    ui = plain.get("/ui")
    csp = ui.headers["content-security-policy"]
    assert ui.status_code == 200 and "script-src 'self'" in csp and "default-src 'none'" in csp
    assert "<script>" not in ui.text and " on" not in ui.text.split("<body>")[1].split(">")[0]
    assert plain.get("/ui/session").json() == {"signed_in": False}
    # Signing in: only from the page itself, and only with a valid token.
    assert plain.post("/ui/session", json={"token": TOKEN}).status_code == 403
    page_headers = {"X-Framefleet-UI": "1"}
    wrong = plain.post("/ui/session", json={"token": "nope"}, headers=page_headers)
    assert wrong.status_code == 401 and wrong.json()["error"]["message"] == (
        "that token is not valid for this gateway"
    )
    signed = plain.post("/ui/session", json={"token": TOKEN}, headers=page_headers)
    cookie = signed.headers["set-cookie"]
    assert signed.status_code == 204 and TOKEN not in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert plain.get("/v1/jobs").status_code == 200  # the cookie reads
    # ...but a change with the cookie alone (a cross-site form) or from another origin is
    # refused before it reaches the job; from the page it goes through (a 404 here).
    assert plain.delete("/v1/jobs/0000000000000000").status_code == 403
    evil = page_headers | {"Origin": "http://evil.example"}
    assert plain.delete("/v1/jobs/0000000000000000", headers=evil).status_code == 403
    assert plain.delete("/v1/jobs/0000000000000000", headers=page_headers).status_code == 404
    plain.delete("/ui/session", headers=page_headers)
    assert plain.get("/v1/jobs").status_code == 401
    plain.close()


def test_sign_in_watch_a_job_advance_to_done_and_see_the_declared_gpu(
    page: Page, farm: Farm
) -> None:
    console = Console(page)
    page.goto(farm.url + "/")
    assert page.url == farm.url + "/ui"
    page.get_by_label("API token").fill("wrong-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#signin-error")).to_have_text("that token is not valid for this gateway")
    shot(page, "sign-in-refused")
    page.get_by_label("API token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#conn")).to_have_text("live")
    assert TOKEN not in page.url and page.evaluate("document.cookie") == ""  # HttpOnly
    assert page.get_by_label("API token").input_value() == ""

    card = page.locator("#node-cards .card")
    expect(card).to_have_count(1)
    expect(card.locator(".gpu strong")).to_have_text("GPU 0: NVIDIA L4")
    expect(card.locator(".codec", has_text="h264")).to_have_text("h264: declared")
    # The node scores with framefleet's pinned static ffmpeg (its own has no libvmaf).
    expect(card.locator("[data-metrics]")).to_contain_text("scores psnr, ssim, vmaf, xpsnr")
    expect(page.locator("#stat-nodes")).to_have_text("1")

    job = farm.submit("long.mp4", "watched.mp4", speed="slow")
    bar = row(page, "running", job["id"]).locator("progress")
    expect(bar).to_be_visible(timeout=60_000)
    seen: set[str] = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and farm.status(job["id"]) == "running":
        value = page.evaluate(BAR_VALUE, job["id"])  # read at once: the row may just go
        if value is not None:
            seen.add(value)
        if len(seen) == 2:
            shot(page, "running")
        time.sleep(0.1)
    assert len(seen) >= 2, f"the bar showed {sorted(seen)}"
    done = row(page, "finished", job["id"])
    expect(done.locator(".status")).to_have_text("succeeded", timeout=60_000)
    expect(row(page, "running", job["id"])).to_have_count(0)
    expect(page.locator("#stat-succeeded")).not_to_have_text("0")
    done.locator("button.link").click()
    expect(page.locator("#detail-fields")).to_contain_text("CPU on")  # the placement reason
    # The input as probed: its scan (the tag, and idet's counts at 25 fps) and its colour.
    fields = page.locator("#detail-fields")
    expect(fields.locator("dt:text-is('Scan') + dd")).to_have_text(
        re.compile(r"^progressive \(tagged progressive; idet TFF \d+, BFF \d+, progressive \d+")
    )
    expect(fields.locator("dt:text-is('Colour') + dd")).to_have_text(re.compile(r"^SDR\b"))
    expect(page.locator("#detail-result")).to_contain_text('"size_bytes"')
    shot(page, "overview")
    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    shot(page, "phone")
    assert console.unexpected(401) == [] and console.dialogs == []


def test_cancel_from_the_page_stops_ffmpeg_and_leaves_nothing(page: Page, farm: Farm) -> None:
    console = sign_in(page, farm)
    job = farm.submit("long.mp4", "cancelled.mp4", speed="slow")
    running = row(page, "running", job["id"])
    expect(running.locator(".ptext")).to_contain_text("%", timeout=60_000)
    assert ffmpeg_processes("cancelled.mp4")
    running.get_by_role("button", name="Cancel").click()
    expect(row(page, "finished", job["id"]).locator(".status")).to_have_text(
        "cancelled", timeout=30_000
    )
    wait_until(lambda: ffmpeg_processes("cancelled.mp4") == [], timeout=15)
    assert not (farm.media / "out" / "cancelled.mp4").exists()
    assert [n for n in leftovers(farm.media / "out") if "cancelled" in n] == []
    shot(page, "cancelled")
    assert console.unexpected() == [] and console.dialogs == []


def test_a_failed_job_shows_its_reason_and_a_hostile_name_stays_text(
    page: Page, farm: Farm
) -> None:
    console = sign_in(page, farm)
    (farm.media / HOSTILE).write_bytes(b"not a video at all" * 64)
    job = farm.submit(HOSTILE, "hostile.mp4")
    finished = row(page, "finished", job["id"])
    expect(finished.locator(".status")).to_have_text("failed", timeout=60_000)
    reason = farm.http.get(f"/v1/jobs/{job['id']}").json()["error"]["message"]
    expect(finished.locator(".reason")).to_have_text(reason)
    expect(finished.locator("button.link")).to_have_text(HOSTILE)
    assert page.locator("img").count() == 0  # the name was never parsed as HTML
    shot(page, "failed")
    # The file is fixed; Retry on the page runs the job again, to success.
    (farm.media / HOSTILE).write_bytes((farm.media / "clip.mp4").read_bytes())
    finished.get_by_role("button", name="Retry").click()
    expect(finished.locator(".status")).to_have_text("succeeded", timeout=60_000)
    expect(finished.get_by_role("button", name="Retry")).to_have_count(0)
    assert (farm.media / "out" / "hostile.mp4").stat().st_size > 0
    assert page.locator("img").count() == 0
    assert console.unexpected() == [] and console.dialogs == []


def test_a_gpu_whose_nvenc_fails_shows_as_failed_on_its_node(page: Page, farm: Farm) -> None:
    console = sign_in(page, farm)
    # The declared L4 cannot open NVENC here (no driver): a real failure, as a bad GPU.
    job = farm.submit("clip.mp4", "nvenc.mp4", codec="hevc", hardware="gpu")
    finished = row(page, "finished", job["id"])
    expect(finished.locator(".status")).to_have_text("failed", timeout=90_000)
    expect(finished.locator(".reason")).to_contain_text(
        "NVENC could not encode hevc on GPU 0 (NVIDIA L4)"
    )
    hevc = page.locator("#node-cards .codec", has_text="hevc")
    expect(hevc).to_contain_text("hevc: failed (NVENC failed on a real encode", timeout=15_000)
    expect(page.locator("#node-cards .codec", has_text="h264")).to_have_text("h264: declared")
    shot(page, "bad-gpu")
    assert console.unexpected() == [] and console.dialogs == []


def test_the_submit_form_shows_a_refusal_by_its_field_then_submits(page: Page, farm: Farm) -> None:
    console = sign_in(page, farm)
    page.get_by_label("Input").fill("/etc/hosts")
    page.get_by_label("Output").fill(str(farm.media / "out" / "form.mp4"))
    page.get_by_role("button", name="Submit").click()
    expect(page.locator("#f-input-error")).to_contain_text("resolves outside the media roots")
    shot(page, "submit-refused")
    page.get_by_label("Input").fill(str(farm.media / "clip.mp4"))
    page.get_by_label("Hardware").select_option("cpu")
    page.get_by_label("Priority").fill("5")
    page.get_by_role("button", name="Submit").click()
    expect(page.locator("#f-ok")).to_contain_text("Submitted: job")
    expect(page.locator("#f-input-error")).to_be_hidden()
    job_id = page.locator("#f-ok").inner_text().split("job ")[1].split(" ")[0]
    wait_until(lambda: farm.status(job_id) == "succeeded", timeout=60)
    expect(row(page, "finished", job_id).locator(".status")).to_have_text("succeeded")
    assert (farm.media / "out" / "form.mp4").stat().st_size > 0
    assert console.unexpected(422) == [] and console.dialogs == []


def test_after_a_gateway_restart_the_page_reconnects_still_signed_in(
    page: Page, farm: Farm
) -> None:
    console = sign_in(page, farm)
    before = farm.submit("clip.mp4", "before-restart.mp4")
    expect(row(page, "finished", before["id"]).locator(".status")).to_have_text(
        "succeeded", timeout=60_000
    )
    farm.stop()
    expect(page.locator("#conn")).to_have_text("reconnecting…", timeout=30_000)
    farm.start()
    expect(page.locator("#conn")).to_have_text("live", timeout=60_000)  # no reload, no token
    assert page.locator("#app").is_visible() and not page.locator("#signin").is_visible()
    after = farm.submit("clip.mp4", "after-restart.mp4")  # followed live again
    expect(row(page, "finished", after["id"]).locator(".status")).to_have_text(
        "succeeded", timeout=60_000
    )
    expect(row(page, "finished", before["id"])).to_have_count(1)  # history kept
    # While the gateway was down, the browser reported its refused connections; nothing else.
    away = re.compile(r"WebSocket connection .* failed|ERR_CONNECTION_REFUSED")
    assert [e for e in console.unexpected() if not away.search(e)] == []


def test_two_jobs_of_one_input_show_their_outputs_in_the_queue(page: Page, farm: Farm) -> None:
    console = sign_in(page, farm)
    node = farm.http.get("/v1/nodes").json()[0]["node_id"]
    assert farm.http.post(f"/v1/nodes/{node}/drain").status_code == 200  # nothing starts
    jobs: list[dict[str, Any]] = []
    try:
        jobs.append(farm.submit("clip.mp4", "twice-a.mp4"))
        jobs.append(farm.submit("clip.mp4", "twice-b.mkv"))
        jobs.append(farm.submit("clip.mp4", "twice-pkg", kind="package"))
        for job, shown in zip(jobs[:2], ("twice-a.mp4", "twice-b.mkv"), strict=True):
            queued = row(page, "queue", job["id"])
            expect(queued.locator("button.link")).to_have_text("clip.mp4")
            expect(queued.locator(".output")).to_have_text(shown)
        # A package runs as soon as its renditions are planned (they wait, it shows).
        planned = page.locator(f"tr[data-id='{jobs[2]['id']}'] .output")
        expect(planned).to_have_text("twice-pkg/")
        shot(page, "queue-outputs")
    finally:
        farm.http.delete(f"/v1/nodes/{node}/drain")
        for job in jobs:
            farm.http.delete(f"/v1/jobs/{job['id']}")
    assert console.unexpected() == []
