"""The coordinator: the API the client calls (:class:`~cluster.control.api.CoordinatorAPI`),
and the loops that probe, place and run jobs.

A plain asyncio class; :mod:`cluster.ray_edge.backend` runs it as one named, detached Ray
actor and gives it a :class:`~cluster.control.farm.backend.Backend` that talks to Ray
(:mod:`cluster.control.fakes` gives it one without Ray, for tests). It decides nothing
itself: pure rules decide (:mod:`cluster.control.rules`), and it applies what they return,
one state change at a time (:meth:`Coordinator._apply`). Its parts:

- records: the :class:`~cluster.control.records.jobtable.JobTable`, the one writer of a job;
- the farm: the :class:`~cluster.control.farm.view.ClusterView` (nodes and what their agents
  report), :class:`~cluster.control.farm.reach.MediaReach` (where media are seen), the
  :class:`~cluster.control.farm.prober.Prober` and the
  :class:`~cluster.control.farm.healing.Healer` (watchdog, quarantine, drains);
- running work: the :class:`~cluster.control.running.pool.EncoderPool` and the
  :class:`~cluster.control.running.encodes.Encodes` on it;
- the :class:`~cluster.control.graphrun.GraphRunner`, which runs any job graph (a job that
  becomes many tasks): the coordinator never learns what a chunk or a stitch is.

Time comes from ``now`` (a clock passed in), so tests never sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import replace
from itertools import islice
from typing import Any

from cluster.config import CoordinatorConfig
from cluster.control.farm.backend import Backend
from cluster.control.farm.healing import Healer
from cluster.control.farm.prober import ProbeFn, Prober
from cluster.control.farm.reach import IndexFn, MediaReach
from cluster.control.farm.view import ClusterView, NodeRecord
from cluster.control.farmapi import FarmAPI, MetricsSnapshot, TenantGauge
from cluster.control.graphrun import GraphRunner
from cluster.control.graphs import KINDS
from cluster.control.heap import Heap
from cluster.control.intake import check_all, confine_all, list_inputs, tenant_confines
from cluster.control.records.audit import AuditEntry, AuditLog
from cluster.control.records.jobtable import JobTable, Move
from cluster.control.records.metrics import JobMetrics, resident_mb
from cluster.control.records.store import JobStore
from cluster.control.records.webhooks import webhook_settings
from cluster.control.rules.dispatch import (
    MAX_AUTOSCALER_BUNDLES,
    Reach,
    capacity_request,
    demand_for,
    plan_round,
)
from cluster.control.rules.graph import Farm, GraphKind
from cluster.control.rules.policy import (
    Action,
    Facts,
    crash_sites,
    decide,
    failure_of,
    fault_of,
    nvenc_why,
    timed_result,
)
from cluster.control.running.encodes import Encodes, Running
from cluster.control.running.orders import order_for
from cluster.control.running.pace import Pace, media_seconds
from cluster.control.running.pool import EncoderPool
from cluster.errors import (
    CapacityError,
    ErrorCode,
    FramefleetError,
    InvalidTransition,
    JobFailure,
    JobNotFound,
    QueueFull,
    SpecError,
)
from cluster.media.encoders import Encoder
from cluster.media.probe import probe_async
from cluster.media.split import index_file
from cluster.media.work import WorkOutcome
from cluster.model.counters import JobCounter
from cluster.model.events import EventBatch, EventType
from cluster.model.jobs import Hardware, Job, JobKind, JobSpec, JobStatus
from cluster.model.progress import ProgressReport, ProgressSnapshot
from cluster.model.tenancy import DEFAULT_TENANT, Caller, Tenants, tenant_of
from cluster.nodes.agent import NodeInfo
from cluster.scheduling.eta import Forecast, forecast_steps
from cluster.scheduling.fairshare import FairShare
from cluster.scheduling.finish import FinishTime, Replay, kinds_of
from cluster.scheduling.planner import Demand, NodeState, Placement, Planner, queue_key
from cluster.scheduling.queue import ReadyQueue
from cluster.scheduling.speeds import Estimate, SpeedSample

log = logging.getLogger("framefleet.coordinator")
DISPATCH_DEPTH = 1000
"""A round stops looking down the queue after this many jobs that could not start (like
Slurm's queue depth): with the farm full it stops at the first; past the depth, what
waits is looked at again as the jobs ahead of it start."""
SCAN_PER_ROUND = 2000
"""Queued jobs not yet ready (being probed, backing off) looked at in one round, in
turn: 100,000 just submitted cost a round a few milliseconds, not the whole batch."""
SETTLE_PER_ROUND = 200
"""Queued jobs offered to the job graphs in one round (~0.5 ms each: a decision saved);
more wait for the next round, so a big batch never stalls the head for long."""
SHAPES_S = 1.0
"""How often a round reads the waiting jobs' shapes for the autoscaler."""
KEEP_PLANNER_S = 1.0
"""The kept planner is rebuilt from the cluster as it is at most this often (and on
every node refresh): between, it is changed by what starts and ends."""
TENANTS_KEY = "tenants"
SPEEDS_FILE = "speeds.sqlite3"
FORECAST_S = 2.0
FORECAST_SLICE_S = 0.005
"""A forecast holds the head's loop at most about this long at a time."""
SLICE_JOBS = 200
"""Jobs a forecast looks at between two looks at the clock."""
FORECAST_DEPTH = 2000
"""The queued jobs a forecast plays forward, in dispatch order (those further back get
their forecast as they come nearer): a forecast of 100,000 would stall the head."""
"""How often queued and running jobs' predicted finishes are worked out again."""
SAVED_AT_ONCE = 1000
ETA_EVENTS = 200
"""At most this many ``eta`` events per forecast (the queue's head first): one late job
moves every prediction behind it, and followers must not be flooded."""
ETA_MOVED_S = 60.0
"""A prediction that moved this much (or a tenth of the wait) is an ``eta`` event."""
LOCAL_ACTOR = "local"
"""Who the audit trail names for a client that called without a token (the CLI on a
machine of the cluster)."""
IDLE_REFRESH_S = 10.0
"""How often housekeeping looks while no job is queued or running (a node that joins an
idle farm is seen within this; a submit wakes it at once)."""


def log_capacity_failure(task: asyncio.Task[None]) -> None:
    """A done callback for the autoscaler request: say why it failed, if it did."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("asking the autoscaler for capacity failed: %s", task.exception())


class Coordinator:
    def __init__(
        self,
        config: CoordinatorConfig,
        backend: Backend,
        *,
        encoders: tuple[Encoder, ...] | None = None,
        probe: ProbeFn = probe_async,
        index: IndexFn = index_file,
        kinds: tuple[GraphKind, ...] = KINDS,
        now: Callable[[], float] = time.time,
        heap: Heap | None = None,
    ) -> None:
        """``probe`` and ``index`` read the media this machine sees; ``kinds``: the kinds
        of job graphs a job may become; ``now``: the clock; ``heap``: the collector of a
        process that is the head and nothing else (its long-lived objects frozen; see
        :mod:`cluster.control.heap`), ``None`` in a process shared with other work."""
        self.config = config
        self._backend = backend
        self._now = now
        self.table = JobTable(
            JobStore(config.db_path),
            max_attempts=config.max_attempts,
            retention_s=config.finished_retention_s,
            idempotency_ttl_s=config.idempotency_ttl_s,
            webhooks=webhook_settings(config),
            now=now,
        )
        self.tenants = Tenants.from_list(self.table.store.setting(TENANTS_KEY) or [])
        self.pace = Pace(config.data_dir / SPEEDS_FILE, config.costs)
        self._forecast_at = 0.0
        self._forecast_every = FORECAST_S
        self.heap = heap
        self._forecasting_task: asyncio.Task[None] | None = None
        """The forecast running in slices, if one is."""
        self._eta_events = ETA_EVENTS
        self._told: dict[str, float] = {}
        """Job -> the predicted finish its followers were last told (an ``eta`` event)."""
        self._kinds_at: tuple[float, list[tuple[tuple[str | None, float], str]]] = (
            -math.inf, [])  # fmt: skip
        self._first_forecasts: list[Job] = []
        """Jobs given their first prediction this round (saved together)."""
        self.audit_log = AuditLog.of(config.data_dir)
        self.view = ClusterView(backend.nodes, default_cap=config.max_jobs_per_node,
                                local_encoders=encoders, now=now)  # fmt: skip
        self.reach = MediaReach(config, self.view, backend, probe, index)
        self.reach.learned = self._learned_speed
        self.prober = Prober(config.media_roots, config.store, wake=self._wake_up,
                             backoff_s=config.retry_backoff_s, probe=self.reach.probe)  # fmt: skip
        self.pool = EncoderPool(backend.create_encoder, idle_s=config.encoder_idle_s)
        self.encodes = Encodes(self.pool, on_outcome=self._complete, on_lost=self._lost)
        self.healer = Healer(config, self.table.metrics, now=now)
        self.healer.load(self.table.store)
        self.graphs = GraphRunner(self.table, self.reach, stop=self.encodes.stop,
                                  wake=self._wake_up, kinds=kinds, now=now,
                                  probe=self.prober.probed)  # fmt: skip
        self.farm = FarmAPI(table=self.table, view=self.view, healer=self.healer,
                            encodes=self.encodes, states=self._states,
                            refresh=self._refresh_nodes, wake=self._farm_changed,
                            tenants=self._tenant_gauges)  # fmt: skip
        self._ready = ReadyQueue(config.aging_s)
        """Queued jobs ready to place (probed, past their backoff, their graph decided),
        in dispatch order."""
        self._unsettled: dict[str, Job] = {}
        """Queued jobs not (or no longer) known to be ready: looked at each round."""
        self._kept: Planner | None = None
        """The nodes that may take work, with what runs on them: kept across rounds."""
        self._kept_at = -math.inf
        self._kinds = 0
        """Kinds of node among the kept planner's (placement by finish time needs two)."""
        self._estimates: dict[str, Estimate] = {}
        """Job -> its running encode's predicted speed, as estimated at its start."""
        self._committed: dict[str, Placement] = {}
        """Job -> what its running encode holds in the kept planner."""
        self._asked: list[dict[str, float]] = []
        self._shapes_at = -math.inf
        """When the waiting jobs' shapes were last read for the autoscaler."""
        """The last resource shapes asked of the autoscaler."""
        self._stopping = False
        self._wake = asyncio.Event()
        """Set: a dispatch round is due."""
        self._work = asyncio.Event()
        """Set: something happened; housekeeping at rest looks now."""
        self._tasks: list[asyncio.Task[None]] = []
        self._stops: set[asyncio.Task[bool]] = set()
        """Encodes the watchdog is stopping."""
        self._turns: dict[str, tuple[asyncio.Lock, int]] = {}
        """Per job: the lock its cancels and retries take turns on, and how many hold or
        wait for it."""
        self._started_at = now()
        requeued = self.table.recover()
        for job in requeued:
            self.reach.clear_partials(job)  # what its attempt left half-written
        if requeued:
            log.warning("re-queued %d job(s) that were running before a restart", len(requeued))

    @property
    def counters(self) -> JobMetrics:
        """What happens to jobs, counted (what /metrics exports)."""
        return self.table.metrics

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start dispatching (needs a running event loop)."""
        if not self._tasks:
            self._apply(self.graphs.unfinished())
            self._tasks = [
                asyncio.create_task(self._dispatch_loop()),
                asyncio.create_task(self._housekeeping_loop()),
                asyncio.create_task(self.table.webhooks.run()),
            ]

    async def shutdown(self) -> None:
        """Stop encodes (killing ffmpeg, dropping partial files); running jobs are re-queued."""
        self._stopping = True
        if self._forecasting_task is not None:
            self._forecasting_task.cancel()
        await self.encodes.shutdown()
        await self.graphs.shutdown()
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
            "running": len(self.encodes.running),
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

    async def submit(
        self, spec: JobSpec, idempotency_key: str | None = None, caller: Caller | None = None
    ) -> Job:
        """Queue a job. A repeated ``idempotency_key`` returns the job it first made;
        ``caller``: who submits it (the job is its tenant's; its token is bounded by
        ``max_queued_jobs``, its tenant by its ``max_queued``). ``None``: a local client,
        of the default tenant."""
        (job,) = await self._queue([spec], idempotency_key, batch=False, caller=caller)
        return job

    async def submit_many(
        self,
        specs: list[JobSpec],
        idempotency_key: str | None = None,
        caller: Caller | None = None,
    ) -> list[Job]:
        """Queue all of ``specs`` or none (the first refusal says which one and why)."""
        return await self._queue(specs, idempotency_key, batch=True, caller=caller)

    async def get(self, job_id: str, caller: Caller | None = None) -> Job:
        """A job; one of another tenant than ``caller``'s is not found."""
        return self._visible(job_id, caller).snapshot()

    async def list_jobs(
        self,
        *,
        status: str | None = None,
        kind: str | None = None,
        after_seq: int = 0,
        limit: int = 100,
        caller: Caller | None = None,
        tenant: str | None = None,
    ) -> list[Job]:
        """Jobs in submission order after ``after_seq`` (a cursor), filtered: ``caller``'s
        tenant's only, unless it sees every tenant (then ``tenant``'s, if given)."""
        if caller is not None and not caller.every_tenant:
            tenant = caller.tenant
        jobs = self.table.query(status=status, kind=kind, after_seq=after_seq, limit=limit,
                                tenant=tenant)  # fmt: skip
        return [job.snapshot() for job in jobs]

    async def list_inputs(
        self, prefix: str, limit: int = 1000, caller: Caller | None = None
    ) -> list[str]:
        """The video objects under an ``s3://`` prefix (inside the roots of ``caller``'s
        tenant), for a batch."""
        return await list_inputs(prefix, self._confines(caller), limit)

    def _visible(self, job_id: str, caller: Caller | None) -> Job:
        """The job, if ``caller`` may know it exists (else not found, as a wrong id)."""
        job = self.table.get(job_id)
        if caller is not None and not caller.sees(job.tenant):
            raise JobNotFound(job_id)
        return job

    async def cancel(self, job_id: str, caller: Caller | None = None) -> Job:
        """Cancel a job; idempotent. It returns once its ffmpeg (or its tasks') is killed
        and what they wrote removed: ``cancelled``. A job whose killed encoder Ray has not
        yet confirmed dead (a hung node) is returned still ``running``; it becomes
        ``cancelled`` when that is confirmed. Cancels and retries of one job take turns."""
        async with self._turn(job_id):
            job = self._visible(job_id, caller)
            was = job.status
            why, code = "cancelled by user", ErrorCode.CANCELLED
            if job.status in (JobStatus.QUEUED, JobStatus.WAITING):
                self._apply([Move(job, JobStatus.CANCELLED, why, code, since=job.status)])
            elif job.status is JobStatus.RUNNING:
                if self.encodes.alive(job_id):
                    await self.encodes.stop(job_id)  # its outcome ends it, cancelled
                if job.status is JobStatus.RUNNING and not self.encodes.alive(job_id):
                    # its tasks run (the graph stops them), or its encoder was lost
                    self._apply([Move(job, JobStatus.CANCELLED, why, code, since=job.status)])
            await self.graphs.settled(job)
            if not was.terminal:
                self._audit(caller, "cancel", job, {"was": str(was), "now": str(job.status)})
            return job.snapshot()

    async def retry(self, job_id: str, caller: Caller | None = None) -> Job:
        """Queue a failed or cancelled job again. A job that has not ended cannot be
        retried (cancel it first); one whose last encoder is still being stopped waits
        for it, so no two attempts of a job ever run at once."""
        async with self._turn(job_id):
            job = self._visible(job_id, caller)
            if job.task is not None:
                raise SpecError(f"job {job_id} is a task of job {job.task.parent}; "
                                "retry that job")  # fmt: skip
            if not job.status.terminal:
                raise InvalidTransition(
                    f"job {job_id} is {job.status}; only a failed or cancelled job can be "
                    "retried (cancel it first, or wait for it to end)"
                )
            await self.graphs.settled(job)  # its last run's tasks are stopped, files gone
            encodes = [job_id, *(t.id for t in self.table.tasks_of(job).values())]
            for one in [i for i in encodes if self.encodes.alive(i)]:
                if not await self.encodes.stop(one):
                    raise InvalidTransition(
                        f"job {job_id}'s last encoder has not confirmed its end yet (its "
                        "node may be unreachable); retry once it has"
                    )
            was = job.status
            self._apply([Move(job, JobStatus.QUEUED, "retry requested by user",
                              since=job.status)])  # fmt: skip
            self._audit(caller, "retry", job, {"was": str(was)})
            self._wake_up()
            return job.snapshot()

    @contextlib.asynccontextmanager
    async def _turn(self, job_id: str) -> AsyncIterator[None]:
        """One cancel or retry of ``job_id`` at a time (the others wait their turn)."""
        lock, waiting = self._turns.get(job_id, (asyncio.Lock(), 0))
        self._turns[job_id] = (lock, waiting + 1)
        try:
            async with lock:
                yield
        finally:
            lock, waiting = self._turns[job_id]
            if waiting > 1:
                self._turns[job_id] = (lock, waiting - 1)
            else:
                del self._turns[job_id]

    async def events(
        self, after: int = 0, job_ids: list[str] | None = None, timeout: float = 30.0
    ) -> EventBatch:
        """Job events after ``after``; waits up to ``timeout`` s for the first one."""
        ids = frozenset(job_ids) if job_ids else None
        return await self.table.events.wait(after, ids, min(timeout, 60.0))

    async def event_cursor(self) -> int:
        """The newest event's ``seq``: follow from here to see only what happens next."""
        return self.table.events.last_seq

    async def nodes(self, caller: Caller | None = None) -> list[NodeRecord]:
        """Nodes with CPUs, GPUs (readings, NVENC codec states) and running jobs; a caller
        of one tenant sees its own tenant's jobs only, and of a quarantine its state and
        until when (not the failures behind it: they name other tenants' jobs)."""
        nodes = self.farm.nodes()
        if caller is None or caller.every_tenant:
            return nodes

        def mine(ids: tuple[str, ...]) -> tuple[str, ...]:
            jobs = self.table.jobs
            return tuple(i for i in ids if i in jobs and caller.sees(jobs[i].tenant))

        def told(q: Mapping[str, Any] | None) -> dict[str, Any] | None:
            return {k: q[k] for k in ("state", "until") if k in q} if q else None

        return [
            replace(n, running_jobs=mine(n.running_jobs), quarantine=told(n.quarantine),
                    gpus=tuple(replace(g, running_jobs=mine(g.running_jobs),
                                       quarantine=told(g.quarantine)) for g in n.gpus))
            for n in nodes
        ]  # fmt: skip

    async def metrics(self) -> MetricsSnapshot:
        """Everything /metrics exports (see :meth:`FarmAPI.metrics`)."""
        return self.farm.metrics()

    async def set_node_cap(self, node_id: str, max_jobs: int | None) -> None:
        """Change a node's concurrent-job cap while running (``None``: only cores limit)."""
        self.farm.set_node_cap(node_id, max_jobs)

    async def drain(self, name: str, on: bool = True, caller: Caller | None = None) -> NodeRecord:
        """Drain a node (running jobs finish, nothing new is placed there; it stays drained
        across restarts) or, with ``on=False``, put it back in service."""
        node = await self.farm.drain(name, on)
        self._record(caller, "drain" if on else "undrain", node.address, {"node_id": node.node_id})
        return node

    async def release(self, name: str, caller: Caller | None = None) -> str:
        """Lift the quarantine of a node or GPU (by UUID); returns what was released."""
        released = await self.farm.release(name)
        self._record(caller, "release", released, {"asked": name})
        return released

    # ---- tenants and the audit trail -------------------------------------------------

    async def get_tenants(self) -> Tenants:
        return self.tenants

    async def set_tenants(self, tenants: Tenants, caller: Caller | None = None) -> bool:
        """Use ``tenants`` (weights, limits, media roots) from now on; kept across
        restarts. Each tenant's roots must lie inside the farm's. Whether they changed."""
        for tenant in tenants.known:
            tenant_confines(self.config, tenant)  # a ConfigError if a root is outside
        if tenants == self.tenants:
            return False
        self.tenants = tenants
        self.table.store.set_setting(TENANTS_KEY, tenants.to_list())
        self._record(caller, "set-tenants", "tenants", {"tenants": tenants.to_list()})
        self._wake_up()  # shares or limits changed: the queue is looked at again
        return True

    async def speeds(
        self, samples: bool = False, after: int = 0, limit: int = 5000
    ) -> dict[str, Any]:
        """What the farm learned: each device's factor over the static table and its
        runs; with ``samples``, a page of the kept runs after ``after`` (a ``seq``;
        ``framefleet speeds export`` reads them all, a page at a time)."""
        book = self.pace.book
        devices = [{"device": key, "factor": round(factor, 3), "runs": runs}
                   for key, factor, runs in book.model.devices()]  # fmt: skip
        found: dict[str, Any] = {"devices": devices, "runs": book.model.samples}
        if samples:

            def page() -> list[dict[str, Any]]:
                return [{"seq": seq, **s.to_dict()} for seq, s in book.page(after, limit)]

            found["samples"] = await asyncio.to_thread(page)
        return found

    async def load_speeds(self, samples: list[dict[str, Any]], caller: Caller | None = None) -> int:
        """Import measured speeds (another farm's export: a new farm starts warm); how
        many were new. A sample that does not read is a :class:`SpecError`."""
        try:
            parsed = [SpeedSample.from_dict(s) for s in samples]
        except (TypeError, KeyError, ValueError) as exc:
            raise SpecError(f"a speed sample does not read ({exc}); import what "
                            "`framefleet speeds export` wrote") from None  # fmt: skip
        added = await asyncio.to_thread(self.pace.book.load, parsed)
        self._record(caller, "import-speeds", "speeds", {"given": len(parsed), "new": added})
        self._forecast(force=True)
        return added

    async def audit(
        self,
        after: int = 0,
        limit: int = 100,
        tenant: str | None = None,
        action: str | None = None,
    ) -> list[AuditEntry]:
        """The audit trail after ``after`` (a ``seq``), oldest first, filtered."""
        return await asyncio.to_thread(self.audit_log.read, after=after, limit=limit,
                                       tenant=tenant, action=action)  # fmt: skip

    def _audit(self, caller: Caller | None, action: str, job: Job, detail: dict[str, Any]) -> None:
        self._record(caller, action, job.id, detail, tenant=tenant_of(job.tenant))

    def _record(
        self,
        caller: Caller | None,
        action: str,
        target: str,
        detail: dict[str, Any],
        *,
        tenant: str | None = None,
    ) -> None:
        """One change in the audit trail (a local client without a token is ``local``)."""
        who = caller.name if caller is not None else LOCAL_ACTOR
        where = tenant or (caller.tenant if caller is not None else DEFAULT_TENANT)
        try:
            self.audit_log.add(who, where, action, target, detail=detail, at=self._now())
        except sqlite3.Error as exc:  # never lose the change itself over its record
            log.error("could not record %s of %s by %s in the audit trail: %s",
                      action, target, who, exc)  # fmt: skip

    async def report_progress(self, job_id: str, attempt: int, snapshot: ProgressSnapshot) -> None:
        """One encode's progress (a node without a batching agent); see :meth:`report_batch`."""
        self.apply_progress([ProgressReport(job_id, attempt, snapshot)])

    async def report_batch(self, reports: list[ProgressReport]) -> None:
        """A node's encodes' progress since its last batch (its agent sends one batch per
        interval: the head's calls grow with the nodes, not with the encodes)."""
        self.apply_progress(reports)

    def apply_progress(self, reports: Iterable[ProgressReport]) -> int:
        """Record progress in one step: stale attempts and finished jobs are ignored, a
        job's progress is kept in memory (no SQLite write), subscribers are woken once,
        and a job graph's progress is recomputed once per batch, not once per task.
        Returns how many reports were current."""
        applied = 0
        parents: dict[str, Job] = {}
        with self.table.events.held():
            for job_id, attempt, snapshot in reports:
                job = self.table.jobs.get(job_id)
                if job is None or job.status is not JobStatus.RUNNING or attempt != job.attempts:
                    continue
                applied += 1
                self.table.set_progress(job, snapshot)
                self.healer.progressed(job_id, snapshot)
                if job.task is not None:
                    parents.setdefault(job.task.parent, job)
            for task in parents.values():
                self.graphs.progressed(task)
        return applied

    # ---- admission -------------------------------------------------------------------

    async def _queue(
        self, specs: list[JobSpec], key: str | None, *, batch: bool, caller: Caller | None
    ) -> list[Job]:
        """Admit ``specs`` (all or none; see :mod:`~cluster.control.intake`), inside the
        media roots of ``caller``'s tenant."""
        owner = caller.owner if caller is not None else None
        tenant = caller.tenant if caller is not None else None
        confined = confine_all(specs, self._confines(caller), batch=batch)
        if key is not None:  # the same request returns its first job(s), outputs now written
            first = self.table.known(key, confined, batch=batch)
            if first is not None:
                return [job.snapshot() for job in first]
        self._check_room(len(specs), owner, tenant)
        await self.view.await_reports()  # admission judges encoders by what nodes report
        await check_all(confined, self.view.encoders(), self.config, batch=batch,
                        where=self.reach.on_head, metrics=self.view.metrics())  # fmt: skip
        self._check_room(len(specs), owner, tenant)  # again: others were admitted meanwhile
        jobs = self.table.add(confined, key, batch=batch, owner=owner, tenant=tenant)
        if batch:
            detail: dict[str, Any] = {"jobs": len(jobs), "ids": [j.id for j in jobs]}
            self._record(caller, "submit", f"batch of {len(jobs)}", detail, tenant=tenant)
        else:
            self._audit(caller, "submit", jobs[0], {"kind": str(jobs[0].spec.kind)})
        self._wake_up()
        return [job.snapshot() for job in jobs]

    def _confines(self, caller: Caller | None) -> CoordinatorConfig:
        """The config whose roots ``caller``'s paths must lie in: its tenant's, if any."""
        if caller is None:
            return self.config
        return tenant_confines(self.config, self.tenants.get(caller.tenant))

    def _check_room(self, adding: int, owner: str | None, tenant: str | None) -> None:
        """A :class:`QueueFull` if ``owner`` would have more than ``max_queued_jobs``, or
        ``tenant`` more than its ``max_queued``."""
        cap = self.config.max_queued_jobs
        queued = self.table.queued_of(owner)
        if cap and queued + adding > cap:
            room = max(cap - queued, 0)
            raise QueueFull(
                f"{queued} of your jobs are queued and at most {cap} may be (room for "
                f"{room} more); submit again once some have started, or ask for a higher "
                "FRAMEFLEET_MAX_QUEUED_JOBS"
            )
        bound = self.tenants.get(tenant).max_queued
        queued = self.table.queued_in(tenant)
        if bound is not None and queued + adding > bound:
            room = max(bound - queued, 0)
            raise QueueFull(
                f"tenant {tenant_of(tenant)} has {queued} jobs queued and may have at most "
                f"{bound} (room for {room} more); submit again once some have started, or "
                "ask an admin to raise the tenant's max_queued"
            )

    # ---- state changes ---------------------------------------------------------------

    def _apply(self, moves: Iterable[Move]) -> int:
        """Make each state change, then what follows from it for its job's graph: one at
        a time, in order (never one inside another); a stale one is dropped. Returns how
        many of ``moves`` (not of what followed) were made."""
        pending = deque(moves)
        made, first = 0, len(pending)
        while pending:
            move = pending.popleft()
            first -= 1
            if not self.table.move(move):
                log.debug("dropped a stale move of job %s to %s", move.job.id, move.status)
                continue
            made += first >= 0
            job = move.job
            if move.status.terminal:
                self.encodes.cancelling.discard(job.id)
                if move.status is not JobStatus.SUCCEEDED:  # a success renamed its own
                    self.reach.clear_partials(job)  # e.g. what a lost worker's ffmpeg wrote
            elif move.status is JobStatus.QUEUED:
                self._wake_up()  # placed in the next round
            pending.extend(self.graphs.moved(job))
        return made

    def _farm_changed(self) -> None:
        """A node was drained, capped or released: the next round plans on the nodes as
        they are now."""
        self._kept = None
        self._wake_up()

    def _wake_up(self) -> None:
        if not self._stopping:
            self._wake.set()
            self._work.set()  # housekeeping back to its busy pace

    # ---- dispatch --------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            try:
                self._dispatch()
            except Exception:  # a bug here must not stop all dispatching
                log.exception("dispatch failed")
            await asyncio.sleep(0)  # a round that asked for another lets the rest run first

    def dispatch_now(self) -> None:
        """One dispatch round now (the loop runs one whenever something changes): once it
        returns, what could start has started (tests ask this instead of sleeping)."""
        self._dispatch()

    def _dispatch(self) -> None:
        """One round: what probes and reads found is recorded, the queued jobs that
        changed are offered to the job graphs (those ready join the ready queue), and
        the ready queue's head is placed. A round costs what changed, not the queue."""
        self._apply(self._probed())
        self._apply(self.graphs.reads_done())
        now = self._now()
        held = self._settle(now)
        if not self._ready or not self.view.nodes:
            return  # nothing to place, or no node yet: wait for the cluster
        self._place(now, held=held)
        self._forecast_later()  # soon after a submit's probe (at most every FORECAST_S)

    def _settle(self, now: float) -> bool:
        """Look at the queued jobs not known to be ready: each one ready joins the ready
        queue. Whether others are held (being probed, backing off, their graph reading
        or planning): work is coming that no core is spare for."""
        self._queue_changes()
        held = False
        offered = 0
        looked = list(islice(self._unsettled.values(), SCAN_PER_ROUND))
        if len(looked) < len(self._unsettled):
            held = True  # the rest are looked at in the next rounds
        for job in looked:
            if offered >= SETTLE_PER_ROUND:  # the rest in the next round: a batch of
                held = True  # 100,000 jobs must not hold progress and starts for seconds
                self._wake_up()
                break
            if job.id in self._unsettled:  # looked at: behind those not looked at yet
                self._unsettled[job.id] = self._unsettled.pop(job.id)
            if job.status is not JobStatus.QUEUED:
                self._unsettled.pop(job.id, None)
                continue
            if job.not_before > now:
                held = True
                continue
            if job.input_media is None:
                self.prober.ensure(job)
                held = True
                continue
            placeable, moves = self.graphs.consider(job, self._farm(job))
            offered += placeable or bool(moves)  # what did work (a job reading: nothing)
            self._apply(moves)
            if placeable and job.status is JobStatus.QUEUED:
                finishing = job.task is not None and job.task.finishing
                self._ready.add(job.id, priority=job.spec.priority, seq=job.seq,
                                since=job.updated_at, now=now, finishing=finishing,
                                tenant=tenant_of(job.tenant))  # fmt: skip
                self._unsettled.pop(job.id, None)
            elif job.status is JobStatus.QUEUED or moves:
                held = True  # its graph reads or plans, or grew tasks: work is coming
            self._queue_changes()  # what its moves queued or ended
        return held

    def _queue_changes(self) -> None:
        """Jobs queued again or no longer queued: out of the ready queue, and looked at
        again if queued."""
        for job_id in self.table.queue.changes():
            self._ready.discard(job_id)
            job = self.table.queue.get(job_id)
            if job is not None:
                self._unsettled[job_id] = job
            else:
                self._unsettled.pop(job_id, None)

    def _probed(self) -> list[Move]:
        """What the probes found: recorded on their jobs (a probe job is done)."""
        moves: list[Move] = []
        for job_id, found in self.prober.take():
            job = self.table.jobs.get(job_id)
            if job is None or job.status is not JobStatus.QUEUED:
                continue
            queued, running = JobStatus.QUEUED, JobStatus.RUNNING
            if isinstance(found, FramefleetError):
                moves.append(Move(job, JobStatus.FAILED, str(found), found.code, since=queued))
                continue
            self.table.set_media(job, found)
            if job.spec.kind is JobKind.PROBE:
                media = {"media": found.to_dict()}
                moves += [
                    Move(job, running, "probed by the coordinator", since=queued),
                    Move(job, JobStatus.SUCCEEDED, "probed", result=media, since=running),
                ]
        return moves

    def _place(self, now: float, *, held: bool = False) -> None:
        """Place the ready queue's head in order (finishing tasks first: each ends a job),
        tenants taking turns by their share; ``held``: other queued jobs will be ready
        soon (no core is spare for them)."""
        planner = self._kept_planner(now)
        held_back = self.view.has_suspects or self.healer.holds_back()
        whole = self._planner() if held_back else planner
        queues = self._ready.tenants(now)
        fair = self._fair_share() if len(queues) > 1 or self.tenants.known else None
        demands: dict[str, tuple[Job, Demand]] = {}
        ordered = self._ordered(now, queues, fair, demands)
        # What runs is told to the autoscaler first (and capped): so many waiting shapes,
        # read down the queue at most every SHAPES_S (else the round stops at the first).
        shapes = now - self._shapes_at >= SHAPES_S
        bundles = max(MAX_AUTOSCALER_BUNDLES - len(self.encodes.running), 1) if shapes else 1
        plan = plan_round(ordered, planner, whole, self.config.costs, self._reach,
                          others_waiting=held, fair=fair, finish=self._finish_time(now),
                          tenants=set(queues), depth=DISPATCH_DEPTH, bundles=bundles,
                          interleaved=True)  # fmt: skip
        for job, why in plan.never:
            self.counters.count(JobCounter.PLACEMENT_FAILURES)
            failure = CapacityError(why)
            self._apply([Move(job, JobStatus.FAILED, str(failure), failure.code,
                              since=JobStatus.QUEUED)])  # fmt: skip
        for i, (job, placement) in enumerate(plan.start):
            if self._stopping or not self._launch(job, placement):
                planner.release(placement)  # not started: its room is free again
                if self._stopping:
                    for _, rest in plan.start[i + 1 :]:
                        planner.release(rest)
                    return
        for job, _ in demands.values():  # queued for a faster kind of node: on its forecast
            waits = plan.waits.get(job.id)
            if waits is not None and job.status is JobStatus.QUEUED:
                job.forecast = {**(job.forecast or {}), "waits": waits}
            elif job.forecast and "waits" in job.forecast:
                job.forecast = {k: v for k, v in job.forecast.items() if k != "waits"}
        self._queue_changes()
        if shapes and (plan.waiting or self._asked):
            self._shapes_at = now
            self._ask_capacity(plan.waiting)

    def _ordered(
        self,
        now: float,
        queues: dict[str, Iterator[str]],
        fair: FairShare | None,
        demands: dict[str, tuple[Job, Demand]],
    ) -> Iterator[tuple[Job, Demand]]:
        """The ready jobs with what each asks of a node, in dispatch order (tenants
        interleaved by ``fair``), read lazily; ``demands`` gets each one read."""

        aging = self.config.aging_s

        def ready(ids: Iterable[str]) -> Iterator[tuple[tuple[Any, ...], Job, Demand]]:
            for job_id in ids:
                job = self.table.jobs.get(job_id)
                if job is None or job.input_media is None:  # indexed only once probed
                    continue
                demands[job_id] = (job, demand_for(job, job.input_media))
                finishing = job.task is not None and job.task.finishing
                key = queue_key(job.spec.priority, job.seq, now - job.updated_at, aging)
                yield (not finishing, *key), *demands[job_id]

        if fair is not None and len(queues) > 1:
            return fair.interleave({t: ready(ids) for t, ids in queues.items()})
        return ((job, demand) for _, job, demand in ready(self._ready.ordered(now)))

    def _ask_capacity(self, waiting: list[dict[str, float]]) -> None:
        """Tell the autoscaler (if any) what runs and what waits, when that changed."""
        runs = islice(self.encodes.running.values(), MAX_AUTOSCALER_BUNDLES)  # all it keeps
        asked = capacity_request([r.lease.placement.cores for r in runs], waiting, self._asked)
        if asked is not None:
            self._asked = asked
            task = asyncio.create_task(self._backend.request_capacity(asked))
            task.add_done_callback(log_capacity_failure)

    def _kept_planner(self, now: float) -> Planner:
        """The placeable nodes with what runs on them: rebuilt from the cluster as it is
        (its readings, drains, quarantines, the pool) after a node refresh or at most
        every :data:`KEEP_PLANNER_S`; between, kept and changed by what starts (placed
        on it) and what ends (released from it)."""
        if self._kept is None or now - self._kept_at >= KEEP_PLANNER_S:
            states = self._states(placeable=True)
            self._kept = Planner(states, self.config.policy, self.config.costs)
            self._kept_at = now
            self._kinds = kinds_of(states)
        return self._kept

    def _run_seconds(
        self, job: Job, node_id: str, hardware: Hardware, gpu: str | None, cores: float
    ) -> float:
        """How long ``job`` should run on ``node_id`` (learned speeds)."""
        est = self.pace.estimate(job, self.view.node(node_id), node_id, hardware, gpu, cores)
        return est.seconds(media_seconds(job))

    def _learned_speed(self, job: Job) -> float | None:
        """The slowest kind of node's learned speed for ``job`` (whether moving its media
        is worth it: against how long it encodes), ``None`` before any run taught one."""
        slowest = None
        if not self.pace.book.model.samples:
            return None
        now = self._now()
        if now - self._kinds_at[0] >= 1.0:  # worked out at most every second
            kinds = {(n.gpus[0].name if n.gpus else None, n.cpus): n.node_id
                     for n in self.view.nodes if n.cpus > 0}  # fmt: skip
            self._kinds_at = (now, list(kinds.items()))
        for (gpu, cores), node_id in self._kinds_at[1]:  # one node of each kind
            hardware = (
                Hardware.GPU if gpu and job.spec.hardware is not Hardware.CPU else Hardware.CPU
            )
            est = self.pace.estimate(job, self.view.node(node_id), node_id, hardware,
                                     gpu if hardware is Hardware.GPU else None,
                                     min(cores, 2.0))  # fmt: skip
            if est.basis != "static":
                slowest = est.speed if slowest is None else min(slowest, est.speed)
        return slowest

    def _finish_time(
        self, now: float, states: list[NodeState] | None = None, *, may_wait: bool = True
    ) -> FinishTime | None:
        """The kinds among ``states`` (default: the placeable nodes), for placement by
        finish time (``None``: a farm of one kind: best fit places it)."""
        if states is None:
            self._kept_planner(now)
            if self._kinds < 2:
                return None
            states = self._states(placeable=True)  # what the kinds' planners start from
        ends = []
        for job_id, run in self.encodes.running.items():
            job = self.table.jobs.get(job_id)
            if job is not None and job.forecast and job.forecast.get("finish_at"):
                ends.append((run.lease.node_id, float(job.forecast["finish_at"])))
        names = {n.node_id: n.hostname or n.address for n in self.view.nodes}
        return FinishTime.of(states, names, ends, self._run_seconds, now,
                             policy=self.config.policy, costs=self.config.costs,
                             may_wait=may_wait)  # fmt: skip

    def _fair_share(self) -> FairShare:
        """The tenants' usage as the round starts: what their running encodes hold, of
        the GPUs and cores of the nodes in service."""
        running = []
        for job_id, run in self.encodes.running.items():
            job = self.table.jobs.get(job_id)
            running.append((job.tenant if job else None, run.lease.placement))
        states = self._states()
        gpus = sum(len(n.gpus) for n in states)
        return FairShare.of(self.tenants, running, gpus, sum(n.cpus for n in states))

    # ---- forecasts ---------------------------------------------------------------------

    def _forecast(self, *, force: bool = False) -> None:
        """Predicted starts and finishes, now (``force``: even if one ran lately); the
        loop's own forecasts run in slices instead (:meth:`_forecast_later`)."""
        if not force and not self._forecast_due():
            return
        if self._forecasting_task is not None:
            self._forecasting_task.cancel()  # this one is newer (one not begun never clears
            self._forecasting_task = None  # itself: a task cancelled before its first step)
        took = time.perf_counter()
        for _ in self._forecasting():
            pass
        self._forecast_took(time.perf_counter() - took)

    def _forecast_due(self) -> bool:
        now = self._now()
        if now - self._forecast_at < self._forecast_every:
            return False
        self._forecast_at = now
        return True

    def _forecast_took(self, took: float) -> None:
        # A big queue on a farm of many kinds costs more to play forward: then less often,
        # so forecasts never take more than a tenth of the coordinator's time.
        self._forecast_every = max(FORECAST_S, 10 * took)

    def _forecast_later(self) -> None:
        """Start a forecast if one is due (at most every :data:`FORECAST_S`) and none
        runs. It runs beside the loop's other work, a slice of at most
        :data:`FORECAST_SLICE_S` at a time: a forecast of 20,000 running encodes takes
        a few hundred milliseconds, which progress, events and starts no longer wait."""
        if self._forecasting_task is not None or self._stopping:
            return
        if not self._forecast_due():
            return
        self._forecasting_task = asyncio.create_task(self._forecast_in_slices())

    async def _forecast_in_slices(self) -> None:
        steps, took = self._forecasting(), 0.0
        try:
            while True:
                started = time.perf_counter()
                until = started + FORECAST_SLICE_S
                for _ in steps:
                    if time.perf_counter() >= until:
                        break
                else:
                    self._forecast_took(took + time.perf_counter() - started)
                    return
                took += time.perf_counter() - started
                await asyncio.sleep(0)
        except Exception:  # a bug here must not stop the coordinator
            log.exception("forecast failed")
        finally:
            if self._forecasting_task is asyncio.current_task():
                self._forecasting_task = None

    def _forecasting(self) -> Generator[None, None, None]:
        """Predicted starts and finishes: running encodes' (the learned speed blended
        with their live rate) and the queue's, played forward on a copy of the planner
        (:func:`~cluster.scheduling.eta.forecast_steps`). A job whose prediction moved (a
        minute, or a tenth of its wait) says so (``eta``). It pauses (yields) often; what
        changed meanwhile is checked again where it is used."""
        now = self._now()
        self._first_forecasts = []
        self._eta_events = ETA_EVENTS
        queue, running_now = self.table.queue, self.encodes.running
        self._told = {k: v for k, v in self._told.items() if k in queue or k in running_now}
        nodes = {n.node_id: n for n in self.view.nodes}
        parents: dict[str, float] = {}
        ends = yield from self._forecast_running(now, nodes, parents)
        yield from self._forecast_queue(now, nodes, ends, parents)
        for parent_id, end in parents.items():  # a job of tasks ends with its last task
            whole = self.table.jobs.get(parent_id)
            if whole is not None and not whole.status.terminal:
                self._predicted(whole, now, whole.started_at or now, end, None, None, nodes)
        # The first prediction is kept with each job (written SLICE_JOBS at a time; more
        # than SAVED_AT_ONCE wait for their next change, kept in memory till then).
        first = self._first_forecasts[:SAVED_AT_ONCE]
        for at in range(0, len(first), SLICE_JOBS):
            yield
            self.table.store.save_many(first[at : at + SLICE_JOBS])

    def _forecast_running(
        self, now: float, nodes: dict[str, NodeInfo], parents: dict[str, float]
    ) -> Generator[None, None, dict[str, tuple[Running, float]]]:
        """Each running encode's predicted end (and its job's forecast): job -> its
        encode and that end."""
        ends: dict[str, tuple[Running, float]] = {}
        for n, (job_id, run) in enumerate(list(self.encodes.running.items()), start=1):
            if n % SLICE_JOBS == 0:
                yield
            job = self.table.jobs.get(job_id)
            if job is None or job.status is not JobStatus.RUNNING:
                continue
            if self.encodes.running.get(job_id) is not run:
                continue  # it ended (or runs again elsewhere) since the list was taken
            placement = run.lease.placement
            end = self._running_end(job, placement, nodes.get(placement.node_id), now)
            ends[job_id] = (run, end)
            start = job.started_at or now
            self._predicted(job, now, start, end, placement.address, placement, nodes)
            if job.task is not None:
                parents[job.task.parent] = max(parents.get(job.task.parent, 0.0), end)
        return ends

    def _running_now(
        self, ends: dict[str, tuple[Running, float]], nodes: dict[str, NodeInfo], now: float
    ) -> list[tuple[Placement, float]]:
        """What runs now, each with its predicted end (an encode that started since the
        running encodes were looked at: estimated now): what the farm's states hold."""
        running = []
        for job_id, run in self.encodes.running.items():
            known = ends.get(job_id)
            if known is not None and known[0] is run:
                running.append((run.lease.placement, known[1]))
                continue
            job = self.table.jobs.get(job_id)
            if job is not None:
                placement = run.lease.placement
                end = self._running_end(job, placement, nodes.get(placement.node_id), now)
                running.append((placement, end))
        return running

    def _forecast_queue(
        self,
        now: float,
        nodes: dict[str, NodeInfo],
        ends: dict[str, tuple[Running, float]],
        parents: dict[str, float],
    ) -> Generator[None, None, None]:
        """The ready queue's head (its first FORECAST_DEPTH, in order) and the jobs not
        ready yet (probed, backing off), played forward: a long queue's tail is not."""
        aging = self.config.aging_s
        self._queue_changes()  # a job cancelled since the last round is not ready any more
        ids = islice(self._ready.ordered(now), FORECAST_DEPTH)
        head = [job for i in ids if (job := self.table.jobs.get(i)) is not None]
        yield
        queued = [j for j in (*head, *self._unsettled.values())
                  if j.status is JobStatus.QUEUED and j.input_media is not None]  # fmt: skip
        queued.sort(key=lambda j: (not (j.task is not None and j.task.finishing),
                                   queue_key(j.spec.priority, j.seq, now - j.updated_at,
                                             aging)))  # fmt: skip
        if not queued or not self.view.nodes:
            return
        yield  # each step of a few thousand jobs or all nodes, then the loop's other work
        jobs = {j.id: j for j in queued}
        demands = [(j.id, demand_for(j, j.input_media)) for j in queued if j.input_media]
        yield
        # The farm's states and what runs on them, read in one step (an encode that ended
        # or started between two steps would be released twice, or never).
        states = self._states(placeable=True)
        running = self._running_now(ends, nodes, now)
        kinds = self._finish_time(now, states)
        yield  # (the states are a copy: the planner is built from them in the next step)
        replay = Replay(kinds, jobs) if kinds is not None else None  # as dispatched
        planner = Planner(states, self.config.policy, self.config.costs)
        yield
        got: dict[str, Forecast] = yield from forecast_steps(
            planner, running, demands,
            lambda key, p: self.pace.seconds(jobs[key], p, nodes.get(p.node_id)),
            now, place=replay)  # fmt: skip
        for n, (key, f) in enumerate(got.items(), start=1):
            if n % SLICE_JOBS == 0:
                yield
            job = jobs[key]
            if job.status is not JobStatus.QUEUED:
                continue  # started (or ended) meanwhile: the next forecast has it
            where = nodes[f.node_id].address if f.node_id in nodes else None
            self._predicted(job, now, f.start_at, f.finish_at, where, None, nodes)
            if job.task is not None:
                parent = job.task.parent
                parents[parent] = max(parents.get(parent, 0.0), f.finish_at)

    def _running_estimate(self, job: Job, placement: Placement, node: NodeInfo | None) -> Estimate:
        """A running encode's predicted speed: as estimated when it started (a forecast
        of 20,000 running encodes then asks the model nothing)."""
        est = self._estimates.get(job.id)
        if est is None:
            est = self.pace.estimate(job, node, placement.node_id, placement.hardware,
                                     placement.gpu_name, placement.cores)  # fmt: skip
        return est

    def _running_end(
        self, job: Job, placement: Placement, node: NodeInfo | None, now: float
    ) -> float:
        """When a running encode should end: the remaining media at a speed between the
        learned one and its live one, the live one weighing as much as is done."""
        total = self._running_estimate(job, placement, node).seconds(media_seconds(job))
        media_s = media_seconds(job)
        p = job.progress
        done = min(1.0, p.out_time_s / media_s) if p and p.out_time_s and media_s else 0.0
        elapsed = max(now - (job.started_at or now), 0.0)
        model_left = total * (1.0 - done) if done else max(total - elapsed, 0.0)
        if done < 0.02 or elapsed <= 0:
            return now + model_left
        live_left = elapsed * (1.0 - done) / done
        return now + done * live_left + (1.0 - done) * model_left

    def _predicted(
        self,
        job: Job,
        now: float,
        start: float,
        finish: float,
        where: str | None,
        placement: Placement | None,
        nodes: dict[str, NodeInfo],
    ) -> None:
        """Record ``job``'s forecast; tell its followers when it moved enough to notice."""
        old = job.forecast or {}
        first = old.get("finish_at_submit")
        forecast_now: dict[str, Any] = {
            "start_at": round(start, 1),
            "finish_at": round(finish, 1),
            "node": where,
            "finish_at_submit": first if first is not None else round(finish, 1),
        }
        if old.get("waits") and job.status is JobStatus.QUEUED:
            forecast_now["waits"] = old["waits"]
        if placement is not None:
            est = self._running_estimate(job, placement, nodes.get(placement.node_id))
            forecast_now |= {"speed": round(est.speed, 3), "basis": est.basis}
        job.forecast = forecast_now
        was = self._told.get(job.id, old.get("finish_at"))
        moved = abs(finish - was) if was is not None else math.inf
        if moved >= max(ETA_MOVED_S, 0.1 * max(finish - now, 0.0)) and self._eta_events > 0:
            self._eta_events -= 1  # the next ones say so in the next rounds
            self._told[job.id] = finish
            self.table.publish(job, EventType.ETA)
        elif was is None or moved >= ETA_MOVED_S:
            self._told.setdefault(job.id, was if was is not None else finish)
        if first is None:
            self._first_forecasts.append(job)

    def _tenant_gauges(self) -> tuple[TenantGauge, ...]:
        """Each tenant's queue, running encodes, oldest wait, share and usage (/metrics):
        the known tenants and any with work or history."""
        now, fair = self._now(), self._fair_share()
        queued: dict[str, int] = {}
        oldest: dict[str, float] = {}
        backlog: dict[str, float] = {}
        drain: dict[str, float] = {}
        for job in self.table.queue.values():
            name = tenant_of(job.tenant)
            if job.forecast:  # tasks too: a job of many tasks is that much work
                f = job.forecast
                run_s = max(f["finish_at"] - f["start_at"], 0.0)
                backlog[name] = backlog.get(name, 0.0) + run_s
                drain[name] = max(drain.get(name, 0.0), f["finish_at"] - now)
            if job.task is None:
                queued[name] = queued.get(name, 0) + 1
                oldest[name] = max(oldest.get(name, 0.0), now - job.created_at)
        held: dict[str, tuple[float, float]] = {}
        for job_id, run in self.encodes.running.items():
            found = self.table.jobs.get(job_id)
            if found is None or found.started_at is None:
                continue
            name, ran = tenant_of(found.tenant), max(now - found.started_at, 0.0)
            gpu_s, core_s = held.get(name, (0.0, 0.0))
            gpus = 1 if run.lease.placement.gpu_uuid else 0
            held[name] = (gpu_s + gpus * ran, core_s + run.lease.placement.cores * ran)
        metrics = self.table.metrics
        waiting = [*queued, *(n for n, u in fair.usage.items() if u.running)]
        names = self.tenants.names([*waiting, *metrics.gpu_seconds, DEFAULT_TENANT])
        return tuple(
            TenantGauge(
                name=name,
                queued=queued.get(name, 0),
                running=fair.used(name).running,
                oldest_queued_s=round(oldest.get(name, 0.0), 3),
                weight_share=round(self.tenants.weight_share(name, waiting), 4),
                usage_share=round(fair.dominant(name), 4),
                gpu_seconds=metrics.gpu_seconds.get(name, 0.0) + held.get(name, (0.0, 0.0))[0],
                core_seconds=metrics.core_seconds.get(name, 0.0) + held.get(name, (0.0, 0.0))[1],
                backlog_s=round(backlog.get(name, 0.0), 1),
                drain_s=round(max(drain.get(name, 0.0), 0.0), 1),
            )
            for name in names
        )

    def _reach(self, job: Job) -> Reach | None:
        return self.reach.reach(job, job.input_media) if job.input_media else None

    def _farm(self, job: Job) -> Farm:
        """The farm as a job graph's kind may look at it while planning ``job``."""
        return Farm(lambda: self._planner(placeable=True), lambda: self.reach.seen_by(job.spec))

    def _states(self, *, placeable: bool = False) -> list[NodeState]:
        states = self.view.states(self.pool.used, self.pool.gpu_used(), placeable=placeable)
        return self.healer.placeable(states) if placeable else states

    def _planner(self, *, placeable: bool = False) -> Planner:
        """A planner over the cluster as it is, with the configured policy and costs."""
        states = self._states(placeable=placeable)
        return Planner(states, self.config.policy, self.config.costs)

    def _launch(self, job: Job, placement: Placement) -> bool:
        """Start ``job``'s next attempt where it was placed (unless it ended meanwhile: a
        task whose job another launch of this round failed); whether it started."""
        node = self.view.node(placement.node_id)
        media = job.input_media
        committed = placement  # what the kept planner holds for it
        if media is None or job.status is not JobStatus.QUEUED:
            return False
        if self.encodes.alive(job.id):  # its last attempt's encoder has not ended yet
            log.debug("job %s: not started while its last encoder is still stopping", job.id)
            return False
        if job.task is not None and job.task.doing:
            placement = replace(placement, reason=f"{job.task.doing}: {placement.reason}")
        queued = JobStatus.QUEUED
        try:
            order, placement = order_for(self.reach, job, placement, media, node)
        except JobFailure as exc:
            self._apply([Move(job, JobStatus.FAILED, str(exc), exc.code, since=queued)])
            return False
        placed = placement.for_job(order.encoder)
        est = self.pace.estimate(job, node, placement.node_id, placement.hardware,
                                 placement.gpu_name, placement.cores)  # fmt: skip
        learned = est.low if est.basis != "static" else None  # its slow end: a ceiling
        limits = self.healer.limits(job, placed, media, learned)
        self.table.set_placement(job, placed, limits.to_dict())
        if not self._apply([Move(job, JobStatus.RUNNING, placement.reason, since=queued)]):
            return False
        self.healer.launched(job.id, placed, limits)
        self._committed[job.id] = committed
        self._estimates[job.id] = est
        self.encodes.start(job, placement, order, node.resources if node else {})
        return True

    async def _lost(self, node_id: str) -> None:
        """An encoder on ``node_id`` was lost: place nothing there for a while; ask Ray now."""
        self.view.suspect(node_id)
        await self._refresh_nodes()

    def _complete(self, job: Job, outcome: WorkOutcome) -> None:
        """An encode ended: gather the facts, :func:`~cluster.control.rules.policy.decide`,
        then apply the decision (the failure recorded, strikes, counters, the move)."""
        self._wake_up()  # what waited for this encoder's end may start now
        committed = self._committed.pop(job.id, None)
        self._estimates.pop(job.id, None)
        if committed is not None and self._kept is not None:
            self._kept.release(committed)  # its encoder is back in the pool: room again
        current = self.table.jobs.get(job.id)
        if job.status is not JobStatus.RUNNING or outcome.attempt != job.attempts:
            return  # stale: an earlier attempt, or a job no longer running
        if current is not None and current is not job:
            return  # a task of an earlier run of its job (its files are gone with that run)
        now = self._now()
        placed = job.placement
        present = placed is not None and self.view.node(placed.node_id) is not None
        fault = fault_of(outcome, node_present=present)
        failure = failure_of(job, outcome, fault)
        nvenc = self._nvenc_failed(job, outcome)  # what the encode proved, recorded first
        facts = Facts(
            stopping=self._stopping,
            cancelling=job.id in self.encodes.cancelling,
            node_present=present,
            nvenc_elsewhere=self._runs_somewhere(job) if nvenc else None,
            where=placed.where if placed else "?",
            backoff_s=self.config.retry_backoff_s,
            now=now,
            crashed_on=crash_sites((*job.failures, failure) if failure else job.failures),
            poison_after=self.config.poison_after,
        )
        decision = decide(job, outcome, facts)
        if decision.action is Action.IGNORE:
            return
        if decision.action is not Action.SUCCEED:
            self._kept = None  # a strike may quarantine its node or GPU: plan anew
        if failure is not None:
            self.table.record_failure(job, failure)
        self.healer.settle(job, fault, decision, failure)
        if decision.counter is not None:
            self.counters.count(decision.counter)
        running = JobStatus.RUNNING
        move = Move(job, decision.status, decision.reason, decision.code,
                    progress=outcome.progress, since=running)  # fmt: skip
        if decision.action is Action.SUCCEED:
            self.pace.learn(job, outcome, self.view.node(placed.node_id) if placed else None, now)
            result = timed_result(job, outcome, now)
            move = Move(job, JobStatus.SUCCEEDED, decision.reason, result=result,
                        notes=tuple(outcome.notes), progress=outcome.progress,
                        since=running)  # fmt: skip
        elif decision.action is Action.REQUEUE:
            self.reach.clear_partials(job)
            move = Move(job, JobStatus.QUEUED, decision.reason, not_before=decision.not_before,
                        charged=decision.charged, since=running)  # fmt: skip
        self._apply([move])
        self._wake_up()

    def _nvenc_failed(self, job: Job, outcome: WorkOutcome) -> bool:
        """NVENC would not open on the placed GPU: that GPU's codec is marked failed, so
        no job is placed there for it again; whether that was the failure."""
        placed = job.placement
        if outcome.error_code is not ErrorCode.NVENC_UNAVAILABLE or not placed or not placed.gpu:
            return False
        why = nvenc_why(outcome)
        self.view.nvenc_failed(placed.gpu.uuid, job.spec.codec, why)
        log.warning("%s cannot encode %s with NVENC: %s", placed.where, job.spec.codec, why)
        return True

    def _runs_somewhere(self, job: Job) -> bool:
        """Whether some node of the cluster could run ``job`` now, even busy."""
        media = job.input_media
        return media is not None and self._planner().never(demand_for(job, media)) is None

    # ---- housekeeping ----------------------------------------------------------------

    async def _refresh_nodes(self) -> None:
        for node_id in await self.view.refresh():
            self.pool.forget_node(node_id)
        self._kept = None  # the next round places on the nodes as they are now

    async def _housekeeping_loop(self) -> None:
        """What no event tells: nodes that joined or left Ray (and what their agents
        report), encodes past their watchdog limits, encoders idle past ``idle_s``,
        finished jobs past their retention, and queued jobs whose backoff ended. Every
        ``node_refresh_s`` while jobs are queued or running, or a node is not ready yet;
        at rest every :data:`IDLE_REFRESH_S`, or as soon as a job arrives."""
        while not self._stopping:
            try:
                await self._refresh_nodes()
                for job_id, why in self.healer.overdue():
                    log.warning("job %s: %s; killing its encode", job_id, why)
                    stop = asyncio.create_task(self.encodes.stop(job_id, why))
                    self._stops.add(stop)
                    stop.add_done_callback(self._stops.discard)
                self.pool.reap()
                self.table.forget_finished(self._now())
                self._forecast_later()
                if self.heap is not None:
                    self.heap.tick()
            except Exception:
                log.exception("housekeeping failed")
            if self.table.queue or self.encodes.running:
                self._wake_up()  # a backoff may have ended, a node joined
                await asyncio.sleep(self.config.node_refresh_s)
                continue
            if not self.view.nodes or self.view.waiting_for():  # not ready yet: look soon
                await asyncio.sleep(self.config.node_refresh_s)
                continue
            self._work.clear()  # at rest: until a job arrives, or a while
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._work.wait(), IDLE_REFRESH_S)
