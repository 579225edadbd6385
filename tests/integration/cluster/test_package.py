"""Streaming packages on a real multi-node Ray cluster (a head without CPUs, three workers
of one core each): a master with audio and subtitles packaged into a ladder whose
renditions run on several workers, then every rule of the package checked again here,
independently of framefleet's own check: ffprobe of every segment (init + media, as a
player reads them), the playlists read by the ``m3u8`` package, the MPD parsed as XML.
Also: no upscaling, a bad ladder refused, an existing package refused, cancel leaves
nothing behind.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import shutil
import subprocess
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import m3u8
import pytest

from cluster import (
    Fleet,
    JobKind,
    JobSpec,
    OutputError,
    SpecError,
    Speed,
)
from tests.helpers import ffmpeg_processes, ffprobe, make_clip, streams, wait_until
from tests.integration.conftest import one_core_workers

pytestmark = pytest.mark.multinode
NAME = "package"
MPD_NS = {"d": "urn:mpeg:dash:schema:mpd:2011"}


@dataclass
class Farm:
    fleet: Fleet
    cluster: Any
    root: Path
    master: Path
    """12 s of 640x360 at 25 fps with audio and English subtitles (mkv)."""


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    root = tmp_path_factory.mktemp("package")
    with one_core_workers("ffp-", root, NAME, max_attempts=2) as (fleet, cluster):
        master = make_clip(root / "master.mkv", seconds=12, size="640x360", subtitles=True,
                           language="eng")  # fmt: skip
        wait_until(lambda: fleet.ping()["ready"], timeout=60)
        yield Farm(fleet, cluster, root, master)


def package(src: Path, out: Path, **options: Any) -> JobSpec:
    return JobSpec(kind=JobKind.PACKAGE, input=str(src), output=str(out), speed=Speed.FAST,
                   package=options)  # type: ignore[arg-type]  # fmt: skip


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ---- the independent check -------------------------------------------------------------


def probe_segment(init: Path, segment: Path) -> dict[str, Any]:
    """ffprobe of one segment as a player reads it: the init segment, then the segment."""
    data = init.read_bytes() + segment.read_bytes()
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", "-show_packets",
         "-i", "pipe:0"],
        input=data, capture_output=True, check=True,
    ).stdout  # fmt: skip
    probed: dict[str, Any] = json.loads(out)
    return probed


def avc_codecs(stream: dict[str, Any]) -> str:
    """``avc1.PPCCLL`` from ffprobe's profile and level (constraint flags: the high
    profile's are 00)."""
    profiles = {"Constrained Baseline": (66, 0xC0), "Baseline": (66, 0x40), "Main": (77, 0x40),
                "High": (100, 0x00)}  # fmt: skip
    profile, constraints = profiles[stream["profile"]]
    return f"avc1.{profile:02x}{constraints:02x}{int(stream['level']):02x}"


def check_media_playlist(folder: Path, uri: str, target_s: float) -> dict[str, Any]:
    """Every segment of one rendition: it starts with a keyframe (video), lasts what its
    EXTINF says (within a frame) and no more than the target duration + 0.5 s; returns
    the segments' start times, durations, sizes and the stream ffprobe saw."""
    playlist = m3u8.load(str(folder / uri))
    base = (folder / uri).parent
    assert playlist.playlist_type == "vod" and playlist.is_endlist
    assert playlist.is_independent_segments
    longest = max(s.duration for s in playlist.segments)
    assert playlist.target_duration == math.floor(longest + 0.5)
    assert abs(longest - target_s) < 0.5 or len(playlist.segments) == 1
    init = base / playlist.segment_map[0].uri
    starts, durations, sizes, stream = [], [], [], {}
    for segment in playlist.segments:
        assert round(segment.duration) <= playlist.target_duration
        assert segment.duration <= playlist.target_duration + 0.5
        probed = probe_segment(init, base / segment.uri)
        stream = probed["streams"][0]
        packets = probed["packets"]
        if stream["codec_type"] == "video":
            first = min(packets, key=lambda p: float(p["pts_time"]))
            assert first["flags"].startswith("K"), (uri, segment.uri, first)
            assert packets[0]["flags"].startswith("K"), (uri, segment.uri)
        start = min(float(p["pts_time"]) for p in packets)
        end = max(float(p["pts_time"]) + float(p.get("duration_time", 0)) for p in packets)
        assert abs((end - start) - segment.duration) < 0.05, (uri, segment.uri, start, end)
        starts.append(start)
        durations.append(segment.duration)
        sizes.append((base / segment.uri).stat().st_size)
    return {"starts": starts, "durations": durations, "sizes": sizes, "stream": stream}


