"""What keeps the farm healthy without an operator: the stall watchdog, quarantine of
failing nodes and GPUs, poison jobs, and drains. The coordinator calls :class:`Healer`
at each step of a job's run; the rules live in :mod:`~cluster.control.rules.watchdog`,
:mod:`~cluster.control.rules.health` and :func:`~cluster.control.rules.policy.decide`.

    a job starts        -> its limits (stall, ceiling) are set and watched; a node or GPU
                           on trial takes it as its trial
    progress arrives    -> the watchdog sees whether it advanced
    housekeeping        -> encodes past a limit are stopped, as failed attempts
    an encode ends      -> failures not the input's are recorded on the job (it is placed
                           elsewhere next) and struck against its node or GPU; a success
                           clears the strikes; a poison job's strikes are taken back
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from cluster.config import CoordinatorConfig
from cluster.control.records.metrics import JobMetrics
from cluster.control.records.store import JobStore
from cluster.control.rules.health import Health, HealthState, Saved, gpu_target, node_target
from cluster.control.rules.policy import Action, Decision, Fault, fault_of, targets
from cluster.control.rules.watchdog import Watchdog, limits_for
from cluster.errors import ErrorCode, Stalled
from cluster.media.work import WorkOutcome
from cluster.model.jobs import Job, JobStatus
from cluster.model.media import MediaInfo
from cluster.model.progress import ProgressSnapshot
from cluster.scheduling.planner import GpuState, NodeState
from cluster.storage.urls import is_object_url

log = logging.getLogger("framefleet.coordinator.farm")
MAX_FAILURES_KEPT = 20


class Healer:
    def __init__(self, config: CoordinatorConfig, metrics: JobMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.health = Health(
            after=config.quarantine_after,
            window_s=config.quarantine_window_s,
            base_s=config.quarantine_s,
            max_s=config.quarantine_max_s,
        )
        self.watchdog = Watchdog()
        self.draining: dict[str, float] = {}
        """Node id -> since when it takes no new work."""
        self._store: JobStore | None = None
        self._saved: dict[str, Saved] = {}

    def load(self, store: JobStore) -> None:
        """Drains, strikes and quarantines from before a restart; later changes are
        written there."""
        self._store = store
        self.draining = store.drains()
        self._saved = store.health()
        self.health.restore(self._saved)

    def save(self) -> None:
        """Write strikes and quarantines if they changed (cheap when they did not)."""
        now = self.health.saved()
        if self._store is not None and now != self._saved:
            self._store.set_health(now)
            self._saved = now

    # ---- a job's run -----------------------------------------------------------------

    def launched(self, job: Job, media: MediaInfo, now: float) -> None:
        placement = job.placement
        if placement is None:
            return
        size = media.size_bytes or 0
        staged = [url for url in (job.spec.input, job.spec.output) if is_object_url(url)]
        limits = limits_for(
            job.spec,
            placement.hardware,
            media,
            stall_s=self.config.stall_s,
            runtime_factor=self.config.max_runtime_factor,
            transfer_bytes=size * len(staged),  # an output about the input's size
        )
        job.limits = limits.to_dict()
        self.watchdog.track(job.id, limits, placement.where, now)
        for target in (node_target(placement.node_id), *targets(placement)):
            self.health.started(target, job.id, now)

    def progressed(self, job_id: str, snapshot: ProgressSnapshot, now: float) -> None:
        self.watchdog.progressed(job_id, snapshot, now)

    def overdue(self, now: float) -> list[tuple[str, Stalled]]:
        found = self.watchdog.overdue(now)
        for _, why in found:
            if why.code is ErrorCode.TIMED_OUT:
                self.metrics.timeouts += 1
            else:
                self.metrics.stalls += 1
        return found

    def outcome(self, job: Job, outcome: WorkOutcome, *, node_present: bool) -> Fault:
        """Record a failed attempt that was not the input's fault on the job (before
        :func:`decide`, which reads the crash sites); returns the fault."""
        if job.status is not JobStatus.RUNNING or outcome.attempt != job.attempts:
            return Fault.NONE  # stale: decide() ignores it
        self.watchdog.forget(job.id)
        fault = fault_of(outcome, node_present=node_present)
        placed = job.placement
        if placed is not None and fault in (Fault.NODE, Fault.CRASH):
            job.failures.append({
                "attempt": outcome.attempt, "node_id": placed.node_id,
                "address": placed.address, "where": placed.where, "fault": str(fault),
                "code": str(outcome.error_code), "reason": outcome.error,
            })  # fmt: skip
            del job.failures[:-MAX_FAILURES_KEPT]
        return fault

    def settle(self, job: Job, fault: Fault, decision: Decision, now: float) -> None:
        """Strike, clear or forgive the targets of the attempt that just ended; an attempt
        ended by no fault of the job's or a machine's is not counted against its retries."""
        placed = job.placement
        if decision.action is Action.REQUEUE and not decision.charged:
            job.requeues += 1  # a lost node or a shutdown: not one of the job's attempts
        if placed is None or decision.action is Action.IGNORE:
            return
        if decision.code is ErrorCode.POISON:
            self.health.forgive(job.id)  # counted by decide()'s counter
            log.warning("job %s is poison: %s", job.id, decision.reason)
        every = (node_target(placed.node_id), *targets(placed))
        if decision.action is Action.SUCCEED:
            for target in every:
                self.health.succeeded(target, now)
        elif fault in (Fault.NODE, Fault.CRASH) and decision.code is not ErrorCode.POISON:
            why = job.failures[-1]["reason"] if job.failures else decision.reason
            for target in targets(placed):
                if self.health.failed(target, job.id, why, now):
                    self.metrics.quarantines += 1
            for target in every:
                self.health.ended(target, job.id)  # a failed trial was handled above
        else:
            for target in every:
                self.health.ended(target, job.id)
        self.save()

    def forget(self, job_id: str) -> None:
        self.watchdog.forget(job_id)

    # ---- what may take work --------------------------------------------------------------

    def placeable(self, states: list[NodeState], now: float) -> list[NodeState]:
        """The nodes and GPUs that may take new work now: draining and quarantined ones
        left out; one on trial offers room for exactly one job."""
        health = self.health
        if not self.draining and not health.any():
            return states
        kept = []
        for state in states:
            node = node_target(state.node_id)
            if state.node_id in self.draining or health.closed(node, now):
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
        return bool(self.draining) or self.health.any()

    def node_health(self, node_id: str, running: int, now: float) -> dict[str, Any]:
        """``state`` (ready, draining, drained, quarantined, trial) and the quarantine."""
        quarantine = self.health.view(node_target(node_id), now)
        if node_id in self.draining:
            state = "draining" if running else "drained"
        elif quarantine and quarantine["state"] != "healthy":
            state = quarantine["state"]
        else:
            state = "ready"
        since = self.draining.get(node_id)
        return {"state": state, "quarantine": quarantine, "draining_since": since}

    def gpu_health(self, uuid: str, now: float) -> dict[str, Any] | None:
        return self.health.view(gpu_target(uuid), now)
