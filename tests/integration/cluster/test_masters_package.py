"""Packages made from HDR, interlaced and telecined masters (real ffmpeg, real Ray): every
video rung comes out BT.709 SDR and progressive, read back here as a player reads it (the
rendition's init segment and media segments, joined) with ffprobe, ``idet`` and
``signalstats``. The checks are :mod:`tests.integration.cluster.test_masters`'.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import m3u8
import pytest

from cluster import Deinterlace, Fleet, Job, JobKind, JobSpec, SpecError, Speed
from tests.helpers import make_hdr10, make_interlaced, make_telecined
from tests.integration.cluster.test_masters import (
    NAIVE,
    PROGRESSIVE_SHARE,
    REFERENCE_TONEMAP,
    decoded_frames,
    first_frame_side_data,
    idet,
    luma_mean,
    video_of,
)


@dataclass(frozen=True)
class Masters:
    hdr10: Path
    """HEVC Main 10, PQ, BT.2020, 640x360, 2 s, with HDR10 static metadata."""
    interlaced: Path
    """25i, 720x576, 2 s, top field first, coded as fields (mpeg2video in mpegts)."""
    telecined: Path
    """29.97 fps 3:2 pulldown of 23.976 film, 720x480, 2 s, tagged progressive."""


@pytest.fixture(scope="module")
def masters(tmp_path_factory: pytest.TempPathFactory) -> Masters:
    folder = tmp_path_factory.mktemp("package-masters")
    return Masters(
        hdr10=make_hdr10(folder / "hdr10.mkv"),
        interlaced=make_interlaced(folder / "interlaced.ts"),
        telecined=make_telecined(folder / "telecined.mp4", vcodec="libx264"),
    )


def package(fleet: Fleet, src: Path, out: Path, ladder: tuple[int, ...]) -> Job:
    spec = JobSpec(kind=JobKind.PACKAGE, input=str(src), output=str(out), speed=Speed.FAST,
                   package={"ladder": ",".join(map(str, ladder)), "segment_s": 2})  # type: ignore[arg-type]  # fmt: skip
    job = fleet.wait(fleet.submit(spec).id, timeout=180)
    assert job.status == "succeeded", (job.reason, job.notes)
    return job


def renditions(show: Path, into: Path, ladder: tuple[int, ...]) -> dict[int, Path]:
    """Each video rung of the package's HLS master playlist, by height, as one file: its
    init segment and its media segments joined (what a player feeds its decoder)."""
    master = m3u8.load(str(show / "master.m3u8"))
    found = {}
    for variant in master.playlists:
        playlist = m3u8.load(str(show / variant.uri))
        base = (show / variant.uri).parent
        joined = into / f"{base.name}.mp4"
        parts = [playlist.segment_map[0].uri, *(s.uri for s in playlist.segments)]
        joined.write_bytes(b"".join((base / p).read_bytes() for p in parts))
        found[variant.stream_info.resolution[1]] = joined
    assert sorted(found, reverse=True) == list(ladder), found
    return found


def test_an_hdr10_master_makes_bt709_sdr_rungs(
    fleet: Fleet, masters: Masters, tmp_path: Path
) -> None:
    ladder = (360, 240)
    job = package(fleet, masters.hdr10, tmp_path / "show", ladder)
    reference = luma_mean(masters.hdr10, REFERENCE_TONEMAP)
    naive = luma_mean(masters.hdr10, NAIVE)
    for height, rung in renditions(tmp_path / "show", tmp_path, ladder).items():
        video = video_of(rung)
        assert (video["codec_name"], video["pix_fmt"]) == ("h264", "yuv420p")
        assert (video["color_transfer"], video["color_primaries"], video["color_space"]) == (
            "bt709", "bt709", "bt709"), height  # fmt: skip
        got = luma_mean(rung)
        print(f"\n[luma hdr10 -> package {height}p] rung {got:.1f}, reference tone-map "
              f"{reference:.1f}, no tone-map {naive:.1f}")  # fmt: skip
        assert abs(got - reference) <= 10 < 20 < abs(got - naive), (got, reference, naive)
    assert any("HDR PQ tone-mapped to BT.709 SDR (hable, zscale)" in n
               for n in job.notes), job.notes  # fmt: skip


@pytest.mark.parametrize(("which", "ladder"), [("interlaced", (576, 360)),
                                               ("telecined", (480, 240))])  # fmt: skip
def test_a_combed_master_makes_progressive_rungs_of_its_frames(
    fleet: Fleet, masters: Masters, tmp_path: Path, which: str, ladder: tuple[int, ...]
) -> None:
    """Interlaced or telecined, each rung is deinterlaced at the source's frame rate (a
    package's segments count the source's frames: no inverse telecine). ``idet`` judges
    the rung at the source's height: a downscaled rung of combed frames reads progressive
    too (a 720x576 25i clip scaled to 360 lines: progressive 50 of 50), so it only gets
    its frames and rate checked."""
    source: Path = getattr(masters, which)
    job = package(fleet, source, tmp_path / "show", ladder)
    rungs = renditions(tmp_path / "show", tmp_path, ladder)
    full = rungs[ladder[0]]
    fields = idet(full)
    print(f"\n[idet {which} -> package {ladder[0]}p] source {idet(source)}; rung {fields}")
    assert fields.progressive_share >= PROGRESSIVE_SHARE, fields
    for height, rung in rungs.items():
        assert decoded_frames(rung) == decoded_frames(source), height
        video = video_of(rung)
        assert video["avg_frame_rate"] == video_of(source)["avg_frame_rate"], height
        assert video["field_order"] == "progressive", height
    assert any(n.startswith("deinterlaced with bwdif") for n in job.notes), job.notes


def test_a_package_refuses_field_rate_deinterlacing(
    fleet: Fleet, masters: Masters, tmp_path: Path
) -> None:
    with pytest.raises(SpecError, match="a package deinterlaces at the frame rate"):
        fleet.submit(JobSpec(kind=JobKind.PACKAGE, input=str(masters.interlaced),
                             output=str(tmp_path / "show"),
                             deinterlace=Deinterlace.FIELD))  # fmt: skip
    assert not (tmp_path / "show").exists()


def test_asked_an_hdr10_master_keeps_its_hevc_rungs_hdr_beside_sdr_h264_ones(
    fleet: Fleet, masters: Masters, tmp_path: Path
) -> None:
    show = tmp_path / "show"
    spec = JobSpec(kind=JobKind.PACKAGE, input=str(masters.hdr10), output=str(show),
                   speed=Speed.FAST, package={"ladder": "360:hevc,360:h264", "segment_s": 2,
                                              "hdr": True})  # type: ignore[arg-type]  # fmt: skip
    job = fleet.wait(fleet.submit(spec).id, timeout=180)
    assert job.status == "succeeded", (job.reason, job.notes)
    master = (show / "master.m3u8").read_text()
    ranges = {line.split("CODECS=")[1][:5]: line.split("VIDEO-RANGE=")[1].split(",")[0]
              for line in master.splitlines() if line.startswith("#EXT-X-STREAM-INF")}  # fmt: skip
    assert ranges == {'"hvc1': "PQ", '"avc1': "SDR"}, master
    mpd = (show / "manifest.mpd").read_text()
    assert 'schemeIdUri="urn:mpeg:mpegB:cicp:TransferCharacteristics" value="16"' in mpd
    for variant in m3u8.load(str(show / "master.m3u8")).playlists:
        playlist = m3u8.load(str(show / variant.uri))
        base = (show / variant.uri).parent
        joined = tmp_path / f"{base.name}.mp4"
        parts = [playlist.segment_map[0].uri, *(s.uri for s in playlist.segments)]
        joined.write_bytes(b"".join((base / p).read_bytes() for p in parts))
        video = video_of(joined)
        if video["codec_name"] == "hevc":  # kept HDR, its HDR10 metadata written
            assert video["pix_fmt"] == "yuv420p10le" and video["color_transfer"] == "smpte2084"
            side = first_frame_side_data(joined)
            assert side["Content light level metadata"]["max_content"] == 1000
            assert "Mastering display metadata" in side
        else:  # tone-mapped for the screens H.264 is for
            assert (video["pix_fmt"], video["color_transfer"]) == ("yuv420p", "bt709")
    assert any(n.startswith("hevc rungs: HDR PQ kept") for n in job.notes), job.notes
    assert any(n.startswith("h264 rungs: HDR PQ tone-mapped") for n in job.notes), job.notes
