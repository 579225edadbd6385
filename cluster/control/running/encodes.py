"""The encodes running now: each on a pooled encoder, awaited, and stopped on request
within a bound (an encoder that does not answer is killed, and its ffmpeg with it).

A job has at most one encode here at any moment: a new attempt is not started while the
previous one's encoder has not confirmed its end (its call returned, or Ray reported the
actor dead), and an encode leaves :attr:`Encodes.running` only then."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cluster.control.running.pool import EncoderPool, Lease
from cluster.errors import EncodeError, JobFailure, WorkerLost
from cluster.media.work import WorkOrder, WorkOutcome
from cluster.model.jobs import Job
from cluster.scheduling.planner import Placement

log = logging.getLogger("framefleet.coordinator.running")
CANCEL_WAIT_S = 15.0
KILL_WAIT_S = 10.0
"""How long a killed encoder has for Ray to confirm it dead (its ffmpeg dies with it)."""


@dataclass(slots=True)
class Running:
    job: Job
    lease: Lease
    task: asyncio.Task[None]


class Encodes:
    def __init__(
        self,
        pool: EncoderPool,
        *,
        on_outcome: Callable[[Job, WorkOutcome], None],
        on_lost: Callable[[str], Awaitable[None]],
    ) -> None:
        self.pool = pool
        self._on_outcome = on_outcome
        self._on_lost = on_lost
        self.running: dict[str, Running] = {}
        self.cancelling: set[str] = set()
        """Jobs whose encode is being stopped at a user's request."""
        self.stopped: dict[str, JobFailure] = {}
        """Jobs whose encode the watchdog stopped, and why (their outcome is that failure)."""

    def start(
        self, job: Job, placement: Placement, order: WorkOrder, totals: dict[str, float]
    ) -> None:
        """Run ``order`` on a warm encoder of the placement's shape (or a new one)."""
        if job.id in self.running:  # the caller checks: an attempt never overlaps another
            raise RuntimeError(f"job {job.id} still has an encode running")
        lease = self.pool.acquire(placement, node_totals=totals)
        task = asyncio.create_task(self._run(job, lease, order))
        self.running[job.id] = Running(job, lease, task)

    async def _run(self, job: Job, lease: Lease, order: WorkOrder) -> None:
        healthy = True
        try:
            outcome = await lease.handle.run(order)
        except WorkerLost as exc:
            healthy = False
            outcome = WorkOutcome.failure(order, exc)
            with contextlib.suppress(Exception):
                await self._on_lost(lease.node_id)  # its node may be dying
        except Exception as exc:
            log.exception("encoder call failed for job %s", job.id)
            healthy = False
            outcome = WorkOutcome.failure(order, EncodeError(f"internal error: {exc}"))
        why = self.stopped.pop(job.id, None)
        if why is not None and outcome.status != "succeeded":
            outcome = WorkOutcome.failure(order, why, outcome.progress)
        run = self.running.get(job.id)
        if run is not None and run.lease is lease:
            del self.running[job.id]
        self.pool.release(lease, healthy=healthy)
        try:
            self._on_outcome(job, outcome)
        finally:  # a later attempt (or a retried graph's task of the same id) starts clean
            self.cancelling.discard(job.id)

    def alive(self, job_id: str) -> bool:
        """Whether an encode of ``job_id`` has not yet confirmed its end."""
        return job_id in self.running

    async def stop(self, job_id: str, why: JobFailure | None = None) -> bool:
        """Ask the job's encoder to stop, bounded: an encoder that is frozen (stopped, or
        its node hung) answers nothing; it is then killed, and its ffmpeg dies with it.
        Without ``why`` the user cancelled it; with it, the attempt failed for ``why``.
        Whether the encode has ended (its outcome handled) when this returns: ``False``
        only when even a killed encoder was not confirmed dead in time (a hung node),
        and its outcome then comes when Ray gives up on it."""
        run = self.running.get(job_id)
        if run is None:
            return True
        if why is None:
            self.cancelling.add(job_id)
        else:
            self.stopped[job_id] = why
        deadline = time.monotonic() + CANCEL_WAIT_S
        try:
            with contextlib.suppress(WorkerLost):
                await asyncio.wait_for(run.lease.handle.cancel(job_id), CANCEL_WAIT_S)
            await asyncio.wait_for(asyncio.shield(run.task), max(deadline - time.monotonic(), 0.1))
        except TimeoutError:
            log.warning("encoder of job %s did not stop within %g s; killed", job_id,
                        CANCEL_WAIT_S)  # fmt: skip
            self.pool.release(run.lease, healthy=False)
            with contextlib.suppress(TimeoutError):  # Ray says when the actor is dead
                await asyncio.wait_for(asyncio.shield(run.task), KILL_WAIT_S)
        return run.task.done()

    async def shutdown(self) -> None:
        """Stop every encode (ffmpeg killed, partial files removed), then the pool."""
        for run in list(self.running.values()):
            with contextlib.suppress(JobFailure):  # a lost or broken encoder is gone anyway
                await run.lease.handle.shutdown()
        for run in list(self.running.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(run.task, CANCEL_WAIT_S)
        await self.pool.close()
