"""A video's scan and colour from ffprobe's JSON and idet's log (pure): the tag, when
idet is asked, how its counts decide, and which extra reads a probe makes."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from cluster.media.info import parse_probe, with_frame_colour
from cluster.media.looks import FIRST_FRAME, IDET, looks, read_look
from cluster.media.scan import needs_idet, parse_idet, scan_of, tagged_scan
from cluster.model.media import Colour, FieldCounts, Mastering, MediaInfo, ScanType, VideoStream

SOURCE = ["-protocol_whitelist", "file,pipe", "-i", "file:/proc/self/fd/7"]

IDET_LOG = """\
[mpeg2video @ 0x55d] Invalid frame dimensions 0x0.
[Parsed_idet_0 @ 0x5599] Repeated Fields: Neither:   100 Top:     0 Bottom:     0
[Parsed_idet_0 @ 0x5599] Single frame detection: TFF:   100 BFF:     0 Progressive:     0 \
Undetermined:     0
[Parsed_idet_0 @ 0x5599] Multi frame detection: TFF:   100 BFF:     0 Progressive:     0 \
Undetermined:     0
[out#0/null @ 0x55c] video:47kB audio:0kB
"""
"""ffmpeg 5.1's log of ``-vf idet`` on 4 s of 25i top field first (tinterlace, mpeg2)."""

HDR10_STREAM_SIDE_DATA = [
    {"side_data_type": "Mastering display metadata", "red_x": "34000/50000",
     "red_y": "16000/50000", "green_x": "13250/50000", "green_y": "34500/50000",
     "blue_x": "7500/50000", "blue_y": "3000/50000", "white_point_x": "15635/50000",
     "white_point_y": "16450/50000", "min_luminance": "1/10000",
     "max_luminance": "10000000/10000"},
    {"side_data_type": "Content light level metadata", "max_content": 1000, "max_average": 400},
]  # fmt: skip
"""As ffprobe 5.1 shows an HDR10 HEVC in MP4 with mdcv and clli boxes (ffmpeg 9's)."""
P3_D65 = Mastering((0.68, 0.32), (0.265, 0.69), (0.15, 0.06), (0.3127, 0.329), 1000.0, 0.0001)


def stream(**fields: Any) -> dict[str, Any]:
    return {"index": 0, "codec_type": "video", "codec_name": "mpeg2video", "width": 720,
            "height": 576, "pix_fmt": "yuv420p", "avg_frame_rate": "25/1", **fields}  # fmt: skip


def parsed(**fields: Any) -> VideoStream:
    info = parse_probe("/m/in.ts", {"format": {"format_name": "mpegts"},
                                    "streams": [stream(**fields)]})  # fmt: skip
    assert info.video is not None
    return info.video


def video(
    fps: tuple[int, int] = (25, 1),
    tag: str | None = "progressive",
    size: tuple[int, int] = (720, 576),
    colour: Colour | None = None,
) -> VideoStream:
    return VideoStream(0, "h264", *size, "yuv420p", 8, fps, scan=tagged_scan(tag),
                       colour=colour or Colour())  # fmt: skip


# ---- the tag ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field_order", "kind", "top_first"),
    [("tt", ScanType.INTERLACED, True), ("tb", ScanType.INTERLACED, True),
     ("bb", ScanType.INTERLACED, False), ("bt", ScanType.INTERLACED, False),
     ("progressive", ScanType.PROGRESSIVE, True), ("unknown", ScanType.UNKNOWN, True),
     (None, ScanType.UNKNOWN, True)],
)  # fmt: skip
def test_the_scan_is_what_field_order_says(
    field_order: str | None, kind: ScanType, top_first: bool
) -> None:
    fields = {"field_order": field_order} if field_order else {}
    scan = parsed(**fields).scan
    assert scan is not None
    assert (scan.type, scan.top_first, scan.tagged, scan.idet) == (kind, top_first, field_order,
                                                                   None)  # fmt: skip


# ---- colour from the stream ------------------------------------------------------------


def test_an_sdr_stream_says_its_colour_and_leaves_out_what_it_does_not() -> None:
    bt709 = parsed(color_primaries="bt709", color_transfer="bt709", color_space="bt709",
                   color_range="tv").colour  # fmt: skip
    assert bt709 == Colour("bt709", "bt709", "bt709", "tv")
    assert str(bt709) == "SDR (bt709)" and bt709.hdr is None
    assert parsed().colour == Colour()  # a plain x264 encode says nothing
    assert parsed(color_space="unknown", color_primaries="reserved").colour == Colour()


def test_hdr10_static_metadata_at_stream_level() -> None:
    v = parsed(color_primaries="bt2020", color_transfer="smpte2084", color_space="bt2020nc",
               color_range="tv", side_data_list=HDR10_STREAM_SIDE_DATA)  # fmt: skip
    assert v.colour == Colour("bt2020", "smpte2084", "bt2020nc", "tv", P3_D65, 1000, 400)
    assert v.hdr == "PQ"
    assert str(v.colour) == "HDR PQ (bt2020): mastered at 1000 cd/m², MaxCLL 1000, MaxFALL 400"


