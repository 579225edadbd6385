"""The coordinator: owns the job table, the queue, dispatch, retries and job events.

A plain asyncio class; :mod:`cluster.ray_edge.actors` runs it as one named,
detached Ray actor and gives it a :class:`Backend` that talks to Ray. Every
state change goes through :meth:`Coordinator._move`, which applies the job
state machine, keeps the queue, writes SQLite and publishes an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any, Protocol

from cluster.config import CoordinatorConfig
from cluster.control.metrics import JobMetrics
from cluster.control.pool import EncoderHandle, EncoderPool, Lease
from cluster.control.store import JobStore
from cluster.control.view import node_states, node_view
from cluster.errors import (
    EncodeError,
    FramefleetError,
    IdempotencyConflict,
    InputError,
    JobFailure,
    JobNotFound,
    SpecError,
    ToolMissing,
    WorkerLost,
)
from cluster.media.argv import thumbnail_times
from cluster.media.encoders import CATALOG, Encoder, available, choose_encoder, cpu_encoder
from cluster.media.probe import MediaInfo, probe_async
from cluster.media.runner import remove_stale_partials
from cluster.media.work import WorkOrder, WorkOutcome, plan_work
from cluster.model.events import EventLog
from cluster.model.jobs import Hardware, Job, JobKind, JobSpec, JobStatus, transition
from cluster.model.progress import ProgressSnapshot
from cluster.nodes.agent import NodeInfo
from cluster.nodes.capability import Capability, CodecState
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
PROBE_CONCURRENCY = 4
CANCEL_WAIT_S = 15.0
MAX_BACKOFF_S = 60.0
SUSPECT_NODE_S = 10.0
MAX_AUTOSCALER_BUNDLES = 256
FIRST_VIEW_WAIT_S = 15.0
"""How long the first submit waits for every node to report its ffmpeg."""


def _resident_mb() -> float | None:
    """This process's resident memory in MiB (Linux), for ping and the memory bench."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("asking the autoscaler for capacity failed: %s", task.exception())


class Backend(Protocol):
    async def nodes(self) -> list[NodeInfo]:
        """Alive nodes: what they registered and what their agents read."""
        ...

    def create_encoder(self, placement: Placement) -> EncoderHandle: ...

    async def request_capacity(self, bundles: list[dict[str, float]]) -> None:
        """Ask the autoscaler (if any) for room for these resource shapes."""
        ...


