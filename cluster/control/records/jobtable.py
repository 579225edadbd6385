"""The coordinator's job table: every job it knows, the queue, idempotency keys, and the
one writer of a :class:`~cluster.model.jobs.Job`.

Nothing else changes a job: a state change is a :class:`Move` the table applies
(:meth:`JobTable.move`: the state machine, the queue, the counters, SQLite with the
ending's webhook in the same transaction, the event); everything else a job records
has a typed method (:meth:`~JobTable.set_media`, :meth:`~JobTable.set_placement`,
:meth:`~JobTable.set_progress`, :meth:`~JobTable.record_failure`,
:meth:`~JobTable.set_graph`, :meth:`~JobTable.set_view`, :meth:`~JobTable.add_tasks`).
Finished jobs stay in memory for ``finished_retention_s`` (the tasks of a job still
running stay with it) and are read back from SQLite after. Time comes from ``now``.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cluster.control.records.metrics import JobMetrics
from cluster.control.records.store import Delivery, JobStore
from cluster.control.records.webhooks import KEEP_ATTEMPTS, Webhooks
from cluster.control.rules.graph import View
from cluster.errors import ErrorCode, IdempotencyConflict, JobNotFound
from cluster.model.counters import JobCounter
from cluster.model.events import EventLog, EventType
from cluster.model.graph import Graph, Phase, advance, task_id
from cluster.model.jobs import (
    Failure,
    Job,
    JobPlacement,
    JobSpec,
    JobStatus,
    Webhook,
    WebhookAttempt,
    WebhookState,
    transition,
)
from cluster.model.media import MediaInfo
from cluster.model.progress import ProgressSnapshot
from cluster.model.tenancy import tenant_of

BATCH_KEY = "batch:"
"""Prefix of a batch's idempotency key as stored on each of its jobs."""
MAX_FAILURES_KEPT = 20


@dataclass(frozen=True, slots=True)
class Move:
    """A state change for the table to make (see :func:`~cluster.model.jobs.transition`)."""

    job: Job
    status: JobStatus
    reason: str | None = None
    code: ErrorCode | None = None
    result: dict[str, Any] | None = None
    """Succeeded: what it made."""
    notes: tuple[str, ...] = ()
    """Succeeded: what the user should know of it."""
    progress: ProgressSnapshot | None = None
    """Ended: its last progress."""
    not_before: float = 0.0
    """Queued again: the earliest time it may be placed."""
    charged: bool = True
    """Queued again: whether the attempt that ended counts against its attempts (not when
    its node left, or framefleet shut down or restarted)."""
    since: JobStatus | None = None
    """The status the move was decided on: if the job has moved since, it is stale."""

    def stale(self, current: Job | None) -> bool:
        """Whether the job moved since this was decided, or ``self.job`` is an older record
        of it than the table's ``current`` one (a task of an earlier run of its job)."""
        if current is not None and current is not self.job:
            return True
        return self.since is not None and self.job.status is not self.since


class Queue(dict[str, Job]):
    """The queued jobs, noting which ones came or went since :meth:`changes` was last
    read: the dispatcher looks again at those, not at the whole queue."""

    def __init__(self, jobs: dict[str, Job] | None = None) -> None:
        super().__init__(jobs or {})
        self._changed: set[str] = set(self)

    def __setitem__(self, job_id: str, job: Job) -> None:
        super().__setitem__(job_id, job)
        self._changed.add(job_id)

    def pop(self, job_id: str, *default: Any) -> Any:
        self._changed.add(job_id)
        return super().pop(job_id, *default)

    def changes(self) -> set[str]:
        """The ids queued, re-queued or gone since the last call."""
        changed, self._changed = self._changed, set()
        return changed


SWEEP_S = 600.0
"""Every job held is looked at this often to forget the finished ones."""


