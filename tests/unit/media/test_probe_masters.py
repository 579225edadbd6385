"""Probing broadcast and HDR masters that real ffmpeg makes (no Ray): interlaced, tagged
or not, telecined film, progressive video left alone, HDR10 and HLG; and the extra reads
failing without failing the probe."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cluster.media import looks
from cluster.media.probe import probe, probe_async
from cluster.model.media import ScanType, VideoStream
from tests.helpers import make_clip, make_hdr10, make_hlg, make_interlaced, make_telecined


class Calls:
    """Every ``subprocess.run`` a (blocking) probe makes, still run for real."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.argvs: list[list[str]] = []
        real = subprocess.run

        def run(argv: list[str], *args: Any, **kwargs: Any) -> Any:
            self.argvs.append(list(argv))
            return real(argv, *args, **kwargs)

        monkeypatch.setattr("cluster.media.probe.subprocess.run", run)

    @property
    def tools(self) -> list[str]:
        return [argv[0] for argv in self.argvs]


def video_of(path: Path) -> VideoStream:
    info = probe(path)
    assert info.video is not None
    return info.video


@pytest.mark.parametrize("top_first", [True, False])
def test_interlaced_mpegts_is_known_by_its_tag_without_idet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, top_first: bool
) -> None:
    clip = make_interlaced(tmp_path / "25i.ts", top_first=top_first)  # mpeg2video, coded as fields
    calls = Calls(monkeypatch)
    scan = video_of(clip).scan
    assert scan is not None
    assert (scan.type, scan.top_first) == (ScanType.INTERLACED, top_first)
    assert scan.tagged == ("tt" if top_first else "bb") and scan.idet is None
    assert calls.tools == ["ffprobe"]  # the tag is believed: no idet


@pytest.mark.parametrize(
    ("name", "options", "tag"),
    [
        # libx264 codes the fields, but Matroska does not carry the field order.
        ("x264.mkv", {"vcodec": "libx264"}, "progressive"),
        # Woven fields coded as progressive frames: a mistagged master.
        ("x264.mp4", {"vcodec": "libx264", "tagged": False, "top_first": False}, "progressive"),
        ("mpeg2.ts", {"tagged": False, "rate": "30000/1001", "size": "720x480"}, "progressive"),
    ],
)
def test_interlacing_the_tag_does_not_say_is_found_by_idet(
    tmp_path: Path, name: str, options: dict[str, Any], tag: str
) -> None:
    top_first = options.get("top_first", True)
    scan = video_of(make_interlaced(tmp_path / name, **options)).scan
    assert scan is not None and scan.idet is not None
    assert (scan.type, scan.top_first, scan.tagged) == (ScanType.INTERLACED, top_first, tag)
    combed = scan.idet.tff if top_first else scan.idet.bff
    assert combed >= 0.9 * scan.idet.frames  # every frame, but maybe the first
    assert str(scan) == f"interlaced, {'top' if top_first else 'bottom'} field first"


@pytest.mark.parametrize("top_first", [True, False])
def test_telecined_film_is_told_from_interlacing_by_its_repeated_fields(
    tmp_path: Path, top_first: bool
) -> None:
    v = video_of(make_telecined(tmp_path / "film.ts", top_first=top_first))
    assert v.frame_rate == (30000, 1001)
    assert v.scan is not None and v.scan.idet is not None
    assert (v.scan.type, v.scan.top_first, v.scan.tagged) == (
        ScanType.TELECINED, top_first, "progressive"
    )  # fmt: skip
    counts = v.scan.idet
    repeated = counts.repeated_top + counts.repeated_bottom
    assert 0.3 * counts.frames <= repeated <= 0.5 * counts.frames  # 2 frames in 5


def test_progressive_25p_is_checked_by_idet_and_stays_progressive(tmp_path: Path) -> None:
    scan = video_of(make_clip(tmp_path / "25p.mp4", seconds=2)).scan
    assert scan is not None and scan.idet is not None
    assert (scan.type, scan.tagged) == (ScanType.PROGRESSIVE, "progressive")
    assert scan.idet.progressive >= 0.9 * scan.idet.frames
    hd = video_of(make_clip(tmp_path / "30p.mp4", seconds=2, rate=30, size="1280x720")).scan
    assert hd is not None and hd.type is ScanType.PROGRESSIVE and hd.idet is not None


def test_a_still_picture_keeps_its_tag(tmp_path: Path) -> None:
    still = tmp_path / "bars.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i",
                    "smptebars=rate=25:size=720x576:duration=2", "-c:v", "libx264", "-preset",
                    "ultrafast", "-pix_fmt", "yuv420p", str(still)], check=True)  # fmt: skip
    scan = video_of(still).scan
    assert scan is not None and scan.idet is not None
    assert scan.type is ScanType.PROGRESSIVE and scan.idet.undetermined >= 45  # of 50


