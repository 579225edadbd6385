"""One subscription to the coordinator's event log per gateway, fanned out to clients.

The pump long-polls the coordinator (``poll_events``: it answers as soon as an event
exists, or after 25 s), so an SSE or WebSocket client costs an asyncio queue, not
a poll of its own. A client that falls behind, or a coordinator restart, reads as a
gap: subscribers get ``None`` and re-read the jobs they follow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace

from cluster import DEFAULT_TENANT, Caller, EventBatch, EventType, Job, JobEvent, JobNotFound

log = logging.getLogger("framefleet.api.events")
QUEUE_MAX = 1000
RENDERED_MAX = 1024
POLL_S = 25.0


@dataclass(eq=False)
class Subscription:
    job_ids: frozenset[str] | None
    tenant: str | None = None
    """Only this tenant's jobs' events (``None``: every tenant's)."""
    queue: asyncio.Queue[JobEvent | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_MAX))
    floor: int = 0
    """Events up to this ``seq`` were replayed to the client already: not again."""

    def wants(self, event: JobEvent) -> bool:
        """Whether ``event`` is of a job this subscription follows (and may see)."""
        if self.tenant is not None and (event.tenant or DEFAULT_TENANT) != self.tenant:
            return False
        return self.job_ids is None or event.job_id in self.job_ids

    def offer(self, event: JobEvent | None) -> None:
        if event is not None and (not self.wants(event) or event.seq <= self.floor):
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:  # a slow client: drop its backlog, tell it to re-read
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(None)

    def replay(self, batch: EventBatch) -> None:
        """Put what a client missed (``batch``, read from the coordinator) ahead of what is
        queued, in order: a gap if it is not all kept, or more than the queue holds."""
        queued = []
        while not self.queue.empty():
            queued.append(self.queue.get_nowait())
        self.floor = max(self.floor, batch.last_seq)
        missed: list[JobEvent | None] = [e for e in batch.events if self.wants(e)]
        if batch.gap or len(missed) >= QUEUE_MAX:
            missed = [None]
        later = [e for e in queued if e is None or e.seq > batch.last_seq]
        for item in (missed + later)[:QUEUE_MAX]:
            self.queue.put_nowait(item)


class JobCache:
    """Recently read jobs, kept current by the event stream, so that clients polling a
    job do not each cost a coordinator call. Progress events are applied in place; any
    other change drops the entry (the next read fetches the whole job again).

    A read races the stream: the job is read, its terminal event is applied (to nothing:
    the job is not cached yet), then the read's older copy is stored. So each change is
    numbered, and :meth:`read` stores what it fetched only if no event for that job (and
    no gap) was applied while it was fetching.
    """

    def __init__(self, render: Callable[[Job], bytes], size: int = 10_000) -> None:
        self._render = render
        self._jobs: OrderedDict[str, tuple[Job, bytes | None]] = OrderedDict()
        self.size = size
        self._version = 0
        self._changed: OrderedDict[str, int] = OrderedDict()
        """Job id -> the version of its last applied event (the newest ``size`` jobs)."""
        self._cleared = 0

    def get(self, job_id: str, caller: Caller | None = None) -> bytes | None:
        """The job's response body, rendered once per change; a job ``caller`` may not
        see is not found."""
        entry = self._jobs.get(job_id)
        if entry is None:
            return None
        self._jobs.move_to_end(job_id)
        job, rendered = entry
        if caller is not None and not caller.sees(job.tenant):
            raise JobNotFound(job_id)
        if rendered is None:
            rendered = self._render(job)
            self._jobs[job_id] = (job, rendered)
        return rendered

    async def read(
        self,
        job_id: str,
        fetch: Callable[[str], Awaitable[Job]],
        caller: Caller | None = None,
    ) -> bytes:
        """The job's body: from the cache, or fetched (and kept unless it changed while
        being fetched). A job of another tenant than ``caller``'s is not found."""
        body = self.get(job_id, caller)
        if body is not None:
            return body
        since = self._version
        job = await fetch(job_id)
        if caller is not None and not caller.sees(job.tenant):
            raise JobNotFound(job_id)
        rendered = self._render(job)
        if self._changed.get(job_id, 0) <= since and self._cleared <= since:
            self._store(job_id, (job, rendered))
        return rendered

    def _store(self, job_id: str, entry: tuple[Job, bytes | None]) -> None:
        self._jobs[job_id] = entry
        self._jobs.move_to_end(job_id)
        while len(self._jobs) > self.size:
            self._jobs.popitem(last=False)

    def drop(self, job_id: str) -> None:
        self._version += 1
        self._mark(job_id)
        self._jobs.pop(job_id, None)

    def clear(self) -> None:
        self._version += 1
        self._cleared = self._version
        self._jobs.clear()

    def apply(self, event: JobEvent) -> None:
        self._version += 1
        job_id = event.job_id
        self._mark(job_id)
        entry = self._jobs.get(job_id)
        if entry is None:
            return
        job = entry[0]
        if event.type is EventType.PROGRESS and event.status is job.status:
            self._jobs[job_id] = (replace(job, progress=event.progress,
                                          forecast=event.forecast), None)  # fmt: skip
        elif event.type is EventType.ETA and event.status is job.status:
            self._jobs[job_id] = (replace(job, forecast=event.forecast), None)
        else:
            self._jobs.pop(job_id, None)

    def _mark(self, job_id: str) -> None:
        self._changed[job_id] = self._version
        self._changed.move_to_end(job_id)
        while len(self._changed) > self.size:
            self._changed.popitem(last=False)


class EventHub:
    def __init__(
        self,
        poll: Callable[[int, float], Awaitable[EventBatch]],
        cursor: int,
        render: Callable[[Job], bytes],
    ) -> None:
        self._poll = poll
        self._after = cursor
        self._subs: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self.cache = JobCache(render)
        self._rendered: OrderedDict[int, tuple[JobEvent, str]] = OrderedDict()

    def rendered(self, event: JobEvent) -> str:
        """The event as JSON, rendered once however many clients follow its job: every
        subscriber is offered the same event object."""
        entry = self._rendered.get(id(event))
        if entry is not None and entry[0] is event:
            return entry[1]
        text = json.dumps({"id": event.job_id, **event.to_dict()}, separators=(",", ":"))
        self._rendered[id(event)] = (event, text)  # holding the event keeps its id unique
        if len(self._rendered) > RENDERED_MAX:
            self._rendered.popitem(last=False)
        return text

    def start(self) -> None:
        self._task = asyncio.create_task(self._pump())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _pump(self) -> None:
        while True:
            try:
                batch = await self._poll(self._after, POLL_S)
            except Exception as exc:  # coordinator restarting or unreachable: try again
                log.warning("event subscription interrupted: %s", exc)
                await asyncio.sleep(1.0)
                continue
            self._after = batch.last_seq
            if batch.gap:
                self.cache.clear()
                for sub in list(self._subs):
                    sub.offer(None)
            for event in batch.events:
                self.cache.apply(event)
                for sub in list(self._subs):
                    sub.offer(event)

    @contextlib.asynccontextmanager
    async def subscribe(
        self, job_ids: frozenset[str] | None, tenant: str | None = None
    ) -> AsyncIterator[Subscription]:
        """Events of ``job_ids`` (``None``: all), of ``tenant``'s jobs only if given."""
        sub = Subscription(job_ids, tenant)
        self._subs.add(sub)
        try:
            yield sub
        finally:
            self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subs)
