"""What the CLI and the gateway call: a connection to the coordinator, and job helpers."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import ray

from cluster.config import CoordinatorConfig, RuntimeConfig, config_differences
from cluster.control.api import CoordinatorAPI, HeadAPI
from cluster.control.coordinator import Coordinator
from cluster.control.farm.view import NodeRecord
from cluster.control.farmapi import MetricsSnapshot
from cluster.control.records.audit import AuditEntry
from cluster.errors import ClusterUnavailable
from cluster.model.events import EventBatch, JobEvent
from cluster.model.jobs import Job, JobSpec
from cluster.model.tenancy import Caller, Tenants
from cluster.ray_edge.backend import RemoteCoordinator, coordinator_options
from cluster.ray_edge.errors import call_timeout, coordinator_error
from cluster.ray_edge.runtime import Runtime, connect

log = logging.getLogger("framefleet.client")
COORDINATOR_START_TIMEOUT_S = 60.0
CALL_TIMEOUT_S = 30.0
"""Every call waits at most this long (a busy or frozen engine never holds a caller)."""
RESTART_WAIT_S = 60.0  # how long a read waits for Ray to restart the coordinator
ALIVE_WAIT_S = 10.0
"""On close: a coordinator that does not answer a ping within this is taken for gone."""
SHUTDOWN_WAIT_S = 60.0
"""How long the coordinator has to wind its encodes down."""
RESTART_POLL_S = 0.5
P = ParamSpec("P")
T = TypeVar("T")
Call = Callable[Concatenate[HeadAPI, P], Coroutine[Any, Any, T]]
"""One of the coordinator's calls, as declared (``CoordinatorAPI.get``): its name is the
actor's method, its parameters and answer are typed."""


def _send(coordinator: Any, call: Call[P, T], *args: P.args, **kwargs: P.kwargs) -> Any:
    """The Ray object ref of ``call`` sent to the coordinator actor."""
    return getattr(coordinator, call.__name__).remote(*args, **kwargs)