class Coordinator:
    def __init__(
        self,
        config: CoordinatorConfig,
        backend: Backend,
        *,
        encoders: tuple[Encoder, ...] | None = None,
    ) -> None:
        self.config = config
        self._backend = backend
        self._local_encoders = encoders
        """What admission assumes before any node has reported (default: this process's
        ffmpeg; an autoscaling cluster may have no worker yet)."""
        self._store = JobStore(config.db_path)
        self._events = EventLog()
        self._pool = EncoderPool(backend.create_encoder, idle_s=config.encoder_idle_s)
        self._jobs: dict[str, Job] = {}
        self._queue: dict[str, Job] = {}
        self._media: dict[str, MediaInfo] = {}
        self._probing: dict[str, asyncio.Task[None]] = {}
        self._probe_tries: dict[str, int] = {}
        self._keys: dict[str, str] = {}
        """Idempotency key -> job id (persisted on the job, rebuilt on restart)."""
        self._batch_keys: dict[str, list[str]] = {}
        self._running: dict[str, tuple[Lease, asyncio.Task[None]]] = {}
        self._cancelling: set[str] = set()
        self._nodes: list[NodeInfo] = []
        self._refreshed = False
        self._view = asyncio.Event()
        """Set once every alive node has reported (or the first submit stopped waiting)."""
        self._asked: list[dict[str, float]] = []
        """The last resource shapes asked of the autoscaler."""
        self._suspect: dict[str, float] = {}
        """Nodes where an encoder was just lost -> until when nothing is placed there."""
        self._nvenc_failures: dict[tuple[str, str], Capability] = {}
        """(GPU uuid, codec) -> why a real encode could not open NVENC there."""
        self._caps: dict[str, int | None] = {}
        self._seq = 0
        self._stopping = False
        self._wake = asyncio.Event()
        self._probe_slots = asyncio.Semaphore(PROBE_CONCURRENCY)
        self._tasks: list[asyncio.Task[None]] = []
        self._started_at = time.time()
        self.metrics = JobMetrics()
        self._recover()

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start dispatching (needs a running event loop)."""
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._dispatch_loop()),
                asyncio.create_task(self._housekeeping_loop()),
            ]

    def _recover(self) -> None:
        requeued = []
        for job in self._store.load_all():
            self._jobs[job.id] = job
            key = job.idempotency_key
            if key is not None and key.startswith("batch:"):
                self._batch_keys.setdefault(key[6:], []).append(job.id)
            elif key is not None:
                self._keys[key] = job.id
            self._seq = max(self._seq, job.seq)
            if job.status is JobStatus.RUNNING:
                transition(job, JobStatus.QUEUED, reason="re-queued: the coordinator restarted")
                self._clear_partials(job)
                requeued.append(job)
            if job.status is JobStatus.QUEUED:
                self._queue[job.id] = job
                if job.input_media:
                    self._media[job.id] = MediaInfo.from_dict(job.input_media)
        self._store.save_many(requeued)
        self._forget_finished(time.time())
        if requeued:
            log.warning("re-queued %d job(s) that were running before a restart", len(requeued))

    async def shutdown(self) -> None:
        """Stop encodes (killing ffmpeg, dropping partial files); running jobs are re-queued."""
        self._stopping = True
        for lease, _ in list(self._running.values()):
            with contextlib.suppress(JobFailure):  # a lost or broken encoder is gone anyway
                await lease.handle.shutdown()
        for _, task in list(self._running.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, CANCEL_WAIT_S)
        for task in self._tasks:
            task.cancel()
        await self._pool.close()
        self._store.close()

    # ---- the API the client and the gateway call -----------------------------------

    async def ping(self) -> dict[str, Any]:
        """Counts, which life of the coordinator answers (``pid``, ``started_at``), and
        whether it is ready: every alive node has reported through its agent (ffmpeg,
        GPUs) and finished its NVENC trials, so the node view and presets are complete."""
        waiting = [
            f"{n.address} ({'proving NVENC' if n.reported else 'agent not reported yet'})"
            for n in self._nodes
            if not n.reported or n.detecting
        ]
        return {
            "jobs": len(self._jobs),
            "queued": len(self._queue),
            "running": len(self._running),
            "pid": os.getpid(),
            "started_at": self._started_at,
            "memory_mb": _resident_mb(),
            "nodes": len(self._nodes),
            "waiting_for": waiting,
            "ready": self._refreshed and bool(self._nodes) and not waiting,
        }

    async def submit(self, spec: JobSpec, idempotency_key: str | None = None) -> dict[str, Any]:
        """Queue a job. A repeated ``idempotency_key`` returns the job it first made."""
        if idempotency_key is not None and idempotency_key in self._keys:
            first = self._get(self._keys[idempotency_key])
            if self._key_live(first):
                # The same request, paths resolved (its output may exist by now).
                if first.spec != confine(spec, self.config.media_roots):
                    raise IdempotencyConflict(
                        "this Idempotency-Key was used for a different request; "
                        "use a new key for a new job"
                    )
                return first.to_dict()
        await self._await_view()
        job = self._new_job(self._admit(spec))
        if idempotency_key is not None:
            job.idempotency_key = idempotency_key
            self._keys[idempotency_key] = job.id
        self._store.save(job)
        self._publish(job)
        self._wake.set()
        return job.to_dict()

    async def submit_many(
        self, specs: list[JobSpec], idempotency_key: str | None = None
    ) -> list[dict[str, Any]]:
        """Queue all of ``specs`` or none (the first refusal says which one and why)."""
        if idempotency_key is not None and idempotency_key in self._batch_keys:
            first = [self._get(i) for i in self._batch_keys[idempotency_key]]
            if first and self._key_live(first[0]):
                roots = self.config.media_roots
                if [j.spec for j in first] != [confine(s, roots) for s in specs]:
                    raise IdempotencyConflict(
                        "this Idempotency-Key was used for a different batch; "
                        "use a new key for a new batch"
                    )
                return [j.to_dict() for j in first]
        await self._await_view()
        admitted = []
        for i, spec in enumerate(specs):
            try:
                admitted.append(self._admit(spec))
            except JobFailure as exc:
                raise type(exc)(f"job {i + 1} of {len(specs)}: {exc}", code=exc.code) from exc
        jobs = [self._new_job(spec) for spec in admitted]
        if idempotency_key is not None:
            for job in jobs:
                job.idempotency_key = f"batch:{idempotency_key}"
            self._batch_keys[idempotency_key] = [job.id for job in jobs]
        self._store.save_many(jobs)
        for job in jobs:
            self._publish(job)
        self._wake.set()
        return [job.to_dict() for job in jobs]

    async def get(self, job_id: str) -> dict[str, Any]:
        return self._get(job_id).to_dict()

    async def list_jobs(
        self,
        *,
        status: str | None = None,
        kind: str | None = None,
        after_seq: int = 0,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Jobs in submission order after ``after_seq`` (a cursor), filtered: from SQLite,
        with the live copy (progress) of each job still in memory."""
        stored = self._store.query(after_seq=after_seq, status=status, kind=kind, limit=limit)
        return [self._jobs.get(job.id, job).to_dict() for job in stored]

    async def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a job; idempotent. A running ffmpeg is killed before this returns."""
        job = self._get(job_id)
        if job.status is JobStatus.QUEUED:
            self._move(job, JobStatus.CANCELLED, reason="cancelled by user", code="cancelled")
        elif job.status is JobStatus.RUNNING and job_id in self._running:
            self._cancelling.add(job_id)
            lease, task = self._running[job_id]
            deadline = time.monotonic() + CANCEL_WAIT_S
            try:
                # Bounded: an encoder that is frozen (stopped, or its node hung) answers
                # nothing; it is then killed, and its ffmpeg dies with it.
                with contextlib.suppress(WorkerLost):
                    await asyncio.wait_for(lease.handle.cancel(job_id), CANCEL_WAIT_S)
                await asyncio.wait_for(asyncio.shield(task), max(deadline - time.monotonic(), 0.1))
            except TimeoutError:
                log.warning("encoder of job %s did not stop within %g s; killed", job_id,
                            CANCEL_WAIT_S)  # fmt: skip
                self._pool.release(lease, healthy=False)
            if job.status is JobStatus.RUNNING:
                self._move(job, JobStatus.CANCELLED, reason="cancelled by user", code="cancelled")
        return job.to_dict()

    async def retry(self, job_id: str) -> dict[str, Any]:
        job = self._get(job_id)
        self._move(job, JobStatus.QUEUED, reason="retry requested by user")
        self._media.pop(job_id, None)  # probe again: the file may have been fixed
        self._wake.set()
        return job.to_dict()

    async def poll_events(
        self, after: int = 0, job_ids: list[str] | None = None, timeout: float = 30.0
    ) -> dict[str, Any]:
        """Job events after ``after``; waits up to ``timeout`` s for the first one."""
        ids = frozenset(job_ids) if job_ids else None
        return await self._events.wait(after, ids, min(timeout, 60.0))

    async def event_cursor(self) -> int:
        """The newest event's ``seq``: follow from here to see only what happens next."""
        return self._events.last_seq

    async def report_progress(self, job_id: str, attempt: int, snapshot: ProgressSnapshot) -> None:
        """Called by encoder actors; stale attempts and finished jobs are ignored."""
        job = self._jobs.get(job_id)
        if job is None or job.status is not JobStatus.RUNNING or attempt != job.attempts:
            return
        job.progress = snapshot
        self._publish(job, kind="progress")

    async def nodes(self) -> list[dict[str, Any]]:
        """Nodes with CPUs, GPUs (readings, NVENC codec states) and running jobs."""
        on_node: dict[str, list[str]] = {}
        on_gpu: dict[str, list[str]] = {}
        for job_id, (lease, _) in self._running.items():
            on_node.setdefault(lease.node_id, []).append(job_id)
            if lease.placement.gpu_uuid:
                on_gpu.setdefault(lease.placement.gpu_uuid, []).append(job_id)
        return node_view(self._nodes, self._node_states(), on_node, on_gpu)

    async def metrics_snapshot(self) -> dict[str, Any]:
        """Everything /metrics exports: job counters and histograms, the queue by priority,
        running encodes' fps and speed, and the node view (GPU readings from the agents)."""
        queue: dict[int, int] = {}
        for job in self._queue.values():
            queue[job.spec.priority] = queue.get(job.spec.priority, 0) + 1
        encodes = []
        for job_id in self._running:
            job = self._jobs[job_id]
            p = job.progress
            encodes.append(
                {
                    "encoder": (job.placement or {}).get("encoder") or "none",
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
        self._caps[node_id] = max_jobs
        self._wake.set()

    # ---- admission -------------------------------------------------------------------

    def _admit(self, spec: JobSpec) -> JobSpec:
        return admit(spec, self.config.media_roots, self._cluster_encoders())

    def _key_live(self, job: Job) -> bool:
        """An idempotency key answers with its first job(s) for ``idempotency_ttl_s``."""
        return time.time() - job.created_at < self.config.idempotency_ttl_s

    async def _await_view(self) -> None:
        """Admission judges encoders by what the nodes report: before the first submit,
        wait (bounded, once) for every alive node to have reported."""
        if self._view.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._view.wait(), FIRST_VIEW_WAIT_S)
        self._view.set()

    def _cluster_encoders(self) -> tuple[Encoder, ...]:
        """Encoders some node that can take work has in its own ffmpeg."""
        reporting = [n for n in self._nodes if n.reported and n.cpus > 0]
        if reporting:
            return available(frozenset().union(*(n.encoders for n in reporting)))
        if self._local_encoders is None:
            try:
                self._local_encoders = available()
            except ToolMissing:  # no ffmpeg on the head: the workers' will be judged
                self._local_encoders = CATALOG
        return self._local_encoders

    def _new_job(self, spec: JobSpec) -> Job:
        self.metrics.on_submit(str(spec.kind), spec.codec)
        self._seq += 1
        job = Job(id=Job.new_id(), spec=spec, seq=self._seq, max_attempts=self.config.max_attempts)
        self._jobs[job.id] = job
        self._queue[job.id] = job
        return job

    def _get(self, job_id: str) -> Job:
        """A job: in memory while active or recently finished, else read from SQLite."""
        job = self._jobs.get(job_id) or self._store.load(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def _forget_finished(self, now: float) -> int:
        """Drop finished jobs older than the retention window from memory (not from
        SQLite); returns how many."""
        cutoff = now - self.config.finished_retention_s
        old = [j.id for j in self._jobs.values() if j.status.terminal and j.updated_at < cutoff]
        for job_id in old:
            del self._jobs[job_id]
        return len(old)

    # ---- state changes ---------------------------------------------------------------

    def _move(
        self, job: Job, status: JobStatus, *, reason: str | None = None, code: str | None = None
    ) -> None:
        was_since = job.updated_at
        transition(job, status, reason=reason, error_code=code)
        self._count(job, status, was_since)
        if status is JobStatus.QUEUED:
            self._queue[job.id] = job
        else:
            self._queue.pop(job.id, None)
        if status.terminal:
            self._media.pop(job.id, None)
            self._cancelling.discard(job.id)
            self._clear_partials(job)  # e.g. what a lost worker's ffmpeg wrote
        self._store.save(job)
        self._publish(job)

    def _count(self, job: Job, status: JobStatus, was_since: float) -> None:
        kind, codec = str(job.spec.kind), job.spec.codec
        if status is JobStatus.RUNNING:
            self.metrics.on_start(kind, job.updated_at - was_since)
        elif status.terminal:
            ran = job.finished_at - job.started_at if job.started_at and job.finished_at else None
            encoder = (job.placement or {}).get("encoder")
            self.metrics.on_finish(kind, codec, encoder, str(status), ran, job.result)

    def _fail(self, job: Job, exc: FramefleetError) -> None:
        self._move(job, JobStatus.FAILED, reason=str(exc), code=exc.code)

    def _publish(self, job: Job, kind: str = "status") -> None:
        self._events.publish(
            {
                "type": kind,
                "job_id": job.id,
                "status": str(job.status),
                "attempts": job.attempts,
                "reason": job.reason,
                "error_code": job.error_code,
                "progress": job.progress.to_dict() if job.progress else None,
                "time": time.time(),
            }
        )

    # ---- probing ---------------------------------------------------------------------

    async def _probe(self, job: Job) -> None:
        try:
            async with self._probe_slots:
                media = await probe_async(job.spec.input, self.config.media_roots)
            if job.spec.kind is not JobKind.PROBE:
                media.require_video()
            if job.spec.kind is JobKind.THUMBNAIL:
                thumbnail_times(job.spec, media)
        except FramefleetError as exc:
            tries = self._probe_tries[job.id] = self._probe_tries.get(job.id, 0) + 1
            retry = isinstance(exc, JobFailure) and exc.retryable and tries < job.max_attempts
            if retry:
                # ffprobe killed from outside says nothing sure about the file: probe again.
                log.warning("probe of job %s interrupted (%s); probing again", job.id, exc)
                await asyncio.sleep(min(self.config.retry_backoff_s * tries, MAX_BACKOFF_S))
            else:
                self._probe_tries.pop(job.id, None)
                if job.status is JobStatus.QUEUED:
                    self._fail(job, exc)
            return
        except Exception as exc:  # a bug or an OS error: end the job, never probe in a loop
            log.exception("probe of job %s failed", job.id)
            self._probe_tries.pop(job.id, None)
            if job.status is JobStatus.QUEUED:
                self._fail(job, InputError(f"the input could not be probed ({exc})"))
            return
        finally:
            self._probing.pop(job.id, None)
            if not self._stopping:
                self._wake.set()
        self._probe_tries.pop(job.id, None)
        if job.status is not JobStatus.QUEUED:
            return
        job.input_media = media.to_dict()
        if job.spec.kind is JobKind.PROBE:
            self._move(job, JobStatus.RUNNING, reason="probed by the coordinator")
            job.result = {"media": job.input_media}
            self._move(job, JobStatus.SUCCEEDED, reason="probed")
            return
        self._media[job.id] = media
        self._store.save(job)
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
        for job in self._queue.values():
            if job.id not in self._media:
                if job.id not in self._probing:
                    self._probing[job.id] = asyncio.create_task(self._probe(job))
            elif job.not_before <= now:
                ready.append(job)
        if not ready or not self._nodes:
            return  # nothing to place, or no node yet: wait for the cluster
        aging = self.config.aging_s
        ready.sort(key=lambda j: queue_key(j.spec.priority, j.seq, now - j.updated_at, aging))
        planner = Planner(self._node_states(placeable=True), self.config.policy, self.config.costs)
        waiting: list[dict[str, float]] = []
        # What the cluster could ever run is judged on every node, suspect ones included.
        whole = planner if not self._suspect else Planner(self._node_states())
        for job in ready:
            if self._stopping:
                return
            if planner.exhausted():  # every core is given out: nothing below can start
                waiting += [autoscaler_bundle(self._demand(j), self.config.costs)
                            for j in ready[ready.index(job):]]  # fmt: skip
                break
            demand = self._demand(job)
            never = whole.never(demand)
            if never is not None:
                self.metrics.placement_failures += 1
                self._fail(job, SpecError(never, code="no_capacity"))
                continue
            placement = planner.place(demand)
            if placement is not None:
                self._launch(job, placement)
            else:
                waiting.append(autoscaler_bundle(demand, self.config.costs))
        self._ask_for_capacity(waiting)

    def _demand(self, job: Job) -> Demand:
        media = self._media[job.id]
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
            for lease, _ in self._running.values():
                bundles.append({"CPU": lease.placement.cpus})
            bundles += waiting
        bundles = bundles[:MAX_AUTOSCALER_BUNDLES]
        if bundles == self._asked:
            return
        self._asked = bundles
        task = asyncio.create_task(self._backend.request_capacity(bundles))
        task.add_done_callback(_log_failure)

    def _node_states(self, *, placeable: bool = False) -> list[NodeState]:
        """The planner's snapshot; ``placeable`` leaves out nodes that just lost a worker."""
        now = time.monotonic()
        nodes = self._nodes
        if placeable and self._suspect:
            self._suspect = {k: t for k, t in self._suspect.items() if t > now}
            nodes = [n for n in nodes if n.node_id not in self._suspect]
        used = {n.node_id: self._pool.used(n.node_id) for n in nodes}
        return node_states(
            nodes,
            used,
            self._pool.gpu_used(),
            self._caps,
            self.config.max_jobs_per_node,
            self._nvenc_failures,
        )

    def _launch(self, job: Job, placement: Placement) -> None:
        spec, media = job.spec, self._media[job.id]
        node = next(n for n in self._nodes if n.node_id == placement.node_id)
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
                ffmpeg=node.ffmpeg.path if node.ffmpeg else "ffmpeg",
                roots=tuple(str(r) for r in self.config.media_roots),
            )
        except JobFailure as exc:
            self._fail(job, exc)
            return
        lease = self._pool.acquire(placement, node_totals=node.resources)
        job.placement = {**placement.to_dict(), "encoder": order.encoder}
        self._move(job, JobStatus.RUNNING, reason=placement.reason)
        task = asyncio.create_task(self._execute(job, lease, order))
        self._running[job.id] = (lease, task)

    async def _execute(self, job: Job, lease: Lease, order: WorkOrder) -> None:
        healthy = True
        try:
            outcome = await lease.handle.run(order)
        except WorkerLost as exc:
            healthy = False
            outcome = WorkOutcome.failure(order, exc)
            # Its node may be dying: place nothing there for a while, and ask Ray now.
            self._suspect[lease.node_id] = time.monotonic() + SUSPECT_NODE_S
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

    def _complete(self, job: Job, outcome: WorkOutcome) -> None:
        if job.status is not JobStatus.RUNNING or outcome.attempt != job.attempts:
            return
        if outcome.progress:
            job.progress = outcome.progress
        if outcome.status == "succeeded":
            job.result = outcome.result
            job.notes = outcome.notes
            self._move(job, JobStatus.SUCCEEDED, reason=f"completed in {outcome.elapsed_s:.1f} s")
        elif self._stopping:
            self._clear_partials(job)
            self._move(job, JobStatus.QUEUED, reason="re-queued: framefleet was shut down")
        elif job.id in self._cancelling or outcome.status == "cancelled":
            self._move(job, JobStatus.CANCELLED, reason="cancelled by user", code="cancelled")
        elif outcome.error_code == "nvenc_unavailable" and self._nvenc_failed(job, outcome):
            return
        elif outcome.error_code == "worker_lost" and self._node_gone(job):
            # Not the job's fault: place it again at once, whatever its attempts.
            self.metrics.node_losses += 1
            self._clear_partials(job)
            job.not_before = 0.0
            address = (job.placement or {}).get("address", "?")
            self._move(
                job,
                JobStatus.QUEUED,
                reason=f"node {address} left the cluster mid-job; placing again",
            )
        elif outcome.retryable and job.attempts < job.max_attempts:
            self.metrics.retries += 1
            delay = min(self.config.retry_backoff_s * 2 ** (job.attempts - 1), MAX_BACKOFF_S)
            job.not_before = time.time() + delay
            self._move(
                job,
                JobStatus.QUEUED,
                reason=f"attempt {job.attempts} failed: {outcome.error}; retrying in {delay:g} s",
            )
        else:
            reason = outcome.error or "failed"
            if outcome.retryable:  # it was retried as long as the policy allows
                reason = f"{reason}; gave up after {job.attempts} attempts"
            self._move(job, JobStatus.FAILED, reason=reason, code=outcome.error_code)

    def _node_gone(self, job: Job) -> bool:
        node_id = (job.placement or {}).get("node_id")
        return node_id is not None and all(n.node_id != node_id for n in self._nodes)

    def _nvenc_failed(self, job: Job, outcome: WorkOutcome) -> bool:
        """NVENC did not open on the placed GPU: mark that GPU's codec failed and re-place
        the job (CPU allowed for ``auto``; another GPU that can, for ``gpu``). Returns
        ``False`` when there is nowhere else to go, so the job fails as usual."""
        placed = job.placement or {}
        gpu = placed.get("gpu")
        if not gpu:
            return False
        self.metrics.nvenc_failures += 1
        codec = job.spec.codec
        where = f"GPU {gpu['index']} ({gpu['name']}) on {placed['address']}"
        why = (outcome.error or "NVENC did not open").split(": ", 1)[-1]
        self._nvenc_failures[(gpu["uuid"], codec)] = Capability(
            CodecState.FAILED, f"NVENC failed on a real encode: {why}"
        )
        log.warning("%s cannot encode %s with NVENC: %s", where, codec, why)
        planner = Planner(self._node_states(), self.config.policy, self.config.costs)
        if job.spec.hardware is Hardware.GPU and planner.never(self._demand(job)) is not None:
            self._move(
                job,
                JobStatus.FAILED,
                reason=(
                    f"NVENC could not encode {codec} on {where}: {why}; no other GPU in "
                    "the cluster can; use --hardware auto or cpu"
                ),
                code=outcome.error_code,
            )
            return True
        job.not_before = 0.0
        self._move(
            job,
            JobStatus.QUEUED,
            reason=f"NVENC could not encode {codec} on {where} ({why}); placing it again",
        )
        return True

    def _clear_partials(self, job: Job) -> None:
        if job.spec.output:
            out = Path(job.spec.output)
            remove_stale_partials(out if job.spec.kind is JobKind.THUMBNAIL else out.parent, job.id)

    # ---- housekeeping ----------------------------------------------------------------

    async def _refresh_nodes(self) -> None:
        nodes = await self._backend.nodes()
        gone = {n.node_id for n in self._nodes} - {n.node_id for n in nodes}
        for node_id in gone:
            log.warning("node %s left the cluster", node_id)
            self._pool.forget_node(node_id)
            self._caps.pop(node_id, None)
        self._nodes = nodes
        self._refreshed = True
        if nodes and all(n.reported for n in nodes):
            self._view.set()

    async def _housekeeping_loop(self) -> None:
        while not self._stopping:
            try:
                await self._refresh_nodes()
                self._pool.reap()
                self._forget_finished(time.time())
            except Exception:
                log.exception("housekeeping failed")
            self._wake.set()
            await asyncio.sleep(self.config.node_refresh_s)
