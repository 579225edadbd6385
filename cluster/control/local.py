"""The coordinator and its encoders in this process: a one-shot command without Ray.

``framefleet encode`` on a laptop with no cluster and no gateway used to start a private
Ray around one ffmpeg (seconds of start-up for a job of a second). Here the same
:class:`~cluster.control.coordinator.Coordinator` runs on an event loop in a thread of
this process, through the same :class:`~cluster.control.farm.backend.Backend` seam Ray
fills elsewhere: one node (this machine, read by the same
:class:`~cluster.nodes.agent.NodeAgent`), and encoders that are the same
:class:`~cluster.nodes.encoder.EncoderWorker` objects an encoder actor wraps. So a job
gets the same checks, confinement, partial files, retries, progress and outcome; its
ffmpeg is a child of this process, killed with it (``PR_SET_PDEATHSIG``, and on exit).

Nothing here imports Ray. :class:`LocalFleet` offers the calls of
:class:`~cluster.ray_edge.client.Fleet` that a one-shot command makes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from cluster.config import CoordinatorConfig, RuntimeConfig
from cluster.control.coordinator import Coordinator
from cluster.control.farm.backend import EncoderHandle
from cluster.control.records.sweep import sweep_partials
from cluster.errors import WorkerLost
from cluster.media.work import WorkOrder, WorkOutcome
from cluster.model.events import JobEvent
from cluster.model.jobs import Job, JobSpec
from cluster.model.media import MediaInfo
from cluster.model.split import FrameIndex
from cluster.model.tenancy import Caller
from cluster.nodes.agent import HEAD_RESOURCE, NodeAgent, NodeInfo, node_info
from cluster.nodes.encoder import EncoderWorker
from cluster.nodes.environ import env_setting
from cluster.nodes.gpus import GpuReading
from cluster.nodes.register import registration
from cluster.scheduling.planner import Placement
from cluster.storage.private import private_dir
from cluster.storage.scratch import SCRATCH_ENV, Scratch

log = logging.getLogger("framefleet.local")
T = TypeVar("T")

NODE_ID = "local"
RUNS = "runs"
LOCK = "lock"
PROGRESS_INTERVAL_S = 0.25
"""One node, in this process: its progress goes to the coordinator four times a second."""
MEMORY_SHARE = 0.7
"""Of the machine's memory, what jobs are placed against (as Ray offers its workers)."""
CALL_TIMEOUT_S = 30.0
START_TIMEOUT_S = 60.0
SHUTDOWN_WAIT_S = 60.0
WAIT_SLICE_S = 0.5
"""How long one wait for events lasts before the caller's thread looks again (Ctrl-C)."""


class LocalEncoder:
    """An :class:`EncoderHandle` over an encoder in this process. :meth:`kill` kills its
    ffmpeg at once; the run then ends as a lost worker, as a killed actor's would."""

    def __init__(self, worker: EncoderWorker) -> None:
        self._worker = worker
        self._task: asyncio.Task[WorkOutcome] | None = None
        self._killed = False

    async def run(self, order: WorkOrder) -> WorkOutcome:
        if self._killed:
            raise WorkerLost("the encoder was killed")
        self._task = asyncio.ensure_future(self._worker.run(order))
        try:
            return await asyncio.shield(self._task)
        except asyncio.CancelledError:
            if self._killed and self._task.cancelled():
                raise WorkerLost("the encoder was killed (its ffmpeg with it)") from None
            raise

    async def cancel(self, job_id: str) -> bool:
        return await self._worker.cancel(job_id)

    async def shutdown(self) -> None:
        await self._worker.shutdown()

    def kill(self) -> None:
        self._killed = True
        self._worker.kill_now()
        if self._task is not None and not self._task.done():
            self._task.cancel()