class JobTable:
    def __init__(
        self,
        store: JobStore,
        *,
        max_attempts: int,
        retention_s: float,
        idempotency_ttl_s: float,
        metrics: JobMetrics | None = None,
        webhooks: dict[str, Any] | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        """``webhooks``: :class:`Webhooks`' settings (``secret``, ``attempts``,
        ``backoff_s``)."""
        self.store = store
        self.events = EventLog(now=now)
        self.metrics = metrics or JobMetrics()
        self.jobs: dict[str, Job] = {}
        """Active jobs and those finished within the retention window."""
        self.queue = Queue()
        self._queued_by: Counter[str | None] = Counter()
        """Queued jobs (not tasks) per owner."""
        self._queued_in: Counter[str] = Counter()
        """Queued jobs (not tasks) per tenant."""
        self._keys: dict[str, list[str]] = {}
        """Idempotency key (``batch:`` prefixed for batches) -> its job ids."""
        self._ended: deque[str] = deque()
        """Jobs that ended, in the order they did: what :meth:`forget_finished` reads (a
        job retried since, or already forgotten, is skipped when met)."""
        self._swept_at = now()
        self._seq = 0
        self._max_attempts = max_attempts
        self._retention_s = retention_s
        self._ttl_s = idempotency_ttl_s
        self._now = now
        self.webhooks = Webhooks(store, on_attempt=self._webhook_tried, **(webhooks or {}))

    def recover(self) -> list[Job]:
        """Load every stored job; those that were running are queued again (not charged
        to them). Returns them: what their attempts left half-written is the caller's to
        remove."""
        requeued = []
        for job in self.store.load_all():
            self.jobs[job.id] = job
            if job.status.terminal:
                self._ended.append(job.id)
            if job.idempotency_key is not None:
                self._keys.setdefault(job.idempotency_key, []).append(job.id)
            self._seq = max(self._seq, job.seq)
            if job.status is JobStatus.RUNNING:  # not the job's fault: not one of its attempts
                why = "re-queued: the coordinator restarted"
                self._transition(Move(job, JobStatus.QUEUED, why, charged=False))
                requeued.append(job)
        self.store.save_many(requeued)
        self.queue = Queue({j.id: j for j in self.jobs.values() if j.status is JobStatus.QUEUED})
        self._queued_by = Counter(j.owner for j in self.queue.values() if j.task is None)
        self._queued_in = Counter(tenant_of(j.tenant) for j in self.queue.values() if not j.task)
        self._ended = deque(sorted(self._ended, key=lambda i: self.jobs[i].updated_at))
        self.forget_finished(self._now())
        return requeued

    # ---- reading ---------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        """A job: in memory while active or recently finished, else read from SQLite."""
        job = self.find(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def find(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id) or self.store.load(job_id)

    def tasks_of(self, parent: Job) -> dict[str, Job]:
        """The tasks of ``parent``'s graph that have a record, by key."""
        if parent.graph is None:
            return {}
        found = {}
        for ref in parent.graph.tasks:
            task = self.find(task_id(parent.id, ref.key))
            if task is not None and task.task is not None and task.task.parent == parent.id:
                found[ref.key] = task
        return found

    def query(
        self,
        *,
        status: str | None,
        kind: str | None,
        after_seq: int,
        limit: int,
        tenant: str | None = None,
    ) -> list[Job]:
        """From SQLite, with the live copy (progress) of each job still in memory."""
        stored = self.store.query(after_seq=after_seq, status=status, kind=kind, limit=limit,
                                  tenant=tenant)  # fmt: skip
        return [self.jobs.get(job.id, job) for job in stored]

    def known(self, key: str | None, specs: list[JobSpec], *, batch: bool) -> list[Job] | None:
        """The jobs an idempotency key made while it is live (``None``: a new request);
        an :class:`IdempotencyConflict` if it was used for different ``specs``."""
        if key is None:
            return None
        ids = self._keys.get(BATCH_KEY + key if batch else key)
        if not ids:
            return None
        first = [self.get(i) for i in ids]
        if self._now() - first[0].created_at >= self._ttl_s:
            return None
        if [j.spec for j in first] != specs:
            what = "batch" if batch else "request"
            raise IdempotencyConflict(
                f"this Idempotency-Key was used for a different {what}; "
                f"use a new key for a new {'batch' if batch else 'job'}"
            )
        return first

    # ---- new jobs --------------------------------------------------------------------

    def queued_of(self, owner: str | None) -> int:
        """How many of ``owner``'s jobs are queued."""
        return self._queued_by[owner]

    def queued_in(self, tenant: str | None) -> int:
        """How many of ``tenant``'s jobs are queued."""
        return self._queued_in[tenant_of(tenant)]

    def add(
        self,
        specs: list[JobSpec],
        key: str | None = None,
        *,
        batch: bool = False,
        owner: str | None = None,
        tenant: str | None = None,
    ) -> list[Job]:
        """New queued jobs of ``owner`` (of ``tenant``) for ``specs`` (admitted already),
        saved in one transaction."""
        jobs = []
        now = self._now()
        for spec in specs:
            self.metrics.on_submit(str(spec.kind), spec.codec)
            self._seq += 1
            job = Job(id=Job.new_id(), spec=spec, seq=self._seq, max_attempts=self._max_attempts,
                      created_at=now, updated_at=now, owner=owner, tenant=tenant)  # fmt: skip
            if key is not None:
                job.idempotency_key = BATCH_KEY + key if batch else key
            self.jobs[job.id] = job
            self.queue[job.id] = job
            jobs.append(job)
        self._queued_by[owner] += len(jobs)
        self._queued_in[tenant_of(tenant)] += len(jobs)
        if key is not None:
            self._keys[BATCH_KEY + key if batch else key] = [j.id for j in jobs]
        self.store.save_many(jobs)
        for job in jobs:
            self.publish(job)
        return jobs

    def add_tasks(self, parent: Job, graph: Graph, view: View | None, tasks: list[Job]) -> None:
        """``parent``'s graph and its tasks (hidden jobs, waiting or queued), saved in one
        transaction: a restart finds both or neither."""
        parent.graph = graph
        parent.show(view)
        for task in tasks:
            self.jobs[task.id] = task
            if task.status is JobStatus.QUEUED:
                self.queue[task.id] = task
        self.store.save_many([*tasks, parent])
        self.publish(parent)

    # ---- changing --------------------------------------------------------------------

    def move(self, m: Move) -> bool:
        """The one way a job changes state (see :func:`cluster.model.jobs.transition`);
        a stale move (:meth:`Move.stale`) is dropped. Whether it was made."""
        job, status = m.job, m.status
        if m.stale(self.jobs.get(job.id)):
            return False
        was_since, was_queued, was = job.updated_at, job.id in self.queue, job.status
        self._transition(m)
        self.jobs[job.id] = job  # a job read back from SQLite (a retry) is active again
        self._count(job, status, was_since, was)
        if status is JobStatus.QUEUED:
            self.queue[job.id] = job
        else:
            self.queue.pop(job.id, None)
        if status.terminal:
            self._ended.append(job.id)
        if job.task is None and was_queued != (status is JobStatus.QUEUED):
            self._queued_by[job.owner] += 1 if not was_queued else -1
            self._queued_in[tenant_of(job.tenant)] += 1 if not was_queued else -1
        delivery = None
        if status.terminal and job.spec.callback_url:
            delivery = self.webhooks.prepare(job, job.spec.callback_url, job.updated_at)
            job.webhook = Webhook(delivery.id, job.spec.callback_url, next_at=job.updated_at)
        self.store.save(job, webhook=delivery)
        if delivery is not None:
            self.webhooks.queued(delivery)
        self.publish(job)
        return True

    def _transition(self, m: Move) -> None:
        job = m.job
        if m.progress is not None:
            job.progress = m.progress
        if m.status is JobStatus.SUCCEEDED or m.result is not None:  # a failed one may show it
            job.result, job.notes = m.result, list(m.notes)
        transition(job, m.status, reason=m.reason, error_code=m.code, now=self._now())
        if m.status.terminal and job.graph is not None and job.graph.phase is not Phase.DONE:
            job.graph = advance(job.graph, Phase.DONE)  # its graph ends with it, in one save
        if m.status is JobStatus.QUEUED:
            job.not_before = m.not_before
            job.requeues += not m.charged

    def set_media(self, job: Job, media: MediaInfo) -> None:
        """The job's input was probed."""
        job.input_media = media
        self.store.save(job)

    def set_placement(self, job: Job, placement: JobPlacement, limits: dict[str, float]) -> None:
        """Where its next attempt runs, and the watchdog's limits there (saved with the
        move to running that follows)."""
        job.placement, job.limits = placement, limits

    def set_progress(self, job: Job, progress: ProgressSnapshot | None) -> None:
        """Its progress, in memory (a job's progress is not kept across restarts)."""
        job.progress = progress
        self.publish(job, EventType.PROGRESS)

    def record_failure(self, job: Job, failure: Failure) -> None:
        """An attempt that failed not by the input's fault (saved with the move that
        follows); the newest few are kept."""
        job.failures = (*job.failures, failure)[-MAX_FAILURES_KEPT:]

    def set_graph(self, job: Job, graph: Graph, *, save: bool = True) -> None:
        """Its graph's new phase or facts (``save``: now, else with its next change)."""
        job.graph = graph
        if save:
            self.store.save(job)

    def set_view(self, job: Job, view: View | None, *, save: bool, publish: bool = False) -> None:
        """What the job shows of its graph (``save``: now, else with its next change;
        ``publish``: a decision users are told of)."""
        job.show(view)
        if save:
            self.store.save(job)
        if publish:
            self.publish(job)

    def publish(self, job: Job, type: EventType = EventType.STATUS) -> None:
        if job.task is None:  # a task shows through its job
            self.events.publish(job, type)

    def _webhook_tried(
        self,
        delivery: Delivery,
        attempt: WebhookAttempt,
        state: WebhookState,
        next_at: float | None,
    ) -> None:
        """Record a webhook attempt on its job (unless the job has ended again since)."""
        job = self.find(delivery.job_id)
        if job is None or job.webhook is None or job.webhook.id != delivery.id:
            return
        attempts = (*job.webhook.attempts, attempt)[-KEEP_ATTEMPTS:]
        job.webhook = Webhook(delivery.id, job.webhook.url, state, attempts, next_at)
        counter = {WebhookState.DELIVERED: JobCounter.WEBHOOKS_DELIVERED,
                   WebhookState.FAILED: JobCounter.WEBHOOKS_FAILED}  # fmt: skip
        self.metrics.count(counter.get(state, JobCounter.WEBHOOK_RETRIES))
        self.store.save(job)
        self.publish(job, EventType.WEBHOOK)

    def forget_finished(self, now: float) -> int:
        """Drop finished jobs older than the retention window from memory (not from
        SQLite), but not the tasks of a job still running; returns how many. It reads
        the jobs in the order they ended, up to the first one still kept: 120,000 jobs
        held are not all looked at every few seconds (every :data:`SWEEP_S` they are,
        in case one ended some other way)."""
        cutoff = now - self._retention_s
        if now - self._swept_at >= SWEEP_S:
            self._swept_at = now
            self._ended = deque(sorted((j.id for j in self.jobs.values() if j.status.terminal),
                                       key=lambda i: self.jobs[i].updated_at))  # fmt: skip
        forgotten, kept = 0, []
        while self._ended:
            job = self.jobs.get(self._ended[0])
            if job is None or not job.status.terminal:
                self._ended.popleft()  # forgotten already, or retried (back when it ends)
                continue
            if job.updated_at >= cutoff:
                break
            self._ended.popleft()
            if self._parent_active(job):
                kept.append(job.id)  # its job's other tasks still run: kept with them
                continue
            del self.jobs[job.id]
            forgotten += 1
        self._ended.extend(kept)
        return forgotten

    def _parent_active(self, job: Job) -> bool:
        parent = self.jobs.get(job.task.parent) if job.task else None
        return parent is not None and not parent.status.terminal

    def _count(self, job: Job, status: JobStatus, was_since: float, was: JobStatus) -> None:
        tenant = tenant_of(job.tenant)
        ended_run = was is JobStatus.RUNNING and status is not JobStatus.RUNNING
        if ended_run and job.placement is not None and job.started_at is not None:
            held = job.updated_at - job.started_at  # the attempt's run (tasks' too)
            gpus = 1 if job.placement.gpu is not None else 0
            self.metrics.on_held(tenant, gpus, job.placement.cpus, held)
        if job.task is not None:  # counted as its job
            return
        kind, codec = str(job.spec.kind), job.spec.codec
        if status is JobStatus.RUNNING:
            self.metrics.on_start(kind, job.updated_at - was_since)
        elif status.terminal:
            ran = job.finished_at - job.started_at if job.started_at and job.finished_at else None
            encoder = job.placement.encoder if job.placement else None
            self.metrics.on_finish(kind, codec, encoder, str(status), ran, job.result)
            self.metrics.on_tenant_finish(tenant, str(status))
