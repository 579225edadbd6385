"""The short reads a probe may add after ffprobe's (pure: which, their argv, and what
their output changes; :mod:`cluster.media.probe` runs them on the probed input).

- ``idet`` on the first frames, when the stream's tag may hide interlacing or telecine
  (:func:`~cluster.media.scan.needs_idet`): 25, 29.97 or 30 fps up to 1080 lines, not
  tagged with a field order.
- The first frame's side data, for every HDR video (PQ or HLG): HDR10+ is only ever in
  frames, and many files carry their mastering display and light levels only there
  (ffmpeg 5's own encodes among them); Dolby Vision's RPU too.

An ordinary progressive SDR file (24, 50 or 60 fps, or UHD) gets neither.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace

from cluster.media.info import with_frame_colour
from cluster.media.scan import idet_argv, needs_idet, parse_idet, scan_of
from cluster.model.media import VideoStream

IDET = "idet"
FIRST_FRAME = "first frame's side data"
IDET_TIMEOUT_S = 30.0
"""The ``idet`` read's bound (60 frames: well under a second of one core at 1080 lines)."""
FRAME_TIMEOUT_S = 15.0
"""The first frame's read's bound (one frame decoded)."""


@dataclass(frozen=True, slots=True)
class Look:
    """A short read of the probed input: what it is, its argv and time bound, and how
    its output (stdout, stderr) changes the video stream (``ValueError``: it did not
    say)."""

    what: str
    argv: list[str]
    timeout_s: float
    read: Callable[[VideoStream, bytes, bytes], VideoStream]


def frame_side_data_argv(source: list[str], stream_index: int) -> list[str]:
    """ffprobe's argv for the side data of the first frame of stream ``stream_index``;
    ``source``: the input's options and ``-i`` input."""
    return ["ffprobe", "-v", "error", "-select_streams", str(stream_index),
            "-read_intervals", "%+#1", "-show_frames", "-show_entries", "frame=side_data_list",
            "-of", "json", *source]  # fmt: skip


def _read_idet(video: VideoStream, stdout: bytes, stderr: bytes) -> VideoStream:
    counts = parse_idet(stderr.decode(errors="replace"))
    if counts is None:
        raise ValueError("idet printed no counts")
    return replace(video, scan=scan_of(video.scan.tagged if video.scan else None, counts))


def _read_frame(video: VideoStream, stdout: bytes, stderr: bytes) -> VideoStream:
    data = json.loads(stdout)
    if not isinstance(data, dict):
        raise ValueError("ffprobe printed no frames")
    return with_frame_colour(video, data)


def looks(video: VideoStream, source: list[str]) -> list[Look]:
    """The reads ``video``'s probe still needs; ``source``: the input's options and
    ``-i`` input (an open file's ``/proc/self/fd/N``, never its path)."""
    found = []
    if needs_idet(video):
        found.append(Look(IDET, idet_argv(source, video.index), IDET_TIMEOUT_S, _read_idet))
    if video.hdr is not None:
        argv = frame_side_data_argv(source, video.index)
        found.append(Look(FIRST_FRAME, argv, FRAME_TIMEOUT_S, _read_frame))
    return found


def read_look(
    look: Look, video: VideoStream, code: int, stdout: bytes, stderr: bytes
) -> tuple[VideoStream, str | None]:
    """``video`` with what ``look`` read (exit status ``code``), or as it was and why."""
    if code != 0:
        lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
        return video, f"exit status {code}: {lines[-1] if lines else 'no message'}"
    try:
        return look.read(video, stdout, stderr), None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return video, str(exc) or type(exc).__name__
