"""Job events in sequence, for subscribers that long-poll instead of polling every job."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Any


class EventLog:
    """A bounded, numbered log of job events with a long-poll :meth:`wait`.

    A subscriber remembers the last ``seq`` it saw and asks for what came after;
    one that fell further behind than the log keeps gets ``gap=True`` and should
    re-read the jobs it follows.

    Numbering starts from the clock (milliseconds x 1000), so a restarted coordinator
    numbers above anything its previous life handed out, and a cursor from before the
    restart reads as a gap instead of silently skipping the new life's first events.
    """

    def __init__(self, maxlen: int = 20_000, start: int | None = None) -> None:
        self._events: deque[dict[str, Any]] = deque(maxlen=maxlen)
        self._seq = time.time_ns() // 1_000_000 * 1000 if start is None else start
        self._changed = asyncio.Event()

    @property
    def last_seq(self) -> int:
        return self._seq

    def publish(self, event: dict[str, Any]) -> int:
        self._seq += 1
        self._events.append({"seq": self._seq, **event})
        self._changed.set()
        self._changed = asyncio.Event()
        return self._seq

    def since(
        self, after: int, job_ids: frozenset[str] | None = None
    ) -> tuple[list[dict[str, Any]], bool]:
        """Events after ``after``, and whether some were lost to the subscriber (a gap).

        A ``seq`` ahead of the log (from before a coordinator restart) is a gap too.
        """
        oldest = self._events[0]["seq"] if self._events else self._seq + 1
        gap = after > self._seq or (after + 1 < oldest and after < self._seq)
        events = []
        for event in reversed(self._events):  # seq only grows: stop at what was seen
            if event["seq"] <= after:
                break
            if job_ids is None or event["job_id"] in job_ids:
                events.append(event)
        events.reverse()
        return events, gap

    async def wait(
        self, after: int, job_ids: frozenset[str] | None = None, timeout: float = 30.0
    ) -> dict[str, Any]:
        """Events after ``after`` (for ``job_ids`` if given), waiting up to ``timeout``.

        Returns ``{"events", "last_seq", "gap"}``; pass ``last_seq`` back as ``after``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        while True:
            events, gap = self.since(after, job_ids)
            if events or gap or loop.time() >= deadline:
                return {"events": events, "last_seq": self._seq, "gap": gap}
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), deadline - loop.time())