def languages(source: Path, kind: str) -> list[str | None]:
    """The language tag of each of the source's streams of ``kind`` (``None``: none)."""
    tags = [s.get("tags", {}).get("language") for s in streams(source, kind)]
    return [t if t not in (None, "und") else None for t in tags]


def peak_rate(sizes: list[int], durations: list[float]) -> float:
    """The peak segment bitrate as RFC 8216 4.3.4.2 has it: the highest rate over runs
    of consecutive segments lasting at least half the target duration (a short last
    segment with the ones before it)."""
    half = math.floor(max(durations) + 0.5) / 2
    rates = []
    for i in range(len(sizes)):
        for order in (range(i, len(sizes)), range(i, -1, -1)):
            size = seconds = 0.0
            for j in order:
                size, seconds = size + sizes[j], seconds + durations[j]
                if seconds >= half:
                    rates.append(8 * size / seconds)
                    break
            else:
                continue
            break
    return max(rates)


def check_package(
    folder: Path,
    source: Path,
    segment_s: float,
    video_s: float | None = None,
) -> dict[str, Any]:
    """Every rule of the package, from the files alone (``video_s``: how long the
    source's video lasts, when its container says otherwise)."""
    master = m3u8.load(str(folder / "master.m3u8"))
    assert master.is_variant and master.is_independent_segments
    source_video = streams(source, "video")[0]
    source_s = video_s or float(ffprobe(source)["format"]["duration"])
    rate = float(Fraction(source_video["avg_frame_rate"]))
    audio = [m for m in master.media if m.type == "AUDIO"]
    texts = [m for m in master.media if m.type == "SUBTITLES"]
    assert [m.language for m in audio] == languages(source, "audio") and audio[0].uri
    assert [m.language for m in texts] == languages(source, "subtitle")
    audio_track = check_media_playlist(folder, audio[0].uri, segment_s)
    assert audio_track["stream"]["codec_name"] == "aac"
    assert audio_track["stream"]["channels"] == 2
    audio_peak = peak_rate(audio_track["sizes"], audio_track["durations"])
    audio_average = 8 * sum(audio_track["sizes"]) / sum(audio_track["durations"])
    for text in texts:
        vtt = (folder / text.uri).parent / "subtitles.vtt"
        assert vtt.read_text().startswith("WEBVTT") and "hello" in vtt.read_text()
    timelines = []
    for variant in master.playlists:
        info = variant.stream_info
        track = check_media_playlist(folder, variant.uri, segment_s)
        stream = track["stream"]
        assert (stream["width"], stream["height"]) == info.resolution
        assert info.codecs == f"{avc_codecs(stream)},mp4a.40.2"
        assert abs(info.frame_rate - rate) < 0.01
        peak = peak_rate(track["sizes"], track["durations"])
        average = 8 * sum(track["sizes"]) / sum(track["durations"])
        assert abs(info.bandwidth - (peak + audio_peak)) <= 0.10 * info.bandwidth
        assert abs(info.average_bandwidth - (average + audio_average)) <= 0.10 * average
        assert abs(sum(track["durations"]) - source_s) < 2 / rate
        timelines.append(track["starts"])
    assert all(len(t) == len(timelines[0]) for t in timelines), timelines
    for starts in timelines[1:]:
        assert all(abs(a - b) < 0.5 / rate for a, b in zip(starts, timelines[0], strict=True))
    iframes = master.iframe_playlists
    assert len(iframes) == len(master.playlists)
    for playlist in iframes:
        loaded = m3u8.load(str(folder / playlist.uri))
        assert loaded.is_i_frames_only and loaded.segments
        assert all(s.byterange for s in loaded.segments)
    check_mpd(folder, len(master.playlists), source_s)
    return {"variants": master.playlists, "timelines": timelines}


