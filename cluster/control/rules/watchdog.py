"""The stall watchdog: a running encode that stops making progress, or runs far past
what it should take, is killed and retried elsewhere.

Each running job gets two :class:`Limits` when it starts:

- ``stall_s``: how long its progress (frames, output time, or bytes moved to or from
  object storage) may stand still. The
  default is ten times the expected time between progress advances (an encoder's
  lookahead at the expected speed), never below a minute; ``FRAMEFLEET_STALL_S`` sets it.
- ``max_runtime_s``: a hard ceiling, ``FRAMEFLEET_MAX_RUNTIME_FACTOR`` (default 10)
  times the expected encode time from the input's duration and the encoder's expected
  speed, never below twice ``stall_s``; a job whose media move to or from object
  storage also gets their bytes' time at ``TRANSFER_BPS``.

Expected speeds come from the cost model (:meth:`~cluster.scheduling.costs.CostModel.speed`,
replaceable by a file), conservative, so a node slower than these still passes with the
factor's headroom. Pure and clock-driven; the coordinator calls :meth:`Watchdog.overdue`
from its housekeeping loop and stops what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass

from cluster.errors import ErrorCode, Stalled
from cluster.model.jobs import Hardware, JobSpec
from cluster.model.media import MediaInfo
from cluster.model.progress import ProgressSnapshot
from cluster.scheduling.costs import CostModel, expected_speed

MIN_STALL_S = 60.0
STALL_INTERVALS = 10
"""The default stall limit, in expected intervals between progress advances."""
LOOKAHEAD_FRAMES = 60
"""Frames an encoder may take in before it writes the first (x264/x265 lookahead, NVENC
surfaces): progress can stand still this long at the start of an encode."""
DEFAULT_FPS = 25.0
TRANSFER_BPS = 25 * 1024 * 1024
"""A conservative rate for fetching and uploading media (object storage)."""


@dataclass(frozen=True, slots=True)
class Limits:
    stall_s: float
    max_runtime_s: float

    def to_dict(self) -> dict[str, float]:
        return {"stall_s": self.stall_s, "max_runtime_s": self.max_runtime_s}


def limits_for(
    spec: JobSpec,
    hardware: Hardware,
    media: MediaInfo,
    costs: CostModel,
    *,
    stall_s: float | None,
    runtime_factor: float,
    transfer_bytes: int = 0,
    learned: float | None = None,
) -> Limits:
    """The job's limits where it was placed (``stall_s``: the configured stall limit;
    ``None`` derives it; ``transfer_bytes``: what it fetches and uploads; ``learned``: the
    low end of the speed the farm learned for it there, used instead of the table's)."""
    speed = learned if learned and learned > 0 else expected_speed(spec, hardware, media, costs)
    fps = (media.video.fps if media.video else None) or DEFAULT_FPS
    if stall_s is None:
        interval = LOOKAHEAD_FRAMES / (speed * fps)
        stall_s = max(MIN_STALL_S, STALL_INTERVALS * interval)
    expected_s = (media.duration_s or 0.0) / speed + transfer_bytes / TRANSFER_BPS
    return Limits(round(stall_s, 1), round(max(runtime_factor * expected_s, 2 * stall_s), 1))


@dataclass(slots=True)
class _Watched:
    limits: Limits
    where: str
    started: float
    last_advance: float
    frame: int = -1
    out_time_s: float = -1.0
    moved_bytes: int = -1
    scored: int = -1


class Watchdog:
    def __init__(self) -> None:
        self._watched: dict[str, _Watched] = {}

    def track(self, job_id: str, limits: Limits, where: str, now: float) -> None:
        self._watched[job_id] = _Watched(limits, where, now, now)

    def progressed(self, job_id: str, snapshot: ProgressSnapshot, now: float) -> None:
        """A progress block arrived: it counts if frames, output time or bytes moved on."""
        w = self._watched.get(job_id)
        if w is None:
            return
        frame = snapshot.frame if snapshot.frame is not None else -1
        out_time = snapshot.out_time_s if snapshot.out_time_s is not None else -1.0
        moved = snapshot.moved_bytes if snapshot.moved_bytes is not None else -1
        scored = snapshot.scored_frames if snapshot.scored_frames is not None else -1
        if frame > w.frame or out_time > w.out_time_s or moved > w.moved_bytes or scored > w.scored:
            w.frame, w.out_time_s = max(frame, w.frame), max(out_time, w.out_time_s)
            w.moved_bytes, w.scored = max(moved, w.moved_bytes), max(scored, w.scored)
            w.last_advance = now

    def forget(self, job_id: str) -> None:
        self._watched.pop(job_id, None)

    def overdue(self, now: float) -> list[tuple[str, Stalled]]:
        """Jobs to kill now, with why; each is reported once (then forgotten)."""
        found = []
        for job_id, w in self._watched.items():
            if now - w.started > w.limits.max_runtime_s:
                why = (
                    f"timed out: ran {now - w.started:.0f} s, past its ceiling of "
                    f"{w.limits.max_runtime_s:g} s, on {w.where}"
                )
                found.append((job_id, Stalled(why, code=ErrorCode.TIMED_OUT)))
            elif now - w.last_advance > w.limits.stall_s:
                why = (
                    f"stalled: no progress for {now - w.last_advance:.0f} s on {w.where} "
                    f"(limit {w.limits.stall_s:g} s)"
                )
                found.append((job_id, Stalled(why)))
        for job_id, _ in found:
            del self._watched[job_id]
        return found
