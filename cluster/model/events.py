"""Job events in sequence, for subscribers that long-poll instead of polling every job."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cluster.errors import ErrorCode
from cluster.model.jobs import Job, JobStatus
from cluster.model.progress import ProgressSnapshot


class EventType(StrEnum):
    STATUS = "status"
    """The job changed state (or its reason)."""
    PROGRESS = "progress"
    """A running job's encoder reported progress."""
    WEBHOOK = "webhook"
    """A finished job's webhook was tried (``job.webhook`` says how it went)."""
    ETA = "eta"
    """A job's predicted start or finish moved (``forecast``)."""


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One change to one job: the fields every subscriber (SSE, WebSocket, CLI) reads."""

    seq: int
    type: EventType
    job_id: str
    status: JobStatus
    attempts: int
    reason: str | None
    error_code: ErrorCode | None
    progress: ProgressSnapshot | None
    time: float
    tenant: str | None = None
    """The job's tenant (a stream shows a caller only its own tenant's events)."""
    forecast: dict[str, Any] | None = None
    """Its predicted start and finish (see :attr:`Job.forecast`)."""

    @classmethod
    def of(cls, job: Job, type: EventType, seq: int = 0) -> JobEvent:
        return cls(
            seq=seq,
            type=type,
            job_id=job.id,
            status=job.status,
            attempts=job.attempts,
            reason=job.reason,
            error_code=job.error_code,
            progress=job.progress,
            time=time.time(),
            tenant=job.tenant,
            forecast=dict(job.forecast) if job.forecast else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """The event as the API sends it (JSON-ready)."""
        return {
            "seq": self.seq,
            "type": str(self.type),
            "job_id": self.job_id,
            "status": str(self.status),
            "attempts": self.attempts,
            "reason": self.reason,
            "error_code": str(self.error_code) if self.error_code else None,
            "progress": self.progress.to_dict() if self.progress else None,
            "time": self.time,
            "forecast": self.forecast,
        }


@dataclass(frozen=True, slots=True)
class EventBatch:
    """What one long-poll returns: pass ``last_seq`` back as ``after`` for the next."""

    events: tuple[JobEvent, ...]
    last_seq: int
    gap: bool
    """Some events were lost to this subscriber: re-read the jobs it follows."""


class EventLog:
    """A bounded, numbered log of job events with a long-poll :meth:`wait`.

    A subscriber remembers the last ``seq`` it saw and asks for what came after;
    one that fell further behind than the log keeps gets ``gap=True`` and should
    re-read the jobs it follows.

    Numbering starts from the clock (milliseconds x 1000), so a restarted coordinator
    numbers above anything its previous life handed out, and a cursor from before the
    restart reads as a gap instead of silently skipping the new life's first events.
    """

    def __init__(
        self,
        maxlen: int = 20_000,
        start: int | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._events: deque[JobEvent] = deque(maxlen=maxlen)
        self._seq = int(now() * 1000) * 1000 if start is None else start
        self._changed = asyncio.Event()
        self._held = 0

    @property
    def last_seq(self) -> int:
        return self._seq

    def publish(self, job: Job, type: EventType = EventType.STATUS) -> int:
        """Record ``job`` as it is now; returns the event's ``seq``."""
        self._seq += 1
        self._events.append(JobEvent.of(job, type, self._seq))
        if not self._held:
            self._wake()
        return self._seq

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Publish a batch (a node's progress tick): its subscribers are woken once, at
        the end, instead of once per event."""
        self._held += 1
        seq = self._seq
        try:
            yield
        finally:
            self._held -= 1
            if not self._held and self._seq != seq:
                self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def since(
        self, after: int, job_ids: frozenset[str] | None = None
    ) -> tuple[list[JobEvent], bool]:
        """Events after ``after``, and whether some were lost to the subscriber (a gap).

        A ``seq`` ahead of the log (from before a coordinator restart) is a gap too.
        """
        oldest = self._events[0].seq if self._events else self._seq + 1
        gap = after > self._seq or (after + 1 < oldest and after < self._seq)
        events = []
        for event in reversed(self._events):  # seq only grows: stop at what was seen
            if event.seq <= after:
                break
            if job_ids is None or event.job_id in job_ids:
                events.append(event)
        events.reverse()
        return events, gap

    async def wait(
        self, after: int, job_ids: frozenset[str] | None = None, timeout: float = 30.0
    ) -> EventBatch:
        """Events after ``after`` (for ``job_ids`` if given), waiting up to ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        while True:
            events, gap = self.since(after, job_ids)
            if events or gap or loop.time() >= deadline:
                return EventBatch(tuple(events), self._seq, gap)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), deadline - loop.time())