def check_mpd(folder: Path, videos: int, duration_s: float) -> None:
    """The MPD names the same files the HLS playlists do, and its timelines add up."""
    mpd = ET.parse(folder / "manifest.mpd").getroot()  # noqa: S314 (framefleet's own file)
    assert mpd.get("type") == "static"
    representations = mpd.findall(".//d:Representation", MPD_NS)
    video = [r for r in representations if r.get("width")]
    assert len(video) == videos
    for rep in representations:
        template = rep.find("d:SegmentTemplate", MPD_NS)
        if template is None:
            base = rep.find("d:BaseURL", MPD_NS)
            assert base is not None and (folder / str(base.text)).is_file()
            continue
        assert (folder / str(template.get("initialization"))).is_file()
        timescale = int(str(template.get("timescale")))
        number, total = 1, 0
        for s in template.findall(".//d:S", MPD_NS):
            for _ in range(int(s.get("r", "0")) + 1):
                media = str(template.get("media")).replace("$Number%05d$", f"{number:05d}")
                assert (folder / media).is_file(), media
                number, total = number + 1, total + int(str(s.get("d")))
        lasts = total / timescale
        if rep.get("width"):  # video: as long as the source's video
            assert abs(lasts - duration_s) < 0.1, (rep.get("id"), lasts)
        else:  # audio: no shorter
            assert lasts > duration_s - 0.25, (rep.get("id"), lasts)


# ---- the tests ---------------------------------------------------------------------------


def test_a_master_becomes_a_package_that_follows_every_rule(farm: Farm) -> None:
    out = farm.root / "out-ladder"
    out.mkdir()
    spec = package(farm.master, out / "show", ladder="360,270,180", segment_s=4)
    job = farm.fleet.wait(farm.fleet.submit(spec).id, timeout=300)
    assert job.status == "succeeded", job.reason
    assert job.package is not None
    encodes = [t for t in job.package.tasks if t.key != "package"]
    assert [t.key for t in encodes] == ["v360h264", "v270h264", "v180h264", "a1"]
    assert all(t.status == "succeeded" for t in job.package.tasks)
    assert len({t.node_id for t in encodes}) >= 2, encodes
    assert "3 video renditions and 1 audio encoded on" in (job.reason or "")

    checked = check_package(out / "show", farm.master, segment_s=4)
    assert [v.stream_info.resolution for v in checked["variants"]] == [
        (640, 360), (480, 270), (320, 180)]  # fmt: skip
    assert len(checked["timelines"][0]) == 3  # 12 s in 4 s segments
    result = job.result or {}
    assert result["playlists"] == {"hls": "master.m3u8", "dash": "manifest.mpd"}
    assert result["segments"] == 3 * 3 + 3
    assert hidden(out) == [], "rendition files and the staging folder are removed"


VENDOR = Path(__file__).resolve().parents[3] / "api" / "gateway" / "ui" / "vendor"
PLAYER = Path(__file__).resolve().parent


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


