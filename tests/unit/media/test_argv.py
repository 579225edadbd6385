"""The ffmpeg command builders, checked as argv lists without running ffmpeg."""

from __future__ import annotations

import pytest

from cluster import CATALOG, CONTAINERS, JobKind, JobSpec, SpecError
from cluster.media.argv import (
    check_thumbnail_request,
    partial_path,
    thumbnail_command,
    transcode_command,
    validate_command,
)
from cluster.media.probe import FORMAT_WHITELIST
from cluster.model.media import AudioStream, MediaInfo, SubtitleStream, VideoStream


def encoder(name: str):
    return next(e for e in CATALOG if e.name == name)


def media(
    *,
    width: int = 1920,
    height: int = 1080,
    depth: int = 8,
    audio: tuple[str, ...] = ("aac",),
    subs: tuple[str, ...] = (),
) -> MediaInfo:
    return MediaInfo(
        path="/m/in.mov",
        format_name="mov",
        duration_s=10.0,
        size_bytes=1000,
        bit_rate=None,
        video=VideoStream(0, "h264", width, height, "yuv420p", depth, (25, 1)),
        frame_count=250,
        audio=tuple(AudioStream(1 + i, c) for i, c in enumerate(audio)),
        subtitles=tuple(SubtitleStream(10 + i, c) for i, c in enumerate(subs)),
    )


def spec(output: str = "/out/o.mp4", **kw) -> JobSpec:
    return JobSpec(kind=JobKind.TRANSCODE, input="/m/in.mov", output=output, **kw)


def build(output: str = "/out/o.mp4", enc: str = "libx264", info: MediaInfo | None = None, **kw):
    ext = output.rsplit(".", 1)[1]
    return transcode_command(
        spec(output, **kw), info or media(), encoder(enc), CONTAINERS[ext], job_id="j1"
    )


