"""Probing real files that ffmpeg generates, and the errors for bad ones."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from cluster import EncodeError, InputError, JobKind, JobSpec, probe
from cluster.control.farm.prober import Prober
from cluster.media.probe import probe_async
from cluster.model.jobs import Job
from cluster.model.media import MediaInfo
from cluster.storage.objects import ObjectStore
from tests.helpers import make_clip


def test_probe_reads_streams_rate_and_frames(media: Path) -> None:
    info = probe(media / "clip.mp4")
    assert info.video is not None
    assert (info.video.codec, info.video.width, info.video.height) == ("h264", 320, 240)
    assert info.video.frame_rate == (25, 1) and info.video.bit_depth == 8
    assert info.duration_s == pytest.approx(2.0, abs=0.1)
    assert info.frame_count == 50 and not info.frame_count_estimated
    assert [a.codec for a in info.audio] == ["aac"]


def test_frame_count_is_estimated_where_the_container_has_none(tmp_path: Path) -> None:
    info = probe(make_clip(tmp_path / "c.mkv", seconds=2))
    assert info.frame_count is not None and abs(info.frame_count - 50) <= 1  # truly 50
    assert info.frame_count_estimated


def test_ten_bit_depth_and_subtitles(tmp_path: Path) -> None:
    info = probe(
        make_clip(tmp_path / "t.mkv", vcodec="libx265", pix_fmt="yuv420p10le", subtitles=True)
    )
    assert info.video is not None and info.video.bit_depth == 10
    assert [(s.codec, s.is_text) for s in info.subtitles] == [("subrip", True)]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file") as exc:
        probe(tmp_path / "nope.mp4")
    assert exc.value.code == "input_missing"


def test_text_file_named_mp4_is_not_media(tmp_path: Path) -> None:
    (tmp_path / "notes.mp4").write_text("this is not a video\n" * 10)
    with pytest.raises(InputError, match=r"notes\.mp4: not a media file") as exc:
        probe(tmp_path / "notes.mp4")
    assert exc.value.code == "not_media"


def test_truncated_mp4_says_so(tmp_path: Path, media: Path) -> None:
    data = (media / "clip.mp4").read_bytes()  # moov at the end, as most recorders write
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated") as exc:
        probe(tmp_path / "cut.mp4")
    assert exc.value.code == "truncated"


def test_audio_only_has_no_video_stream(tmp_path: Path) -> None:
    info = probe(make_clip(tmp_path / "a.m4a", video=False))
    with pytest.raises(InputError, match=r"a\.m4a: no video stream \(ffprobe found only audio\)"):
        info.require_video()


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "e.mp4").touch()
    with pytest.raises(InputError, match="empty"):
        probe(tmp_path / "e.mp4")


def test_ffprobe_killed_from_outside_is_retryable_not_bad_input(
    tmp_path: Path, media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An ffprobe that dies by a signal (its worker exiting, the OOM killer) says nothing
    # about the file: the job must not fail as bad input.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "ffprobe"
    fake.write_text("#!/bin/sh\nkill -KILL $$\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    for run in (probe, lambda p: asyncio.run(probe_async(p))):
        with pytest.raises(EncodeError, match="stopped by signal 9") as exc:
            run(media / "clip.mp4")
        assert exc.value.retryable and exc.value.code == "probe_interrupted"


def test_renditions_of_one_master_are_probed_once_and_a_replaced_master_again(
    tmp_path: Path, media: Path
) -> None:
    master = tmp_path / "master.mp4"
    master.write_bytes((media / "clip.mp4").read_bytes())
    calls: list[str] = []

    async def real_probe(path: str, roots: tuple[Path, ...]) -> MediaInfo:
        calls.append(path)
        return await probe_async(path, roots)

    async def rendition(prober: Prober, seen: dict[str, MediaInfo], i: int) -> MediaInfo:
        spec = JobSpec(kind=JobKind.TRANSCODE, input=str(master),
                       output=str(tmp_path / f"r{i}.mp4"))  # fmt: skip
        prober.ensure(Job(id=f"j{i}", spec=spec))
        for _ in range(200):
            for job_id, found in prober.take():
                assert isinstance(found, MediaInfo), found
                seen[job_id] = found
            if f"j{i}" in seen:
                return seen[f"j{i}"]
            await asyncio.sleep(0.05)
        raise AssertionError(f"j{i} was never probed")

    async def scenario() -> list[MediaInfo]:
        seen: dict[str, MediaInfo] = {}
        prober = Prober((tmp_path,), ObjectStore(), wake=lambda: None, backoff_s=0.01,
                        probe=real_probe)  # fmt: skip
        first = [await rendition(prober, seen, i) for i in range(3)]
        make_clip(master, seconds=1)  # the master is replaced in place
        return [*first, await rendition(prober, seen, 3)]

    infos = asyncio.run(scenario())
    assert [round(m.duration_s or 0, 1) for m in infos] == [2.0, 2.0, 2.0, 1.0]
    assert calls == [str(master), str(master)]


# (file name, ffmpeg output options, expected demuxer in format_name)
CONTAINERS = [
    ("a.mp4", ["-c:v", "libx264"], "mp4"),
    ("a.mov", ["-c:v", "libx264"], "mov"),
    ("a.mkv", ["-c:v", "libx264"], "matroska"),
    ("a.webm", ["-c:v", "libvpx", "-deadline", "realtime"], "webm"),
    ("a.avi", ["-c:v", "mpeg4"], "avi"),
    ("a.ts", ["-c:v", "libx264"], "mpegts"),
    ("a.mxf", ["-c:v", "mpeg2video"], "mxf"),
    ("a.flv", ["-c:v", "flv"], "flv"),
    ("a.ogv", ["-c:v", "libtheora"], "ogg"),
    ("a.mpg", ["-c:v", "mpeg2video", "-f", "vob"], "mpeg"),
    ("a.wmv", ["-c:v", "wmv2"], "asf"),
    ("a.y4m", [], "yuv4mpegpipe"),
    ("a.ivf", ["-c:v", "libvpx", "-deadline", "realtime"], "ivf"),
    ("a.h264", ["-c:v", "libx264"], "h264"),
    ("a.hevc", ["-c:v", "libx265", "-x265-params", "log-level=error"], "hevc"),
    ("a.gif", [], "gif"),
]


@pytest.mark.parametrize(("name", "options", "demuxer"), CONTAINERS)
def test_every_supported_container_is_read(
    tmp_path: Path, name: str, options: list[str], demuxer: str
) -> None:
    path = tmp_path / name
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i",
         "testsrc2=size=160x120:rate=25:duration=1", "-pix_fmt", "yuv420p", *options,
         str(path)] if name != "a.gif" else
        ["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i",
         "testsrc2=size=160x120:rate=10:duration=1", str(path)],
        check=True,
    )  # fmt: skip
    info = probe(path)
    assert demuxer in info.format_name.split(",") and info.video is not None


@pytest.mark.parametrize("ext", ["wav", "mp3", "flac", "aac"])
def test_audio_only_files_are_read_by_a_probe(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"a.{ext}"
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i",
                    "sine=duration=1", str(path)], check=True)  # fmt: skip
    assert [a.index for a in probe(path).audio] == [0]


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A media file outside the media root, that playlists inside it point at."""
    folder = tmp_path / "outside"
    folder.mkdir()
    return make_clip(folder / "secret.ts", seconds=1)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        (
            "evil.mp4",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:1,\n../outside/secret.ts\n#EXT-X-ENDLIST\n",
        ),
        ("abs.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:1,\nOUTSIDE\n#EXT-X-ENDLIST\n"),
        (
            "url.m3u8",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:1,\nfile://OUTSIDE\n#EXT-X-ENDLIST\n",
        ),
        ("list.mkv", "ffconcat version 1.0\nfile OUTSIDE\n"),
    ],
)
def test_playlists_pointing_anywhere_are_refused_in_one_line(
    tmp_path: Path, outside: Path, name: str, content: str
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    path = root / name
    path.write_text(content.replace("OUTSIDE", str(outside)))
    with pytest.raises(InputError) as refused:
        probe(path)
    assert refused.value.code == "format_refused"
    assert str(refused.value).startswith(f"{name}: a ")
    assert "playlist or list of other files) is refused; give the media file itself" in str(
        refused.value
    )


def test_an_os_error_while_probing_is_an_input_error_never_an_exception(tmp_path: Path) -> None:
    too_long = tmp_path / ("a" * 300 + ".mp4")  # ENAMETOOLONG from every stat
    for attempt in (lambda: probe(too_long), lambda: asyncio.run(probe_async(too_long))):
        with pytest.raises(InputError) as refused:
            attempt()
        assert refused.value.code == "unreadable" and "File name too long" in str(refused.value)
