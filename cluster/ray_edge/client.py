"""What the CLI and the gateway call: a connection to the coordinator, and job helpers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import ray

from cluster.config import CoordinatorConfig, RuntimeConfig, config_differences
from cluster.control.farm.view import NodeRecord
from cluster.control.farmapi import MetricsSnapshot
from cluster.errors import ClusterUnavailable, FramefleetError
from cluster.model.events import EventBatch, JobEvent
from cluster.model.jobs import Job, JobSpec
from cluster.ray_edge.backend import RemoteCoordinator, coordinator_options
from cluster.ray_edge.errors import call_timeout, coordinator_error
from cluster.ray_edge.runtime import Runtime, connect

log = logging.getLogger("framefleet.client")
COORDINATOR_START_TIMEOUT_S = 60.0
CALL_TIMEOUT_S = 30.0
"""Every call waits at most this long (a busy or frozen engine never holds a caller)."""
RESTART_WAIT_S = 60.0  # how long a read waits for Ray to restart the coordinator
RESTART_POLL_S = 0.5


class Fleet:
    """A connection to framefleet's coordinator (created on first use)."""

    def __init__(self, runtime: Runtime, coordinator: Any, config: RuntimeConfig) -> None:
        self.runtime = runtime
        self._coordinator = coordinator
        self._config = config
        self.coordinator_config: CoordinatorConfig
        """The config the coordinator runs with (set by :meth:`connect`)."""
        self.config_mismatch: list[str] = []
        """How the coordinator this client joined differs from what it asked for."""
        self.aio = AsyncFleet(coordinator)
        """The same calls for asyncio code (the gateway), holding no thread while waiting."""

    @classmethod
    def connect(cls, runtime: RuntimeConfig, coordinator: CoordinatorConfig) -> Fleet:
        rt = connect(runtime)
        try:
            handle: Any = RemoteCoordinator.options(**coordinator_options(runtime)).remote(
                coordinator
            )
            fleet = cls(rt, handle, runtime)
            fleet._call(handle.ping.remote(), timeout=COORDINATOR_START_TIMEOUT_S)
            running: CoordinatorConfig = fleet._read("get_config")
        except BaseException:
            rt.close()
            raise
        fleet.coordinator_config = running
        fleet.config_mismatch = config_differences(coordinator, running)
        if fleet.config_mismatch:
            log.warning(
                "joined a running coordinator whose config differs; it keeps its own until it "
                "is restarted: %s", "; ".join(fleet.config_mismatch),
            )  # fmt: skip
        return fleet

    def _call(self, ref: Any, timeout: float = CALL_TIMEOUT_S) -> Any:
        try:
            return ray.get(ref, timeout=timeout)
        except ray.exceptions.RayError as exc:
            raise coordinator_error(exc, timeout) from exc

    def _read(
        self, method: str, *args: Any, call_timeout: float = CALL_TIMEOUT_S, **kwargs: Any
    ) -> Any:
        """Call a read-only coordinator method, waiting out a coordinator restart.

        Ray answers ``ActorUnavailableError`` while it restarts the coordinator; a read
        is safe to send again. Changes (submit, cancel, ...) are not: they may have run.
        """
        deadline = time.monotonic() + RESTART_WAIT_S
        while True:
            try:
                ref = getattr(self._coordinator, method).remote(*args, **kwargs)
                return ray.get(ref, timeout=call_timeout)
            except ray.exceptions.ActorUnavailableError as exc:
                if time.monotonic() >= deadline:
                    raise coordinator_error(exc) from exc
                time.sleep(RESTART_POLL_S)
            except ray.exceptions.RayError as exc:
                raise coordinator_error(exc, call_timeout) from exc

    def ping(self) -> dict[str, Any]:
        result: dict[str, Any] = self._read("ping", call_timeout=30)
        return result

    def submit(self, spec: JobSpec, idempotency_key: str | None = None) -> Job:
        job: Job = self._call(self._coordinator.submit.remote(spec, idempotency_key))
        return job

    def submit_many(self, specs: list[JobSpec], idempotency_key: str | None = None) -> list[Job]:
        jobs: list[Job] = self._call(self._coordinator.submit_many.remote(specs, idempotency_key))
        return jobs

    def get(self, job_id: str) -> Job:
        job: Job = self._read("get", job_id)
        return job

    def list_inputs(self, prefix: str, limit: int = 1000) -> list[str]:
        """The video objects under an ``s3://`` prefix inside the media roots."""
        found: list[str] = self._read("list_inputs", prefix, limit)
        return found

    def list_jobs(self, **filters: Any) -> list[Job]:
        jobs: list[Job] = self._read("list_jobs", **filters)
        return jobs

    def cancel(self, job_id: str, timeout: float = CALL_TIMEOUT_S) -> Job:
        """Cancel; a :class:`CallTimeout` after ``timeout`` means the coordinator is still
        stopping the encoder (it kills it if it does not stop: the job ends cancelled)."""
        job: Job = self._call(self._coordinator.cancel.remote(job_id), timeout)
        return job

    def retry(self, job_id: str) -> Job:
        job: Job = self._call(self._coordinator.retry.remote(job_id))
        return job

    def nodes(self) -> list[NodeRecord]:
        nodes: list[NodeRecord] = self._read("nodes")
        return nodes

    def set_node_cap(self, node_id: str, max_jobs: int | None) -> None:
        self._call(self._coordinator.set_node_cap.remote(node_id, max_jobs))

    def drain(self, name: str, on: bool = True) -> NodeRecord:
        """Drain a node (``on=False``: undrain); it is named by id, address or hostname."""
        node: NodeRecord = self._call(self._coordinator.drain.remote(name, on))
        return node

    def release(self, name: str) -> str:
        """Lift the quarantine of a node or a GPU (UUID); says what was released."""
        said: str = self._call(self._coordinator.release.remote(name))
        return said

    def events(
        self, after: int = 0, job_ids: list[str] | None = None, timeout: float = 30.0
    ) -> EventBatch:
        """Job events after ``after`` (long-poll: waits up to ``timeout`` for the first)."""
        batch: EventBatch = self._read(
            "poll_events", after, job_ids, timeout, call_timeout=timeout + CALL_TIMEOUT_S
        )
        return batch

    def metrics(self) -> MetricsSnapshot:
        """What /metrics exports (see ``Coordinator.metrics_snapshot``)."""
        snapshot: MetricsSnapshot = self._read("metrics_snapshot", call_timeout=30)
        return snapshot

    def event_cursor(self) -> int:
        cursor: int = self._read("event_cursor")
        return cursor

    def wait(
        self,
        job_id: str,
        *,
        on_event: Callable[[JobEvent], None] | None = None,
        timeout: float | None = None,
    ) -> Job:
        """Follow ``job_id`` until it ends; ``on_event`` sees each status/progress event."""
        deadline = None if timeout is None else time.monotonic() + timeout
        after = self.event_cursor()  # only what happens from now on
        job = self.get(job_id)
        while not job.status.terminal:
            remaining = 10.0 if deadline is None else min(10.0, deadline - time.monotonic())
            if remaining <= 0:
                raise TimeoutError(f"job {job_id} still {job.status} after {timeout:g} s")
            batch = self.events(after, [job_id], timeout=remaining)
            after = batch.last_seq
            for event in batch.events:
                if on_event is not None:
                    on_event(event)
                if event.status.terminal:
                    return self.get(job_id)
            if batch.gap or not batch.events:
                job = self.get(job_id)
        return job

    def shutdown_coordinator(self) -> None:
        """Stop encodes cleanly (running jobs are re-queued) and remove the coordinator."""
        self._call(self._coordinator.shutdown.remote(), timeout=60)
        ray.kill(self._coordinator, no_restart=True)
        # The name is released shortly after; until then a new connect would get the dead actor.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                ray.get_actor(self._config.coordinator_name, namespace=self._config.namespace)
            except ValueError:
                return
            time.sleep(0.05)

    def close(self) -> None:
        """Disconnect; an embedded Ray stops, after its running encodes are wound down."""
        if self.runtime.embedded:
            with contextlib.suppress(FramefleetError):
                self.shutdown_coordinator()
        self.runtime.close()


