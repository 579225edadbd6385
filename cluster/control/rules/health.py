"""Quarantine: a node or GPU that keeps failing jobs gets no new work for a while.

A *target* is a node (``node:<id>``) or a GPU (``gpu:<uuid>``). Failures that are not
the input's fault (an encode that stalled or ran past its ceiling, NVENC that will not
open, an encoder that crashed) are strikes against the target the job ran on. After
``after`` strikes in a row (within ``window_s``; a success on the target clears them),
the target is quarantined for ``base_s``. When that ends, one trial job is let through:
its success heals the target; its failure quarantines it again for twice as long
(capped at ``max_s``). Strikes that a poison job caused are taken back, so one bad
input does not quarantine healthy machines. An operator can lift a quarantine. Strikes
and quarantines are kept in SQLite, so a restarted coordinator does not hand a bad
machine K more jobs.

Pure and clock-driven (``now`` is passed in), so it is tested without a loop.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

log = logging.getLogger("framefleet.coordinator.rules")


Saved = tuple[int, float | None, str, list[list[Any]]]
"""A target as stored: quarantines in a row, until, reason, strikes (when, job, why)."""


class HealthState(StrEnum):
    HEALTHY = "healthy"
    QUARANTINED = "quarantined"
    TRIAL = "trial"
    """The quarantine ended: one trial job may run to test it."""


def node_target(node_id: str) -> str:
    return f"node:{node_id}"


def gpu_target(uuid: str) -> str:
    return f"gpu:{uuid}"


@dataclass(slots=True)
class _Record:
    strikes: deque[tuple[float, str, str]] = field(default_factory=deque)
    """(when, job id, why) of the failures in a row."""
    quarantines: int = 0
    """Quarantines in a row (the back-off doubles with each)."""
    until: float | None = None
    reason: str = ""
    trial_job: str | None = None


class Health:
    def __init__(
        self,
        *,
        after: int = 3,
        window_s: float = 900.0,
        base_s: float = 60.0,
        max_s: float = 3600.0,
    ) -> None:
        self.after = max(1, after)
        self.window_s = window_s
        self.base_s = base_s
        self.max_s = max_s
        self._records: dict[str, _Record] = {}

    # ---- what happened -----------------------------------------------------------------

    def failed(self, target: str, job_id: str, why: str, now: float) -> bool:
        """A job failed on ``target`` for a reason that is not its input's; returns
        whether this quarantined the target."""
        rec = self._records.setdefault(target, _Record())
        while rec.strikes and rec.strikes[0][0] < now - self.window_s:
            rec.strikes.popleft()
        state = self._state(rec, now)
        if state is HealthState.QUARANTINED:
            return False  # a job that was already running there when it was quarantined
        rec.strikes.append((now, job_id, why))
        if state is HealthState.HEALTHY and len(rec.strikes) < self.after:
            return False
        # K in a row, or the trial (or any job let through during it) failed.
        count = len(rec.strikes)
        rec.quarantines += 1
        back_off = min(self.base_s * 2 ** (rec.quarantines - 1), self.max_s)
        rec.until = now + back_off
        rec.trial_job = None
        rec.reason = (
            f"trial job failed: {why}"
            if state is HealthState.TRIAL
            else f"{count} failures in a row, the last: {why}"
        )
        rec.strikes.clear()
        log.warning("quarantined %s for %g s: %s", target, back_off, rec.reason)
        return True

    def succeeded(self, target: str, now: float) -> None:
        """A job succeeded on ``target``: its strikes are cleared; a trial heals it."""
        rec = self._records.get(target)
        if rec is None:
            return
        rec.strikes.clear()
        state = self._state(rec, now)
        if state is HealthState.TRIAL:
            log.warning("%s passed its trial job; back in service", target)
        if state is not HealthState.QUARANTINED:
            del self._records[target]

    def ended(self, target: str, job_id: str) -> None:
        """A job on ``target`` ended for a reason that says nothing of the target (the
        input's fault, a cancel): if it was the trial, another may go."""
        rec = self._records.get(target)
        if rec is not None and rec.trial_job == job_id:
            rec.trial_job = None

    def forgive(self, job_id: str) -> None:
        """Take back the strikes ``job_id`` caused (it was found to be poison)."""
        for target, rec in list(self._records.items()):
            kept = [s for s in rec.strikes if s[1] != job_id]
            if len(kept) != len(rec.strikes):
                rec.strikes = deque(kept)
                if not kept and rec.until is None:
                    del self._records[target]

    def started(self, target: str, job_id: str, now: float) -> None:
        """A job was placed on ``target``: during a trial, it is the trial."""
        rec = self._records.get(target)
        if rec is not None and rec.trial_job is None and self._state(rec, now) is HealthState.TRIAL:
            rec.trial_job = job_id

    def release(self, target: str) -> bool:
        """An operator lifts the quarantine (and forgets the strikes); whether there was
        anything to lift."""
        rec = self._records.pop(target, None)
        if rec is not None:
            log.warning("%s released by an operator", target)
        return rec is not None and (rec.until is not None or bool(rec.strikes))

    # ---- kept across restarts -------------------------------------------------------------

    def saved(self) -> dict[str, Saved]:
        """What outlives a restart: every target with strikes or a quarantine."""
        return {
            t: (r.quarantines, r.until, r.reason, [list(s) for s in r.strikes])
            for t, r in self._records.items()
        }

    def restore(self, saved: dict[str, Saved]) -> None:
        """Strikes and quarantines from before a restart (a trial that was running
        starts again)."""
        for target, (count, until, reason, strikes) in saved.items():
            self._records[target] = _Record(
                strikes=deque((float(w), str(j), str(y)) for w, j, y in strikes),
                quarantines=count,
                until=until,
                reason=reason,
            )

    # ---- what it means now ---------------------------------------------------------------

    def state(self, target: str, now: float) -> HealthState:
        rec = self._records.get(target)
        return HealthState.HEALTHY if rec is None else self._state(rec, now)

    def closed(self, target: str, now: float) -> bool:
        """Whether no new work may go to ``target`` now: quarantined, or its trial runs."""
        rec = self._records.get(target)
        if rec is None:
            return False
        state = self._state(rec, now)
        return state is HealthState.QUARANTINED or (
            state is HealthState.TRIAL and rec.trial_job is not None
        )

    def view(self, target: str, now: float) -> dict[str, Any] | None:
        """For people: state, reason, until when, the strikes so far (``None``: healthy
        with no strikes)."""
        rec = self._records.get(target)
        if rec is None:
            return None
        state = self._state(rec, now)
        return {
            "state": str(state),
            "reason": rec.reason or None,
            "until": rec.until if state is HealthState.QUARANTINED else None,
            "quarantines": rec.quarantines,
            "strikes": len(rec.strikes),
            "trial_job": rec.trial_job,
        }

    def any(self) -> bool:
        """Whether any target has strikes or a quarantine."""
        return bool(self._records)

    def quarantined(self, now: float) -> list[str]:
        healthy = HealthState.HEALTHY
        return [t for t, r in self._records.items() if self._state(r, now) is not healthy]

    @staticmethod
    def _state(rec: _Record, now: float) -> HealthState:
        if rec.until is None:
            return HealthState.HEALTHY
        return HealthState.QUARANTINED if now < rec.until else HealthState.TRIAL
