"""Interlaced, telecined and HDR masters transcoded end to end (real ffmpeg, real Ray), and
each output checked here with ffmpeg's own tools as a user would: ``idet`` counts its
fields, ffprobe reads its frame count, rate, field order and colour tags and its first
frame's HDR side data, ``signalstats`` measures its brightness against a tone-map this
test makes itself.

``idet`` runs with ``intl_thres=1.2`` (:data:`IDET`): at its default (1.04) testsrc2's
fine detail reads as combed even when progressive (a progressive 720x576 clip: TFF 38,
progressive 12 of 50), which would hide a deinterlacer's work. The first test checks
the threshold on clips whose scan is known.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from cluster import Deinterlace, Fleet, Job, JobSpec
from tests.helpers import (
    leftovers,
    make_clip,
    make_hdr10,
    make_hlg,
    make_interlaced,
    make_telecined,
    ssim_frames,
    streams,
    transcode,
)

IDET = "idet=intl_thres=1.2"
PROGRESSIVE_SHARE = 0.95
REFERENCE_TONEMAP = (
    "zscale=transfer=linear:npl=100,format=gbrpf32le,zscale=primaries=bt709,"
    "tonemap=tonemap=hable:desat=0,zscale=transfer=bt709:matrix=bt709:range=tv,"
    "format=yuv420p"
)
"""An HDR frame to BT.709 SDR the usual way (the source's transfer and primaries read
from its frames' tags): what a tone-mapped output should look like."""
NAIVE = "format=yuv420p"
"""HDR code values shown as SDR, without tone-mapping: what it must not look like."""


@dataclass(frozen=True)
class Masters:
    tagged: Path
    """25i, 720x576, 2 s, top field first, coded as fields (mpeg2video in mpegts)."""
    untagged: Path
    """The same fields woven into frames coded progressive (libx264 in mp4)."""
    long: Path
    """8 s of :attr:`tagged`'s kind, for a split encode."""
    telecined: Path
    """23.976 fps film through 3:2 pulldown to 29.97, 720x480, 4 s, tagged progressive."""
    film: Path
    """The film before its pulldown: what an inverse telecine should give back."""
    hdr10: Path
    """HEVC Main 10, PQ, BT.2020, P3 mastering display at 1000 cd/m², MaxCLL 1000/400."""
    hlg: Path


@pytest.fixture(scope="module")
def masters(tmp_path_factory: pytest.TempPathFactory) -> Masters:
    folder = tmp_path_factory.mktemp("masters")
    return Masters(
        tagged=make_interlaced(folder / "tagged.ts"),
        untagged=make_interlaced(folder / "untagged.mp4", tagged=False, vcodec="libx264"),
        long=make_interlaced(folder / "long.ts", seconds=8),
        telecined=make_telecined(folder / "telecined.mp4", seconds=4, vcodec="libx264"),
        film=make_film(folder / "film.mp4", seconds=4),
        hdr10=make_hdr10(folder / "hdr10.mkv"),
        hlg=make_hlg(folder / "hlg.mkv"),
    )


def make_film(path: Path, *, seconds: float) -> Path:
    """testsrc2 at 23.976 fps, 720x480: :func:`make_telecined`'s film, without pulldown."""
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i",
         f"testsrc2=rate=24000/1001:size=720x480:duration={seconds}", "-c:v", "libx264",
         "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )  # fmt: skip
    return path


def run(fleet: Fleet, spec: JobSpec) -> Job:
    job = fleet.wait(fleet.submit(spec).id, timeout=150)
    assert job.status == "succeeded", (job.reason, job.notes)
    return job


# ---- the independent checks ------------------------------------------------------------


@dataclass(frozen=True)
class Fields:
    """``idet``'s multi-frame counts over every frame of a file."""

    tff: int
    bff: int
    progressive: int
    undetermined: int

    @property
    def frames(self) -> int:
        return self.tff + self.bff + self.progressive + self.undetermined

    @property
    def progressive_share(self) -> float:
        return self.progressive / self.frames

    def __str__(self) -> str:
        return (f"TFF {self.tff}, BFF {self.bff}, progressive {self.progressive}, "
                f"undetermined {self.undetermined}")  # fmt: skip


def idet(path: Path, threshold: str = IDET) -> Fields:
    log = subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-nostats", "-i", str(path), "-map", "0:v:0",
         "-vf", threshold, "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    ).stderr  # fmt: skip
    found = re.findall(r"Multi frame detection:\s*TFF:\s*(\d+)\s+BFF:\s*(\d+)\s+"
                       r"Progressive:\s*(\d+)\s+Undetermined:\s*(\d+)", log)  # fmt: skip
    assert found, log
    return Fields(*(int(n) for n in found[-1]))


def show_fields(label: str, source: Path, output: Path) -> Fields:
    """The output's counts, printed beside the source's (default threshold too)."""
    before, after = idet(source), idet(output)
    print(f"\n[idet {label}] source {source.name}: {before} (default threshold: "
          f"{idet(source, 'idet')}); output {output.name}: {after} (default threshold: "
          f"{idet(output, 'idet')})")  # fmt: skip
    return after


def decoded_frames(path: Path) -> int:
    """The video frames ffprobe decodes (JSON: an mpegts file's programs list its
    streams again, which the helpers' ``count_frames`` reads as two lines)."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
         "-show_entries", "stream=nb_read_frames", "-of", "json", str(path)],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    (stream,) = json.loads(out)["streams"]
    return int(stream["nb_read_frames"])


def video_of(path: Path) -> dict[str, Any]:
    (video,) = streams(path, "video")
    return video


def first_frame_side_data(path: Path) -> dict[str, dict[str, Any]]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-read_intervals", "%+#1",
         "-show_frames", "-show_entries", "frame=side_data_list", "-of", "json", str(path)],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    (frame,) = json.loads(out)["frames"]
    return {d["side_data_type"]: d for d in frame.get("side_data_list", [])}


def luma_mean(path: Path, filters: str | None = None) -> float:
    """The mean of every frame's average luma in 8-bit code values, after ``filters``."""
    graph = f"{filters},format=yuv420p," if filters else "format=yuv420p,"
    out = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:v:0", "-vf",
         f"{graph}signalstats,metadata=print:key=lavfi.signalstats.YAVG:file=-",
         "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    values = [float(line.split("=", 1)[1]) for line in out.splitlines() if "YAVG=" in line]
    assert values, out
    return sum(values) / len(values)


def rate_of(video: dict[str, Any]) -> Fraction:
    return Fraction(video["avg_frame_rate"])


# ---- the tests ---------------------------------------------------------------------------


def test_idet_here_tells_progressive_from_interlaced(masters: Masters, tmp_path: Path) -> None:
    """The yardstick: progressive clips (25p, and the film before its pulldown) read
    progressive, both 25i sources combed."""
    progressive = make_clip(tmp_path / "p.mp4", seconds=2, size="720x576", audio=False)
    for clip in (progressive, masters.film):
        fields = idet(clip)
        print(f"\n[idet yardstick] {clip.name}: {fields} (default threshold: "
              f"{idet(clip, 'idet')})")  # fmt: skip
        assert fields.progressive_share >= PROGRESSIVE_SHARE, (clip.name, fields)
    for source in (masters.tagged, masters.untagged):
        fields = idet(source)
        assert fields.tff >= PROGRESSIVE_SHARE * fields.frames, (source.name, fields)


@pytest.mark.parametrize("which", ["tagged", "untagged"])
def test_a_25i_source_is_deinterlaced_at_its_frame_rate(
    fleet: Fleet, masters: Masters, out_dir: Path, which: str
) -> None:
    source: Path = getattr(masters, which)
    dst = out_dir / "o.mp4"
    job = run(fleet, transcode(source, dst, speed="fast"))
    fields = show_fields(f"25i {which} -> default", source, dst)
    assert fields.progressive_share >= PROGRESSIVE_SHARE, fields
    assert decoded_frames(dst) == decoded_frames(source) == 50
    video = video_of(dst)
    assert video["field_order"] == "progressive", video
    assert rate_of(video) == 25
    assert any(n.startswith("deinterlaced with bwdif") and "25i" in n and "to 25p" in n
               for n in job.notes), job.notes  # fmt: skip
    assert leftovers(out_dir) == []


def test_field_rate_doubles_the_frames_and_is_encoded_whole(
    fleet: Fleet, masters: Masters, out_dir: Path
) -> None:
    dst = out_dir / "o.mp4"
    spec = transcode(masters.tagged, dst, speed="fast", split="1",
                     deinterlace=Deinterlace.FIELD)  # fmt: skip
    job = run(fleet, spec)
    fields = show_fields("25i tagged -> field", masters.tagged, dst)
    assert fields.progressive_share >= PROGRESSIVE_SHARE, fields
    assert decoded_frames(dst) == 2 * decoded_frames(masters.tagged) == 100
    assert rate_of(video_of(dst)) == 50
    assert video_of(dst)["field_order"] == "progressive"
    assert job.split is not None and job.split.mode == "whole", job.split
    assert job.split.why == (
        "not split: deinterlacing at the field rate changes the frame count; encoded whole"
    )
    assert any("to 50p" in n for n in job.notes), job.notes


def test_deinterlace_off_keeps_the_fields_flagged_interlaced(
    fleet: Fleet, masters: Masters, out_dir: Path
) -> None:
    dst = out_dir / "o.mp4"
    job = run(fleet, transcode(masters.tagged, dst, speed="fast", deinterlace="off"))
    fields = show_fields("25i tagged -> off", masters.tagged, dst)
    assert fields.tff >= PROGRESSIVE_SHARE * fields.frames, fields
    assert video_of(dst)["field_order"] == "tt"
    assert decoded_frames(dst) == 50
    assert any("encoded as it is (deinterlace off)" in n for n in job.notes), job.notes


def test_an_interlaced_source_split_in_chunks_is_deinterlaced_in_every_chunk(
    fleet: Fleet, masters: Masters, out_dir: Path
) -> None:
    dst = out_dir / "o.mp4"
    job = run(fleet, transcode(masters.long, dst, speed="fast", split="2"))
    assert job.split is not None and job.split.mode == "chunks", job.split
    assert len(job.split.chunks) >= 3, job.split
    fields = show_fields("25i tagged 8 s -> split", masters.long, dst)
    assert fields.progressive_share >= PROGRESSIVE_SHARE, fields
    assert decoded_frames(dst) == decoded_frames(masters.long) == 200
    assert video_of(dst)["field_order"] == "progressive"
    assert any(n.startswith("deinterlaced with bwdif") for n in job.notes), job.notes
    assert [p.name for p in out_dir.iterdir()] == ["o.mp4"], "no chunk left behind"


def test_telecined_film_is_inverse_telecined_to_its_24_frames(
    fleet: Fleet, masters: Masters, out_dir: Path
) -> None:
    dst = out_dir / "o.mp4"
    job = run(fleet, transcode(masters.telecined, dst, speed="fast"))
    fields = show_fields("telecined 29.97 -> default", masters.telecined, dst)
    assert fields.progressive_share >= PROGRESSIVE_SHARE, fields
    source_frames = decoded_frames(masters.telecined)
    assert source_frames == 120
    assert decoded_frames(dst) == source_frames * 4 // 5
    video = video_of(dst)
    assert rate_of(video) == Fraction(24000, 1001), video["avg_frame_rate"]
    assert video["field_order"] == "progressive"
    # The film's own frames come back, one for one: none combed, none repeated or lost.
    similar = ssim_frames(dst, masters.film)
    assert len(similar) == decoded_frames(masters.film) == decoded_frames(dst)
    assert min(similar) >= 0.97, sorted(similar)[:5]
    assert any("inverse-telecined to 23.98 frames/s" in n for n in job.notes), job.notes


# ---- colour --------------------------------------------------------------------------------


def fraction(text: str) -> float:
    return float(Fraction(text))


MASTERING_KEYS = ("red_x", "red_y", "green_x", "green_y", "blue_x", "blue_y",
                  "white_point_x", "white_point_y")  # fmt: skip


def check_hdr10_metadata(output: Path, source: Path) -> None:
    """The output's first frame carries the source's mastering display (within each
    format's rounding) and content light level."""
    want, got = first_frame_side_data(source), first_frame_side_data(output)
    assert "Mastering display metadata" in got, got
    display, source_display = got["Mastering display metadata"], want["Mastering display metadata"]
    for key in MASTERING_KEYS:  # AV1 codes xy in 1/65536, HEVC in 1/50000
        assert fraction(display[key]) == pytest.approx(fraction(source_display[key]),
                                                       abs=1e-4), key  # fmt: skip
    assert fraction(display["max_luminance"]) == pytest.approx(1000, rel=1e-3)
    assert fraction(display["min_luminance"]) == pytest.approx(
        fraction(source_display["min_luminance"]), abs=1e-4)  # fmt: skip
    light = got["Content light level metadata"]
    assert (light["max_content"], light["max_average"]) == (1000, 400)


@pytest.mark.parametrize(
    ("which", "codec", "ext"),
    [("hdr10", "hevc", "mkv"), ("hdr10", "hevc", "mp4"), ("hdr10", "av1", "webm"),
     ("hlg", "hevc", "mkv")],
)  # fmt: skip
def test_hdr_stays_hdr_in_hevc_and_av1(
    fleet: Fleet, masters: Masters, out_dir: Path, which: str, codec: str, ext: str
) -> None:
    source: Path = getattr(masters, which)
    dst = out_dir / f"o.{ext}"
    job = run(fleet, transcode(source, dst, codec=codec, speed="fast"))
    video = video_of(dst)
    assert video["codec_name"] == codec
    assert video["pix_fmt"] == "yuv420p10le"
    tags = (video["color_transfer"], video["color_primaries"], video["color_space"])
    assert tags == (video_of(source)["color_transfer"], "bt2020", "bt2020nc")
    hdr = {"smpte2084": "PQ", "arib-std-b67": "HLG"}[video["color_transfer"]]
    assert f"HDR {hdr} kept: 10-bit {codec}, bt2020 tagged" in job.notes, job.notes
    if which == "hdr10":
        check_hdr10_metadata(dst, source)
        assert "HDR10 mastering display and content light level written" in job.notes
    else:  # HLG has no static metadata, and none is made up
        assert "Mastering display metadata" not in first_frame_side_data(dst)


def check_tone_mapped(output: Path, source: Path, label: str, pix_fmt: str = "yuv420p") -> None:
    """Tagged BT.709 SDR, and as bright as this test's own tone-map of the source, not
    as its HDR code values shown as SDR."""
    video = video_of(output)
    assert video["pix_fmt"] == pix_fmt
    assert (video["color_transfer"], video["color_primaries"], video["color_space"]) == (
        "bt709", "bt709", "bt709")  # fmt: skip
    got, reference = luma_mean(output), luma_mean(source, REFERENCE_TONEMAP)
    naive = luma_mean(source, NAIVE)
    print(f"\n[luma {label}] output {got:.1f}, reference tone-map {reference:.1f}, "
          f"no tone-map {naive:.1f}")  # fmt: skip
    assert abs(naive - reference) > 20, "the source must tell tone-mapping apart"
    assert abs(got - reference) <= 10, (got, reference)
    assert abs(got - naive) > 20, (got, naive)


@pytest.mark.parametrize(("which", "hdr"), [("hdr10", "PQ"), ("hlg", "HLG")])
def test_hdr_to_h264_is_tone_mapped_to_bt709(
    fleet: Fleet, masters: Masters, out_dir: Path, which: str, hdr: str
) -> None:
    source: Path = getattr(masters, which)
    dst = out_dir / "o.mp4"
    job = run(fleet, transcode(source, dst, speed="fast"))
    check_tone_mapped(dst, source, f"{which} -> h264")
    assert any(n.startswith(f"HDR {hdr} tone-mapped to BT.709 SDR (hable, zscale)")
               for n in job.notes), job.notes  # fmt: skip
    assert "Mastering display metadata" not in first_frame_side_data(dst)


@pytest.mark.parametrize(("keep_10bit", "pix_fmt"), [(False, "yuv420p"), (True, "yuv420p10le")])
def test_sdr_asked_with_hevc_is_bt709_8_bit_unless_10_bit_is_kept(
    fleet: Fleet, masters: Masters, out_dir: Path, keep_10bit: bool, pix_fmt: str
) -> None:
    dst = out_dir / "o.mkv"
    spec = transcode(masters.hdr10, dst, codec="hevc", speed="fast", sdr=True,
                     keep_10bit=keep_10bit)  # fmt: skip
    job = run(fleet, spec)
    assert video_of(dst)["codec_name"] == "hevc"
    check_tone_mapped(dst, masters.hdr10, f"hdr10 -> hevc sdr {pix_fmt}", pix_fmt)
    assert any(n.startswith("HDR PQ tone-mapped to BT.709 SDR (hable, zscale): asked for SDR")
               for n in job.notes), job.notes  # fmt: skip
    assert "Mastering display metadata" not in first_frame_side_data(dst)
