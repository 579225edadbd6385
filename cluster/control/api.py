"""The coordinator's API, declared once (:class:`CoordinatorAPI`): what the client
(:class:`~cluster.ray_edge.client.Fleet`, and its asyncio twin the gateway uses) calls.

:class:`~cluster.control.coordinator.Coordinator` implements it, the asyncio client is
checked against it, and both clients send each call through it (``CoordinatorAPI.get``
names the actor's method and types its arguments and answer), so a renamed or changed
call fails the type check, not production.
"""

from __future__ import annotations

from typing import Any, Protocol

from cluster.config import CoordinatorConfig
from cluster.control.farm.view import NodeRecord
from cluster.control.farmapi import MetricsSnapshot
from cluster.control.records.audit import AuditEntry
from cluster.model.events import EventBatch
from cluster.model.jobs import Job, JobSpec
from cluster.model.progress import ProgressReport, ProgressSnapshot
from cluster.model.tenancy import Caller, Tenants


class CoordinatorAPI(Protocol):
    async def ping(self) -> dict[str, Any]:
        """Counts, which life of the coordinator answers, and whether it is ready."""
        ...

    async def get_config(self) -> CoordinatorConfig: ...

    async def submit(
        self, spec: JobSpec, idempotency_key: str | None = None, caller: Caller | None = None
    ) -> Job: ...

    async def submit_many(
        self,
        specs: list[JobSpec],
        idempotency_key: str | None = None,
        caller: Caller | None = None,
    ) -> list[Job]: ...

    async def get(self, job_id: str, caller: Caller | None = None) -> Job: ...

    async def list_jobs(
        self,
        *,
        status: str | None = None,
        kind: str | None = None,
        after_seq: int = 0,
        limit: int = 100,
        caller: Caller | None = None,
        tenant: str | None = None,
    ) -> list[Job]: ...

    async def list_inputs(
        self, prefix: str, limit: int = 1000, caller: Caller | None = None
    ) -> list[str]: ...

    async def cancel(self, job_id: str, caller: Caller | None = None) -> Job: ...

    async def retry(self, job_id: str, caller: Caller | None = None) -> Job: ...

    async def events(
        self, after: int = 0, job_ids: list[str] | None = None, timeout: float = 30.0
    ) -> EventBatch: ...

    async def event_cursor(self) -> int: ...

    async def nodes(self, caller: Caller | None = None) -> list[NodeRecord]: ...

    async def metrics(self) -> MetricsSnapshot: ...

    async def set_node_cap(self, node_id: str, max_jobs: int | None) -> None: ...

    async def drain(
        self, name: str, on: bool = True, caller: Caller | None = None
    ) -> NodeRecord: ...

    async def release(self, name: str, caller: Caller | None = None) -> str: ...

    async def get_tenants(self) -> Tenants: ...

    async def speeds(
        self, samples: bool = False, after: int = 0, limit: int = 5000
    ) -> dict[str, Any]: ...

    async def load_speeds(
        self, samples: list[dict[str, Any]], caller: Caller | None = None
    ) -> int: ...

    async def set_tenants(self, tenants: Tenants, caller: Caller | None = None) -> bool: ...

    async def audit(
        self,
        after: int = 0,
        limit: int = 100,
        tenant: str | None = None,
        action: str | None = None,
    ) -> list[AuditEntry]: ...


class HeadAPI(CoordinatorAPI, Protocol):
    """What the head's own parts call besides: encoders report progress; the client that
    owns an embedded cluster shuts the coordinator down."""

    async def report_progress(
        self, job_id: str, attempt: int, snapshot: ProgressSnapshot
    ) -> None: ...

    async def report_batch(self, reports: list[ProgressReport]) -> None: ...

    async def shutdown(self) -> None: ...