def test_dolby_vision_is_known_by_its_configuration_record() -> None:
    dovi = {"side_data_type": "DOVI configuration record", "dv_version_major": 1,
            "dv_profile": 8, "dv_level": 6, "rpu_present_flag": 1, "bl_present_flag": 1,
            "dv_bl_signal_compatibility_id": 1}  # fmt: skip
    rotated = {"side_data_type": "Display Matrix", "rotation": 90}
    v = parsed(color_transfer="smpte2084", color_primaries="bt2020",
               side_data_list=[rotated, dovi])  # fmt: skip
    assert v.colour is not None and v.colour.dynamic == ("dolby_vision",)
    assert v.rotation == 90  # the other side data is still read


def test_a_half_said_mastering_display_is_left_out() -> None:
    only_luminance = {"side_data_type": "Mastering display metadata",
                      "min_luminance": "50/10000", "max_luminance": "4000/1"}  # fmt: skip
    v = parsed(color_transfer="smpte2084", side_data_list=[only_luminance])
    assert v.colour is not None and v.colour.mastering is None


# ---- colour from the first frame -------------------------------------------------------


def test_the_first_frame_adds_what_the_stream_left_out_and_dynamic_metadata() -> None:
    pq = video(colour=Colour("bt2020", "smpte2084", "bt2020nc", "tv"))
    frames = {"frames": [{"side_data_list": [
        *HDR10_STREAM_SIDE_DATA,
        {"side_data_type": "H.26[45] User Data Unregistered SEI message"},
        {"side_data_type": "HDR Dynamic Metadata SMPTE2094-40 (HDR10+)", "application version": 1,
         "num_windows": 1},
        {"side_data_type": "Dolby Vision RPU Data"},
        {"side_data_type": "Dolby Vision Metadata"},
    ]}]}  # fmt: skip
    colour = with_frame_colour(pq, frames).colour
    assert colour == Colour("bt2020", "smpte2084", "bt2020nc", "tv", P3_D65, 1000, 400,
                            ("hdr10plus", "dolby_vision"))  # fmt: skip
    assert str(colour).endswith("MaxCLL 1000, MaxFALL 400, hdr10plus, dolby vision")


def test_what_the_stream_said_wins_over_the_frame() -> None:
    said = Colour("bt2020", "smpte2084", max_cll=800, max_fall=200, dynamic=("dolby_vision",))
    frame = {"frames": [{"side_data_list": [HDR10_STREAM_SIDE_DATA[1]]}]}
    colour = with_frame_colour(video(colour=said), frame).colour
    assert colour is not None
    assert (colour.max_cll, colour.max_fall, colour.dynamic) == (800, 200, ("dolby_vision",))
    assert with_frame_colour(video(colour=said), {}).colour == said  # no frame read back


# ---- idet --------------------------------------------------------------------------------


def test_parse_idet_reads_the_multi_frame_counts_and_the_repeated_fields() -> None:
    assert parse_idet(IDET_LOG) == FieldCounts(100, 0, 0, 0, 0, 0)
    telecined = ("Repeated Fields: Neither:    54 Top:    18 Bottom:    18\n"
                 "Multi frame detection: TFF:    86 BFF:     0 Progressive:     4 "
                 "Undetermined:     0\n")  # fmt: skip
    assert parse_idet(telecined) == FieldCounts(86, 0, 4, 0, 18, 18)
    assert parse_idet("Multi frame detection: TFF: 1 BFF: 2 Progressive: 3 Undetermined: 4") == (
        FieldCounts(1, 2, 3, 4)
    )  # an ffmpeg without repeated-field counts
    assert parse_idet("[in#0 @ 0x1] Error opening input: Invalid data found") is None
    assert parse_idet("") is None


@pytest.mark.parametrize(
    ("tag", "counts", "kind", "top_first"),
    [
        # Measured on clips (tinterlace / telecine of testsrc2, ffmpeg 5.1):
        ("progressive", FieldCounts(75, 0, 0, 0), ScanType.INTERLACED, True),  # 25i mistagged
        (None, FieldCounts(0, 90, 0, 0), ScanType.INTERLACED, False),  # 29.97i BFF untagged
        ("progressive", FieldCounts(86, 0, 4, 0, 18, 18), ScanType.TELECINED, True),  # 3:2
        ("progressive", FieldCounts(0, 86, 4, 0, 18, 18), ScanType.TELECINED, False),
        ("progressive", FieldCounts(0, 0, 74, 1), ScanType.PROGRESSIVE, True),  # 25p
        # At idet's default threshold, progressive testsrc2 read combed in both orders:
        ("progressive", FieldCounts(41, 24, 10, 0), ScanType.PROGRESSIVE, True),
        # Interlaced with static scenes: one order still holds 60 % of what was determined.
        (None, FieldCounts(60, 5, 35, 200), ScanType.INTERLACED, True),
        (None, FieldCounts(0, 0, 300, 0), ScanType.PROGRESSIVE, True),
        # A still picture: nothing determined, the tag stands (or stays unknown).
        ("progressive", FieldCounts(0, 0, 0, 300), ScanType.PROGRESSIVE, True),
        (None, FieldCounts(10, 0, 10, 280), ScanType.UNKNOWN, True),
        # Duplicated progressive frames repeat fields, but nothing is combed.
        ("progressive", FieldCounts(2, 1, 200, 0, 40, 40), ScanType.PROGRESSIVE, True),
    ],
)
def test_scan_of_tag_and_counts(
    tag: str | None, counts: FieldCounts, kind: ScanType, top_first: bool
) -> None:
    scan = scan_of(tag, counts)
    assert (scan.type, scan.top_first, scan.tagged, scan.idet) == (kind, top_first, tag, counts)


