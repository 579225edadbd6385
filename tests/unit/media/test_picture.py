"""What a transcode does to the picture (pure): deinterlace, inverse telecine, tone-map,
HDR kept with its metadata; and how that reaches ffmpeg's command."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

import pytest

from cluster.errors import SpecError
from cluster.media.argv import chunk_command, transcode_command
from cluster.media.encoders import CATALOG, CONTAINERS
from cluster.media.picture import plan_picture
from cluster.media.work import check_scorable
from cluster.model.jobs import JobKind, JobSpec
from cluster.model.media import (
    Colour,
    FieldCounts,
    Mastering,
    MediaInfo,
    Scan,
    ScanType,
    VideoStream,
)
from cluster.model.spec import Deinterlace
from cluster.model.split import Segment

X264, X265, SVT, NVENC = (next(e for e in CATALOG if e.name == n)
                          for n in ("libx264", "libx265", "libsvtav1", "hevc_nvenc"))  # fmt: skip
MASTERING = Mastering((0.68, 0.32), (0.265, 0.69), (0.15, 0.06), (0.3127, 0.329), 1000, 0.0001)
HDR10 = Colour("bt2020", "smpte2084", "bt2020nc", "tv", MASTERING, 1000, 400)
HLG = Colour("bt2020", "arib-std-b67", "bt2020nc", "tv")


def video(scan: ScanType = ScanType.PROGRESSIVE, *, top: bool = True, tagged: str | None = None,
          colour: Colour | None = None, fps: tuple[int, int] = (25, 1)) -> VideoStream:  # fmt: skip
    counts = FieldCounts(290, 0, 5, 5) if tagged is None else None
    return VideoStream(0, "mpeg2video", 720, 576, "yuv420p", 8, fps,
                       scan=Scan(scan, top, tagged, counts), colour=colour)  # fmt: skip


def media(v: VideoStream) -> MediaInfo:
    return MediaInfo("/m/in.ts", "mpegts", 4.0, 1000, 1000, v, frame_count=100)


def test_an_interlaced_source_is_deinterlaced_at_its_frame_rate_by_default() -> None:
    p = plan_picture(video(ScanType.INTERLACED, tagged="progressive"), X264)
    assert p.filters == ("bwdif=mode=send_frame:parity=tff:deint=all", "setfield=prog")
    assert p.rate == 1 and p.deinterlaced and not p.combed_out
    assert p.notes == ("deinterlaced with bwdif: 25i (interlaced, top field first) to 25p",)
    tagged = plan_picture(video(ScanType.INTERLACED, top=False, tagged="bb"), X264)
    assert tagged.filters[0] == "bwdif=mode=send_frame:parity=bff:deint=interlaced"


def test_field_rate_doubles_the_frames_and_frame_forces_a_progressive_source() -> None:
    p = plan_picture(video(ScanType.INTERLACED, tagged="tt"), X264, deinterlace="field")
    assert p.filters[0] == "bwdif=mode=send_field:parity=tff:deint=all"
    assert p.rate == 2 and p.frames(100) == 200 and "to 50p" in p.notes[0]
    forced = plan_picture(video(), X264, deinterlace="frame")
    assert forced.filters[0] == "bwdif=mode=send_frame:parity=auto:deint=all"
    assert "not found interlaced by the probe" in forced.notes[0]
    assert plan_picture(video(), X264).filters == ()  # progressive: nothing by default


def test_telecined_film_is_inverse_telecined_to_four_frames_in_five() -> None:
    ntsc = video(ScanType.TELECINED, fps=(30000, 1001))
    p = plan_picture(ntsc, X264)
    assert p.filters == ("fieldmatch=order=tff:combmatch=full",
                         "bwdif=mode=send_frame:parity=tff:deint=interlaced", "decimate",
                         "setfield=prog")  # fmt: skip
    assert p.rate == Fraction(4, 5) and p.frames(150) == 120
    assert "inverse-telecined to 23.98 frames/s" in p.notes[0]
    rung = plan_picture(ntsc, X264, keep_rate=True)  # a package's rung keeps the rate
    assert rung.filters[0].startswith("bwdif=mode=send_frame") and rung.rate == 1
    with pytest.raises(SpecError, match="deinterlaces at the frame rate"):
        plan_picture(ntsc, X264, deinterlace="field", keep_rate=True)


def test_off_keeps_the_fields_flagged_interlaced() -> None:
    p = plan_picture(video(ScanType.INTERLACED, top=False, tagged="bb"), X264, deinterlace="off")
    assert p.filters == () and p.combed_out
    assert p.args == ("-flags", "+ildct+ilme", "-top", "0", "-field_order", "bb")
    assert plan_picture(video(ScanType.INTERLACED), X265, deinterlace="off").args == (
        "-field_order", "tt")  # fmt: skip


def test_hdr10_to_hevc_stays_hdr_with_its_static_metadata_in_x265_params() -> None:
    p = plan_picture(video(colour=HDR10), X265)
    assert p.hdr == "PQ" and p.pix_fmt == "yuv420p10le" and p.filters == ()
    assert p.tags == ("-color_primaries", "bt2020", "-color_trc", "smpte2084",
                      "-colorspace", "bt2020nc", "-color_range", "tv")  # fmt: skip
    assert "master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)" \
           "L(10000000,1)" in p.params  # fmt: skip
    assert "max-cll=1000,400" in p.params and "hdr10=1" in p.params
    argv = p.with_params(["-x265-params", "log-level=error", "-x265-params", "pools=2"], X265)
    assert argv[-1].startswith("pools=2:colorprim=bt2020:transfer=smpte2084")
    assert argv[1] == "log-level=error"  # only the last one, which ffmpeg uses, grows


def test_hdr10_to_av1_uses_svt_parameters_and_nvenc_says_what_it_drops() -> None:
    svt = plan_picture(video(colour=HDR10), SVT)
    assert svt.params == ("mastering-display=G(0.2650,0.6900)B(0.1500,0.0600)"
                          "R(0.6800,0.3200)WP(0.3127,0.3290)L(1000.0000,0.0001)",
                          "content-light=1000,400")  # fmt: skip
    assert svt.with_params(["-c:v", "libsvtav1"], SVT)[-2:] == ["-svtav1-params", ":".join(
        svt.params)]  # fmt: skip
    nvenc = plan_picture(video(colour=HDR10), NVENC)
    assert nvenc.pix_fmt == "p010le" and nvenc.params == ()
    assert any("static metadata dropped: hevc_nvenc" in n for n in nvenc.notes)


def test_hdr_to_h264_or_asked_sdr_is_tone_mapped_to_bt709() -> None:
    p = plan_picture(video(colour=HDR10), X264)
    assert p.hdr is None and p.pix_fmt == "yuv420p"
    assert p.filters[0] == "zscale=tin=smpte2084:pin=bt2020:min=bt2020nc:rin=tv:t=linear:npl=100"
    assert p.filters[-2:] == ("zscale=t=bt709:m=bt709:r=tv", "format=yuv420p")
    assert "tonemap=tonemap=hable:desat=0" in p.filters
    assert p.tags[:2] == ("-color_primaries", "bt709")
    hlg = plan_picture(video(colour=HLG), X265, sdr=True, tonemap="mobius")
    assert hlg.filters[0].startswith("zscale=tin=arib-std-b67") and hlg.hdr is None
    assert "tonemap=tonemap=mobius:desat=0" in hlg.filters
    assert "asked for SDR" in hlg.notes[0]
    deep = plan_picture(video(colour=HDR10), X265, sdr=True, keep_10bit=True)
    assert deep.pix_fmt == "yuv420p10le" and deep.filters[-1] == "format=yuv420p10le"


def test_dynamic_metadata_is_said_dropped() -> None:
    dv = replace(HDR10, dynamic=("dolby_vision", "hdr10plus"))
    notes = plan_picture(video(colour=dv), X265).notes
    assert "dolby vision metadata dropped: libx265 cannot carry it" in notes
    assert "hdr10plus metadata dropped: libx265 cannot carry it" in notes


def test_the_command_converts_before_the_deinterlacer_and_counts_output_frames() -> None:
    m = media(video(ScanType.INTERLACED, tagged="progressive"))
    spec = JobSpec(kind=JobKind.TRANSCODE, input="/m/in.ts", output="/m/out.mp4",
                   deinterlace=Deinterlace.FIELD)  # fmt: skip
    command = transcode_command(spec, m, X264, CONTAINERS["mp4"], job_id="j.1", threads=2)
    vf = command.argv[command.argv.index("-vf") + 1]
    assert vf.startswith("format=yuv420p,bwdif=mode=send_field")
    assert command.total_frames == 200 and command.notes[0].startswith("deinterlaced")
    segment = Segment(index=0, start_frame=0, frames=50, start_s=0.0, duration_s=2.0, keyframe=True)
    chunk = chunk_command(replace(spec, deinterlace=Deinterlace.AUTO), m, X264, CONTAINERS["mp4"],
                          segment, job_id="c.1")  # fmt: skip
    assert chunk.argv[chunk.argv.index("-frames:v") + 1] == "50"


def test_the_spec_refuses_what_cannot_be_done_in_one_line() -> None:
    with pytest.raises(SpecError, match="'sideways' is not a valid Deinterlace"):
        JobSpec(kind=JobKind.TRANSCODE, input="a", output="b.mp4", deinterlace="sideways")  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="a package deinterlaces at the frame rate"):
        JobSpec(kind=JobKind.PACKAGE, input="a", output="pkg", deinterlace=Deinterlace.FIELD)
    with pytest.raises(SpecError, match="deinterlace field makes twice as many"):
        JobSpec(kind=JobKind.TRANSCODE, input="a", output="b.mp4",
                deinterlace=Deinterlace.FIELD, target_vmaf=93)  # fmt: skip


def test_an_interlaced_hdr_master_is_made_420_at_its_depth_before_the_deinterlacer() -> None:
    v = replace(video(ScanType.INTERLACED, tagged="tt", colour=HDR10), bit_depth=10,
                pix_fmt="yuv422p10le")  # fmt: skip
    spec = JobSpec(kind=JobKind.TRANSCODE, input="/m/in.ts", output="/m/out.mkv", codec="hevc")
    command = transcode_command(spec, media(v), X265, CONTAINERS["mkv"], job_id="j.1")
    vf = command.argv[command.argv.index("-vf") + 1]
    assert vf.startswith("format=yuv420p10le,bwdif=mode=send_frame:parity=tff")
    assert command.argv[command.argv.index("-pix_fmt") + 1] == "yuv420p10le"
    sdr = transcode_command(replace(spec, codec="h264", output="/m/out.mp4"), media(v), X264,
                            CONTAINERS["mp4"], job_id="j.2")  # fmt: skip
    chain = sdr.argv[sdr.argv.index("-vf") + 1].split(",")
    assert chain[0] == "format=yuv420p10le" and chain[1].startswith("bwdif")
    assert chain[-1] == "format=yuv420p"  # tone-mapped after the deinterlacer


def test_a_score_of_an_output_with_other_frames_or_colours_is_refused() -> None:
    telecined = media(video(ScanType.TELECINED, fps=(30000, 1001)))
    spec = JobSpec(kind=JobKind.TRANSCODE, input="/m/in.ts", output="/m/out.mp4")
    with pytest.raises(SpecError, match="it has 4/5 of its frames"):
        check_scorable(spec, telecined, X264)
    with pytest.raises(SpecError, match="SDR tone-map against its HDR PQ input"):
        check_scorable(spec, media(video(colour=HDR10)), X264)
    check_scorable(replace(spec, codec="hevc"), media(video(colour=HDR10)), X265)  # kept HDR
    check_scorable(spec, media(video(ScanType.INTERLACED, tagged="tt")), X264)  # same frames


def test_a_package_asked_to_keep_hdr_marks_its_hevc_rungs_and_needs_one() -> None:
    from cluster.media.ladder import resolve
    from cluster.model.package import PackageOptions

    options = PackageOptions.parse({"ladder": "360:hevc,360:h264", "hdr": True}).checked(
        ("h264", "hevc", "av1"))  # fmt: skip
    hdr_master = media(replace(video(colour=HDR10), width=640, height=360))
    rungs, _ = resolve(options, hdr_master)
    assert {(r.codec, r.hdr) for r in rungs if r.kind == "video"} == {("hevc", "PQ"),
                                                                       ("h264", None)}  # fmt: skip
    sdr_master = media(replace(video(), width=640, height=360))
    rungs, notes = resolve(options, sdr_master)
    assert all(r.hdr is None for r in rungs) and "the source is SDR" in " ".join(notes)
    with pytest.raises(SpecError, match="add hevc or av1"):
        PackageOptions.parse({"ladder": "360:h264", "hdr": True}).checked(("h264", "hevc"))