class LocalBackend:
    """The coordinator's view of this machine as its one node, in this process."""

    def __init__(self, runtime: RuntimeConfig, roots: tuple[tuple[str, str], ...] = ()) -> None:
        scratch = runtime.scratch or env_setting(SCRATCH_ENV) or runtime.data_dir / "scratch"
        self.scratch = Scratch(Path(scratch).resolve(), runtime.scratch_bytes)
        self.agent = NodeAgent(ffmpeg=runtime.ffmpeg, scratch=self.scratch,
                               inventory=runtime.gpu_inventory)  # fmt: skip
        self.agent.progress.interval_s = PROGRESS_INTERVAL_S
        self._cpus = float(runtime.num_cpus or os.cpu_count() or 1)
        self._roots = roots
        self._memory = MEMORY_SHARE * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")

    def attach(self, coordinator: Coordinator) -> None:
        """Start the node's agent; its progress batches go to ``coordinator``."""

        async def send(batch: list[Any]) -> None:
            coordinator.apply_progress(batch)

        self.agent.progress.send = send
        self.agent.start()

    async def nodes(self) -> list[NodeInfo]:
        snapshot = await self.agent.snapshot(self._roots)
        gpus = [GpuReading.from_dict(g) for g in snapshot.get("gpus", [])]
        registered = registration(gpus, {})
        entry = {
            "NodeID": NODE_ID,
            "NodeManagerAddress": "127.0.0.1",
            "NodeManagerHostname": socket.gethostname(),
            "Resources": {
                "CPU": self._cpus,
                "memory": self._memory,
                HEAD_RESOURCE: 1.0,
                **({"GPU": float(len(gpus))} if gpus else {}),
                **registered.resources,
            },
        }
        return [node_info(entry, snapshot)]

    def create_encoder(self, placement: Placement) -> EncoderHandle:
        worker = EncoderWorker(progress_sink=self.agent.progress.add,
                               scratch_budget=self.scratch.budget_bytes)  # fmt: skip
        return LocalEncoder(worker)

    async def probe_on(self, node_id: str, path: str) -> MediaInfo:
        return await self.agent.probe(path)

    async def index_on(
        self, node_id: str, path: str, video_index: int, audio_index: int | None
    ) -> FrameIndex:
        return await self.agent.index(path, video_index, audio_index)

    async def remove_partials_on(
        self, node_id: str, folder: str, job_id: str, tasks: bool = False
    ) -> None:
        await self.agent.remove_partials(folder, job_id, tasks)

    async def request_capacity(self, bundles: list[dict[str, float]]) -> None:
        """One machine: no autoscaler to ask."""


class RunFolder:
    """This command's own folder in the data dir (``runs/<pid>-<tag>``), holding its job
    store, locked (``flock``) while the command lives. A one-shot command owns its jobs:
    another one running beside it on the same data dir never takes them over, and one
    that was killed leaves its folder behind for the next to sweep (what its encodes
    were writing removed; its jobs not run again: the user ended them)."""

    def __init__(self, data_dir: Path) -> None:
        self.runs = private_dir(data_dir / RUNS)
        self.sweep()
        fresh = self.runs / f".new-{os.getpid()}-{secrets.token_hex(4)}"
        fresh.mkdir(mode=0o700)
        self._lock = os.open(fresh / LOCK, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self.path = fresh.with_name(fresh.name.removeprefix(".new-"))
        fresh.rename(self.path)  # only a locked folder is ever seen by a sweep

    def sweep(self) -> int:
        """Remove the folders of commands that died (their lock is free); how many."""
        swept = 0
        for folder in self.runs.iterdir():
            if folder.name.startswith("."):
                with contextlib.suppress(OSError):  # renamed by its command meanwhile
                    if time.time() - folder.stat().st_mtime > 60:  # killed between making
                        shutil.rmtree(folder, ignore_errors=True)  # it and locking it
                continue
            try:
                fd = os.open(folder / LOCK, os.O_RDWR)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a command that is running
            finally:
                os.close(fd)
            if swept_jobs := sweep_partials(folder):
                log.warning("removed what %d job(s) of a killed command were writing",
                            swept_jobs)  # fmt: skip
            shutil.rmtree(folder, ignore_errors=True)
            swept += 1
        return swept

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._lock)


