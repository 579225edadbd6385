"""Where a long file's video is cut into chunks, and whether the joined file is whole.

:func:`scan_frames` reads every packet's time once (ffprobe, no decoding) into a
:class:`FrameIndex`: the video frames' times in display order, which are keyframes, and
where the first audio stream ends. The rest is pure:

- :func:`plan_segments` cuts at source keyframes near each target boundary (a cheap,
  exact seek); where no keyframe is near, at the exact frame (the chunk's encoder
  decodes from the keyframe before it and drops what precedes). No chunk is shorter
  than a floor. Inputs whose frames are not evenly spaced (variable frame rate, missing
  or repeated timestamps) are not split: the reason says why, and the job is encoded
  whole.
- :func:`check_timeline` checks a stitched file: as many frames as the source, one
  frame duration between neighbours (no frame lost or repeated at a join), and audio
  that ends where the source's does; a fault names the chunk it falls in.
"""

from __future__ import annotations

import bisect
import itertools
import os
import statistics
from collections.abc import Sequence
from pathlib import Path

from cluster.errors import EncodeError, ErrorCode, InputError
from cluster.media.paths import open_input
from cluster.media.probe import INPUT_OPTIONS, run_ffprobe
from cluster.model.split import FrameIndex, Segment

MIN_CHUNK_FRAMES = 24
"""No chunk is shorter (Av1an's floor too): a chunk's start-up and first keyframe cost
more than they save below it."""
KEYFRAME_REACH = 0.25
"""A keyframe within this share of a chunk's length of the ideal cut is used instead."""
JITTER = 0.02
"""Frame durations may differ from the median by this share (and at least 1.5 ms:
Matroska keeps milliseconds) and still count as constant."""
AUDIO_SLACK_S = 0.1
SCAN_TIMEOUT_S = 1800.0


def scan_argv(path: str) -> list[str]:
    return ["ffprobe", "-v", "error", *INPUT_OPTIONS, "-show_entries",
            "format=start_time:packet=stream_index,pts_time,duration_time,flags",
            "-of", "csv=p=1", f"file:{path}"]  # fmt: skip


def parse_scan(text: str, video_index: int, audio_index: int | None) -> FrameIndex:
    """The :class:`FrameIndex` from :func:`scan_argv`'s output."""
    start = 0.0
    video: list[tuple[float, bool]] = []
    audio_end: float | None = None
    missing = 0
    for line in text.splitlines():
        parts = line.split(",")
        if parts[0] == "format" and len(parts) > 1:
            start = _float(parts[1]) or 0.0
        elif parts[0] == "packet" and len(parts) >= 5:
            stream, pts, duration = int(parts[1]), _float(parts[2]), _float(parts[3])
            if stream == video_index:
                if pts is None:
                    missing += 1
                else:
                    video.append((pts, "K" in parts[4]))
            elif stream == audio_index and pts is not None:
                audio_end = max(audio_end or 0.0, pts + (duration or 0.0))
    video.sort()
    problem = f"{missing} video packet(s) have no timestamp" if missing else None
    keys = frozenset(i for i, (_, key) in enumerate(video) if key)
    return FrameIndex(start, tuple(t for t, _ in video), keys, audio_end, problem)


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value else None


async def scan_frames(
    path: str, video_index: int, audio_index: int | None, pass_fds: tuple[int, ...] = ()
) -> FrameIndex:
    """Read ``path``'s packets (``/proc/self/fd/N`` of an opened file, passed in
    ``pass_fds``, on a node); ffprobe decodes nothing, so this costs one read of the file."""
    name = os.path.basename(path)
    code, stdout, stderr = await run_ffprobe(scan_argv(path), name, pass_fds, SCAN_TIMEOUT_S)
    if code != 0:
        said = stderr.decode(errors="replace").strip().splitlines()
        raise InputError(
            f"{name}: ffprobe could not read its packets ({said[-1] if said else code})",
            code=ErrorCode.NOT_MEDIA,
        )
    return parse_scan(stdout.decode(errors="replace"), video_index, audio_index)


async def index_file(
    path: str, roots: tuple[Path, ...], video_index: int, audio_index: int | None
) -> FrameIndex:
    """:func:`scan_frames` of ``path``, opened here (no link in its last part, inside
    ``roots``) as the probe opens it."""
    fd = open_input(path, roots)
    try:
        return await scan_frames(f"/proc/self/fd/{fd}", video_index, audio_index, (fd,))
    finally:
        os.close(fd)


def frame_duration(times: Sequence[float]) -> float:
    """The median gap between frames (0 for fewer than two frames)."""
    if len(times) < 2:
        return 0.0
    return statistics.median(b - a for a, b in itertools.pairwise(times))


def _uneven(times: Sequence[float], frame_s: float) -> str | None:
    """Where the frames stop being evenly spaced, in words; ``None`` if they never do."""
    slack = max(0.0015, JITTER * frame_s)
    for i in range(1, len(times)):
        gap = times[i] - times[i - 1]
        if abs(gap - frame_s) > slack:
            what = "repeats a timestamp" if gap <= 0 else f"follows a gap of {gap * 1000:.1f} ms"
            return (
                f"variable frame rate: the frame at {times[i]:.3f} s {what} where frames "
                f"last {frame_s * 1000:.1f} ms"
            )
    return None