def test_without_counts_the_tag_decides() -> None:
    assert scan_of("bb", None) == tagged_scan("bb")
    assert str(scan_of("bb", None)) == "interlaced, bottom field first"


@pytest.mark.parametrize(
    ("fps", "tag", "size", "asked"),
    [
        ((25, 1), "progressive", (720, 576), True),
        ((30000, 1001), None, (720, 480), True),
        ((30, 1), "unknown", (1920, 1080), True),
        ((2997, 100), "progressive", (1440, 1080), True),  # 29.97 written short
        ((25, 1), "tt", (720, 576), False),  # the tag says: believed
        ((30000, 1001), "bt", (720, 480), False),
        ((24000, 1001), "progressive", (1920, 1080), False),  # film
        ((24, 1), None, (1920, 1080), False),
        ((50, 1), "progressive", (1280, 720), False),  # 50p, 60p: never interlaced
        ((60000, 1001), "progressive", (1920, 1080), False),
        ((25, 1), "progressive", (3840, 2160), False),  # UHD: progressive only
        ((25, 1), "progressive", (1080, 1920), False),  # portrait, taller than 1080
    ],
)
def test_needs_idet(
    fps: tuple[int, int], tag: str | None, size: tuple[int, int], asked: bool
) -> None:
    assert needs_idet(video(fps, tag, size)) is asked


def test_a_video_without_a_rate_is_not_checked() -> None:
    assert not needs_idet(VideoStream(0, "h264", 720, 576, "yuv420p", 8, None))


# ---- which reads a probe makes ---------------------------------------------------------

HDR10 = Colour("bt2020", "smpte2084", "bt2020nc", "tv")


def test_an_ordinary_progressive_sdr_file_gets_no_extra_read() -> None:
    for fps in ((24, 1), (50, 1), (60000, 1001)):
        assert looks(video(fps), SOURCE) == []
    assert looks(video((25, 1), "tt"), SOURCE) == []


def test_idet_and_the_first_frame_read_the_same_open_file_with_the_whitelist() -> None:
    found = looks(video((25, 1), colour=Colour("bt2020", "arib-std-b67")), SOURCE)
    assert [look.what for look in found] == [IDET, FIRST_FRAME]
    idet, frame = (look.argv for look in found)
    assert idet[0] == "ffmpeg" and frame[0] == "ffprobe"
    for argv in (idet, frame):
        at = argv.index(SOURCE[0])
        assert argv[at : at + len(SOURCE)] == SOURCE
    assert idet[idet.index("-map") :] == ["-map", "0:0", "-frames:v", "60", "-vf",
                                          "idet=intl_thres=1.2", "-an", "-sn", "-dn", "-f",
                                          "null", "-"]  # fmt: skip
    assert "%+#1" in frame and "frame=side_data_list" in frame
    assert [look.what for look in looks(video((24, 1), colour=HDR10), SOURCE)] == [FIRST_FRAME]
    assert all(0 < look.timeout_s <= 30 for look in found)


def test_a_failed_read_leaves_the_video_as_it_was_and_says_why() -> None:
    v = video((25, 1))
    (idet,) = looks(v, SOURCE)
    same, why = read_look(idet, v, 1, b"", b"file:/proc/self/fd/7: Invalid data found\n")
    assert same is v and why == "exit status 1: file:/proc/self/fd/7: Invalid data found"
    same, why = read_look(idet, v, 0, b"", b"no counts here")
    assert same is v and why == "idet printed no counts"
    read, why = read_look(idet, v, 0, b"", IDET_LOG.encode())
    assert why is None and read.scan is not None and read.scan.type is ScanType.INTERLACED
    (frame,) = looks(video((24, 1), colour=HDR10), SOURCE)
    for garbage in (b"{not json", b"[]", b'{"frames": 3}'):
        same, why = read_look(frame, v, 0, garbage, b"")
        assert same is v and why


def test_media_info_round_trips_what_a_probe_found_through_json() -> None:
    v = with_frame_colour(
        parsed(field_order="progressive", color_transfer="smpte2084"),
        {"frames": [{"side_data_list": [*HDR10_STREAM_SIDE_DATA,
                                        {"side_data_type": "Dolby Vision RPU Data"}]}]},
    )  # fmt: skip
    v = replace(v, scan=scan_of("progressive", FieldCounts(86, 0, 4, 0, 18, 18)))
    info = MediaInfo("/m/in.ts", "mpegts", 4.0, 1, 1, v)
    assert MediaInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info
