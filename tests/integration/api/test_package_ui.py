"""A finished package, served by the gateway and played on the status page: a real package
job through the HTTP API, then Debian's chromium (Playwright) playing it with the pinned
hls.js and dash.js, a rendition forced each way, and no player error.

Screenshots go to ``$FRAMEFLEET_ARTIFACTS/ui`` (default ``test-artifacts/``).
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from tests.helpers import make_clip
from tests.integration.api.conftest import TOKEN, Gateway, finished
from tests.integration.api.test_ui import Console, shot

pytestmark = pytest.mark.timeout(
    300
)  # a package's encodes on the session's 2 CPUs, then two players

VENDOR = Path(__file__).parents[3] / "api" / "gateway" / "ui" / "vendor"
LADDER = {360: "v360h264", 270: "v270h264", 180: "v180h264"}
PLAYER_STATE = """() => {
  const v = document.getElementById("preview-video");
  const now = document.getElementById("preview-now");
  return {time: v.currentTime, height: v.videoHeight, paused: v.paused, src: v.currentSrc,
          rendition: now.dataset.rendition, format: now.dataset.format, now: now.textContent,
          error: document.getElementById("preview-error").textContent,
          mediaError: v.error && v.error.message};
}"""
CUES = """() => [...document.getElementById("preview-video").textTracks].flatMap(
  (t) => [...(t.cues || [])].map((c) => [c.startTime, c.endTime, c.text]))"""


@pytest.fixture(scope="module")
def package(gateway: Gateway) -> dict[str, Any]:
    """A 12 s master (640x360, 30 fps, sine audio, a subtitle track) packaged through the
    API as a 360/270/180 ladder in 4 s segments."""
    master = make_clip(gateway.media / "master.mp4", seconds=12, size="640x360", rate=30,
                       subtitles=True)  # fmt: skip
    body = {
        "kind": "package",
        "input": str(master),
        "output": str(gateway.out / "package"),
        "hardware": "cpu",
        "package": {"ladder": [{"height": h} for h in LADDER], "segment_s": 4},
    }
    r = gateway.http.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    job = finished(gateway, r.json()["id"])
    assert job["status"] == "succeeded", job
    assert job["result"]["playlists"] == {"hls": "master.m3u8", "dash": "manifest.mpd"}
    return job


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: `make setup` installs it"
    with sync_playwright() as p:
        # The page's video is muted, which headless chromium may play without a gesture;
        # the flag makes that independent of its media-engagement heuristics.
        b = p.chromium.launch(executable_path=chromium, headless=True,
                              args=["--autoplay-policy=no-user-gesture-required"])  # fmt: skip
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    pg = context.new_page()
    yield pg
    context.close()


def test_the_vendored_files_are_the_pinned_files() -> None:
    """Each file under ui/vendor/ (the players, Swagger UI) is the one its README pins
    (name and sha256), and every one it pins is there."""
    readme = (VENDOR / "README.md").read_text()
    pinned = {name: digest for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", readme,
                                                          flags=re.MULTILINE)}  # fmt: skip
    present = {p.name for p in VENDOR.iterdir() if p.name != "README.md"}
    assert set(pinned) == present
    for name, digest in pinned.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name


def test_the_package_is_served_to_a_reader_only_and_only_inside_it(
    gateway: Gateway, package: dict[str, Any]
) -> None:
    base = f"/v1/jobs/{package['id']}/package"
    kinds = {
        "master.m3u8": "application/vnd.apple.mpegurl",
        "manifest.mpd": "application/dash+xml",
        "v180h264/init.mp4": "video/mp4",
        "v180h264/seg_00001.m4s": "video/mp4",
        "s1/subtitles.vtt": "text/vtt; charset=utf-8",
    }
    folder = Path(package["result"]["output"])
    for name, kind in kinds.items():
        r = gateway.http.get(f"{base}/{name}")
        assert r.status_code == 200 and r.headers["content-type"] == kind, (name, r.text)
        assert r.content == (folder / name).read_bytes()
        assert r.headers["x-content-type-options"] == "nosniff"
    segment = (folder / "v360h264" / "seg_00002.m4s").read_bytes()
    part = gateway.http.get(f"{base}/v360h264/seg_00002.m4s", headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206 and part.content == segment[100:1100]
    assert part.headers["content-range"] == f"bytes 100-1099/{len(segment)}"

    # Without a token or a session: 401, as for any /v1 route (the job's existence unsaid).
    plain = httpx.Client(base_url=gateway.url, timeout=30)
    # The page may play from MSE's blob: URLs (and hls.js's empty data: track); scripts,
    # the players' worker included, still come from the gateway only.
    csp = plain.get("/ui").headers["content-security-policy"]
    assert "media-src blob: data:;" in csp and "script-src 'self';" in csp
    assert "unsafe" not in csp and "worker-src" not in csp and "*" not in csp
    worker = plain.get("/ui/assets/hls.worker.js")
    assert worker.status_code == 200 and worker.content == (VENDOR / "hls.worker.js").read_bytes()
    assert plain.get(f"{base}/master.m3u8").status_code == 401
    assert plain.get("/v1/jobs/0000000000000000/package/master.m3u8").status_code == 401
    plain.close()

    # Outside the package, whatever the way: 404, and nothing of the file in the answer.
    secret = gateway.media / "secret.m3u8"
    secret.write_text("#EXTM3U\n# not part of any package\n")
    (folder / "leak.m3u8").symlink_to(secret)
    (folder / "linked").symlink_to(gateway.media, target_is_directory=True)
    outside = [
        f"%2E%2E/%2E%2E/{gateway.media.name}/secret.m3u8",  # (httpx keeps %2E as sent)
        "..%2Fsecret.m3u8",
        "v180h264/%2E%2E/%2E%2E/secret.m3u8",
        f"{'%2F'}{secret}",  # absolute
        "leak.m3u8",  # a link in the package, to a file outside
        "linked/secret.m3u8",  # a link to a folder outside
        "v180h264/%2E/index.m3u8",  # plain names only
        "master.m3u8%00.mp4",
        "v180h264",  # a folder
        "v180h264/missing.m4s",
    ]
    try:
        for path in outside:
            r = gateway.http.get(f"{base}/{path}")
            assert r.status_code == 404, (path, r.status_code, r.text)
            assert "not part of any package" not in r.text
            assert r.json()["error"]["code"] == "not_found"
    finally:
        (folder / "leak.m3u8").unlink()
        (folder / "linked").unlink()
    # A job that is not a package has no package to serve.
    probe = gateway.http.post("/v1/jobs", json={"kind": "probe", "input": package["input"]})
    assert probe.status_code == 201, probe.text
    finished(gateway, probe.json()["id"])
    r = gateway.http.get(f"/v1/jobs/{probe.json()['id']}/package/master.m3u8")
    assert r.status_code == 404 and "only a package is served" in r.json()["error"]["message"]


def _sign_in(page: Page, gateway: Gateway) -> Console:
    console = Console(page)
    page.goto(gateway.url + "/ui")
    page.get_by_label("API token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#conn")).to_have_text("live")
    return console


def _state(page: Page) -> dict[str, Any]:
    state: dict[str, Any] = page.evaluate(PLAYER_STATE)
    assert not state["error"] and not state["mediaError"], state
    return state


def _wait(page: Page, test: str, what: str, timeout_s: float = 30) -> dict[str, Any]:
    """The player's state once the JS expression ``test`` holds for it (``s``), or as soon
    as the page shows a player error."""
    until = (
        f"() => {{ const s = ({PLAYER_STATE})(); return !!(s.error || s.mediaError || ({test})); }}"
    )
    try:
        page.wait_for_function(until, timeout=timeout_s * 1000)
    except Exception as exc:
        raise AssertionError(f"{what}: the player is at {_state(page)}") from exc
    return _state(page)


def _play_from(page: Page, at: float) -> None:
    """Seek and press play (the promise is not awaited: it settles once data comes)."""
    page.evaluate(
        "(at) => { const v = document.getElementById('preview-video'); v.currentTime = at; "
        "v.play().catch(() => null); }",
        at,
    )


def _subtitles(page: Page, fmt: str) -> None:
    """The subtitle track, turned on as the video's captions menu does, shows the
    master's one cue at its time (the master's subtitles: "hello" from 0 to 0.9 s)."""
    page.evaluate(
        "() => { for (const t of document.getElementById('preview-video').textTracks) "
        "t.mode = 'showing'; }"
    )
    try:
        page.wait_for_function(f"() => ({CUES})().length > 0", timeout=20_000)
    except Exception as exc:
        raise AssertionError(f"{fmt}: no subtitle cue; the player is at {_state(page)}") from exc
    cues = [(round(start, 2), round(end, 2), text) for start, end, text in page.evaluate(CUES)]
    assert cues == [(0.0, 0.9, "hello")], (fmt, cues)


def _force(page: Page, height: int, fmt: str) -> None:
    """Choose a rendition in the page, from near the start, and see it rendered."""
    key = LADDER[height]
    page.get_by_label("Rendition").select_option(key)
    _play_from(page, 0.5)
    _wait(page, f"s.rendition === '{key}' && s.height === {height} && !s.paused",
          f"{fmt} forced to {key}")  # fmt: skip
    expect(page.locator("#preview-now")).to_contain_text(f"showing {key} at ")
    start = _state(page)["time"]
    _wait(page, f"s.time > {start} + 1.5 && s.rendition === '{key}' && s.height === {height}",
          f"{fmt} playing {key}")  # fmt: skip


def test_the_status_page_plays_the_package_with_hls_and_dash(
    page: Page, gateway: Gateway, package: dict[str, Any]
) -> None:
    console = _sign_in(page, gateway)
    warnings: list[str] = []

    def warned(message: ConsoleMessage) -> None:  # the players' recovered hiccups, for a reader
        if message.type == "warning":
            warnings.append(message.text)

    page.on("console", warned)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.locator(f"#finished-rows tr[data-id='{package['id']}'] button.link").click()
    expect(page.locator("#preview")).to_be_visible()
    options = page.locator("#preview-rendition option")
    expect(options).to_have_count(4)
    assert options.all_inner_texts()[0] == "auto (adaptive)"
    assert (
        page.locator("#preview-rendition option[value='v180h264']")
        .inner_text()
        .startswith("180p h264 (320\N{MULTIPLICATION SIGN}180")
    )

    for fmt in ("hls", "dash"):
        page.locator(f"input[name='preview-format'][value='{fmt}']").check()
        page.get_by_label("Rendition").select_option("")
        _wait(page, f"s.format === '{fmt}' && s.src.startsWith('blob:')", f"{fmt} attached")
        _play_from(page, 0)
        state = _wait(page, "s.time > 3 && s.rendition", f"{fmt} plays")
        assert state["height"] in LADDER, state
        _subtitles(page, fmt)
        shot(page, f"package-{fmt}-adaptive")
        _force(page, 180, fmt)
        _force(page, 360, fmt)
        shot(page, f"package-{fmt}-360")

    package_requests = [u for u in requests if "/package/" in u]
    assert any(u.endswith("/master.m3u8") for u in package_requests)
    assert any(u.endswith("/manifest.mpd") for u in package_requests)
    assert any("/v180h264/seg_" in u for u in package_requests)
    assert all(TOKEN not in u for u in requests)
    assert console.unexpected() == [] and console.dialogs == [], (console.errors, warnings)
    # The page closes its player with the detail: no request for the package after it.
    page.get_by_role("button", name="Close").click()
    expect(page.locator("#preview")).to_be_hidden()
    asked = len(requests)
    video = page.locator("#preview-video")
    assert video.get_attribute("src") is None and video.evaluate("v => v.networkState") == 0
    page.wait_for_timeout(1000)
    assert [u for u in requests[asked:] if "/package/" in u] == []
