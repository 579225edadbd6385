"""One subscription to the coordinator's event log per gateway, fanned out to clients.

The pump long-polls the coordinator (``poll_events``: it answers as soon as an event
exists, or after 25 s), so an SSE or WebSocket client costs an asyncio queue, not
a poll of its own. A client that falls behind, or a coordinator restart, reads as a
gap: subscribers get ``None`` and re-read the jobs they follow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("framefleet.api.events")
QUEUE_MAX = 1000
POLL_S = 25.0


@dataclass(eq=False)
class Subscription:
    job_ids: frozenset[str] | None
    queue: asyncio.Queue[dict[str, Any] | None] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_MAX)
    )

    def offer(self, event: dict[str, Any] | None) -> None:
        if event is not None and self.job_ids is not None and event["job_id"] not in self.job_ids:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:  # a slow client: drop its backlog, tell it to re-read
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(None)


class EventHub:
    def __init__(self, poll: Callable[[int, float], dict[str, Any]], cursor: int) -> None:
        self._poll = poll  # blocking: runs in a thread
        self._after = cursor
        self._subs: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None

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
                batch = await asyncio.to_thread(self._poll, self._after, POLL_S)
            except Exception as exc:  # coordinator restarting or unreachable: try again
                log.warning("event subscription interrupted: %s", exc)
                await asyncio.sleep(1.0)
                continue
            self._after = batch["last_seq"]
            if batch["gap"]:
                for sub in list(self._subs):
                    sub.offer(None)
            for event in batch["events"]:
                for sub in list(self._subs):
                    sub.offer(event)

    @contextlib.asynccontextmanager
    async def subscribe(self, job_ids: frozenset[str] | None) -> AsyncIterator[Subscription]:
        sub = Subscription(job_ids)
        self._subs.add(sub)
        try:
            yield sub
        finally:
            self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subs)
