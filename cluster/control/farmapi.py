"""The coordinator's API about nodes: the node view, job caps, drains and quarantine
releases, and the metrics built on them. A base class of
:class:`~cluster.control.coordinator.Coordinator` (its methods are the actor's)."""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from cluster.control.farm.healing import Healer
from cluster.control.farm.view import ClusterView, NodeRecord, node_view
from cluster.control.records.jobtable import JobTable
from cluster.control.records.metrics import NO_ENCODER, JobMetrics
from cluster.control.rules.health import gpu_target, node_target
from cluster.control.running.encodes import Running
from cluster.errors import NodeNotFound, SpecError
from cluster.model.jobs import Job
from cluster.scheduling.planner import NodeState

log = logging.getLogger("framefleet.coordinator")


@dataclass(frozen=True, slots=True)
class EncodeRate:
    """One running encode's latest rate."""

    encoder: str
    fps: float
    speed: float


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """What /metrics exports, in one answer (see ``Coordinator.metrics_snapshot``)."""

    jobs: JobMetrics
    queue: dict[int, int]
    """Queued jobs by priority."""
    encodes: tuple[EncodeRate, ...]
    nodes: tuple[NodeRecord, ...]


def snapshot(
    metrics: JobMetrics, queued: Iterable[Job], running: Iterable[Job], nodes: list[NodeRecord]
) -> MetricsSnapshot:
    """The counters as they are now (a copy), with the live gauges."""
    queue: dict[int, int] = {}
    for job in queued:
        queue[job.spec.priority] = queue.get(job.spec.priority, 0) + 1
    encodes = []
    for job in running:
        p = job.progress
        encodes.append(
            EncodeRate(
                encoder=(job.placement.encoder if job.placement else None) or NO_ENCODER,
                fps=p.fps if p and p.fps else 0.0,
                speed=p.speed if p and p.speed else 0.0,
            )
        )
    return MetricsSnapshot(copy.deepcopy(metrics), queue, tuple(encodes), tuple(nodes))


class NodeAPI:
    table: JobTable
    view: ClusterView
    healer: Healer
    metrics: JobMetrics
    _running: dict[str, Running]
    _wake: asyncio.Event

    def _states(self, *, placeable: bool = False) -> list[NodeState]:
        raise NotImplementedError

    async def _refresh_nodes(self) -> None:
        raise NotImplementedError

    async def _find(self, name: str) -> str:
        """The id of the node called ``name``, reading the cluster again if it is not
        known yet (it just joined, or this coordinator just started)."""
        try:
            return self.view.find(name).node_id
        except NodeNotFound:
            await self._refresh_nodes()
            return self.view.find(name).node_id

    async def nodes(self) -> list[NodeRecord]:
        """Nodes with CPUs, GPUs (readings, NVENC codec states) and running jobs."""
        on_node: dict[str, list[str]] = {}
        on_gpu: dict[str, list[str]] = {}
        for job_id, run in self._running.items():
            on_node.setdefault(run.lease.node_id, []).append(job_id)
            if run.lease.placement.gpu_uuid:
                on_gpu.setdefault(run.lease.placement.gpu_uuid, []).append(job_id)
        now = time.time()
        return node_view(self.view.nodes, self._states(), on_node, on_gpu,
                         lambda node, running: self.healer.node_health(node, running, now),
                         lambda uuid: self.healer.gpu_health(uuid, now))  # fmt: skip

    async def metrics_snapshot(self) -> MetricsSnapshot:
        """Everything /metrics exports: job counters and histograms, the queue by priority,
        running encodes' fps and speed, and the node view (GPU readings from the agents)."""
        running = [run.job for run in self._running.values()]
        self.metrics.webhooks_pending = self.table.webhooks.pending
        return snapshot(self.metrics, self.table.queue.values(), running, await self.nodes())

    async def set_node_cap(self, node_id: str, max_jobs: int | None) -> None:
        """Change a node's concurrent-job cap while running (``None``: only cores limit)."""
        if max_jobs is not None and max_jobs < 0:
            raise SpecError("a node's job cap must be 0 or more")
        self.view.caps[node_id] = max_jobs
        self._wake.set()

    async def drain(self, name: str, on: bool = True) -> NodeRecord:
        """Drain a node (running jobs finish, nothing new is placed there; it stays drained
        across restarts) or, with ``on=False``, put it back in service."""
        node_id = await self._find(name)
        since = self.healer.draining.get(node_id, time.time()) if on else None
        self.table.store.set_drain(node_id, since)
        if since is None:
            self.healer.draining.pop(node_id, None)
        elif node_id not in self.healer.draining:
            self.healer.draining[node_id] = since
            log.warning("node %s is draining: no new work is placed there", name)
        self._wake.set()
        return next(n for n in await self.nodes() if n.node_id == node_id)

    async def release(self, name: str) -> str:
        """Lift the quarantine of a node or GPU (by UUID); returns what was released."""
        found = self.view.gpu(name)
        target = gpu_target(name) if found else node_target(await self._find(name))
        lifted = self.healer.health.release(target)
        self.healer.save()
        self._wake.set()
        return f"{target} {'released' if lifted else 'was not quarantined'}"
