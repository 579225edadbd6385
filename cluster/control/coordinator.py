"""The coordinator: the API the client calls, and the loops that probe, place and run jobs.

A plain asyncio class; :mod:`cluster.ray_edge.actors` runs it as one named,
detached Ray actor and gives it a :class:`Backend` that talks to Ray
(:mod:`cluster.control.fakes` gives it one without Ray, for tests). Its state lives
in four parts, each in its own module:

- :class:`~cluster.control.records.jobtable.JobTable`: jobs, queue, keys, state changes, webhooks;
- :class:`~cluster.control.farm.view.ClusterView`: nodes, suspects, NVENC failures, caps;
- :class:`~cluster.control.farm.prober.Prober`: inputs, probed where nodes see them (``reach``);
- :class:`~cluster.control.running.pool.EncoderPool`: encoders, warm or busy, and what they hold;
- :class:`~cluster.control.farm.healing.Healer`: the stall watchdog, quarantine, drains;

and what happens when an encode ends is the pure :func:`~cluster.control.rules.policy.decide`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from cluster.config import CoordinatorConfig
from cluster.control.farm.backend import Backend
from cluster.control.farm.healing import Healer
from cluster.control.farm.prober import ProbeFn, Prober
from cluster.control.farm.reach import MediaReach
from cluster.control.farm.view import ClusterView
from cluster.control.farmapi import NodeAPI
from cluster.control.intake import check_all, confine_all, list_inputs
from cluster.control.records.jobtable import JobTable
from cluster.control.records.metrics import resident_mb
from cluster.control.records.store import JobStore
from cluster.control.records.webhooks import webhook_settings
from cluster.control.rules.dispatch import (
    capacity_request,
    demand_for,
    plan_round,
)
from cluster.control.rules.policy import Action, Facts, crash_sites, decide, nvenc_why, timed_result
from cluster.control.running.encodes import Encodes
from cluster.control.running.orders import order_for
from cluster.control.running.pool import EncoderPool
from cluster.control.splits import Splits
from cluster.errors import CapacityError, ErrorCode, FramefleetError, JobFailure
from cluster.media.encoders import Encoder
from cluster.media.probe import probe_async
from cluster.media.work import Stitch, WorkOutcome
from cluster.model.events import EventBatch, EventType
from cluster.model.jobs import Job, JobKind, JobSpec, JobStatus
from cluster.model.media import MediaInfo
from cluster.model.progress import ProgressSnapshot
from cluster.scheduling.planner import NodeState, Placement, Planner, queue_key

log = logging.getLogger("framefleet.coordinator")


def log_capacity_failure(task: asyncio.Task[None]) -> None:
    """A done callback for the autoscaler request: say why it failed, if it did."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("asking the autoscaler for capacity failed: %s", task.exception())


