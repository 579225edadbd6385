"""The coordinator's API about the farm: the node view, job caps, drains and quarantine
releases, and the metrics built on them (:class:`FarmAPI`, one part of the
:class:`~cluster.control.coordinator.Coordinator`, which answers these calls through it)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from cluster.control.farm.healing import Healer
from cluster.control.farm.view import ClusterView, NodeRecord, node_view
from cluster.control.records.jobtable import JobTable
from cluster.control.records.metrics import NO_ENCODER, JobMetrics
from cluster.control.rules.health import gpu_target, node_target
from cluster.control.running.encodes import Encodes
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
class TenantGauge:
    """One tenant's standing now (a ``tenant`` label on /metrics)."""

    name: str
    queued: int
    running: int
    """Encodes of its jobs running (tasks of a job graph each count)."""
    oldest_queued_s: float
    """How long its oldest queued job has waited (0: none queued)."""
    weight_share: float
    """Its weight over the sum of the weights of the tenants known or with work."""
    usage_share: float
    """The dominant share (GPUs or cores) of the farm its running encodes hold."""
    gpu_seconds: float
    """GPU-seconds held, ended attempts and running ones so far."""
    core_seconds: float
    backlog_s: float = 0.0
    """The predicted run time of its queued jobs, summed (its backlog)."""
    drain_s: float = 0.0
    """How long until its last queued job is predicted to finish."""


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """What /metrics exports, in one answer (see ``Coordinator.metrics_snapshot``)."""

    jobs: JobMetrics
    queue: dict[int, int]
    """Queued jobs by priority."""
    encodes: tuple[EncodeRate, ...]
    nodes: tuple[NodeRecord, ...]
    webhooks_pending: int = 0
    """Job endings waiting in the webhook outbox."""
    tenants: tuple[TenantGauge, ...] = ()


def snapshot(
    metrics: JobMetrics,
    queued: Iterable[Job],
    running: Iterable[Job],
    nodes: list[NodeRecord],
    webhooks_pending: int = 0,
    tenants: tuple[TenantGauge, ...] = (),
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
    return MetricsSnapshot(copy.deepcopy(metrics), queue, tuple(encodes), tuple(nodes),
                           webhooks_pending, tenants)  # fmt: skip


class FarmAPI:
    """The calls about nodes and metrics, on the coordinator's parts."""

    def __init__(
        self,
        *,
        table: JobTable,
        view: ClusterView,
        healer: Healer,
        encodes: Encodes,
        states: Callable[[], list[NodeState]],
        refresh: Callable[[], Awaitable[None]],
        wake: Callable[[], None],
        tenants: Callable[[], tuple[TenantGauge, ...]] = tuple,
    ) -> None:
        self._table = table
        self._view = view
        self._healer = healer
        self._encodes = encodes
        self._states = states
        self._refresh = refresh
        self._wake = wake
        self._tenants = tenants

    async def _find(self, name: str) -> str:
        """The id of the node called ``name``, reading the cluster again if it is not
        known yet (it just joined, or this coordinator just started)."""
        try:
            return self._view.find(name).node_id
        except NodeNotFound:
            await self._refresh()
            return self._view.find(name).node_id

    def nodes(self) -> list[NodeRecord]:
        """Nodes with CPUs, GPUs (readings, NVENC codec states) and running jobs."""
        on_node: dict[str, list[str]] = {}
        on_gpu: dict[str, list[str]] = {}
        for job_id, run in self._encodes.running.items():
            on_node.setdefault(run.lease.node_id, []).append(job_id)
            if run.lease.placement.gpu_uuid:
                on_gpu.setdefault(run.lease.placement.gpu_uuid, []).append(job_id)
        return node_view(self._view.nodes, self._states(), on_node, on_gpu,
                         self._healer.node_health, self._healer.gpu_health)  # fmt: skip

    def metrics(self) -> MetricsSnapshot:
        """Everything /metrics exports: job counters and histograms, the queue by priority,
        running encodes' fps and speed, and the node view (GPU readings from the agents)."""
        running = [run.job for run in self._encodes.running.values()]
        return snapshot(self._table.metrics, self._table.queue.values(), running, self.nodes(),
                        self._table.webhooks.pending, self._tenants())  # fmt: skip

    def set_node_cap(self, node_id: str, max_jobs: int | None) -> None:
        """Change a node's concurrent-job cap while running (``None``: only cores limit)."""
        if max_jobs is not None and max_jobs < 0:
            raise SpecError("a node's job cap must be 0 or more")
        self._view.set_cap(node_id, max_jobs)
        self._wake()

    async def drain(self, name: str, on: bool = True) -> NodeRecord:
        """Drain a node (running jobs finish, nothing new is placed there; it stays drained
        across restarts) or, with ``on=False``, put it back in service."""
        node_id = await self._find(name)
        if not on:
            self._healer.undrain(node_id)
        elif not self._healer.draining(node_id):
            self._healer.drain(node_id)
            log.warning("node %s is draining: no new work is placed there", name)
        self._wake()
        return next(n for n in self.nodes() if n.node_id == node_id)

    async def release(self, name: str) -> str:
        """Lift the quarantine of a node or GPU (by UUID); returns what was released."""
        found = self._view.gpu(name)
        target = gpu_target(name) if found else node_target(await self._find(name))
        lifted = self._healer.health.release(target)
        self._healer.save()
        self._wake()
        return f"{target} {'released' if lifted else 'was not quarantined'}"
