"""Fair share between tenants: which tenant's job is offered the next free slot.

Weighted dominant-resource fairness (DRF, as Mesos and YARN use it): a tenant's usage is
the larger of the share of the farm's GPUs and the share of its cores its running jobs
hold; the next job offered comes from the waiting tenant whose usage over its weight is
lowest. Within a tenant, the queue's own order stands (priority, then age). Nothing
running is stopped: a tenant alone on the farm takes all of it, and gives slots back as
they free and others wait ("lent while idle, taken back as work arrives").

A tenant's limits (most GPUs, cores, running jobs) hold whatever the farm's load: a job
that would cross one waits. Pure: the coordinator builds one :class:`FairShare` per
dispatch round from what runs, and :func:`~cluster.control.rules.dispatch.plan_round`
asks it for the order and tells it each placement.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cluster.model.jobs import Job
from cluster.model.tenancy import Tenants, tenant_of
from cluster.scheduling.planner import Placement

T = TypeVar("T")
EPS = 1e-9


@dataclass(slots=True)
class Usage:
    """What a tenant's running jobs hold."""

    gpus: int = 0
    cores: float = 0.0
    running: int = 0

    def add(self, placement: Placement, sign: int = 1) -> None:
        self.gpus += sign * (placement.gpu_uuid is not None)
        self.cores += sign * placement.cores
        self.running += sign


@dataclass(slots=True)
class FairShare:
    """One round's view of the tenants: their usage, updated as jobs are placed."""

    tenants: Tenants
    total_gpus: int
    total_cores: float
    usage: dict[str, Usage] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        tenants: Tenants,
        running: Iterable[tuple[str | None, Placement]],
        total_gpus: int,
        total_cores: float,
    ) -> FairShare:
        """From the placements of what runs now, each with its job's tenant."""
        share = cls(tenants, total_gpus, total_cores)
        for tenant, placement in running:
            share.used(tenant).add(placement)
        return share

    def used(self, tenant: str | None) -> Usage:
        return self.usage.setdefault(tenant_of(tenant), Usage())

    def dominant(self, tenant: str | None) -> float:
        """The larger of the GPU share and the core share ``tenant`` holds (0-1)."""
        u = self.used(tenant)
        gpus = u.gpus / self.total_gpus if self.total_gpus else 0.0
        cores = u.cores / self.total_cores if self.total_cores else 0.0
        return max(gpus, cores)

    def order(self, ready: list[tuple[Job, T]]) -> Iterator[tuple[Job, T]]:
        """``ready`` (in queue order) interleaved by tenant: each next job comes from the
        tenant furthest below its weight, as :meth:`placed` updates it. One tenant alone
        keeps the queue's order."""
        queues: dict[str, list[tuple[int, Job, T]]] = {}
        for i, (job, extra) in enumerate(ready):
            queues.setdefault(tenant_of(job.tenant), []).append((i, job, extra))
        if len(queues) == 1:
            yield from ready
            return
        heads = {name: 0 for name in queues}
        while heads:
            name = min(heads, key=lambda n: (self._need(n), queues[n][heads[n]][0]))
            _, job, extra = queues[name][heads[name]]
            heads[name] += 1
            if heads[name] >= len(queues[name]):
                del heads[name]
            yield job, extra

    def interleave(
        self, queues: dict[str, Iterator[tuple[Any, Job, T]]]
    ) -> Iterator[tuple[Job, T]]:
        """As :meth:`order`, from each tenant's own queue (``(order key, job, extra)`` in
        queue order, read lazily: a round reads only as far as it places); ties between
        tenants go to the job first by the key."""
        heads: dict[str, tuple[tuple[Any, Job, T], Iterator[tuple[Any, Job, T]]]] = {}
        for name, queue in queues.items():
            first = next(queue, None)
            if first is not None:
                heads[tenant_of(name)] = (first, queue)
        while heads:
            name = min(heads, key=lambda n: (self._need(n), heads[n][0][0]))
            (_, job, extra), queue = heads[name]
            following = next(queue, None)
            if following is None:
                del heads[name]
            else:
                heads[name] = (following, queue)
            yield job, extra

    def _need(self, tenant: str) -> float:
        return self.dominant(tenant) / self.tenants.get(tenant).weight

    def over_limit(
        self, tenant: str | None, placement: Placement, *, idle: bool = False
    ) -> str | None:
        """Why ``placement`` would take ``tenant`` past one of its limits, else ``None``;
        ``idle``: even with nothing of the tenant's running (it never fits its limits)."""
        t, u = self.tenants.get(tenant), Usage() if idle else self.used(tenant)
        if t.max_running is not None and u.running + 1 > t.max_running:
            return f"tenant {t.name} runs {u.running} jobs, its most (max_running)"
        if t.max_gpus is not None and placement.gpu_uuid and u.gpus + 1 > t.max_gpus:
            return f"tenant {t.name} holds {u.gpus} GPUs, its most (max_gpus)"
        if t.max_cores is not None and u.cores + placement.cores > t.max_cores + EPS:
            return f"tenant {t.name} holds {u.cores:g} cores; at most {t.max_cores:g} (max_cores)"
        return None

    def placed(self, tenant: str | None, placement: Placement) -> None:
        self.used(tenant).add(placement)

    def reason(self, tenant: str | None, waiting: Iterable[str | None]) -> str:
        """Where ``tenant`` stands, for a placement's reason:
        ``team-b: 1 of 4 GPUs, 2 of 16 cores, share 50 %``."""
        u, name = self.used(tenant), tenant_of(tenant)
        parts = []
        if self.total_gpus:
            parts.append(f"{u.gpus} of {self.total_gpus} GPUs")
        parts.append(f"{u.cores:g} of {self.total_cores:g} cores")
        busy = {*waiting, *(t for t, use in self.usage.items() if use.running)}
        share = self.tenants.weight_share(name, busy)
        return f"{name}: {', '.join(parts)}, share {share:.0%}".replace("%", " %")