@pytest.mark.parametrize("rate", [24, 50, 60])
def test_progressive_sdr_at_other_rates_costs_one_ffprobe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rate: int
) -> None:
    clip = make_clip(tmp_path / f"{rate}p.mp4", seconds=1, rate=rate, audio=False)
    calls = Calls(monkeypatch)
    v = video_of(clip)
    assert v.scan is not None and v.scan.type is ScanType.PROGRESSIVE and v.scan.idet is None
    assert v.colour is not None and v.colour.hdr is None
    assert calls.tools == ["ffprobe"]


def test_hdr10_mastering_and_light_levels_are_read_from_the_first_frame(tmp_path: Path) -> None:
    clip = make_hdr10(tmp_path / "hdr10.mp4", rate="24")
    v = video_of(clip)
    c = v.colour
    assert c is not None and c.mastering is not None
    assert (c.primaries, c.transfer, c.matrix, c.range) == ("bt2020", "smpte2084", "bt2020nc",
                                                            "tv")  # fmt: skip
    assert (v.hdr, v.bit_depth, v.codec) == ("PQ", 10, "hevc")
    m = c.mastering
    assert m.red == pytest.approx((0.68, 0.32)) and m.green == pytest.approx((0.265, 0.69))
    assert m.blue == pytest.approx((0.15, 0.06)) and m.white == pytest.approx((0.3127, 0.329))
    assert (m.max_luminance, m.min_luminance) == pytest.approx((1000, 0.0001))
    assert (c.max_cll, c.max_fall, c.dynamic) == (1000, 400, ())
    assert str(c) == "HDR PQ (bt2020): mastered at 1000 cd/m², MaxCLL 1000, MaxFALL 400"
    assert v.scan is not None and v.scan.idet is None  # 24 fps: no idet


def test_hlg_is_hdr_without_static_metadata(tmp_path: Path) -> None:
    v = video_of(make_hlg(tmp_path / "hlg.mkv"))
    assert v.colour is not None
    assert (v.hdr, v.colour.primaries, v.colour.mastering, v.colour.max_cll) == (
        "HLG", "bt2020", None, None
    )  # fmt: skip
    assert str(v.colour) == "HDR HLG (bt2020)"
    assert v.scan is not None and v.scan.type is ScanType.PROGRESSIVE  # 25p: idet agreed


def test_the_extra_reads_go_through_the_open_file_never_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = make_hdr10(tmp_path / "hdr10.mp4")  # 25 fps and HDR: both reads
    calls = Calls(monkeypatch)
    v = video_of(clip)
    assert calls.tools == ["ffprobe", "ffmpeg", "ffprobe"]
    for argv in calls.argvs:
        assert not any(str(tmp_path) in a for a in argv)
        source = argv.index("-format_whitelist")
        assert argv[source - 2 : source] == ["-protocol_whitelist", "file,pipe"]
    assert v.colour is not None and v.colour.max_cll == 1000


def test_the_async_twin_finds_the_same(tmp_path: Path) -> None:
    film = make_telecined(tmp_path / "film.ts")
    hdr = make_hdr10(tmp_path / "hdr10.mkv")
    for clip in (film, hdr):
        assert asyncio.run(probe_async(clip)).video == video_of(clip)


def fake_ffmpeg(folder: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    """``ffmpeg`` on PATH is ``script`` (ffprobe stays the real one)."""
    folder.mkdir()
    fake = folder / "ffmpeg"
    fake.write_text(f"#!/bin/sh\n{script}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")


@pytest.mark.parametrize(
    ("script", "why"),
    [("echo 'something broke' >&2; exit 1", "exit status 1: something broke"),
     ("exec sleep 10", "ffmpeg took over 0.5 s"),
     ("exit 0", "idet printed no counts")],
)  # fmt: skip
def test_a_failed_idet_leaves_the_probe_and_the_tag_standing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    script: str,
    why: str,
) -> None:
    clip = make_interlaced(tmp_path / "x264.mkv", vcodec="libx264")  # idet would say interlaced
    fake_ffmpeg(tmp_path / "bin", monkeypatch, script)
    monkeypatch.setattr(looks, "IDET_TIMEOUT_S", 0.5)
    caplog.set_level(logging.WARNING, "framefleet.probe")
    for run in (probe, lambda p: asyncio.run(probe_async(p))):
        caplog.clear()
        info = run(clip)
        assert info.video is not None and info.video.scan is not None
        scan = info.video.scan
        assert (scan.type, scan.tagged, scan.idet) == (ScanType.PROGRESSIVE, "progressive", None)
        assert info.frame_count == 50  # the probe itself stands
        assert caplog.messages == [
            f"x264.mkv: the idet read failed ({why}); its scan stays as tagged (progressive)"
        ]
