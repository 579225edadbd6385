"""A fake backend and fake encoders for the coordinator: no Ray, no ffmpeg, no GPU.

Like dramatiq's ``StubBroker`` or httpx's ``MockTransport``: the coordinator runs
unchanged on :class:`FakeBackend`, and a test scripts what each encode does
(:class:`Script`): succeed, fail with a framefleet error, run until cancelled, freeze
(ignore cancel until killed), or lose its worker. Nodes are :func:`fake_node` records;
inputs are :class:`FakeClip` s of any length, probed (:meth:`FakeBackend.probe`) and
indexed frame by frame (:meth:`FakeBackend.index`) without ffprobe, so a coordinator
test (a split job's chunks and stitch included) takes milliseconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from cluster.errors import InputError, JobFailure, WorkerLost
from cluster.media.encoders import CATALOG, FfmpegBuild
from cluster.media.work import WorkOrder, WorkOutcome
from cluster.model.media import AudioStream, MediaInfo, VideoStream
from cluster.model.quality import METRICS
from cluster.model.split import FrameIndex
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
    UNREACHABLE = "unreachable"
    """Answer nothing, and even a kill is not confirmed until the backend says the node
    is gone (:meth:`FakeBackend.node_gone`: Ray gives up on a node it cannot reach)."""


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
    metrics: tuple[str, ...] = METRICS,
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
        quality=FfmpegBuild("ffmpeg-static", "fake", frozenset(), frozenset(metrics))
        if reported and metrics
        else None,
        reported=reported,
    )


@dataclass(frozen=True, slots=True)
class FakeClip:
    """What a fake input holds: its length, frame rate and size, a keyframe every
    ``gop`` frames, audio to its end; ``vfr``: uneven frame times (not cut)."""

    duration_s: float = 10.0
    fps: int = 25
    width: int = 640
    height: int = 360
    gop: int = 250
    audio: bool = True
    vfr: bool = False

    @property
    def frames(self) -> int:
        return round(self.duration_s * self.fps)

    def media(self, path: str) -> MediaInfo:
        return MediaInfo(
            path=path,
            format_name="mov,mp4,m4a,3gp,3g2,mj2",
            duration_s=self.duration_s,
            size_bytes=1_000_000,
            bit_rate=800_000,
            video=VideoStream(0, "h264", self.width, self.height, "yuv420p", 8, (self.fps, 1)),
            frame_count=self.frames,
            audio=(AudioStream(1, "aac", 2, 48_000),) if self.audio else (),
        )

    def index(self) -> FrameIndex:
        """Every frame's time, as :func:`~cluster.media.split.scan_frames` reads them."""
        step = 1.0 / self.fps
        times = [i * step for i in range(self.frames)]
        if self.vfr:  # every tenth frame held twice as long
            times = [t + step * (i // 10) for i, t in enumerate(times)]
        keyframes = frozenset(range(0, self.frames, max(1, self.gop)))
        audio_end = times[-1] + step if self.audio and times else None
        return FrameIndex(0.0, tuple(times), keyframes, audio_end)


def fake_media(
    path: str, *, duration_s: float = 10.0, width: int = 640, height: int = 360
) -> MediaInfo:
    return FakeClip(duration_s, width=width, height=height, audio=False).media(path)


async def fake_probe(path: str, roots: tuple[Path, ...]) -> MediaInfo:
    """Probes a file without ffprobe: a 10 s 640x360 video; a missing file is an
    :class:`~cluster.errors.InputError` as with the real probe."""
    if not Path(path).exists():
        raise InputError(f"{Path(path).name}: no such file")
    return fake_media(path)


@dataclass(eq=False)
class FakeEncoder:
    """An :class:`~cluster.control.farm.backend.EncoderHandle` that follows its backend's
    script."""

    backend: FakeBackend
    placement: Placement
    orders: list[WorkOrder] = field(default_factory=list)
    killed: bool = False
    live: int = 0
    """Encodes of this handle not yet ended (an unreachable one counts until its node
    is declared gone)."""
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _killed: asyncio.Event = field(default_factory=asyncio.Event)
    _frozen: bool = False

    async def run(self, order: WorkOrder) -> WorkOutcome:
        self.orders.append(order)
        self.backend.orders.append(order)
        step = self.backend.script(order)
        if isinstance(step, WorkerLost):
            raise step
        if isinstance(step, JobFailure):
            return WorkOutcome.failure(order, step)
        if step is Behaviour.SUCCEED:
            return WorkOutcome(order.job_id, order.attempt, "succeeded", result={"fake": True})
        self._frozen = step in (Behaviour.FREEZE, Behaviour.UNREACHABLE)
        if step is Behaviour.UNREACHABLE:
            self.live += 1
            try:
                await self.backend.gone.wait()
            finally:
                self.live -= 1
            raise WorkerLost(f"the node of {self.placement.address} was lost")
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
            await (self.backend.gone if self.live else self._killed).wait()  # no answer
            raise WorkerLost("killed")
        self._stop.set()
        return True

    async def shutdown(self) -> None:
        await self.cancel("")

    def kill(self) -> None:
        self.killed = True
        self._killed.set()


class FakeBackend:
    """The coordinator's :class:`~cluster.control.farm.backend.Backend` without Ray; its
    :meth:`probe` and :meth:`index` read :class:`FakeClip` s (by file name; a
    ``FakeClip()`` for any other file that exists)."""

    def __init__(
        self,
        nodes: list[NodeInfo] | None = None,
        script: Script | None = None,
        clips: dict[str, FakeClip] | None = None,
    ) -> None:
        self.node_list: list[NodeInfo] = [fake_node()] if nodes is None else nodes
        self.script: Script = script or (lambda order: Behaviour.SUCCEED)
        self.clips: dict[str, FakeClip] = dict(clips or {})
        self.encoders: list[FakeEncoder] = []
        self.orders: list[WorkOrder] = []
        """Every work order any encoder was given, in order."""
        self.capacity_requests: list[list[dict[str, float]]] = []
        self.probed_on: list[tuple[str, str]] = []
        self.indexed: list[str] = []
        self.partials_removed: list[tuple[str, str, str]] = []
        self.gone = asyncio.Event()
        """Set: Ray has given up on the nodes of unreachable encoders."""

    def node_gone(self) -> None:
        """Ray gives up on every unreachable encoder: their calls end, lost."""
        self.gone.set()

    def clip(self, path: str) -> FakeClip:
        if not Path(path).exists():
            raise InputError(f"{Path(path).name}: no such file")
        return self.clips.get(Path(path).name, FakeClip())

    async def probe(self, path: str, roots: tuple[Path, ...]) -> MediaInfo:
        """A :data:`~cluster.control.farm.prober.ProbeFn` on the head."""
        return self.clip(path).media(path)

    async def index(
        self, path: str, roots: tuple[Path, ...], video_index: int, audio_index: int | None
    ) -> FrameIndex:
        """An :data:`~cluster.control.farm.reach.IndexFn` on the head."""
        self.indexed.append(path)
        return self.clip(path).index()

    async def nodes(self) -> list[NodeInfo]:
        return list(self.node_list)

    async def probe_on(self, node_id: str, path: str) -> MediaInfo:
        self.probed_on.append((node_id, path))
        return self.clip(path).media(path)

    async def index_on(
        self, node_id: str, path: str, video_index: int, audio_index: int | None
    ) -> FrameIndex:
        return await self.index(path, (), video_index, audio_index)

    async def remove_partials_on(
        self, node_id: str, folder: str, job_id: str, tasks: bool = False
    ) -> None:
        self.partials_removed.append((node_id, folder, job_id))

    def create_encoder(self, placement: Placement) -> FakeEncoder:
        encoder = FakeEncoder(self, placement)
        self.encoders.append(encoder)
        return encoder

    async def request_capacity(self, bundles: list[dict[str, float]]) -> None:
        self.capacity_requests.append(bundles)


class FakeClock:
    """A clock for the coordinator's ``now`` that moves only when told: quarantines,
    backoffs, suspects and idempotency keys expire without a test sleeping."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