class AsyncFleet:
    """The calls an asyncio server makes, awaiting Ray's object refs on its own event loop.

    No thread is held while the coordinator works: a cancel that waits for an encoder to
    stop, or a long-poll for events, costs a coroutine rather than a thread-pool slot.
    Same errors and time limits as :class:`Fleet`.
    """

    def __init__(self, coordinator: Any) -> None:
        self._coordinator = coordinator

    async def _call(self, ref: Any, timeout: float = CALL_TIMEOUT_S) -> Any:
        try:
            return await asyncio.wait_for(ref, timeout)
        except TimeoutError:
            raise call_timeout(timeout) from None
        except ray.exceptions.RayError as exc:
            raise coordinator_error(exc, timeout) from exc

    async def _read(
        self, method: str, *args: Any, call_timeout: float = CALL_TIMEOUT_S, **kwargs: Any
    ) -> Any:
        """A read-only call, sent again while Ray restarts the coordinator (as
        :meth:`Fleet._read`)."""
        deadline = time.monotonic() + RESTART_WAIT_S
        while True:
            try:
                ref = getattr(self._coordinator, method).remote(*args, **kwargs)
                return await self._call(ref, call_timeout)
            except ClusterUnavailable as exc:
                if not isinstance(exc.__cause__, ray.exceptions.ActorUnavailableError):
                    raise
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(RESTART_POLL_S)

    async def ping(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._read("ping")
        return result

    async def submit(self, spec: JobSpec, idempotency_key: str | None = None) -> Job:
        job: Job = await self._call(self._coordinator.submit.remote(spec, idempotency_key))
        return job

    async def submit_many(
        self, specs: list[JobSpec], idempotency_key: str | None = None
    ) -> list[Job]:
        ref = self._coordinator.submit_many.remote(specs, idempotency_key)
        jobs: list[Job] = await self._call(ref)
        return jobs

    async def get(self, job_id: str) -> Job:
        job: Job = await self._read("get", job_id)
        return job

    async def list_inputs(self, prefix: str, limit: int = 1000) -> list[str]:
        found: list[str] = await self._read("list_inputs", prefix, limit)
        return found

    async def list_jobs(self, **filters: Any) -> list[Job]:
        jobs: list[Job] = await self._read("list_jobs", **filters)
        return jobs

    async def cancel(self, job_id: str, timeout: float = CALL_TIMEOUT_S) -> Job:
        job: Job = await self._call(self._coordinator.cancel.remote(job_id), timeout)
        return job

    async def retry(self, job_id: str) -> Job:
        job: Job = await self._call(self._coordinator.retry.remote(job_id))
        return job

    async def nodes(self) -> list[NodeRecord]:
        nodes: list[NodeRecord] = await self._read("nodes")
        return nodes

    async def drain(self, name: str, on: bool = True) -> NodeRecord:
        node: NodeRecord = await self._call(self._coordinator.drain.remote(name, on))
        return node

    async def release(self, name: str) -> str:
        said: str = await self._call(self._coordinator.release.remote(name))
        return said

    async def events(
        self, after: int = 0, job_ids: list[str] | None = None, timeout: float = 30.0
    ) -> EventBatch:
        batch: EventBatch = await self._read(
            "poll_events", after, job_ids, timeout, call_timeout=timeout + CALL_TIMEOUT_S
        )
        return batch

    async def event_cursor(self) -> int:
        cursor: int = await self._read("event_cursor")
        return cursor