@contextlib.contextmanager
def served(folder: Path) -> Iterator[str]:
    """``folder`` over HTTP on 127.0.0.1 (a thread), for the browser."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_farm_made_package_plays_and_switches_in_chromium(farm: Farm, tmp_path: Path) -> None:
    """The package the farm made (renditions on several workers) played by the pinned
    hls.js and dash.js in Debian's chromium: it plays, a forced switch between renditions
    shows in the picture, and no player error is raised."""
    from playwright.sync_api import sync_playwright

    show = farm.root / "out-ladder" / "show"
    assert (show / "master.m3u8").is_file(), "the first test of this module made it"
    site = tmp_path / "site"
    shutil.copytree(show, site / "show")
    for name in ("hls.min.js", "hls.worker.js", "dash.mediaplayer.min.js"):
        shutil.copy(VENDOR / name, site / name)
    for name in ("player.html", "player.js"):
        shutil.copy(PLAYER / name, site / name)
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: `make setup` installs it"
    with served(site) as url, sync_playwright() as p:
        autoplay = ["--autoplay-policy=no-user-gesture-required"]
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=autoplay)
        try:
            for how in ("hls", "dash"):
                page = browser.new_page()
                failures: list[str] = []
                page.on("pageerror", lambda exc: failures.append(str(exc)))  # noqa: B023
                page.goto(f"{url}/player.html?{how}")
                page.wait_for_function("document.getElementById('video').currentTime > 1.5",
                                       timeout=30_000)  # fmt: skip
                assert sorted(page.evaluate("window.levels()")) == [180, 270, 360], how
                for height in (180, 360):
                    page.evaluate(f"window.force({height})")
                    page.wait_for_function(
                        f"document.getElementById('video').videoHeight === {height}",
                        timeout=30_000,
                    )
                assert page.evaluate("window.errors") == [], how
                assert failures == [], how
                page.close()
        finally:
            browser.close()


def test_long_rungs_are_cut_at_segment_boundaries_and_joined_frame_exact(farm: Farm) -> None:
    out = farm.root / "out-chunks"
    out.mkdir()
    spec = replace(package(farm.master, out / "show", ladder="360,270,180", segment_s=2),
                   split="4")  # fmt: skip
    job = farm.fleet.wait(farm.fleet.submit(spec).id, timeout=300)
    assert job.status == "succeeded", job.reason
    assert job.package is not None
    keys = sorted(t.key for t in job.package.tasks)
    assert keys == ["a1", "gh264c001", "gh264c002", "gh264c003", "package"]
    assert "3 chunks at segment boundaries, 1 rung group decoded once per chunk" in (
        job.package.why)  # fmt: skip
    assert len({t.node_id for t in job.package.tasks if t.key != "package"}) >= 2
    checked = check_package(out / "show", farm.master, segment_s=2)
    assert len(checked["timelines"][0]) == 6
    for variant in checked["variants"]:
        frames = count_frames_of_rendition(out / "show", variant.uri)
        assert frames == 300, (variant.uri, frames)
    assert hidden(out) == []


def test_an_uneven_master_still_follows_every_rule(farm: Farm) -> None:
    """29.97 fps, 4.5 s segments (a half second: no banker's rounding of the target), a
    short last segment (no inflated peak), and audio 0.6 s longer than the video (the
    container's duration is the audio's)."""
    out = farm.root / "out-uneven"
    out.mkdir()
    master = farm.root / "uneven.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i",
         "testsrc2=size=640x360:rate=30000/1001:duration=10.3", "-f", "lavfi", "-i",
         "sine=frequency=300:duration=10.9", "-c:v", "libx264", "-preset", "ultrafast",
         "-pix_fmt", "yuv420p", "-c:a", "aac", "-metadata:s:a", "language=eng", str(master)],
        check=True,
    )  # fmt: skip
    spec = package(master, out / "show", ladder="360,180", segment_s=4.5)
    job = farm.fleet.wait(farm.fleet.submit(spec).id, timeout=300)
    assert job.status == "succeeded", job.reason
    check_package(out / "show", master, segment_s=4.5, video_s=10.3)
    media = m3u8.load(str(out / "show" / "v360h264" / "index.m3u8"))
    assert [round(s.duration, 3) for s in media.segments][-1] < 2.0  # the short tail


def count_frames_of_rendition(folder: Path, uri: str) -> int:
    """The video frames of a whole rendition, read as a player would (init + segments)."""
    playlist = m3u8.load(str(folder / uri))
    base = (folder / uri).parent
    data = (base / playlist.segment_map[0].uri).read_bytes()
    data += b"".join((base / s.uri).read_bytes() for s in playlist.segments)
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
         "stream=nb_read_frames", "-of", "csv=p=0", "-i", "pipe:0"],
        input=data, capture_output=True, check=True,
    ).stdout  # fmt: skip
    return int(out.decode().strip())


def test_no_rung_is_higher_than_the_source(farm: Farm) -> None:
    out = farm.root / "out-default"
    out.mkdir()
    small = make_clip(farm.root / "small.mp4", seconds=2, size="854x480")
    job = farm.fleet.wait(farm.fleet.submit(package(small, out / "p")).id, timeout=180)
    assert job.status == "succeeded", job.reason
    heights = [r["height"] for r in (job.result or {})["renditions"] if r["kind"] == "video"]
    assert heights == [360], "the default ladder: 1080p to 360p, none above the source"
    widths = [r["width"] for r in (job.result or {})["renditions"] if r["kind"] == "video"]
    assert widths == [640]

    asked = package(small, out / "q", ladder="1080,480,240")
    job = farm.fleet.wait(farm.fleet.submit(asked).id, timeout=180)
    assert job.status == "succeeded", job.reason
    heights = [r["height"] for r in (job.result or {})["renditions"] if r["kind"] == "video"]
    assert heights == [480, 240]
    assert (
        "ladder rung 1 (1080p h264) dropped: the source is 480 pixels high and framefleet "
        "never upscales" in job.notes
    )


def test_bad_ladders_and_existing_packages_are_refused_with_one_line(farm: Farm) -> None:
    with pytest.raises(SpecError, match=r"ladder rung 2 \(360p h264\) repeats rung 1"):
        farm.fleet.submit(package(farm.master, farm.root / "x", ladder="360,360"))
    with pytest.raises(SpecError, match=r"ladder rung 1 \(361p h264\): height must be an even"):
        farm.fleet.submit(package(farm.master, farm.root / "x", ladder="361"))
    with pytest.raises(SpecError, match="segment length 30 s"):
        farm.fleet.submit(package(farm.master, farm.root / "x", segment_s=30))
    existing = farm.root / "existing"
    existing.mkdir()
    (existing / "master.m3u8").write_text("#EXTM3U\n")
    with pytest.raises(OutputError, match="already exists"):
        farm.fleet.submit(package(farm.master, existing, ladder="180"))
    assert (existing / "master.m3u8").read_text() == "#EXTM3U\n"
    (existing / "stale.txt").write_text("from the package before")
    again = replace(package(farm.master, existing, ladder="180"), overwrite=True)
    job = farm.fleet.wait(farm.fleet.submit(again).id, timeout=180)
    assert job.status == "succeeded", job.reason
    assert "#EXT-X-STREAM-INF" in (existing / "master.m3u8").read_text()
    assert not (existing / "stale.txt").exists(), "the old package is replaced whole"
    assert hidden(farm.root) == [".data"]  # the coordinator's own


def test_cancel_mid_job_leaves_no_file_and_no_ffmpeg(farm: Farm) -> None:
    out = farm.root / "out-cancel"
    out.mkdir()
    long = make_clip(farm.root / "long.mp4", seconds=60, size="640x360")
    job = farm.fleet.submit(package(long, out / "p", ladder="360,270,180"))

    def encoding() -> bool:
        seen = farm.fleet.get(job.id).package
        return seen is not None and any(t.status == "running" and t.percent > 5
                                        for t in seen.tasks)  # fmt: skip

    wait_until(encoding, timeout=120)
    cancelled = farm.fleet.cancel(job.id)
    assert cancelled.status == "cancelled"
    assert ffmpeg_processes(job.id) == []
    assert sorted(p.name for p in out.iterdir()) == []


def test_a_worker_lost_mid_job_costs_only_its_tasks(farm: Farm) -> None:
    """Last in this module: it removes a worker."""
    out = farm.root / "out-lost"
    out.mkdir()
    long = make_clip(farm.root / "lost.mp4", seconds=40, size="640x360")
    spec = replace(package(long, out / "p", ladder="360,270,180", segment_s=4), split="8")
    job = farm.fleet.submit(spec)  # 5 group chunks of 8 s, each decoding once for 3 rungs

    def one_done_one_running() -> Any:
        seen = farm.fleet.get(job.id).package
        tasks = seen.tasks if seen else []
        done = [t for t in tasks if t.status == "succeeded"]
        # a group chunk: three rungs from one decode
        running = [t for t in tasks if t.status == "running" and t.node_id
                   and t.key.startswith("gh264c")]  # fmt: skip
        return (done, running) if done and running else None

    done, running = wait_until(one_done_one_running, timeout=180)
    finished = {t.key: t.attempts for t in done}
    victim = running[0]
    node = next(n for n in farm.cluster.worker_nodes if n.node_id == victim.node_id)
    farm.cluster.remove_node(node)
    ended = farm.fleet.wait(job.id, timeout=300)
    assert ended.status == "succeeded", ended.reason
    assert ended.package is not None
    after = {t.key: t for t in ended.package.tasks}
    assert {k: after[k].attempts for k in finished} == finished  # not encoded again
    assert after[victim.key].attempts >= 2 and after[victim.key].node_id != victim.node_id
    check_package(out / "p", long, segment_s=4)
    assert hidden(out) == []
