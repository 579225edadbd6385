"""Probing real files that ffmpeg generates, and the errors for bad ones."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from cluster import EncodeError, InputError, probe
from cluster.media import probe_async
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
