"""A fake backend and fake encoders for the coordinator: no Ray, no ffmpeg, no GPU.

Like dramatiq's ``StubBroker`` or httpx's ``MockTransport``: the coordinator runs
unchanged on :class:`FakeBackend`, and a test scripts what each encode does
(:class:`Script`): succeed, fail with a framefleet error, run until cancelled, freeze
(ignore cancel until killed), or lose its worker. Nodes are :func:`fake_node` records
and inputs are probed by :func:`fake_probe`, so a coordinator test takes milliseconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from cluster.errors import InputError, JobFailure, WorkerLost
from cluster.media.encoders import CATALOG, FfmpegBuild
from cluster.media.split import FrameIndex, index_file
from cluster.media.work import WorkOrder, WorkOutcome
from cluster.model.media import MediaInfo, VideoStream
from cluster.nodes.agent import HEAD_RESOURCE, NodeInfo
from cluster.nodes.gpus import GpuReading
from cluster.scheduling.planner import Placement
from cluster.storage.roots import Sight


class Behaviour(StrEnum):
    SUCCEED = "succeed"
    HANG = "hang"
    """Run until cancelled (then end ``cancelled``), like a long encode."""
    FREEZE = "freeze"
    """Answer nothing, not even cancel, until killed (a stopped process, a hung node)."""


Step = Behaviour | JobFailure
Script = Callable[[WorkOrder], Step]
"""What the encode of a work order does: a :class:`Behaviour`, or a failure to end with
(a :class:`~cluster.errors.WorkerLost` is raised from the call, as Ray would)."""


def fake_node(
    node_id: str = "node-1",
    *,
    cpus: float = 4.0,
    memory_mb: float = 16_384,
    encoders: frozenset[str] | None = None,
    gpus: tuple[GpuReading, ...] = (),
    reported: bool = True,
    media: tuple[Sight, ...] = (),
    head: bool = False,
) -> NodeInfo:
    """A node as an agent would report it (every catalog encoder by default)."""
    names = encoders if encoders is not None else frozenset(e.name for e in CATALOG)
    resources = {"CPU": cpus, "memory": memory_mb * 2**20} | ({HEAD_RESOURCE: 1.0} if head else {})
    return NodeInfo(
        node_id=node_id,
        address=f"10.0.0.{sum(map(ord, node_id)) % 250 + 1}",
        cpus=cpus,
        resources=resources,
        media=media,
        hostname=node_id,
        gpu_source="none",
        gpus=gpus,
        ffmpeg=FfmpegBuild("ffmpeg", "fake", names) if reported else None,
        reported=reported,
    )


def fake_media(
    path: str, *, duration_s: float = 10.0, width: int = 640, height: int = 360
) -> MediaInfo:
    return MediaInfo(
        path=path,
        format_name="mov,mp4,m4a,3gp,3g2,mj2",
        duration_s=duration_s,
        size_bytes=1_000_000,
        bit_rate=800_000,
        video=VideoStream(0, "h264", width, height, "yuv420p", 8, (25, 1)),
        frame_count=int(duration_s * 25),
    )


async def fake_probe(path: str, roots: tuple[Path, ...]) -> MediaInfo:
    """Probes a file without ffprobe: a 10 s 640x360 video; a missing file is an
    :class:`~cluster.errors.InputError` as with the real probe."""
    if not Path(path).exists():
        raise InputError(f"{Path(path).name}: no such file")
    return fake_media(path)


@dataclass(eq=False)
class FakeEncoder:
    """An :class:`~cluster.control.running.pool.EncoderHandle` that follows its backend's script."""

    backend: FakeBackend
    placement: Placement
    orders: list[WorkOrder] = field(default_factory=list)
    killed: bool = False
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _killed: asyncio.Event = field(default_factory=asyncio.Event)
    _frozen: bool = False

    async def run(self, order: WorkOrder) -> WorkOutcome:
        self.orders.append(order)
        step = self.backend.script(order)
        if isinstance(step, WorkerLost):
            raise step
        if isinstance(step, JobFailure):
            return WorkOutcome.failure(order, step)
        if step is Behaviour.SUCCEED:
            return WorkOutcome(order.job_id, order.attempt, "succeeded", result={"fake": True})
        self._frozen = step is Behaviour.FREEZE
        waits = [asyncio.ensure_future(self._killed.wait())]
        if not self._frozen:
            waits.append(asyncio.ensure_future(self._stop.wait()))
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        self._stop.clear()
        if self.killed:
            raise WorkerLost(f"the encoder on {self.placement.address} was lost (killed)")
        return WorkOutcome(order.job_id, order.attempt, "cancelled")

    async def cancel(self, job_id: str) -> bool:
        if self._frozen:
            await self._killed.wait()  # a frozen process answers nothing
            raise WorkerLost("killed")
        self._stop.set()
        return True

    async def shutdown(self) -> None:
        await self.cancel("")

    def kill(self) -> None:
        self.killed = True
        self._killed.set()


class FakeBackend:
    """The coordinator's :class:`~cluster.control.coordinator.Backend` without Ray."""

    def __init__(self, nodes: list[NodeInfo] | None = None, script: Script | None = None) -> None:
        self.node_list: list[NodeInfo] = [fake_node()] if nodes is None else nodes
        self.script: Script = script or (lambda order: Behaviour.SUCCEED)
        self.encoders: list[FakeEncoder] = []
        self.capacity_requests: list[list[dict[str, float]]] = []
        self.probed_on: list[tuple[str, str]] = []
        self.partials_removed: list[tuple[str, str, str]] = []

    async def nodes(self) -> list[NodeInfo]:
        return list(self.node_list)

    async def probe_on(self, node_id: str, path: str) -> MediaInfo:
        self.probed_on.append((node_id, path))
        return await fake_probe(path, ())

    async def index_on(
        self, node_id: str, path: str, video_index: int, audio_index: int | None
    ) -> FrameIndex:
        return await index_file(path, (), video_index, audio_index)

    async def remove_partials_on(
        self, node_id: str, folder: str, job_id: str, chunks: bool = False
    ) -> None:
        self.partials_removed.append((node_id, folder, job_id))

    def create_encoder(self, placement: Placement) -> FakeEncoder:
        encoder = FakeEncoder(self, placement)
        self.encoders.append(encoder)
        return encoder

    async def request_capacity(self, bundles: list[dict[str, float]]) -> None:
        self.capacity_requests.append(bundles)
