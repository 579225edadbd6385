"""The coordinator: the API the client calls, and the loops that probe, place and run jobs.

A plain asyncio class; :mod:`cluster.ray_edge.actors` runs it as one named,
detached Ray actor and gives it a :class:`Backend` that talks to Ray
(:mod:`cluster.control.fakes` gives it one without Ray, for tests). Its state lives
in four parts, each in its own module:

- :class:`~cluster.control.jobtable.JobTable`: jobs, the queue, keys; every state change;
- :class:`~cluster.control.view.ClusterView`: nodes, suspects, NVENC failures, caps;
- :class:`~cluster.control.prober.Prober`: queued jobs' probed inputs;
- :class:`~cluster.control.pool.EncoderPool`: encoders, warm or busy, and what they hold;

and what happens when an encode ends is the pure :func:`~cluster.control.policy.decide`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cluster.config import CoordinatorConfig
from cluster.control.jobtable import JobTable, clear_partials
from cluster.control.policy import Action, Facts, decide, nvenc_why
from cluster.control.pool import EncoderHandle, EncoderPool, Lease
from cluster.control.prober import ProbeFn, Prober
from cluster.control.store import JobStore
from cluster.control.view import ClusterView, node_view
from cluster.errors import (
    CapacityError,
    EncodeError,
    ErrorCode,
    FramefleetError,
    JobFailure,
    SpecError,
    WorkerLost,
)
from cluster.media.argv import thumbnail_times
from cluster.media.encoders import CATALOG, Encoder, choose_encoder, cpu_encoder
from cluster.media.probe import MediaInfo, probe_async
from cluster.media.work import WorkOrder, WorkOutcome, plan_work
from cluster.model.jobs import Job, JobKind, JobSpec, JobStatus
from cluster.model.progress import ProgressSnapshot
from cluster.nodes.agent import NodeInfo
from cluster.scheduling.admission import admit, confine
from cluster.scheduling.planner import (
    Demand,
    NodeState,
    Placement,
    Planner,
    autoscaler_bundle,
    queue_key,
)

log = logging.getLogger("framefleet.coordinator")
CANCEL_WAIT_S = 15.0
MAX_AUTOSCALER_BUNDLES = 256


class Backend(Protocol):
    async def nodes(self) -> list[NodeInfo]:
        """Alive nodes: what they registered and what their agents read."""
        ...

    def create_encoder(self, placement: Placement) -> EncoderHandle: ...

    async def request_capacity(self, bundles: list[dict[str, float]]) -> None:
        """Ask the autoscaler (if any) for room for these resource shapes."""
        ...


@dataclass(slots=True)
class Running:
    job: Job
    lease: Lease
    task: asyncio.Task[None]


def resident_mb() -> float | None:
    """This process's resident memory in MiB (Linux), for ping and the memory bench."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def _log_failure(task: asyncio.Task[None]) -> None:
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
    ) -> None:
        self.config = config
        self._backend = backend
        self.table = JobTable(
            JobStore(config.db_path),
            max_attempts=config.max_attempts,
            retention_s=config.finished_retention_s,
            idempotency_ttl_s=config.idempotency_ttl_s,
        )
        self.metrics = self.table.metrics
        self.view = ClusterView(
            backend.nodes, default_cap=config.max_jobs_per_node, local_encoders=encoders
        )
        self.prober = Prober(
            config.media_roots,
            on_probed=self._probed,
            on_failed=self._fail,
            on_done=self._wake_up,
            backoff_s=config.retry_backoff_s,
            probe=probe,
        )
        self._pool = EncoderPool(backend.create_encoder, idle_s=config.encoder_idle_s)
        self._running: dict[str, Running] = {}
        self._cancelling: set[str] = set()
        self._asked: list[dict[str, float]] = []
        """The last resource shapes asked of the autoscaler."""
        self._stopping = False
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._started_at = time.time()
        requeued = self.table.recover()
        for job in self.table.queue.values():
            if job.input_media:  # probed before the restart: not again
                self.prober.media[job.id] = MediaInfo.from_dict(job.input_media)
        if requeued:
            log.warning("re-queued %d job(s) that were running before a restart", len(requeued))

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start dispatching (needs a running event loop)."""
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._dispatch_loop()),
                asyncio.create_task(self._housekeeping_loop()),
            ]

    async def shutdown(self) -> None:
        """Stop encodes (killing ffmpeg, dropping partial files); running jobs are re-queued."""
        self._stopping = True
        for run in list(self._running.values()):
            with contextlib.suppress(JobFailure):  # a lost or broken encoder is gone anyway
                await run.lease.handle.shutdown()
        for run in list(self._running.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(run.task, CANCEL_WAIT_S)
        for task in self._tasks:
            task.cancel()
        await self._pool.close()
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

    async def submit(self, spec: JobSpec, idempotency_key: str | None = None) -> dict[str, Any]:
        """Queue a job. A repeated ``idempotency_key`` returns the job it first made."""
        first = self._known(idempotency_key, [spec], batch=False)
        if first is not None:
            return first[0].to_dict()
        await self.view.await_reports()
        (job,) = self.table.add([self._admit(spec)], idempotency_key)
        self._wake.set()
        return job.to_dict()

    async def submit_many(
        self, specs: list[JobSpec], idempotency_key: str | None = None
    ) -> list[dict[str, Any]]:
        """Queue all of ``specs`` or none (the first refusal says which one and why)."""
        first = self._known(idempotency_key, specs, batch=True)
        if first is not None:
            return [j.to_dict() for j in first]
        await self.view.await_reports()
        admitted = []
        for i, spec in enumerate(specs):
            try:
                admitted.append(self._admit(spec))
            except JobFailure as exc:
                raise type(exc)(f"job {i + 1} of {len(specs)}: {exc}", code=exc.code) from exc
        jobs = self.table.add(admitted, idempotency_key, batch=True)
        self._wake.set()
        return [job.to_dict() for job in jobs]

    async def get(self, job_id: str) -> dict[str, Any]:
        return self.table.get(job_id).to_dict()

    async def list_jobs(
        self,
        *,
        status: str | None = None,
        kind: str | None = None,
        after_seq: int = 0,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Jobs in submission order after ``after_seq`` (a cursor), filtered."""
        jobs = self.table.query(status=status, kind=kind, after_seq=after_seq, limit=limit)
        return [job.to_dict() for job in jobs]

    async def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a job; idempotent. A running ffmpeg is killed before this returns."""
        job = self.table.get(job_id)
        if job.status is JobStatus.QUEUED:
            self._move(job, JobStatus.CANCELLED, "cancelled by user", ErrorCode.CANCELLED)
        elif job.status is JobStatus.RUNNING and job_id in self._running:
            await self._stop_encode(self._running[job_id])
            if job.status is JobStatus.RUNNING:
                self._move(job, JobStatus.CANCELLED, "cancelled by user", ErrorCode.CANCELLED)
        return job.to_dict()

    async def retry(self, job_id: str) -> dict[str, Any]:
        job = self.table.get(job_id)
        self._move(job, JobStatus.QUEUED, "retry requested by user")
        self.prober.forget(job_id)  # probe again: the file may have been fixed
        self._wake.set()
        return job.to_dict()

    async def poll_events(
        self, after: int = 0, job_ids: list[str] | None = None, timeout: float = 30.0
    ) -> dict[str, Any]:
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
        self.table.publish(job, kind="progress")

    async def nodes(self) -> list[dict[str, Any]]:
        """Nodes with CPUs, GPUs (readings, NVENC codec states) and running jobs."""
        on_node: dict[str, list[str]] = {}
        on_gpu: dict[str, list[str]] = {}
        for job_id, run in self._running.items():
            on_node.setdefault(run.lease.node_id, []).append(job_id)
            if run.lease.placement.gpu_uuid:
                on_gpu.setdefault(run.lease.placement.gpu_uuid, []).append(job_id)
        return node_view(self.view.nodes, self._states(), on_node, on_gpu)

    async def metrics_snapshot(self) -> dict[str, Any]:
        """Everything /metrics exports: job counters and histograms, the queue by priority,
        running encodes' fps and speed, and the node view (GPU readings from the agents)."""
        queue: dict[int, int] = {}
        for job in self.table.queue.values():
            queue[job.spec.priority] = queue.get(job.spec.priority, 0) + 1
        encodes = []
        for run in self._running.values():
            p = run.job.progress
            encodes.append(
                {
                    "encoder": (run.job.placement or {}).get("encoder") or "none",
                    "fps": p.fps if p and p.fps else 0.0,
                    "speed": p.speed if p and p.speed else 0.0,
                }
            )
        return {
            "jobs": self.metrics.to_dict(),
            "queue": queue,
            "encodes": encodes,
            "nodes": await self.nodes(),
        }

    async def set_node_cap(self, node_id: str, max_jobs: int | None) -> None:
        """Change a node's concurrent-job cap while running (``None``: only cores limit)."""
        if max_jobs is not None and max_jobs < 0:
            raise SpecError("a node's job cap must be 0 or more")
        self.view.caps[node_id] = max_jobs
        self._wake.set()

    # ---- admission -------------------------------------------------------------------

    def _known(self, key: str | None, specs: list[JobSpec], *, batch: bool) -> list[Job] | None:
        if key is None:
            return None
        roots = self.config.media_roots  # the same request, paths resolved
        return self.table.known(key, [confine(s, roots) for s in specs], batch=batch)

    def _admit(self, spec: JobSpec) -> JobSpec:
        return admit(spec, self.config.media_roots, self.view.encoders())

    # ---- state changes ---------------------------------------------------------------

    def _move(
        self, job: Job, status: JobStatus, reason: str, code: ErrorCode | None = None
    ) -> None:
        self.table.move(job, status, reason=reason, code=code)
        if status.terminal:
            self.prober.forget(job.id)
            self._cancelling.discard(job.id)

    def _fail(self, job: Job, exc: FramefleetError) -> None:
        self._move(job, JobStatus.FAILED, str(exc), exc.code)

    def _probed(self, job: Job, media: MediaInfo) -> None:
        job.input_media = media.to_dict()
        if job.spec.kind is JobKind.PROBE:
            self._move(job, JobStatus.RUNNING, "probed by the coordinator")
            job.result = {"media": job.input_media}
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
            if self.prober.ensure(job) is not None and job.not_before <= now:
                ready.append(job)
        if not ready or not self.view.nodes:
            return  # nothing to place, or no node yet: wait for the cluster
        aging = self.config.aging_s
        ready.sort(key=lambda j: queue_key(j.spec.priority, j.seq, now - j.updated_at, aging))
        planner = self._planner(placeable=True)
        waiting: list[dict[str, float]] = []
        # What the cluster could ever run is judged on every node, suspect ones included.
        whole = self._planner() if self.view.has_suspects else planner
        for job in ready:
            if self._stopping:
                return
            demand = self._demand(job)
            never = whole.never(demand)
            if never is not None:
                self.metrics.placement_failures += 1
                self._fail(job, CapacityError(never))
                continue
            # Once every core is given out, nothing below can start: it waits.
            placement = None if planner.exhausted() else planner.place(demand)
            if placement is not None:
                self._launch(job, placement)
            else:
                waiting.append(autoscaler_bundle(demand, self.config.costs))
        self._ask_for_capacity(waiting)

    def _states(self, *, placeable: bool = False) -> list[NodeState]:
        return self.view.states(self._pool.used, self._pool.gpu_used(), placeable=placeable)

    def _planner(self, *, placeable: bool = False) -> Planner:
        """A planner over the cluster as it is, with the configured policy and costs."""
        states = self._states(placeable=placeable)
        return Planner(states, self.config.policy, self.config.costs)

    def _demand(self, job: Job) -> Demand:
        media = self.prober.media[job.id]
        video = media.video
        transcode = job.spec.kind is JobKind.TRANSCODE
        thumbnail = job.spec.kind is JobKind.THUMBNAIL
        return Demand(
            job.spec.kind,
            job.spec.hardware,
            job.spec.codec,
            video.width if video else 0,
            video.height if video else 0,
            encoder=cpu_encoder(job.spec.codec).name if transcode else None,
            images=len(thumbnail_times(job.spec, media)) if thumbnail else 0,
        )

    def _ask_for_capacity(self, waiting: list[dict[str, float]]) -> None:
        """Tell the autoscaler what waits (running work plus the queue's shapes, capped), so
        an autoscaling cluster (KubeRay) adds workers; only when it changed."""
        if not waiting and not self._asked:
            return
        bundles = []
        if waiting:
            bundles = [{"CPU": run.lease.placement.cpus} for run in self._running.values()]
            bundles += waiting
        bundles = bundles[:MAX_AUTOSCALER_BUNDLES]
        if bundles == self._asked:
            return
        self._asked = bundles
        task = asyncio.create_task(self._backend.request_capacity(bundles))
        task.add_done_callback(_log_failure)

    def _launch(self, job: Job, placement: Placement) -> None:
        spec, media = job.spec, self.prober.media[job.id]
        node = self.view.node(placement.node_id)
        try:
            # The planner chose a node whose own ffmpeg has this encoder.
            encoder = (
                choose_encoder(spec.codec, placement.hardware, CATALOG)
                if spec.kind is JobKind.TRANSCODE
                else None
            )
            order = plan_work(
                job.id,
                job.attempts + 1,
                spec,
                media,
                encoder,
                cuda_device=placement.gpu_uuid,
                ffmpeg=node.ffmpeg.path if node and node.ffmpeg else "ffmpeg",
                roots=tuple(str(r) for r in self.config.media_roots),
            )
        except JobFailure as exc:
            self._fail(job, exc)
            return
        lease = self._pool.acquire(placement, node_totals=node.resources if node else {})
        job.placement = {**placement.to_dict(), "encoder": order.encoder}
        self._move(job, JobStatus.RUNNING, placement.reason)
        task = asyncio.create_task(self._execute(job, lease, order))
        self._running[job.id] = Running(job, lease, task)

    async def _execute(self, job: Job, lease: Lease, order: WorkOrder) -> None:
        healthy = True
        try:
            outcome = await lease.handle.run(order)
        except WorkerLost as exc:
            healthy = False
            outcome = WorkOutcome.failure(order, exc)
            # Its node may be dying: place nothing there for a while, and ask Ray now.
            self.view.suspect(lease.node_id)
            with contextlib.suppress(Exception):
                await self._refresh_nodes()
        except Exception as exc:
            log.exception("encoder call failed for job %s", job.id)
            healthy = False
            outcome = WorkOutcome.failure(order, EncodeError(f"internal error: {exc}"))
        self._running.pop(job.id, None)
        self._pool.release(lease, healthy=healthy)
        self._complete(job, outcome)
        self._wake.set()

    async def _stop_encode(self, run: Running) -> None:
        """Ask the job's encoder to stop, bounded: an encoder that is frozen (stopped, or
        its node hung) answers nothing; it is then killed, and its ffmpeg dies with it."""
        self._cancelling.add(run.job.id)
        deadline = time.monotonic() + CANCEL_WAIT_S
        try:
            with contextlib.suppress(WorkerLost):
                await asyncio.wait_for(run.lease.handle.cancel(run.job.id), CANCEL_WAIT_S)
            await asyncio.wait_for(asyncio.shield(run.task), max(deadline - time.monotonic(), 0.1))
        except TimeoutError:
            log.warning("encoder of job %s did not stop within %g s; killed", run.job.id,
                        CANCEL_WAIT_S)  # fmt: skip
            self._pool.release(run.lease, healthy=False)

    def _complete(self, job: Job, outcome: WorkOutcome) -> None:
        """Apply :func:`~cluster.control.policy.decide` to an encode's outcome."""
        placed = job.placement or {}
        facts = Facts(
            stopping=self._stopping,
            cancelling=job.id in self._cancelling,
            node_present=self.view.node(placed.get("node_id", "")) is not None,
            nvenc_elsewhere=self._nvenc_elsewhere(job, outcome),
            where=self._where(placed),
            backoff_s=self.config.retry_backoff_s,
            now=time.time(),
        )
        decision = decide(job, outcome, facts)
        if decision.action is Action.IGNORE:
            return
        if outcome.progress:
            job.progress = outcome.progress
        if decision.counter is not None:
            setattr(self.metrics, decision.counter, getattr(self.metrics, decision.counter) + 1)
        if decision.action is Action.SUCCEED:
            job.result = outcome.result
            job.notes = outcome.notes
            self._move(job, JobStatus.SUCCEEDED, decision.reason)
        elif decision.action is Action.REQUEUE:
            clear_partials(job)
            job.not_before = decision.not_before
            self._move(job, JobStatus.QUEUED, decision.reason)
        elif decision.action is Action.CANCEL:
            self._move(job, JobStatus.CANCELLED, decision.reason, decision.code)
        else:
            self._move(job, JobStatus.FAILED, decision.reason, decision.code)

    @staticmethod
    def _where(placed: dict[str, Any]) -> str:
        gpu = placed.get("gpu")
        address = placed.get("address", "?")
        return f"GPU {gpu['index']} ({gpu['name']}) on {address}" if gpu else address

    def _nvenc_elsewhere(self, job: Job, outcome: WorkOutcome) -> bool | None:
        """For NVENC failing on the placed GPU: mark that GPU's codec failed, and say
        whether the job can still run somewhere (``None``: not that failure)."""
        gpu = (job.placement or {}).get("gpu")
        if outcome.error_code is not ErrorCode.NVENC_UNAVAILABLE or not gpu:
            return None
        if job.status is not JobStatus.RUNNING or outcome.attempt != job.attempts:
            return None
        why = nvenc_why(outcome)
        self.view.nvenc_failed(gpu["uuid"], job.spec.codec, why)
        log.warning("%s cannot encode %s with NVENC: %s", self._where(job.placement or {}),
                    job.spec.codec, why)  # fmt: skip
        return self._planner().never(self._demand(job)) is None

    # ---- housekeeping ----------------------------------------------------------------

    async def _refresh_nodes(self) -> None:
        for node_id in await self.view.refresh():
            self._pool.forget_node(node_id)

    async def _housekeeping_loop(self) -> None:
        while not self._stopping:
            try:
                await self._refresh_nodes()
                self._pool.reap()
                self.table.forget_finished(time.time())
            except Exception:
                log.exception("housekeeping failed")
            self._wake.set()
            await asyncio.sleep(self.config.node_refresh_s)