class LocalFleet:
    """The coordinator running in this process (on its own event loop, in a thread), with
    the calls of :class:`~cluster.ray_edge.client.Fleet` a one-shot command makes."""

    def __init__(self, runtime: RuntimeConfig, coordinator: CoordinatorConfig) -> None:
        self.coordinator_config = coordinator
        self.config_mismatch: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="framefleet-head",
                                        daemon=True)  # fmt: skip
        self._thread.start()
        self._backend = LocalBackend(runtime, coordinator.root_ids)
        self._run = RunFolder(runtime.data_dir)
        own = replace(coordinator, jobs_db=self._run.path / "jobs.sqlite3")
        try:
            self.coordinator = self._call(self._start(own), START_TIMEOUT_S)
        except BaseException:
            self._stop_loop()
            self._run.remove()
            raise

    @classmethod
    def connect(cls, runtime: RuntimeConfig, coordinator: CoordinatorConfig) -> LocalFleet:
        return cls(runtime, coordinator)

    async def _start(self, config: CoordinatorConfig) -> Coordinator:
        coordinator = Coordinator(config, self._backend)
        self._backend.attach(coordinator)
        coordinator.start()
        return coordinator

    def _call(self, work: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT_S) -> T:
        """Run ``work`` on the coordinator's loop; wait for its answer here."""
        future = asyncio.run_coroutine_threadsafe(work, self._loop)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()
            raise

    def seed_probe(self, path: str, media: MediaInfo) -> bool:
        """Hand the coordinator a probe of ``path`` made while it started (used by a job
        on that very file, if it has not changed since); whether it was taken."""

        async def seed() -> bool:
            return self.coordinator.prober.seed(path, media)

        return self._call(seed())

    def ping(self) -> dict[str, Any]:
        return self._call(self.coordinator.ping())

    def submit(
        self, spec: JobSpec, idempotency_key: str | None = None, caller: Caller | None = None
    ) -> Job:
        return self._call(self.coordinator.submit(spec, idempotency_key, caller))

    def get(self, job_id: str, caller: Caller | None = None) -> Job:
        return self._call(self.coordinator.get(job_id, caller))

    def cancel(self, job_id: str, caller: Caller | None = None) -> Job:
        return self._call(self.coordinator.cancel(job_id, caller), SHUTDOWN_WAIT_S)

    def wait(
        self,
        job_id: str,
        *,
        on_event: Callable[[JobEvent], None] | None = None,
        timeout: float | None = None,
    ) -> Job:
        """Follow ``job_id`` until it ends; ``on_event`` sees each of its events (called
        in this thread, which a Ctrl-C interrupts within :data:`WAIT_SLICE_S`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        after = self._call(self.coordinator.event_cursor())
        job = self.get(job_id)
        while not job.status.terminal:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.status} after {timeout:g} s")
            batch = self._call(self.coordinator.events(after, [job_id], WAIT_SLICE_S))
            after = batch.last_seq
            for event in batch.events:
                if on_event is not None:
                    on_event(event)
            if batch.gap or any(e.status.terminal for e in batch.events) or not batch.events:
                job = self.get(job_id)
        return job

    def close(self) -> bool:
        """Wind the running encodes down (their ffmpeg killed, partial files removed),
        then stop the loop. Whether it closed cleanly."""
        clean = True
        try:
            self._call(self._close(), SHUTDOWN_WAIT_S)
        except BaseException as exc:  # a Ctrl-C during close, or a stuck encode
            log.warning("the in-process coordinator did not stop cleanly: %s", exc)
            clean = False
        self._stop_loop()
        if clean:
            self._run.remove()  # else left for the next command to sweep
        return clean

    async def _close(self) -> None:
        await self.coordinator.shutdown()
        await self._backend.agent.stop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(SHUTDOWN_WAIT_S)
        if not self._thread.is_alive():
            with contextlib.suppress(RuntimeError):
                self._loop.close()
