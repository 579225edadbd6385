"""Warm encoder actors, reused across jobs of the same shape so a job costs ~1 ms, not ~1 s.

An actor holds its Ray resources while it lives, idle or not, so the pool is
also the coordinator's ledger of what is given out per node: busy actors count
as used; idle ones are evicted (oldest first) when a node needs room for a
different shape, and reaped after ``idle_s``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from cluster.placement import Placement
from cluster.work import WorkOrder, WorkOutcome


class EncoderHandle(Protocol):
    async def run(self, order: WorkOrder) -> WorkOutcome: ...
    async def cancel(self, job_id: str) -> bool: ...
    async def shutdown(self) -> None: ...
    def kill(self) -> None: ...


@dataclass(eq=False, slots=True)
class Lease:
    handle: EncoderHandle
    node_id: str
    cpus: float
    gpus: float
    busy: bool = True
    last_used: float = field(default_factory=time.monotonic)

    def same_shape(self, placement: Placement) -> bool:
        return (self.node_id, self.cpus, self.gpus) == (
            placement.node_id,
            placement.cpus,
            placement.gpus,
        )


class EncoderPool:
    def __init__(
        self, create: Callable[[Placement], EncoderHandle], *, idle_s: float = 300.0
    ) -> None:
        self._create = create
        self.idle_s = idle_s
        self._leases: list[Lease] = []

    def acquire(self, placement: Placement, *, node_cpus: float, node_gpus: float) -> Lease:
        """A warm actor of the placement's shape, or a new one once idle ones make room."""
        for lease in self._leases:
            if not lease.busy and lease.same_shape(placement):
                lease.busy = True
                return lease
        on_node = [lease for lease in self._leases if lease.node_id == placement.node_id]
        held_cpus = sum(lease.cpus for lease in on_node)
        held_gpus = sum(lease.gpus for lease in on_node)
        for lease in sorted((x for x in on_node if not x.busy), key=lambda x: x.last_used):
            if (
                held_cpus + placement.cpus <= node_cpus + 1e-9
                and held_gpus + placement.gpus <= node_gpus + 1e-9
            ):
                break
            self._discard(lease)
            held_cpus -= lease.cpus
            held_gpus -= lease.gpus
        lease = Lease(self._create(placement), placement.node_id, placement.cpus, placement.gpus)
        self._leases.append(lease)
        return lease

    def release(self, lease: Lease, *, healthy: bool = True) -> None:
        if not healthy:
            self._discard(lease)
            return
        lease.busy = False
        lease.last_used = time.monotonic()

    def used(self, node_id: str) -> tuple[float, float, int]:
        """(cores, GPU share, jobs) that busy actors hold on ``node_id``."""
        busy = [x for x in self._leases if x.node_id == node_id and x.busy]
        return sum(x.cpus for x in busy), sum(x.gpus for x in busy), len(busy)

    def reap(self, now: float | None = None) -> int:
        """Kill actors idle for longer than ``idle_s``; returns how many."""
        now = time.monotonic() if now is None else now
        stale = [x for x in self._leases if not x.busy and now - x.last_used > self.idle_s]
        for lease in stale:
            self._discard(lease)
        return len(stale)

    def forget_node(self, node_id: str) -> None:
        for lease in [x for x in self._leases if x.node_id == node_id]:
            self._discard(lease)

    async def close(self) -> None:
        for lease in list(self._leases):
            if lease.busy:
                await lease.handle.shutdown()
            self._discard(lease)

    def _discard(self, lease: Lease) -> None:
        if lease in self._leases:
            self._leases.remove(lease)
        lease.handle.kill()
