"""What keeps the farm healthy without an operator: the stall watchdog, quarantine of
failing nodes and GPUs, poison jobs, and drains. The coordinator calls :class:`Healer`
at each step of a job's run; the rules live in :mod:`~cluster.control.rules.watchdog`,
:mod:`~cluster.control.rules.health` and :func:`~cluster.control.rules.policy.decide`.

    a job starts        -> its limits (stall, ceiling) are set and watched; a node or GPU
                           on trial takes it as its trial
    progress arrives    -> the watchdog sees whether it advanced
    housekeeping        -> encodes past a limit are stopped, as failed attempts
    an encode ends      -> failures not the input's (recorded on the job by the table:
                           it is placed elsewhere next) are struck against its node or
                           GPU; a success clears the strikes; a poison job's strikes are
                           taken back

Time comes from ``now`` (a clock passed in), so tests never sleep.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from cluster.config import CoordinatorConfig
from cluster.control.records.metrics import JobMetrics
from cluster.control.records.store import JobStore
from cluster.control.rules.health import Health, HealthState, Saved, gpu_target, node_target
from cluster.control.rules.policy import Action, Decision, targets
from cluster.control.rules.watchdog import Limits, Watchdog, limits_for
from cluster.errors import ErrorCode, Stalled
from cluster.model.counters import JobCounter
from cluster.model.jobs import Failure, Fault, Job, JobPlacement
from cluster.model.media import MediaInfo
from cluster.model.progress import ProgressSnapshot
from cluster.scheduling.planner import GpuState, NodeState
from cluster.storage.urls import is_object_url

log = logging.getLogger("framefleet.coordinator.farm")


class Healer:
    def __init__(
        self,
        config: CoordinatorConfig,
        metrics: JobMetrics,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self._now = now
        self.health = Health(
            after=config.quarantine_after,
            window_s=config.quarantine_window_s,
            base_s=config.quarantine_s,
            max_s=config.quarantine_max_s,
        )
        self.watchdog = Watchdog()
        self._draining: dict[str, float] = {}
        """Node id -> since when it takes no new work."""
        self._store: JobStore | None = None
        self._saved: dict[str, Saved] = {}

    def load(self, store: JobStore) -> None:
        """Drains, strikes and quarantines from before a restart; later changes are
        written there."""
        self._store = store
        self._draining = store.drains()
        self._saved = store.health()
        self.health.restore(self._saved)

    def save(self) -> None:
        """Write strikes and quarantines if they changed (cheap when they did not)."""
        now = self.health.saved()
        if self._store is not None and now != self._saved:
            self._store.set_health(now)
            self._saved = now

    # ---- drains ------------------------------------------------------------------------

    def drain(self, node_id: str) -> float:
        """The node takes no new work (kept across restarts); since when (idempotent)."""
        since = self._draining.setdefault(node_id, self._now())
        if self._store is not None:
            self._store.set_drain(node_id, since)
        return since

    def undrain(self, node_id: str) -> None:
        self._draining.pop(node_id, None)
        if self._store is not None:
            self._store.set_drain(node_id, None)

    def draining(self, node_id: str) -> bool:
        return node_id in self._draining

    # ---- a job's run -----------------------------------------------------------------

    def limits(
        self, job: Job, placement: JobPlacement, media: MediaInfo, learned: float | None = None
    ) -> Limits:
        """The watchdog's limits for the job where it was placed (``learned``: the low
        end of its learned speed there, when the farm has seen such work)."""
        size = media.size_bytes or 0
        staged = [url for url in (job.spec.input, job.spec.output) if is_object_url(url)]
        return limits_for(
            job.spec,
            placement.hardware,
            media,
            self.config.costs,
            stall_s=self.config.stall_s,
            runtime_factor=self.config.max_runtime_factor,
            transfer_bytes=size * len(staged),  # an output about the input's size
            learned=learned,
        )

    def launched(self, job_id: str, placement: JobPlacement, limits: Limits) -> None:
        """Watch the attempt that starts; a node or GPU on trial takes it as its trial."""
        now = self._now()
        self.watchdog.track(job_id, limits, placement.where, now)
        for target in (node_target(placement.node_id), *targets(placement)):
            self.health.started(target, job_id, now)

    def progressed(self, job_id: str, snapshot: ProgressSnapshot) -> None:
        self.watchdog.progressed(job_id, snapshot, self._now())

    def overdue(self) -> list[tuple[str, Stalled]]:
        found = self.watchdog.overdue(self._now())
        for _, why in found:
            timed_out = why.code is ErrorCode.TIMED_OUT
            self.metrics.count(JobCounter.TIMEOUTS if timed_out else JobCounter.STALLS)
        return found

    def settle(self, job: Job, fault: Fault, decision: Decision, failure: Failure | None) -> None:
        """Strike, clear or forgive the targets of the attempt that just ended (``fault``:
        whose fault it was; ``failure``: its record, if it was not the input's)."""
        self.watchdog.forget(job.id)
        placed = job.placement
        if placed is None or decision.action is Action.IGNORE:
            return
        now = self._now()
        if decision.code is ErrorCode.POISON:
            self.health.forgive(job.id)  # counted by decide()'s counter
            log.warning("job %s is poison: %s", job.id, decision.reason)
        every = (node_target(placed.node_id), *targets(placed))
        if decision.action is Action.SUCCEED:
            for target in every:
                self.health.succeeded(target, now)
        elif fault in (Fault.NODE, Fault.CRASH) and decision.code is not ErrorCode.POISON:
            why = (failure.reason if failure else None) or decision.reason
            for target in targets(placed):
                if self.health.failed(target, job.id, why, now):
                    self.metrics.count(JobCounter.QUARANTINES)
            for target in every:
                self.health.ended(target, job.id)  # a failed trial was handled above
        else:
            for target in every:
                self.health.ended(target, job.id)
        self.save()

    # ---- what may take work --------------------------------------------------------------

    def placeable(self, states: list[NodeState]) -> list[NodeState]:
        """The nodes and GPUs that may take new work now: draining and quarantined ones
        left out; one on trial offers room for exactly one job."""
        health, now = self.health, self._now()
        if not self._draining and not health.any():
            return states
        kept = []
        for state in states:
            node = node_target(state.node_id)
            if state.node_id in self._draining or health.closed(node, now):
                continue
            if health.state(node, now) is HealthState.TRIAL:
                cap = state.max_jobs if state.max_jobs is not None else state.running + 1
                state = replace(state, max_jobs=min(cap, state.running + 1))
            gpus: list[GpuState] = []
            for gpu in state.gpus:
                target = gpu_target(gpu.uuid)
                if health.closed(target, now):
                    continue
                if health.state(target, now) is HealthState.TRIAL:
                    gpu = replace(gpu, max_sessions=max(gpu.sessions, gpu.sessions_live or 0) + 1)
                gpus.append(gpu)
            if gpus != list(state.gpus):
                state = replace(state, gpus=tuple(gpus))
            kept.append(state)
        return kept

    def holds_back(self) -> bool:
        """Whether :meth:`placeable` may leave nodes or GPUs out now."""
        return bool(self._draining) or self.health.any()

    def node_health(self, node_id: str, running: int) -> dict[str, Any]:
        """``state`` (ready, draining, drained, quarantined, trial) and the quarantine."""
        quarantine = self.health.view(node_target(node_id), self._now())
        if node_id in self._draining:
            state = "draining" if running else "drained"
        elif quarantine and quarantine["state"] != "healthy":
            state = quarantine["state"]
        else:
            state = "ready"
        since = self._draining.get(node_id)
        return {"state": state, "quarantine": quarantine, "draining_since": since}

    def gpu_health(self, uuid: str) -> dict[str, Any] | None:
        return self.health.view(gpu_target(uuid), self._now())
