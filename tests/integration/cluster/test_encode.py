"""Jobs end to end through the coordinator and encoder actors on a real local Ray."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cluster import Fleet, InputError, Job, JobKind, JobSpec, OutputError, SpecError, probe
from cluster.media.argv import validate_command
from cluster.media.runner import FfmpegRun, failure_for
from tests.helpers import (
    count_frames,
    ffprobe,
    leftovers,
    make_clip,
    streams,
    transcode,
)


def run(fleet: Fleet, spec: JobSpec) -> Job:
    return fleet.wait(fleet.submit(spec).id, timeout=120)


@pytest.mark.parametrize(
    ("codec", "ext", "encoder", "audio"),
    [
        ("h264", "mp4", "libx264", "aac"),
        ("hevc", "mkv", "libx265", "aac"),
        ("av1", "webm", "libsvtav1", "opus"),
    ],
)
def test_each_codec_on_cpu(
    fleet: Fleet, media: Path, out_dir: Path, codec: str, ext: str, encoder: str, audio: str
) -> None:
    dst = out_dir / f"o.{ext}"
    job = run(fleet, transcode(media / "clip.mp4", dst, codec=codec, speed="fast"))
    assert job.status == "succeeded", job.reason
    (video,) = streams(dst, "video")
    assert (video["codec_name"], video["width"], video["height"]) == (codec, 320, 240)
    assert [a["codec_name"] for a in streams(dst, "audio")] == [audio]
    assert float(ffprobe(dst)["format"]["duration"]) == pytest.approx(2.0, abs=0.1)
    assert count_frames(dst) == 50
    assert job.placement.encoder == encoder and job.attempts == 1
    assert job.progress.percent == 100.0
    assert (job.result or {})["output"] == str(dst)
    assert leftovers(out_dir) == []


def test_odd_dimensions_become_even(fleet: Fleet, tmp_path: Path, out_dir: Path) -> None:
    src = make_clip(tmp_path / "odd.mkv", size="321x241", pix_fmt="yuv444p")
    job = run(fleet, transcode(src, out_dir / "o.mp4", speed="fast"))
    assert job.status == "succeeded", job.reason
    (video,) = streams(out_dir / "o.mp4", "video")
    assert (video["width"], video["height"], video["pix_fmt"]) == (320, 240, "yuv420p")


def test_ten_bit_input(fleet: Fleet, tmp_path: Path, out_dir: Path) -> None:
    src = make_clip(tmp_path / "ten.mkv", vcodec="libx265", pix_fmt="yuv420p10le", audio=False)
    h264 = run(fleet, transcode(src, out_dir / "h.mp4", speed="fast"))
    kept = run(fleet, transcode(src, out_dir / "k.mkv", codec="hevc", keep_10bit=True))
    assert h264.status == kept.status == "succeeded"
    assert streams(out_dir / "h.mp4", "video")[0]["pix_fmt"] == "yuv420p"
    assert streams(out_dir / "k.mkv", "video")[0]["pix_fmt"] == "yuv420p10le"


def test_no_audio(fleet: Fleet, tmp_path: Path, out_dir: Path) -> None:
    src = make_clip(tmp_path / "silent.mp4", audio=False)
    job = run(fleet, transcode(src, out_dir / "o.mkv", speed="fast"))
    assert job.status == "succeeded"
    assert streams(out_dir / "o.mkv", "audio") == []


def test_subtitles_into_mp4(fleet: Fleet, tmp_path: Path, out_dir: Path) -> None:
    src = make_clip(tmp_path / "subs.mkv", subtitles=True)
    job = run(fleet, transcode(src, out_dir / "o.mp4", speed="fast"))
    assert job.status == "succeeded"
    assert [s["codec_name"] for s in streams(out_dir / "o.mp4", "subtitle")] == ["mov_text"]


def test_truncated_input_fails_without_retry(fleet: Fleet, media: Path, out_dir: Path) -> None:
    data = (media / "clip.mp4").read_bytes()
    cut = out_dir / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    job = run(fleet, transcode(cut, out_dir / "o.mp4"))
    assert job.status == "failed" and job.error_code == "truncated"
    assert job.reason.startswith("cut.mp4: truncated") and job.attempts == 0
    assert not (out_dir / "o.mp4").exists()


def test_truncated_stream_is_caught_after_decoding(
    fleet: Fleet, tmp_path: Path, out_dir: Path
) -> None:
    src = make_clip(tmp_path / "long.mkv", seconds=6)
    data = src.read_bytes()
    cut = tmp_path / "cut.mkv"  # the header still says 6 s; the data stops early
    cut.write_bytes(data[: len(data) // 3])
    job = run(fleet, transcode(cut, out_dir / "o.mp4", speed="fast"))
    assert job.status == "failed" and job.error_code == "truncated", job.reason
    assert "could be decoded" in (job.reason or "") and job.attempts == 1
    assert list(out_dir.iterdir()) == []


def test_text_file_named_mp4(fleet: Fleet, out_dir: Path) -> None:
    (out_dir / "notes.mp4").write_text("not a video " * 100)
    job = run(fleet, transcode(out_dir / "notes.mp4", out_dir / "o.mkv"))
    assert job.status == "failed" and job.error_code == "not_media"
    assert job.reason == "notes.mp4: not a media file (no MP4/MOV structure found); check the file"


def test_audio_only_input(fleet: Fleet, tmp_path: Path, out_dir: Path) -> None:
    src = make_clip(tmp_path / "song.m4a", video=False)
    job = run(fleet, transcode(src, out_dir / "o.mp4"))
    assert job.status == "failed" and job.error_code == "no_video_stream"
    assert job.reason == "song.m4a: no video stream (ffprobe found only audio)"


def test_missing_input(fleet: Fleet, out_dir: Path) -> None:
    job = run(fleet, transcode(out_dir / "gone.mp4", out_dir / "o.mp4"))
    assert job.status == "failed" and job.error_code == "input_missing"
    assert "no such file" in (job.reason or "")


def test_unwritable_output_is_refused_at_submit(fleet: Fleet, media: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match=r"is a file, not a folder|does not exist"):
        fleet.submit(transcode(media / "clip.mp4", tmp_path / "file" / "o.mp4"))
    with pytest.raises(OutputError, match="does not exist; create it first"):
        fleet.submit(transcode(media / "clip.mp4", tmp_path / "nodir" / "o.mp4"))
    existing = tmp_path / "exists.mp4"
    existing.write_text("keep me")
    with pytest.raises(
        OutputError,
        match=r"already exists; allow overwriting to replace it \(overwrite: true; --overwrite\)",
    ):
        fleet.submit(transcode(media / "clip.mp4", existing))
    assert existing.read_text() == "keep me"
    with pytest.raises(SpecError, match="cannot hold h264"):
        fleet.submit(transcode(media / "clip.mp4", tmp_path / "o.webm"))


def test_probe_job(fleet: Fleet, media: Path) -> None:
    job = run(fleet, JobSpec(kind=JobKind.PROBE, input=str(media / "clip.mp4")))
    assert job.status == "succeeded"
    assert (job.result or {})["media"]["video"]["codec"] == "h264"
    assert (job.result or {})["media"]["duration_s"] == pytest.approx(2.0, abs=0.1)


def test_validate_job_good_and_corrupt(fleet: Fleet, media: Path, tmp_path: Path) -> None:
    good = run(fleet, JobSpec(kind=JobKind.VALIDATE, input=str(media / "clip.mp4")))
    assert good.status == "succeeded"
    result = dict(good.result or {})
    timings = result.pop("timings")  # where the job's time went
    assert result == {"valid": True, "errors": [], "decoded_s": pytest.approx(2.0, abs=0.1)}
    assert good.created_at <= timings["ffmpeg_started_at"] <= (good.finished_at or 0)
    assert timings["ffmpeg_s"] > 0
    assert min(timings["queued_s"], timings["dispatch_s"], timings["before_ffmpeg_s"]) >= 0
    parts = sum(timings[k] for k in ("queued_s", "dispatch_s", "before_ffmpeg_s", "ffmpeg_s"))
    assert parts <= (good.finished_at or 0) - good.created_at + 0.01
    src = make_clip(tmp_path / "v.mkv", seconds=4)
    data = bytearray(src.read_bytes())
    for offset in range(len(data) // 3, len(data) * 2 // 3, 997):
        data[offset : offset + 40] = b"\xff" * 40  # damage the middle
    bad_path = tmp_path / "bad.mkv"
    bad_path.write_bytes(bytes(data))
    bad = run(fleet, JobSpec(kind=JobKind.VALIDATE, input=str(bad_path)))
    assert bad.status == "succeeded"
    assert (bad.result or {})["valid"] is False and (bad.result or {})["errors"]


def test_thumbnail_job_at_a_time_and_evenly_spaced(
    fleet: Fleet, media: Path, out_dir: Path
) -> None:
    one = run(
        fleet,
        JobSpec(
            kind=JobKind.THUMBNAIL,
            input=str(media / "clip.mp4"),
            output=str(out_dir / "one"),
            thumbnail_at=1.0,
            thumbnail_width=160,
        ),
    )
    assert one.status == "succeeded", one.reason
    (image,) = (one.result or {})["images"]
    (stream,) = streams(Path(image), "video")
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("mjpeg", 160, 120)
    many = run(
        fleet,
        JobSpec(
            kind=JobKind.THUMBNAIL,
            input=str(media / "clip.mp4"),
            output=str(out_dir / "many"),
            thumbnail_count=4,
        ),
    )
    assert many.status == "succeeded"
    assert sorted(p.name for p in (out_dir / "many").iterdir()) == [
        f"clip_00{i}.jpg" for i in range(1, 5)
    ]
    # Past 8 images: one decode picks them all (memory does not grow with the count).
    lots = run(fleet, JobSpec(kind=JobKind.THUMBNAIL, input=str(media / "clip.mp4"),
                              output=str(out_dir / "lots"), thumbnail_count=20,
                              thumbnail_width=64))  # fmt: skip
    assert lots.status == "succeeded", lots.reason
    images = sorted((out_dir / "lots").iterdir())
    assert [p.name for p in images] == [f"clip_{i:03d}.jpg" for i in range(1, 21)]
    assert {streams(p, "video")[0]["width"] for p in images} == {64}
    assert len({p.read_bytes() for p in images}) == 20  # 20 different frames


def test_a_playlist_named_mp4_is_refused_and_nothing_outside_is_read(
    fleet: Fleet, tmp_path: Path, out_dir: Path
) -> None:
    secret = make_clip(tmp_path / "secret.ts", seconds=1)
    evil = tmp_path / "root" / "evil.mp4"
    evil.parent.mkdir()
    evil.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:1,\n{secret}\n#EXT-X-ENDLIST\n")
    job = run(
        fleet, JobSpec(kind=JobKind.TRANSCODE, input=str(evil), output=str(out_dir / "o.mp4"))
    )
    assert job.status == "failed" and job.error_code == "format_refused"
    assert job.reason == (
        "evil.mp4: a hls file (a playlist or list of other files) is refused; "
        "give the media file itself"
    )
    assert list(out_dir.iterdir()) == []


def test_the_encoders_ffmpeg_refuses_a_playlist_too(tmp_path: Path, media: Path) -> None:
    # Should the file change between probe and encode, ffmpeg itself opens only containers.
    good = probe(media / "clip.mp4")
    swapped = tmp_path / "clip.mp4"
    swapped.write_text(
        f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:1,\n{media / 'clip.mp4'}\n#EXT-X-ENDLIST\n"
    )
    spec = JobSpec(kind=JobKind.VALIDATE, input=str(swapped))
    result = asyncio.run(FfmpegRun(validate_command(spec, good)).run())
    assert result.returncode != 0
    failure = failure_for(result, input_name=swapped.name)
    assert isinstance(failure, InputError) and failure.code == "format_refused"