def after(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_every_command_is_quiet_reports_progress_and_whitelists_protocols() -> None:
    for cmd in (
        build(),
        validate_command(JobSpec(kind=JobKind.VALIDATE, input="/m/in.mov"), media()),
        thumbnail_command(
            JobSpec(kind=JobKind.THUMBNAIL, input="/m/in.mov", output="/t", thumbnail_count=3),
            media(),
            job_id="j1",
        ),
    ):
        argv = cmd.argv
        assert argv[:6] == ["ffmpeg", "-nostdin", "-hide_banner", "-progress", "pipe:1", "-nostats"]
        inputs = [i for i, a in enumerate(argv) if a == "-i"]
        assert inputs
        for i in inputs:
            assert argv[i - 4 : i] == [
                "-protocol_whitelist", "file,pipe", "-format_whitelist", FORMAT_WHITELIST
            ]  # fmt: skip
            assert argv[i + 1].startswith("file:/")


def test_paths_go_through_the_file_protocol_so_names_cannot_become_options() -> None:
    cmd = transcode_command(
        JobSpec(kind=JobKind.TRANSCODE, input="/m/-f lavfi concat:x.mov", output="/o/-y.mp4"),
        media(),
        encoder("libx264"),
        CONTAINERS["mp4"],
        job_id="j1",
    )
    assert "file:/m/-f lavfi concat:x.mov" in cmd.argv
    assert cmd.argv[-1] == "file:/o/.-y.mp4.j1.partial"
    assert cmd.outputs == [("/o/.-y.mp4.j1.partial", "/o/-y.mp4")]


def test_writes_to_a_hidden_partial_file_with_an_explicit_muxer() -> None:
    cmd = build("/out/o.mkv", "libx265", codec="hevc")
    assert cmd.argv[-3:] == ["-f", "matroska", "file:" + partial_path("/out/o.mkv", "j1")]


def test_quality_and_speed_map_to_each_encoder() -> None:
    x264 = build(quality=20, speed="slow").argv
    assert after(x264, "-crf") == "20" and after(x264, "-preset") == "slow"
    x265 = build("/o.mp4", "libx265", codec="hevc", speed="fast").argv
    assert after(x265, "-crf") == "28" and after(x265, "-preset") == "veryfast"
    assert after(x265, "-tag:v") == "hvc1"  # plays in Apple players
    svt = build("/o.webm", "libsvtav1", codec="av1").argv
    assert after(svt, "-crf") == "35" and after(svt, "-preset") == "8"
    nvenc = build(enc="h264_nvenc", quality=19, speed="fast", hardware="gpu").argv
    assert after(nvenc, "-rc") == "vbr" and after(nvenc, "-cq") == "19"
    assert after(nvenc, "-b:v") == "0" and after(nvenc, "-preset") == "p2"


def test_nvenc_gets_the_placed_gpu_consistently() -> None:
    cmd = transcode_command(
        spec(hardware="gpu"),
        media(),
        encoder("h264_nvenc"),
        CONTAINERS["mp4"],
        job_id="j1",
        cuda_device="GPU-1234",
    )
    assert after(cmd.argv, "-gpu") == "0"
    assert cmd.env == {"CUDA_VISIBLE_DEVICES": "GPU-1234"}


def test_odd_dimensions_are_scaled_to_even_for_420() -> None:
    assert "-vf" not in build().argv
    argv = build(info=media(width=321, height=241)).argv
    assert after(argv, "-vf") == "scale=trunc(iw/2)*2:trunc(ih/2)*2"
    assert after(argv, "-pix_fmt") == "yuv420p"


def test_ten_bit_input_is_8_bit_for_h264_and_kept_for_hevc_when_asked() -> None:
    ten = media(depth=10)
    assert after(build(info=ten).argv, "-pix_fmt") == "yuv420p"
    assert after(build(enc="libx265", codec="hevc", info=ten).argv, "-pix_fmt") == "yuv420p"
    kept = build(enc="libx265", codec="hevc", keep_10bit=True, info=ten).argv
    assert after(kept, "-pix_fmt") == "yuv420p10le"
    av1 = build("/o.mkv", "libsvtav1", codec="av1", keep_10bit=True, info=ten).argv
    assert after(av1, "-pix_fmt") == "yuv420p10le"


def test_audio_is_copied_when_the_container_allows_else_reencoded_with_a_note() -> None:
    cmd = build(info=media(audio=("aac", "flac")))
    assert after(cmd.argv, "-c:a:0") == "copy"
    assert after(cmd.argv, "-c:a:1") == "aac"
    assert cmd.notes == ["audio stream 2 (flac) re-encoded to aac"]
    webm = build("/o.webm", "libsvtav1", codec="av1", info=media(audio=("aac",)))
    assert after(webm.argv, "-c:a:0") == "libopus"
    mkv = build("/o.mkv", info=media(audio=("flac",)))
    assert after(mkv.argv, "-c:a:0") == "copy" and not mkv.notes


def test_no_audio_maps_no_audio() -> None:
    argv = build(info=media(audio=())).argv
    assert not any(a.startswith("-c:a") for a in argv)


def test_subtitles_converted_kept_or_dropped_with_a_note() -> None:
    mp4 = build(info=media(subs=("subrip", "hdmv_pgs_subtitle")))
    assert after(mp4.argv, "-c:s:0") == "mov_text"
    assert "-c:s:1" not in mp4.argv
    assert any("subtitle stream 11 (hdmv_pgs_subtitle) dropped" in n for n in mp4.notes)
    mkv = build("/o.mkv", info=media(subs=("subrip", "hdmv_pgs_subtitle")))
    assert after(mkv.argv, "-c:s:0") == "copy" and after(mkv.argv, "-c:s:1") == "copy"


def test_container_must_hold_the_codec() -> None:
    with pytest.raises(SpecError, match=r"\.webm cannot hold h264"):
        build("/o.webm")


def test_thumbnails_are_evenly_spaced_fast_seeks() -> None:
    cmd = thumbnail_command(
        JobSpec(kind=JobKind.THUMBNAIL, input="/m/in.mov", output="/t", thumbnail_count=4),
        media(),
        job_id="j1",
    )
    seeks = [cmd.argv[i + 1] for i, a in enumerate(cmd.argv) if a == "-ss"]
    assert seeks == ["1.250", "3.750", "6.250", "8.750"]
    assert [final for _, final in cmd.outputs] == [f"/t/in_00{i}.jpg" for i in range(1, 5)]


def test_thumbnail_past_the_end_is_refused() -> None:
    with pytest.raises(SpecError, match="past the end"):
        thumbnail_command(
            JobSpec(kind=JobKind.THUMBNAIL, input="/m/in.mov", output="/t", thumbnail_at=11),
            media(),
            job_id="j1",
        )


def test_many_thumbnails_come_from_one_decode_and_the_pixels_are_capped() -> None:
    spec = JobSpec(kind=JobKind.THUMBNAIL, input="/m/in.mov", output="/t", thumbnail_count=20,
                   thumbnail_width=320)  # fmt: skip
    cmd = thumbnail_command(spec, media(), job_id="j1")
    assert cmd.argv.count("-i") == 1 and "-ss" not in cmd.argv
    assert after(cmd.argv, "-frames:v") == "20" and after(cmd.argv, "-vf").startswith("select=")
    assert [final for _, final in cmd.outputs][-1] == "/t/in_020.jpg"
    assert cmd.argv[-1] == "file:/t/.in_%03d.jpg.j1.partial"
    # The request that once took 19 GiB: refused at submit, whatever the input.
    with pytest.raises(SpecError, match="too many pixels") as refused:
        check_thumbnail_request(100, 7680)
    assert refused.value.code == "too_large"
    check_thumbnail_request(100, 1920)
    # ...and once the input's shape is known: 100 full-HD images at most.
    big = JobSpec(kind=JobKind.THUMBNAIL, input="/m/in.mov", output="/t", thumbnail_count=60)
    with pytest.raises(SpecError, match="60 thumbnails of 3840x2160 are too many pixels"):
        thumbnail_command(big, media(width=3840, height=2160), job_id="j1")


@pytest.mark.parametrize(
    ("enc", "bound"),
    [
        ("libx264", ["-threads", "3"]),
        ("libx265", ["-x265-params", "log-level=error:pools=3"]),
        ("libsvtav1", ["-svtav1-params", "lp=3"]),
    ],
)
def test_an_encode_uses_the_cores_it_was_placed_on(enc: str, bound: list[str]) -> None:
    ext = "mkv"
    argv = transcode_command(
        spec(f"/out/o.{ext}", codec=encoder(enc).codec), media(), encoder(enc),
        CONTAINERS[ext], job_id="j1", threads=3,
    ).argv  # fmt: skip
    first_input = argv.index("-i") - 4  # the decoder's threads, before the input options
    assert argv[first_input - 2 : first_input] == ["-threads", "3"]
    assert after(argv, "-filter_threads") == "3"
    codec_at = argv.index("-c:v")
    last = len(argv) - 1 - argv[::-1].index(bound[0])  # the last one wins in ffmpeg
    assert last > codec_at and argv[last : last + 2] == bound


def test_without_a_placement_ffmpeg_picks_its_own_threads_and_nvenc_gets_no_cpu_bound() -> None:
    assert "-threads" not in build().argv and "-filter_threads" not in build().argv
    nvenc = transcode_command(
        spec(), media(), encoder("h264_nvenc"), CONTAINERS["mp4"], job_id="j1", threads=1
    ).argv
    assert "-threads" not in nvenc and "-filter_threads" not in nvenc
