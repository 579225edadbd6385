"""ffmpeg's ``-progress pipe:1 -nostats`` output, parsed into snapshots, and their throttle.

ffmpeg writes ``key=value`` lines and closes each block with ``progress=continue``
or ``progress=end``. ``out_time_us`` and, despite its name, ``out_time_ms`` are
both microseconds; any value may be ``N/A``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from cluster.model.plain import as_dict


@dataclass(frozen=True, slots=True)
class ProgressSnapshot:
    frame: int | None = None
    fps: float | None = None
    out_time_s: float | None = None
    speed: float | None = None
    percent: float | None = None
    eta_s: float | None = None
    done: bool = False
    moved_bytes: int | None = None
    """Bytes this attempt has fetched from and uploaded to object storage so far."""
    scored_frames: int | None = None
    """Frames its output has been scored on so far (a transcode that is scored)."""
    at: float | None = field(default=None, compare=False)
    """Wall-clock time the block was read from ffmpeg (for progress-latency figures)."""

    def to_dict(self) -> dict[str, Any]:
        return as_dict(self)


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    value = value.strip().rstrip("x")
    if not value or value.upper() == "N/A":
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number == number and number >= 0 else None  # drop NaN and negatives


def _clock_seconds(value: str | None) -> float | None:
    """``HH:MM:SS.micro`` → seconds."""
    if not value or value.upper() == "N/A":
        return None
    try:
        hours, minutes, seconds = value.strip().lstrip("-").split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


class ProgressParser:
    """Turns ffmpeg progress lines into :class:`ProgressSnapshot` objects, one per block.

    ``duration_s`` gives percent by time; failing that, ``total_frames`` gives
    percent by frames; with neither, percent stays ``None``.
    """

    def __init__(self, *, duration_s: float | None = None, total_frames: int | None = None):
        self.duration_s = duration_s if duration_s and duration_s > 0 else None
        self.total_frames = total_frames if total_frames and total_frames > 0 else None
        self._block: dict[str, str] = {}
        self.latest: ProgressSnapshot | None = None

    def feed(self, line: str) -> ProgressSnapshot | None:
        """Take one line; return a snapshot when it closes a block."""
        key, sep, value = line.strip().partition("=")
        if not sep:
            return None
        if key != "progress":
            self._block[key.strip()] = value
            return None
        snapshot = self._snapshot(self._block, done=value.strip() == "end")
        self._block = {}
        self.latest = snapshot
        return snapshot

    def _snapshot(self, block: dict[str, str], *, done: bool) -> ProgressSnapshot:
        frame_f = _number(block.get("frame"))
        frame = int(frame_f) if frame_f is not None else None
        fps = _number(block.get("fps"))
        micros = _number(block.get("out_time_us"))
        if micros is None:
            micros = _number(block.get("out_time_ms"))
        out_time = micros / 1_000_000 if micros is not None else None
        if out_time is None:
            out_time = _clock_seconds(block.get("out_time"))
        speed = _number(block.get("speed"))

        percent: float | None = None
        eta: float | None = None
        if self.duration_s and out_time is not None:
            percent = out_time / self.duration_s * 100
            if speed:
                eta = max(self.duration_s - out_time, 0.0) / speed
        elif self.total_frames and frame is not None:
            percent = frame / self.total_frames * 100
            if fps:
                eta = max(self.total_frames - frame, 0) / fps
        if percent is not None:
            percent = round(min(max(percent, 0.0), 100.0), 2)
        if done:
            percent, eta = 100.0, 0.0
        return ProgressSnapshot(
            frame=frame,
            fps=fps,
            out_time_s=round(out_time, 3) if out_time is not None else None,
            speed=speed,
            percent=percent,
            eta_s=round(eta, 1) if eta is not None else None,
            done=done,
            at=time.time(),
        )


class ProgressThrottle:
    """Lets a snapshot through when percent moved ≥ ``min_percent`` or ``min_interval_s`` passed.

    The final snapshot (``done``) always passes.
    """

    def __init__(
        self,
        *,
        min_percent: float = 1.0,
        min_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.min_percent = min_percent
        self.min_interval_s = min_interval_s
        self._clock = clock
        self._last_time: float | None = None
        self._last_percent: float | None = None

    def should_emit(self, snapshot: ProgressSnapshot) -> bool:
        now = self._clock()
        emit = (
            snapshot.done
            or self._last_time is None
            or now - self._last_time >= self.min_interval_s
            or (
                snapshot.percent is not None
                and (
                    self._last_percent is None
                    or snapshot.percent - self._last_percent >= self.min_percent
                )
            )
        )
        if emit:
            self._last_time = now
            self._last_percent = snapshot.percent
        return emit


class ProgressReport(NamedTuple):
    """One encode's progress as its node sends it to the head, in a batch with the node's
    other encodes' (:class:`~cluster.nodes.progress.ProgressBatcher`)."""

    job_id: str
    attempt: int
    snapshot: ProgressSnapshot