def even_frames(index: FrameIndex) -> tuple[float, str | None]:
    """The frame duration, and why the frames cannot be cut on (``None``: they can)."""
    if index.problem:
        return 0.0, index.problem
    frame_s = frame_duration(index.times)
    if frame_s <= 0:
        return 0.0, "too few video frames"
    return frame_s, _uneven(index.times, frame_s)


def plan_segments(
    index: FrameIndex,
    target_s: float,
    *,
    floor_s: float,
    max_chunks: int,
    floor_frames: int = MIN_CHUNK_FRAMES,
) -> list[Segment] | str:
    """Chunks of about ``target_s`` seconds, none shorter than ``floor_s`` or
    ``floor_frames``, at most ``max_chunks``; or why the file is encoded whole."""
    if index.problem:
        return f"not split: {index.problem}"
    times, n = index.times, index.frames
    frame_s = frame_duration(times)
    if frame_s <= 0:
        return "not split: too few video frames"
    uneven = _uneven(times, frame_s)
    if uneven:
        return f"not split: {uneven}"
    total = n * frame_s
    floor = max(floor_frames, round(floor_s / frame_s))
    count = min(round(total / target_s), n // floor, max_chunks)
    if count < 2:
        return (
            f"not split: {total:.1f} s is too short for two chunks of at least "
            f"{max(floor_s, floor * frame_s):.1f} s"
        )
    return segments_at(index, _cuts(n, count, sorted(index.keyframes), floor), frame_s)


def segments_at(index: FrameIndex, cuts: Sequence[int], frame_s: float) -> list[Segment]:
    """The chunks of ``index`` that start at frame 0 and at each of ``cuts``."""
    times, n = index.times, index.frames
    bounds = [0, *cuts, n]
    segments = []
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        end = times[b] if b < n else times[-1] + frame_s
        segments.append(
            Segment(
                index=i,
                start_frame=a,
                frames=b - a,
                start_s=round(times[a] - index.start_s, 6),
                duration_s=round(end - times[a], 6),
                keyframe=a == 0 or a in index.keyframes,
            )
        )
    return segments


def _cuts(n: int, count: int, keyframes: list[int], floor: int) -> list[int]:
    """Frame numbers where chunks start (after the first): a keyframe near each ideal
    cut, else that exact frame; cuts that would leave a chunk under ``floor`` dropped."""
    reach = max(1, int(KEYFRAME_REACH * n / count))
    cuts: list[int] = []
    for j in range(1, count):
        ideal = round(j * n / count)
        at = bisect.bisect_left(keyframes, ideal)
        near = [k for k in keyframes[max(0, at - 1) : at + 1] if abs(k - ideal) <= reach]
        cut = min(near, key=lambda k: (abs(k - ideal), k)) if near else ideal
        if cut - (cuts[-1] if cuts else 0) >= floor and n - cut >= floor:
            cuts.append(cut)
    return cuts


def chunk_at(segments: Sequence[Segment], frame: int) -> Segment:
    """The chunk that holds ``frame``."""
    starts = [s.start_frame for s in segments]
    return segments[max(0, bisect.bisect_right(starts, frame) - 1)]


def check_timeline(
    times: Sequence[float],
    segments: Sequence[Segment],
    *,
    frame_s: float,
    audio_end_s: float | None,
    source_audio_end_s: float | None,
    keyframes: frozenset[int] = frozenset(),
) -> int:
    """Raise an :class:`~cluster.errors.EncodeError` naming the chunk at fault unless the
    stitched video (its frames' ``times``, its ``keyframes``) has every source frame once,
    evenly spaced, each chunk starting on a keyframe, and its audio ends where the
    source's does; returns how many frames it checked."""
    expected = sum(s.frames for s in segments)
    ordered = sorted(times)
    for i in range(1, len(ordered)):
        gap = ordered[i] - ordered[i - 1]
        if abs(gap - frame_s) > frame_s / 2:
            what = "repeated" if gap < frame_s / 2 else f"{round(gap / frame_s) - 1} missing"
            raise EncodeError(
                f"stitched video has a frame {what} at {ordered[i] - ordered[0]:.3f} s, "
                f"in {chunk_at(segments, i).label}",
                code=ErrorCode.ENCODE_FAILED,
            )
    for segment in segments:
        if segment.start_frame < len(ordered) and segment.start_frame not in keyframes:
            raise EncodeError(
                f"stitched video: {segment.label} does not start on a keyframe",
                code=ErrorCode.ENCODE_FAILED,
            )
    if len(ordered) != expected:
        last = segments[-1] if len(ordered) < expected else chunk_at(segments, expected - 1)
        raise EncodeError(
            f"stitched video holds {len(ordered)} frames, the source {expected} "
            f"(check {last.label})",
            code=ErrorCode.ENCODE_FAILED,
        )
    if source_audio_end_s is not None:
        got = audio_end_s if audio_end_s is not None else 0.0
        if abs(got - source_audio_end_s) > AUDIO_SLACK_S:
            raise EncodeError(
                f"stitched audio lasts {got:.3f} s, the source's {source_audio_end_s:.3f} s",
                code=ErrorCode.ENCODE_FAILED,
            )
    return len(ordered)
