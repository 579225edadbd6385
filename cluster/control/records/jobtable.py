"""The coordinator's job table: every job it knows, the queue, idempotency keys, and the
one function that changes a job's state.

:meth:`JobTable.move` applies the state machine, keeps the queue, counts metrics,
writes SQLite (with the ending's webhook, in the same transaction) and publishes the
event; nothing else changes a job's status. Finished
jobs stay in memory for ``finished_retention_s`` and are read back from SQLite after.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cluster.control.records.metrics import JobMetrics
from cluster.control.records.store import Delivery, JobStore
from cluster.control.records.webhooks import KEEP_ATTEMPTS, Webhooks
from cluster.errors import ErrorCode, IdempotencyConflict, JobNotFound
from cluster.media.runner import remove_stale_partials
from cluster.model.events import EventLog, EventType
from cluster.model.jobs import Job, JobKind, JobSpec, JobStatus, transition
from cluster.storage.urls import is_object_url

BATCH_KEY = "batch:"
"""Prefix of a batch's idempotency key as stored on each of its jobs."""


def clear_partials(job: Job) -> None:
    """Remove what an attempt of ``job`` left half-written at its destination (an object
    store holds nothing partial: an upload is an object only once complete)."""
    if job.spec.output and not is_object_url(job.spec.output):
        out = Path(job.spec.output)
        remove_stale_partials(out if job.spec.kind is JobKind.THUMBNAIL else out.parent, job.id)


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
    ) -> None:
        """``webhooks``: :class:`Webhooks`' settings (``secret``, ``attempts``,
        ``backoff_s``)."""
        self.store = store
        self.events = EventLog()
        self.metrics = metrics or JobMetrics()
        self.jobs: dict[str, Job] = {}
        """Active jobs and those finished within the retention window."""
        self.queue: dict[str, Job] = {}
        self._keys: dict[str, list[str]] = {}
        """Idempotency key (``batch:`` prefixed for batches) -> its job ids."""
        self._seq = 0
        self._max_attempts = max_attempts
        self._retention_s = retention_s
        self._ttl_s = idempotency_ttl_s
        self.webhooks = Webhooks(store, on_attempt=self._webhook_tried, **(webhooks or {}))
        self.clear_partials: Callable[[Job], None] = clear_partials
        """Removes what dead attempts of a job left half-written (the coordinator's
        :meth:`~cluster.control.farm.reach.MediaReach.clear_partials` where roots are not
        seen everywhere)."""

    def recover(self) -> list[Job]:
        """Load every stored job; those that were running are queued again (their
        partial files removed). Returns the queued jobs."""
        requeued = []
        for job in self.store.load_all():
            self.jobs[job.id] = job
            if job.idempotency_key is not None:
                self._keys.setdefault(job.idempotency_key, []).append(job.id)
            self._seq = max(self._seq, job.seq)
            if job.status is JobStatus.RUNNING:
                transition(job, JobStatus.QUEUED, reason="re-queued: the coordinator restarted")
                job.requeues += 1  # not the job's fault: not one of its attempts
                self.clear_partials(job)
                requeued.append(job)
        self.store.save_many(requeued)
        self.queue = {j.id: j for j in self.jobs.values() if j.status is JobStatus.QUEUED}
        self.forget_finished(time.time())
        return requeued

    # ---- reading ---------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        """A job: in memory while active or recently finished, else read from SQLite."""
        job = self.jobs.get(job_id) or self.store.load(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def query(
        self, *, status: str | None, kind: str | None, after_seq: int, limit: int
    ) -> list[Job]:
        """From SQLite, with the live copy (progress) of each job still in memory."""
        stored = self.store.query(after_seq=after_seq, status=status, kind=kind, limit=limit)
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
        if time.time() - first[0].created_at >= self._ttl_s:
            return None
        if [j.spec for j in first] != specs:
            what = "batch" if batch else "request"
            raise IdempotencyConflict(
                f"this Idempotency-Key was used for a different {what}; "
                f"use a new key for a new {'batch' if batch else 'job'}"
            )
        return first

    # ---- changing --------------------------------------------------------------------

    def add(
        self, specs: list[JobSpec], key: str | None = None, *, batch: bool = False
    ) -> list[Job]:
        """New queued jobs for ``specs`` (admitted already), saved in one transaction."""
        jobs = []
        for spec in specs:
            self.metrics.on_submit(str(spec.kind), spec.codec)
            self._seq += 1
            job = Job(id=Job.new_id(), spec=spec, seq=self._seq, max_attempts=self._max_attempts)
            if key is not None:
                job.idempotency_key = BATCH_KEY + key if batch else key
            self.jobs[job.id] = job
            self.queue[job.id] = job
            jobs.append(job)
        if key is not None:
            self._keys[BATCH_KEY + key if batch else key] = [j.id for j in jobs]
        self.store.save_many(jobs)
        for job in jobs:
            self.publish(job)
        return jobs

    def add_chunks(self, chunks: list[Job]) -> None:
        """Queue a split job's chunks (hidden sub-jobs; :mod:`cluster.control.splits`)."""
        for chunk in chunks:
            self.jobs[chunk.id] = chunk
            self.queue[chunk.id] = chunk
        self.store.save_many(chunks)

    def move(
        self,
        job: Job,
        status: JobStatus,
        *,
        reason: str | None = None,
        code: ErrorCode | None = None,
    ) -> None:
        """The one way a job changes state (see :func:`cluster.model.jobs.transition`)."""
        was_since = job.updated_at
        transition(job, status, reason=reason, error_code=code)
        self._count(job, status, was_since)
        if status is JobStatus.QUEUED:
            self.queue[job.id] = job
        else:
            self.queue.pop(job.id, None)
        delivery = None
        if status.terminal:
            self.clear_partials(job)  # e.g. what a lost worker's ffmpeg wrote
            if job.spec.callback_url:
                delivery = self.webhooks.prepare(job, job.spec.callback_url, job.updated_at)
        self.store.save(job, webhook=delivery)
        if delivery is not None:
            self.webhooks.queued(delivery)
        self.publish(job)

    def save(self, job: Job) -> None:
        self.store.save(job)

    def publish(self, job: Job, type: EventType = EventType.STATUS) -> None:
        if job.chunk is None:  # a chunk shows through its job
            self.events.publish(job, type)

    def _webhook_tried(
        self, delivery: Delivery, attempt: dict[str, Any], state: dict[str, Any]
    ) -> None:
        """Record a webhook attempt on its job (unless the job has ended again since)."""
        job = self.jobs.get(delivery.job_id) or self.store.load(delivery.job_id)
        if job is None or not job.webhook or job.webhook.get("id") != delivery.id:
            return
        attempts = [*job.webhook.get("attempts", ()), attempt][-KEEP_ATTEMPTS:]
        job.webhook = {**job.webhook, **state, "attempts": attempts}
        counter = {"delivered": "webhooks_delivered", "failed": "webhooks_failed"}
        name = counter.get(state["state"], "webhook_retries")
        setattr(self.metrics, name, getattr(self.metrics, name) + 1)
        self.store.save(job)
        self.publish(job, EventType.WEBHOOK)

    def forget_finished(self, now: float) -> int:
        """Drop finished jobs older than the retention window from memory (not from
        SQLite); returns how many."""
        cutoff = now - self._retention_s
        old = [j.id for j in self.jobs.values() if j.status.terminal and j.updated_at < cutoff]
        for job_id in old:
            del self.jobs[job_id]
        return len(old)

    def _count(self, job: Job, status: JobStatus, was_since: float) -> None:
        if job.chunk is not None:  # counted as its job
            return
        kind, codec = str(job.spec.kind), job.spec.codec
        if status is JobStatus.RUNNING:
            self.metrics.on_start(kind, job.updated_at - was_since)
        elif status.terminal:
            ran = job.finished_at - job.started_at if job.started_at and job.finished_at else None
            encoder = job.placement.encoder if job.placement else None
            self.metrics.on_finish(kind, codec, encoder, str(status), ran, job.result)