class Coordinator(NodeAPI):
    def __init__(
        self,
        config: CoordinatorConfig,
        backend: Backend,
        *,
        encoders: tuple[Encoder, ...] | None = None,
        probe: ProbeFn = probe_async,
    ) -> None:
        self.config = config
        self._backend = backend
        self.table = JobTable(
            JobStore(config.db_path),
            max_attempts=config.max_attempts,
            retention_s=config.finished_retention_s,
            idempotency_ttl_s=config.idempotency_ttl_s,
            webhooks=webhook_settings(config),
        )
        self.metrics = self.table.metrics
        self.view = ClusterView(
            backend.nodes, default_cap=config.max_jobs_per_node, local_encoders=encoders
        )
        self.reach = MediaReach(config, self.view, backend, probe)
        self.table.clear_partials = self.reach.clear_partials
        self.prober = Prober(
            config.media_roots,
            config.store,
            on_probed=self._probed,
            on_failed=self._fail,
            on_done=self._wake_up,
            backoff_s=config.retry_backoff_s,
            probe=self.reach.probe,
        )
        self._pool = EncoderPool(backend.create_encoder, idle_s=config.encoder_idle_s)
        self.encodes = Encodes(self._pool, on_outcome=self._complete, on_lost=self._lost)
        self._running = self.encodes.running
        self.splits = Splits(
            self.table, self.reach, planner=lambda: self._planner(placeable=True),
            move=self._move, stop=self.encodes.stop, running=self._running.__contains__,
            wake=self._wake_up, media=self.prober.media,
        )  # fmt: skip
        self.healer = Healer(config, self.metrics)
        self.healer.load(self.table.store)
        self._asked: list[dict[str, float]] = []
        """The last resource shapes asked of the autoscaler."""
        self._stopping = False
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stops: set[asyncio.Task[None]] = set()
        """Encodes the watchdog is stopping."""
        self._started_at = time.time()
        requeued = self.table.recover()
        for job in self.table.queue.values():
            if job.input_media:  # probed before the restart: not again
                self.prober.media[job.id] = job.input_media
        if requeued:
            log.warning("re-queued %d job(s) that were running before a restart", len(requeued))

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start dispatching (needs a running event loop)."""
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._dispatch_loop()),
                asyncio.create_task(self._housekeeping_loop()),
                asyncio.create_task(self.table.webhooks.run()),
            ]

    async def shutdown(self) -> None:
        """Stop encodes (killing ffmpeg, dropping partial files); running jobs are re-queued."""
        self._stopping = True
        await self.encodes.shutdown()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.table.store.close()

    # ---- the API the client and the gateway call -----------------------------------

    async def ping(self) -> dict[str, Any]:
        """Counts, which life of the coordinator answers (``pid``, ``started_at``), and
        whether it is ready: every alive node has reported through its agent (ffmpeg,
        GPUs) and finished its NVENC trials, so the node view and presets are complete."""
        waiting = self.view.waiting_for()
        return {
            "jobs": len(self.table.jobs),
            "queued": len(self.table.queue),
            "running": len(self._running),
            "pid": os.getpid(),
            "started_at": self._started_at,
            "memory_mb": resident_mb(),
            "nodes": len(self.view.nodes),
            "waiting_for": waiting,
            "ready": self.view.refreshed and bool(self.view.nodes) and not waiting,
        }

    async def get_config(self) -> CoordinatorConfig:
        """The config this coordinator runs with (a client joining checks it)."""
        return self.config

    async def submit(self, spec: JobSpec, idempotency_key: str | None = None) -> Job:
        """Queue a job. A repeated ``idempotency_key`` returns the job it first made."""
        (job,) = await self._queue([spec], idempotency_key, batch=False)
        return job

    async def submit_many(
        self, specs: list[JobSpec], idempotency_key: str | None = None
    ) -> list[Job]:
        """Queue all of ``specs`` or none (the first refusal says which one and why)."""
        return await self._queue(specs, idempotency_key, batch=True)

    async def get(self, job_id: str) -> Job:
        return self.table.get(job_id).snapshot()

    async def list_jobs(
        self,
        *,
        status: str | None = None,
        kind: str | None = None,
        after_seq: int = 0,
        limit: int = 100,
    ) -> list[Job]:
        """Jobs in submission order after ``after_seq`` (a cursor), filtered."""
        jobs = self.table.query(status=status, kind=kind, after_seq=after_seq, limit=limit)
        return [job.snapshot() for job in jobs]

    async def cancel(self, job_id: str) -> Job:
        """Cancel a job; idempotent. A running ffmpeg is killed before this returns."""
        job = self.table.get(job_id)
        if job.status is JobStatus.QUEUED:
            self._move(job, JobStatus.CANCELLED, "cancelled by user", ErrorCode.CANCELLED)
        elif job.split is not None and job.split.chunked and not job.status.terminal:
            self._move(job, JobStatus.CANCELLED, "cancelled by user", ErrorCode.CANCELLED)
            await self.splits.settled(job)  # its chunks' ffmpeg killed, their files gone
        elif job.status is JobStatus.RUNNING and job_id in self._running:
            await self.encodes.stop(job_id)
            if job.status is JobStatus.RUNNING:
                self._move(job, JobStatus.CANCELLED, "cancelled by user", ErrorCode.CANCELLED)
        return job.snapshot()

    async def retry(self, job_id: str) -> Job:
        job = self.table.get(job_id)
        self._move(job, JobStatus.QUEUED, "retry requested by user")
        self.prober.forget(job_id)  # probe again: the file may have been fixed
        self._wake.set()
        return job.snapshot()

    async def poll_events(
        self, after: int = 0, job_ids: list[str] | None = None, timeout: float = 30.0
    ) -> EventBatch:
        """Job events after ``after``; waits up to ``timeout`` s for the first one."""
        ids = frozenset(job_ids) if job_ids else None
        return await self.table.events.wait(after, ids, min(timeout, 60.0))

    async def event_cursor(self) -> int:
        """The newest event's ``seq``: follow from here to see only what happens next."""
        return self.table.events.last_seq

    async def report_progress(self, job_id: str, attempt: int, snapshot: ProgressSnapshot) -> None:
        """Called by encoder actors; stale attempts and finished jobs are ignored."""
        job = self.table.jobs.get(job_id)
        if job is None or job.status is not JobStatus.RUNNING or attempt != job.attempts:
            return
        job.progress = snapshot
        self.healer.progressed(job_id, snapshot, time.time())
        if job.chunk is not None:
            self.splits.progressed(job)
        elif job.split is not None and job.split.chunked:
            self.splits.stitch_progress(job, snapshot)
        else:
            self.table.publish(job, EventType.PROGRESS)

    # ---- admission -------------------------------------------------------------------

    async def _queue(self, specs: list[JobSpec], key: str | None, *, batch: bool) -> list[Job]:
        """Admit ``specs`` (all or none; see :mod:`~cluster.control.intake`)."""
        confined = confine_all(specs, self.config, batch=batch)
        if key is not None:  # the same request returns its first job(s), outputs now written
            first = self.table.known(key, confined, batch=batch)
            if first is not None:
                return [job.snapshot() for job in first]
        await self.view.await_reports()  # admission judges encoders by what nodes report
        await check_all(confined, self.view.encoders(), self.config, batch=batch,
                        where=self.reach.on_head)  # fmt: skip
        jobs = self.table.add(confined, key, batch=batch)
        self._wake.set()
        return [job.snapshot() for job in jobs]

    async def list_inputs(self, prefix: str, limit: int = 1000) -> list[str]:
        """The video objects under an ``s3://`` prefix (inside the roots), for a batch."""
        return await list_inputs(prefix, self.config, limit)

    # ---- state changes ---------------------------------------------------------------

    def _move(
        self, job: Job, status: JobStatus, reason: str, code: ErrorCode | None = None
    ) -> None:
        self.table.move(job, status, reason=reason, code=code)
        if status.terminal:
            self.prober.forget(job.id)
            self.encodes.cancelling.discard(job.id)
            self.splits.ended(job)
        if job.chunk is not None:
            self.splits.chunk_moved(job)

    def _fail(self, job: Job, exc: FramefleetError) -> None:
        self._move(job, JobStatus.FAILED, str(exc), exc.code)

    def _probed(self, job: Job, media: MediaInfo) -> None:
        job.input_media = media
        if job.spec.kind is JobKind.PROBE:
            self._move(job, JobStatus.RUNNING, "probed by the coordinator")
            job.result = {"media": media.to_dict()}
            self._move(job, JobStatus.SUCCEEDED, "probed")
        else:
            self.table.save(job)

    def _wake_up(self) -> None:
        if not self._stopping:
            self._wake.set()

    # ---- dispatch --------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            try:
                self._dispatch()
            except Exception:  # a bug here must not stop all dispatching
                log.exception("dispatch failed")

    def _dispatch(self) -> None:
        now = time.time()
        ready = []
        for job in list(self.table.queue.values()):
            media = self.prober.ensure(job)
            if media is not None and job.not_before <= now and self.splits.ready(job, media):
                ready.append((job, demand_for(job, media)))
        stitches = self.splits.stitchable()
        if not (ready or stitches) or not self.view.nodes:
            return  # nothing to place, or no node yet: wait for the cluster
        aging = self.config.aging_s
        ready.sort(
            key=lambda r: queue_key(r[0].spec.priority, r[0].seq, now - r[0].updated_at, aging)
        )
        planner = self._planner(placeable=True)
        for job in stitches:  # first: each finishes a job
            if (placement := self.splits.place_stitch(job, planner)) is not None:
                self._launch(job, placement, Splits.stitch_of(job))
        held_back = self.view.has_suspects or self.healer.holds_back()
        whole = self._planner() if held_back else planner
        probed = self.prober.media
        plan = plan_round(ready, planner, whole, self.config.costs,
                          lambda job: self.reach.reach(job, probed[job.id]))  # fmt: skip
        for job, why in plan.never:
            self.metrics.placement_failures += 1
            self._fail(job, CapacityError(why))
        for job, placement in plan.start:
            if self._stopping:
                return
            self._launch(job, placement)
        running = [run.lease.placement.cpus for run in self._running.values()]
        bundles = capacity_request(running, plan.waiting, self._asked)
        if bundles is not None:
            self._asked = bundles
            task = asyncio.create_task(self._backend.request_capacity(bundles))
            task.add_done_callback(log_capacity_failure)

    def _states(self, *, placeable: bool = False) -> list[NodeState]:
        states = self.view.states(self._pool.used, self._pool.gpu_used(), placeable=placeable)
        return self.healer.placeable(states, time.time()) if placeable else states

    def _planner(self, *, placeable: bool = False) -> Planner:
        """A planner over the cluster as it is, with the configured policy and costs."""
        states = self._states(placeable=placeable)
        return Planner(states, self.config.policy, self.config.costs)

    def _launch(self, job: Job, placement: Placement, stitch: Stitch | None = None) -> None:
        """Start ``job``'s next attempt where it was placed (with ``stitch``: a split job,
        running already, joins its chunks)."""
        node = self.view.node(placement.node_id)
        media = self.prober.media[job.id]
        try:
            order, placement = order_for(self.reach, job, placement, media, node, stitch)
        except JobFailure as exc:
            self._fail(job, exc)
            return
        job.placement = placement.for_job(order.encoder)
        self.healer.launched(job, media, time.time())
        if stitch is None:
            self._move(job, JobStatus.RUNNING, placement.reason)
        else:
            self.table.save(job)
        self.encodes.start(job, placement, order, node.resources if node else {})

    async def _lost(self, node_id: str) -> None:
        """An encoder on ``node_id`` was lost: place nothing there for a while; ask Ray now."""
        self.view.suspect(node_id)
        await self._refresh_nodes()

    def _complete(self, job: Job, outcome: WorkOutcome) -> None:
        """Apply :func:`~cluster.control.rules.policy.decide` to an encode's outcome."""
        placed = job.placement
        present = placed is not None and self.view.node(placed.node_id) is not None
        fault = self.healer.outcome(job, outcome, node_present=present)
        facts = Facts(
            stopping=self._stopping,
            cancelling=job.id in self.encodes.cancelling,
            node_present=present,
            nvenc_elsewhere=self._nvenc_elsewhere(job, outcome),
            where=placed.where if placed else "?",
            backoff_s=self.config.retry_backoff_s,
            now=time.time(),
            crashed_on=crash_sites(job),
            poison_after=self.config.poison_after,
        )
        decision = decide(job, outcome, facts)
        if decision.action is Action.IGNORE:
            return
        reason = decision.reason
        self.healer.settle(job, fault, decision, facts.now)
        if outcome.progress:
            job.progress = outcome.progress
        if decision.counter is not None:
            setattr(self.metrics, decision.counter, getattr(self.metrics, decision.counter) + 1)
        if decision.action is Action.SUCCEED:
            job.result, job.notes = timed_result(job, outcome, facts.now), outcome.notes
            reason = self.splits.finished(job, outcome.elapsed_s, reason)
        elif decision.action is Action.REQUEUE:
            self.table.clear_partials(job)
            job.not_before = decision.not_before
        self._move(job, decision.status, reason, decision.code)
        self._wake_up()

    def _nvenc_elsewhere(self, job: Job, outcome: WorkOutcome) -> bool | None:
        """For NVENC failing on the placed GPU: mark that GPU's codec failed, and say
        whether the job can still run somewhere (``None``: not that failure)."""
        placed = job.placement
        if outcome.error_code is not ErrorCode.NVENC_UNAVAILABLE or not placed or not placed.gpu:
            return None
        if job.status is not JobStatus.RUNNING or outcome.attempt != job.attempts:
            return None
        why = nvenc_why(outcome)
        self.view.nvenc_failed(placed.gpu.uuid, job.spec.codec, why)
        log.warning("%s cannot encode %s with NVENC: %s", placed.where, job.spec.codec, why)
        return self._planner().never(demand_for(job, self.prober.media[job.id])) is None

    # ---- housekeeping ----------------------------------------------------------------

    async def _refresh_nodes(self) -> None:
        for node_id in await self.view.refresh():
            self._pool.forget_node(node_id)

    async def _housekeeping_loop(self) -> None:
        while not self._stopping:
            try:
                await self._refresh_nodes()
                for job_id, why in self.healer.overdue(time.time()):
                    log.warning("job %s: %s; killing its encode", job_id, why)
                    stop = asyncio.create_task(self.encodes.stop(job_id, why))
                    self._stops.add(stop)
                    stop.add_done_callback(self._stops.discard)
                self._pool.reap()
                self.table.forget_finished(time.time())
            except Exception:
                log.exception("housekeeping failed")
            self._wake.set()
            await asyncio.sleep(self.config.node_refresh_s)
