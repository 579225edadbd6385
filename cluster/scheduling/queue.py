"""The queued jobs ready to place, kept in dispatch order: an index, not a sort per round.

Dispatch order is :func:`~cluster.scheduling.planner.queue_key`'s: finishing tasks
first (each ends a job), then higher priority first, FIFO within a priority, and one
priority level gained per ``aging_s`` waited. A round used to sort the whole queue;
with 100,000 jobs queued that is most of the head's time. Here each job is placed in a
sorted list once, with the level it has now, and moved once for each level it gains
(a heap says when the next one is due): a round reads the queue's head in order and
costs what changed since the last one, not the length of the queue.

Pure: the caller passes the time.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass

from sortedcontainers import SortedList

Key = tuple[bool, float, int, str]
"""(not finishing, -(priority + levels gained), seq, job id): ascending is dispatch order."""


@dataclass(slots=True)
class _Entry:
    finishing: bool
    priority: int
    seq: int
    since: float
    """When it began waiting (what its aging counts from)."""
    tenant: str
    level: int = 0
    """Levels gained by waiting, as indexed."""
    version: int = 0
    """Which indexing of the job this is (a heap entry of an earlier one is stale)."""

    def key(self, job_id: str) -> Key:
        return (not self.finishing, -float(self.priority + self.level), self.seq, job_id)


class ReadyQueue:
    def __init__(self, aging_s: float) -> None:
        self.aging_s = aging_s
        self._entries: dict[str, _Entry] = {}
        self._order: dict[str, SortedList] = {}
        """Per tenant: its ready jobs' keys, in dispatch order."""
        self._due: list[tuple[float, str, int]] = []
        """(when the job gains its next level, job id, version): a heap."""
        self._versions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._entries

    def add(
        self,
        job_id: str,
        *,
        priority: int,
        seq: int,
        since: float,
        now: float,
        finishing: bool = False,
        tenant: str = "",
    ) -> None:
        """Index a job ready to place (again: its entry is replaced)."""
        self.discard(job_id)
        self._versions += 1
        entry = _Entry(finishing, priority, seq, since, tenant, self._level(since, now),
                       self._versions)  # fmt: skip
        self._entries[job_id] = entry
        self._order.setdefault(tenant, SortedList()).add(entry.key(job_id))
        self._schedule(job_id, entry)

    def discard(self, job_id: str) -> None:
        """No longer ready (started, cancelled, held back): forgotten, if it was indexed."""
        entry = self._entries.pop(job_id, None)
        if entry is None:
            return
        order = self._order[entry.tenant]
        order.remove(entry.key(job_id))
        if not order:
            del self._order[entry.tenant]

    def tenants(self, now: float) -> dict[str, Iterator[str]]:
        """Per tenant, its ready jobs' ids in dispatch order at ``now``, read lazily (a
        round reads only as far as it places; the queue must not change meanwhile)."""
        self.age(now)
        return {tenant: (key[3] for key in order) for tenant, order in self._order.items()}

    def ordered(self, now: float) -> Iterator[str]:
        """Every ready job's id in dispatch order at ``now``, whatever its tenant (lazily,
        as :meth:`tenants`)."""
        self.age(now)
        yield from (key[3] for key in heapq.merge(*self._order.values()))

    def age(self, now: float) -> int:
        """Move each job that gained a level by ``now``; returns how many moved."""
        moved = 0
        while self._due and self._due[0][0] <= now:
            _, job_id, version = heapq.heappop(self._due)
            entry = self._entries.get(job_id)
            if entry is None or entry.version != version:
                continue  # gone, or indexed again since
            level = self._level(entry.since, now)
            if level == entry.level:  # due by a rounding of the sum, not yet by the wait
                heapq.heappush(self._due, (math.nextafter(now, math.inf), job_id, version))
                continue
            order = self._order[entry.tenant]
            order.remove(entry.key(job_id))
            entry.level = level
            order.add(entry.key(job_id))
            self._schedule(job_id, entry)
            moved += 1
        return moved

    def _level(self, since: float, now: float) -> int:
        return int(max(now - since, 0.0) // self.aging_s) if self.aging_s > 0 else 0

    def _schedule(self, job_id: str, entry: _Entry) -> None:
        if self.aging_s > 0 and math.isfinite(self.aging_s):
            at = entry.since + (entry.level + 1) * self.aging_s
            heapq.heappush(self._due, (at, job_id, entry.version))
