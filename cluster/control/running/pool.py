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

from cluster.control.farm.backend import EncoderHandle
from cluster.scheduling.planner import Placement


@dataclass(eq=False, slots=True)
class Lease:
    handle: EncoderHandle
    placement: Placement
    busy: bool = True
    last_used: float = field(default_factory=time.monotonic)

    @property
    def node_id(self) -> str:
        return self.placement.node_id

    def holds(self) -> dict[str, float]:
        """The Ray resources this actor holds while it lives."""
        return {"CPU": self.placement.cpus, **dict(self.placement.resources)}

    def same_shape(self, placement: Placement) -> bool:
        mine = self.placement
        return (mine.node_id, mine.cpus, mine.gpu_uuid, mine.resources) == (
            placement.node_id,
            placement.cpus,
            placement.gpu_uuid,
            placement.resources,
        )


class EncoderPool:
    def __init__(
        self, create: Callable[[Placement], EncoderHandle], *, idle_s: float = 300.0
    ) -> None:
        self._create = create
        self.idle_s = idle_s
        self._leases: dict[str, list[Lease]] = {}
        """Per node, its actors: a farm of 2,500 nodes has 20,000, and what a node holds
        is asked per node."""
        self._busy: dict[str, tuple[float, int, int]] = {}
        """Per node, (cores, jobs, memory MiB) its busy actors hold, kept as they change."""

    def acquire(self, placement: Placement, *, node_totals: dict[str, float]) -> Lease:
        """A warm actor of the placement's shape, or a new one once idle ones make room.

        ``node_totals`` is what the node registered with Ray (``CPU`` and custom
        resources): idle actors on the node are evicted, oldest first, until the new
        actor's resources fit beside what the remaining actors hold.
        """
        on_node = list(self._leases.get(placement.node_id, ()))
        for lease in on_node:
            if not lease.busy and lease.same_shape(placement):
                lease.busy = True
                lease.placement = placement  # same shape; the new reason and estimate
                self._count(lease, 1)
                return lease
        want = {"CPU": placement.cpus, **dict(placement.resources)}
        held: dict[str, float] = {}
        for lease in on_node:
            for key, amount in lease.holds().items():
                held[key] = held.get(key, 0.0) + amount
        for lease in sorted((x for x in on_node if not x.busy), key=lambda x: x.last_used):
            if all(
                held.get(k, 0.0) + v <= node_totals.get(k, float("inf")) + 1e-9
                for k, v in want.items()
            ):
                break
            self._discard(lease)
            for key, amount in lease.holds().items():
                held[key] -= amount
        lease = Lease(self._create(placement), placement)
        self._leases.setdefault(placement.node_id, []).append(lease)
        self._count(lease, 1)
        return lease

    def release(self, lease: Lease, *, healthy: bool = True) -> None:
        if not healthy:
            self._discard(lease)
            return
        if lease.busy:
            self._count(lease, -1)
        lease.busy = False
        lease.last_used = time.monotonic()

    def used(self, node_id: str) -> tuple[float, int, int]:
        """(cores, jobs, memory MiB) that busy actors hold on ``node_id`` (their spare
        cores too: not held in Ray)."""
        return self._busy.get(node_id, (0.0, 0, 0))

    def _count(self, lease: Lease, sign: int) -> None:
        cores, jobs, memory = self._busy.get(lease.node_id, (0.0, 0, 0))
        p = lease.placement
        held = (cores + sign * p.cores, jobs + sign, memory + sign * p.memory_mb)
        if held[1] <= 0:
            self._busy.pop(lease.node_id, None)
        else:
            self._busy[lease.node_id] = held

    def gpu_used(self) -> dict[str, tuple[int, int]]:
        """``{gpu uuid: (MiB accounted, sessions)}`` that busy actors hold."""
        used: dict[str, tuple[int, int]] = {}
        for x in self._all():
            uuid = x.placement.gpu_uuid
            if x.busy and uuid is not None:
                mb, sessions = used.get(uuid, (0, 0))
                used[uuid] = (mb + x.placement.gpu_memory_mb, sessions + 1)
        return used

    def reap(self, now: float | None = None) -> int:
        """Kill actors idle for longer than ``idle_s``; returns how many."""
        now = time.monotonic() if now is None else now
        stale = [x for x in self._all() if not x.busy and now - x.last_used > self.idle_s]
        for lease in stale:
            self._discard(lease)
        return len(stale)

    def forget_node(self, node_id: str) -> None:
        for lease in list(self._leases.get(node_id, ())):
            self._discard(lease)

    async def close(self) -> None:
        for lease in list(self._all()):
            if lease.busy:
                await lease.handle.shutdown()
            self._discard(lease)

    def _all(self) -> list[Lease]:
        return [lease for leases in self._leases.values() for lease in leases]

    def _discard(self, lease: Lease) -> None:
        on_node = self._leases.get(lease.node_id, [])
        if lease in on_node:
            on_node.remove(lease)
            if not on_node:
                del self._leases[lease.node_id]
            if lease.busy:
                self._count(lease, -1)
                lease.busy = False
        lease.handle.kill()