class Fleet:
    """A connection to framefleet's coordinator (created on first use): the calls of
    :class:`~cluster.control.api.CoordinatorAPI`, waited for (``aio``: awaited)."""

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
            fleet._read(COORDINATOR_START_TIMEOUT_S, HeadAPI.ping)
            running = fleet._read(CALL_TIMEOUT_S, HeadAPI.get_config)
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

    def _change(self, timeout: float, call: Call[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A call that changes something: sent once (it may have run)."""
        try:
            found: T = ray.get(_send(self._coordinator, call, *args, **kwargs), timeout=timeout)
        except ray.exceptions.RayError as exc:
            raise coordinator_error(exc, timeout) from exc
        return found

    def _read(self, timeout: float, call: Call[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A read-only call, sent again while Ray restarts the coordinator.

        Ray answers ``ActorUnavailableError`` while it restarts the coordinator; a read
        is safe to send again. Changes (submit, cancel, ...) are not: they may have run.
        """
        deadline = time.monotonic() + RESTART_WAIT_S
        while True:
            try:
                ref = _send(self._coordinator, call, *args, **kwargs)
                found: T = ray.get(ref, timeout=timeout)
                return found
            except ray.exceptions.ActorUnavailableError as exc:
                if time.monotonic() >= deadline:
                    raise coordinator_error(exc) from exc
                time.sleep(RESTART_POLL_S)
            except ray.exceptions.RayError as exc:
                raise coordinator_error(exc, timeout) from exc

    def ping(self) -> dict[str, Any]:
        return self._read(CALL_TIMEOUT_S, HeadAPI.ping)

    def get_config(self) -> CoordinatorConfig:
        return self._read(CALL_TIMEOUT_S, HeadAPI.get_config)

    def submit(
        self, spec: JobSpec, idempotency_key: str | None = None, caller: Caller | None = None
    ) -> Job:
        return self._change(CALL_TIMEOUT_S, HeadAPI.submit, spec, idempotency_key, caller)

    def submit_many(
        self,
        specs: list[JobSpec],
        idempotency_key: str | None = None,
        caller: Caller | None = None,
    ) -> list[Job]:
        return self._change(CALL_TIMEOUT_S, HeadAPI.submit_many, specs, idempotency_key, caller)

    def get(self, job_id: str, caller: Caller | None = None) -> Job:
        return self._read(CALL_TIMEOUT_S, HeadAPI.get, job_id, caller)

    def list_inputs(
        self, prefix: str, limit: int = 1000, caller: Caller | None = None
    ) -> list[str]:
        """The video objects under an ``s3://`` prefix inside the media roots."""
        return self._read(CALL_TIMEOUT_S, HeadAPI.list_inputs, prefix, limit, caller)

    def list_jobs(
        self,
        *,
        status: str | None = None,
        kind: str | None = None,
        after_seq: int = 0,
        limit: int = 100,
        caller: Caller | None = None,
        tenant: str | None = None,
    ) -> list[Job]:
        return self._read(CALL_TIMEOUT_S, HeadAPI.list_jobs, status=status, kind=kind,
                          after_seq=after_seq, limit=limit, caller=caller,
                          tenant=tenant)  # fmt: skip

    def cancel(
        self, job_id: str, caller: Caller | None = None, timeout: float = CALL_TIMEOUT_S
    ) -> Job:
        """Cancel; a :class:`CallTimeout` after ``timeout`` means the coordinator is still
        stopping the encoder (it kills it if it does not stop: the job ends cancelled)."""
        return self._change(timeout, HeadAPI.cancel, job_id, caller)

    def retry(self, job_id: str, caller: Caller | None = None) -> Job:
        return self._change(CALL_TIMEOUT_S, HeadAPI.retry, job_id, caller)

    def nodes(self, caller: Caller | None = None) -> list[NodeRecord]:
        return self._read(CALL_TIMEOUT_S, HeadAPI.nodes, caller)

    def set_node_cap(self, node_id: str, max_jobs: int | None) -> None:
        self._change(CALL_TIMEOUT_S, HeadAPI.set_node_cap, node_id, max_jobs)

    def drain(self, name: str, on: bool = True, caller: Caller | None = None) -> NodeRecord:
        """Drain a node (``on=False``: undrain); it is named by id, address or hostname."""
        return self._change(CALL_TIMEOUT_S, HeadAPI.drain, name, on, caller)

    def release(self, name: str, caller: Caller | None = None) -> str:
        """Lift the quarantine of a node or a GPU (UUID); says what was released."""
        return self._change(CALL_TIMEOUT_S, HeadAPI.release, name, caller)

    def events(
        self, after: int = 0, job_ids: list[str] | None = None, timeout: float = 30.0
    ) -> EventBatch:
        """Job events after ``after`` (long-poll: waits up to ``timeout`` for the first)."""
        return self._read(timeout + CALL_TIMEOUT_S, HeadAPI.events, after, job_ids, timeout)

    def metrics(self) -> MetricsSnapshot:
        """What /metrics exports (see ``Coordinator.metrics``)."""
        return self._read(CALL_TIMEOUT_S, HeadAPI.metrics)

    def event_cursor(self) -> int:
        return self._read(CALL_TIMEOUT_S, HeadAPI.event_cursor)

    def get_tenants(self) -> Tenants:
        return self._read(CALL_TIMEOUT_S, HeadAPI.get_tenants)

    def speeds(self, samples: bool = False, after: int = 0, limit: int = 5000) -> dict[str, Any]:
        return self._read(CALL_TIMEOUT_S, HeadAPI.speeds, samples, after, limit)

    def load_speeds(self, samples: list[dict[str, Any]], caller: Caller | None = None) -> int:
        return self._change(CALL_TIMEOUT_S, HeadAPI.load_speeds, samples, caller)

    def set_tenants(self, tenants: Tenants, caller: Caller | None = None) -> bool:
        return self._change(CALL_TIMEOUT_S, HeadAPI.set_tenants, tenants, caller)

    def audit(
        self,
        after: int = 0,
        limit: int = 100,
        tenant: str | None = None,
        action: str | None = None,
    ) -> list[AuditEntry]:
        return self._read(CALL_TIMEOUT_S, HeadAPI.audit, after, limit, tenant, action)

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

    def shutdown_coordinator(self, timeout: float = SHUTDOWN_WAIT_S, *, wait: bool = True) -> None:
        """Stop encodes cleanly (running jobs are re-queued) and remove the coordinator;
        ``wait``: until its name is free for a new one (not when Ray stops next)."""
        self._change(timeout, HeadAPI.shutdown)
        ray.kill(self._coordinator, no_restart=True)
        # The name is released shortly after; until then a new connect would get the dead actor.
        deadline = time.monotonic() + 30
        while wait and time.monotonic() < deadline:
            try:
                ray.get_actor(self._config.coordinator_name, namespace=self._config.namespace)
            except ValueError:
                return
            time.sleep(0.05)

    def close(self, wait_s: float = SHUTDOWN_WAIT_S + 15) -> bool:
        """Disconnect; an embedded Ray stops, after its running encodes are wound down.

        Whether it closed cleanly. ``False``: the embedded Ray's coordinator did not
        answer within :data:`ALIVE_WAIT_S`, or Ray did not stop within ``wait_s`` (it was
        going down already, its processes signalled with this one, as ``kill -- -PGID``
        or a supervisor's stop of the whole group does, and Ray waits a minute for a GCS
        that is gone), so it was killed outright: its processes and folder are gone, and
        running jobs are re-queued by the next start. A caller may then leave at once
        (``os._exit``): nothing of Ray is left to wait for."""
        if not self.runtime.embedded:
            self.runtime.close()
            return True
        failed: list[BaseException] = []
        answered = threading.Event()

        def wind_down() -> None:
            try:
                self._change(ALIVE_WAIT_S, HeadAPI.ping)  # a dying Ray answers nothing
                answered.set()
                self.shutdown_coordinator(wait=False)
                self.runtime.close()
            except BaseException as exc:  # reported below, then killed
                failed.append(exc)

        closing = threading.Thread(target=wind_down, name="framefleet-close", daemon=True)
        closing.start()
        closing.join(ALIVE_WAIT_S + 1)  # first, whether the coordinator answers at all
        if answered.is_set():
            closing.join(wait_s)  # then its encodes wound down, and Ray stopped
        if not closing.is_alive() and not failed:
            return True
        why = failed[0] if failed else "no answer in time"
        log.warning("the local Ray is going down (%s); stopping it at once", why)
        self.runtime.kill()
        return False


class AsyncFleet:
    """The calls an asyncio server makes, awaiting Ray's object refs on its own event loop.

    No thread is held while the coordinator works: a cancel that waits for an encoder to
    stop, or a long-poll for events, costs a coroutine rather than a thread-pool slot.
    Same errors and time limits as :class:`Fleet`.
    """

    def __init__(self, coordinator: Any) -> None:
        self._coordinator = coordinator

    async def _change(
        self, timeout: float, call: Call[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        try:
            found: T = await asyncio.wait_for(
                _send(self._coordinator, call, *args, **kwargs), timeout
            )
        except TimeoutError:
            raise call_timeout(timeout) from None
        except ray.exceptions.RayError as exc:
            raise coordinator_error(exc, timeout) from exc
        return found

    async def _read(self, timeout: float, call: Call[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A read-only call, sent again while Ray restarts the coordinator (as
        :meth:`Fleet._read`)."""
        deadline = time.monotonic() + RESTART_WAIT_S
        while True:
            try:
                return await self._change(timeout, call, *args, **kwargs)
            except ClusterUnavailable as exc:
                if not isinstance(exc.__cause__, ray.exceptions.ActorUnavailableError):
                    raise
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(RESTART_POLL_S)

    async def ping(self) -> dict[str, Any]:
        return await self._read(CALL_TIMEOUT_S, HeadAPI.ping)

    async def get_config(self) -> CoordinatorConfig:
        return await self._read(CALL_TIMEOUT_S, HeadAPI.get_config)

    async def submit(
        self, spec: JobSpec, idempotency_key: str | None = None, caller: Caller | None = None
    ) -> Job:
        return await self._change(CALL_TIMEOUT_S, HeadAPI.submit, spec, idempotency_key, caller)

    async def submit_many(
        self,
        specs: list[JobSpec],
        idempotency_key: str | None = None,
        caller: Caller | None = None,
    ) -> list[Job]:
        return await self._change(
            CALL_TIMEOUT_S, HeadAPI.submit_many, specs, idempotency_key, caller
        )

    async def get(self, job_id: str, caller: Caller | None = None) -> Job:
        return await self._read(CALL_TIMEOUT_S, HeadAPI.get, job_id, caller)

    async def list_inputs(
        self, prefix: str, limit: int = 1000, caller: Caller | None = None
    ) -> list[str]:
        return await self._read(CALL_TIMEOUT_S, HeadAPI.list_inputs, prefix, limit, caller)

    async def list_jobs(
        self,
        *,
        status: str | None = None,
        kind: str | None = None,
        after_seq: int = 0,
        limit: int = 100,
        caller: Caller | None = None,
        tenant: str | None = None,
    ) -> list[Job]:
        return await self._read(CALL_TIMEOUT_S, HeadAPI.list_jobs, status=status, kind=kind,
                                after_seq=after_seq, limit=limit, caller=caller,
                                tenant=tenant)  # fmt: skip

    async def cancel(
        self, job_id: str, caller: Caller | None = None, timeout: float = CALL_TIMEOUT_S
    ) -> Job:
        return await self._change(timeout, HeadAPI.cancel, job_id, caller)

    async def retry(self, job_id: str, caller: Caller | None = None) -> Job:
        return await self._change(CALL_TIMEOUT_S, HeadAPI.retry, job_id, caller)

    async def nodes(self, caller: Caller | None = None) -> list[NodeRecord]:
        return await self._read(CALL_TIMEOUT_S, HeadAPI.nodes, caller)

    async def metrics(self) -> MetricsSnapshot:
        return await self._read(CALL_TIMEOUT_S, HeadAPI.metrics)

    async def set_node_cap(self, node_id: str, max_jobs: int | None) -> None:
        await self._change(CALL_TIMEOUT_S, HeadAPI.set_node_cap, node_id, max_jobs)

    async def drain(self, name: str, on: bool = True, caller: Caller | None = None) -> NodeRecord:
        return await self._change(CALL_TIMEOUT_S, HeadAPI.drain, name, on, caller)

    async def release(self, name: str, caller: Caller | None = None) -> str:
        return await self._change(CALL_TIMEOUT_S, HeadAPI.release, name, caller)

    async def get_tenants(self) -> Tenants:
        return await self._read(CALL_TIMEOUT_S, HeadAPI.get_tenants)

    async def speeds(
        self, samples: bool = False, after: int = 0, limit: int = 5000
    ) -> dict[str, Any]:
        return await self._read(CALL_TIMEOUT_S, HeadAPI.speeds, samples, after, limit)

    async def load_speeds(self, samples: list[dict[str, Any]], caller: Caller | None = None) -> int:
        return await self._change(CALL_TIMEOUT_S, HeadAPI.load_speeds, samples, caller)

    async def set_tenants(self, tenants: Tenants, caller: Caller | None = None) -> bool:
        return await self._change(CALL_TIMEOUT_S, HeadAPI.set_tenants, tenants, caller)

    async def audit(
        self,
        after: int = 0,
        limit: int = 100,
        tenant: str | None = None,
        action: str | None = None,
    ) -> list[AuditEntry]:
        return await self._read(CALL_TIMEOUT_S, HeadAPI.audit, after, limit, tenant, action)

    async def events(
        self, after: int = 0, job_ids: list[str] | None = None, timeout: float = 30.0
    ) -> EventBatch:
        return await self._read(timeout + CALL_TIMEOUT_S, HeadAPI.events, after, job_ids,
                                timeout)  # fmt: skip

    async def event_cursor(self) -> int:
        return await self._read(CALL_TIMEOUT_S, HeadAPI.event_cursor)


if TYPE_CHECKING:  # the coordinator and the asyncio client answer the one declared API
    _COORDINATOR: type[HeadAPI] = Coordinator
    _ASYNC_CLIENT: type[CoordinatorAPI] = AsyncFleet
