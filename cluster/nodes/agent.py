"""The node agent: one per node, pinned to it, reporting the node's GPUs and load.

It reads its :class:`~cluster.nodes.gpus.GpuSource` every ``refresh_s`` (NVML, or a static
inventory named by ``FRAMEFLEET_GPU_INVENTORY`` in the node's environment, which
``framefleet node start`` sets for ``ray start``), finds the node's own ffmpeg (its path,
version and encoders: farms mix builds), runs capability detection once in the
background with that ffmpeg (trial encodes; cached for the agent's, that is the node's,
life), and answers :meth:`NodeAgent.snapshot` from memory. The coordinator turns
snapshots into :class:`NodeInfo`.

It also says which media roots the node sees, and where (the coordinator passes the
roots and their identities with each snapshot call), and serves those media to nodes
that cannot see them (:class:`~cluster.nodes.serving.MediaServer`): reads in bounded,
checksummed chunks, uploads into partial files, probes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster.errors import ToolMissing
from cluster.media.encoders import FfmpegBuild, ffmpeg_build
from cluster.media.quality import quality_build
from cluster.model.capability import Capability, CodecState
from cluster.model.jobs import CODECS
from cluster.model.media import MediaInfo
from cluster.model.progress import ProgressSnapshot
from cluster.model.split import FrameIndex
from cluster.nodes.capability import detect
from cluster.nodes.gpus import GpuReading, GpuSource, gpu_source
from cluster.nodes.progress import ProgressBatcher
from cluster.nodes.serving import MediaServer
from cluster.storage.roots import Pairs, Sight
from cluster.storage.scratch import DEFAULT_SCRATCH, Scratch

log = logging.getLogger("framefleet.agent")

AGENT_REFRESH_S = 2.0
HEAD_RESOURCE = "node:__internal_head__"
"""The resource Ray gives only the head node."""
SWEEP_S = 60.0
PENDING = Capability(CodecState.PENDING, "trial encode not finished yet")


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One node as the coordinator sees it: Ray's registration plus the agent's readings."""

    node_id: str
    address: str
    cpus: float
    resources: dict[str, float] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    hostname: str = ""
    load_1m: float | None = None
    gpu_source: str = "unknown"
    gpus: tuple[GpuReading, ...] = ()
    codecs: dict[str, dict[str, Capability]] = field(default_factory=dict)
    """``{gpu uuid: {codec: Capability}}``."""
    agent_error: str | None = None
    ffmpeg: FfmpegBuild | None = None
    """The node's own ffmpeg; ``None`` when it has none (or its agent has not reported)."""
    quality: FfmpegBuild | None = None
    """The ffmpeg it scores with (:func:`~cluster.media.quality.quality_build`)."""
    ffmpeg_error: str | None = None
    reported: bool = False
    """Its agent has answered at least once."""
    detecting: bool = False
    """Its NVENC trial encodes are still running."""
    scratch: dict[str, Any] | None = None
    """Its scratch space (:meth:`~cluster.storage.scratch.Scratch.usage`)."""
    media: tuple[Sight, ...] = ()
    """Whether it sees each local media root, and where."""
    cpu_model: str = ""
    """Its CPU's model name (what its CPU encodes' learned speeds are kept by)."""

    @property
    def is_head(self) -> bool:
        """The head node (where the coordinator runs)."""
        return HEAD_RESOURCE in self.resources

    def sight(self, root: str) -> Sight | None:
        """How this node sees ``root`` (``None``: its agent has not said)."""
        return next((s for s in self.media if s.root == root), None)

    @property
    def scratch_path(self) -> str:
        """Where the node keeps jobs' fetched and uploaded media."""
        found = (self.scratch or {}).get("path")
        return str(found) if found else DEFAULT_SCRATCH

    @property
    def encoders(self) -> frozenset[str]:
        """Encoder names the node's ffmpeg has (empty: it runs no job)."""
        return self.ffmpeg.encoders if self.ffmpeg is not None else frozenset()

    @property
    def metrics(self) -> frozenset[str]:
        """Quality metrics the node computes (empty: it scores nothing)."""
        return self.quality.metrics if self.quality is not None else frozenset()


class NodeAgent:
    def __init__(
        self,
        refresh_s: float = AGENT_REFRESH_S,
        ffmpeg: str | None = None,
        scratch: Scratch | None = None,
        media: MediaServer | None = None,
        inventory: str | os.PathLike[str] | None = None,
    ) -> None:
        """``inventory``: a static GPU inventory (else ``FRAMEFLEET_GPU_INVENTORY``, else
        NVML)."""
        self.refresh_s = refresh_s
        self._inventory = inventory
        self._scratch = scratch or Scratch(Path(DEFAULT_SCRATCH))
        self.media = media or MediaServer()
        self._ffmpeg_path = ffmpeg or "ffmpeg"
        self._ffmpeg: FfmpegBuild | None = None
        self._quality: FfmpegBuild | None = None
        self._ffmpeg_error: str | None = None
        self._detecting = False
        self._source: GpuSource | None = None
        self._error: str | None = None
        self._readings: list[GpuReading] = []
        self._codecs: dict[str, dict[str, Capability]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.progress = ProgressBatcher()
        """The node's encodes' progress, sent to the head in one batch per interval (the
        runtime sets where: :attr:`ProgressBatcher.send`)."""

    def start(self) -> None:
        """Begin reading (needs a running event loop)."""
        self._tasks = [asyncio.create_task(self._sweep_loop()),
                       asyncio.create_task(self.progress.run())]  # fmt: skip
        try:
            self._ffmpeg = ffmpeg_build(self._ffmpeg_path)
        except ToolMissing as exc:  # the node can still report; it just runs no job
            log.error("no usable ffmpeg on this node: %s", exc)
            self._ffmpeg_error = str(exc)
        self._quality = quality_build(self._ffmpeg)
        if self._quality is not None:
            log.info("quality metrics %s with %s", ", ".join(sorted(self._quality.metrics)),
                     self._quality.path)  # fmt: skip
        listed = self._ffmpeg.encoders if self._ffmpeg else frozenset()
        path = self._ffmpeg.path if self._ffmpeg else self._ffmpeg_path
        try:
            self._source = gpu_source(self._inventory)
            self._readings = self._source.read()
        except Exception as exc:  # a bad inventory must be reported, not crash the node
            log.error("GPU inventory unusable: %s", exc)
            self._error = str(exc)
            return
        self._tasks.append(asyncio.create_task(self._refresh_loop()))
        if all(g.declared_codecs is not None for g in self._readings):
            # Declared: trusted, no trial to wait for.
            self._codecs = detect(self._readings, listed, path)
        else:
            self._codecs = {g.uuid: dict.fromkeys(CODECS, PENDING) for g in self._readings}
            self._detecting = True
            self._tasks.append(asyncio.create_task(self._detect(listed, path)))

    async def stop(self) -> None:
        """Stop reading and sweeping, after sending the progress it holds (an agent in
        the process it serves ends with it; a Ray actor's ends with its node)."""
        await self.progress.flush()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._source is not None:
            self._source.close()

    async def _detect(self, listed: frozenset[str], ffmpeg: str) -> None:
        try:
            self._codecs = await asyncio.to_thread(detect, list(self._readings), listed, ffmpeg)
        except Exception as exc:
            log.exception("capability detection failed")
            failed = Capability(CodecState.FAILED, f"detection failed: {exc}")
            self._codecs = {g.uuid: dict.fromkeys(CODECS, failed) for g in self._readings}
        finally:
            self._detecting = False
        for uuid, caps in self._codecs.items():
            log.info("GPU %s NVENC: %s", uuid, {c: str(v.state) for c, v in caps.items()})

    async def _sweep_loop(self) -> None:
        """Remove scratch folders whose encoder died (killed, or the node restarted) and
        media uploads left half-way, every :data:`SWEEP_S`: a dead process says nothing."""
        while True:
            try:
                removed = await asyncio.to_thread(self._scratch.sweep)
                if removed:
                    log.warning("removed scratch left by dead encoders: %s", ", ".join(removed))
                self.media.sweep()
            except Exception:
                log.exception("sweeping scratch failed")
            await asyncio.sleep(SWEEP_S)

    async def _refresh_loop(self) -> None:
        """Read the GPUs (memory, load, encoder sessions) every ``refresh_s``: placement
        and ``/metrics`` use the readings, and no event says they changed. A node with no
        GPU source (no driver, no inventory) runs no loop at all."""
        if self._source is None:
            return
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                self._readings = await asyncio.to_thread(self._source.read)
            except Exception as exc:  # keep the last readings; say so
                log.warning("GPU readings failed: %s", exc)

    async def snapshot(self, roots: Pairs = ()) -> dict[str, Any]:
        """What the node has now; ``roots`` (``(root, identity)``): say whether it sees them."""
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        sights = await self.media.look(roots) if roots else ()
        return {
            "hostname": socket.gethostname(),
            "cpu_count": os.cpu_count(),
            "cpu_model": cpu_model(),
            "load_1m": load,
            "gpu_source": self._source.kind if self._source else "none",
            "error": self._error,
            "ffmpeg": self._ffmpeg.to_dict() if self._ffmpeg else None,
            "quality": self._quality.to_dict() if self._quality else None,
            "ffmpeg_error": self._ffmpeg_error,
            "detecting": self._detecting,
            "scratch": await asyncio.to_thread(self._scratch.usage),
            "media": [s.to_dict() for s in sights],
            "gpus": [g.to_dict() for g in self._readings],
            "codecs": {
                uuid: {codec: cap.to_dict() for codec, cap in caps.items()}
                for uuid, caps in self._codecs.items()
            },
        }

    async def report(self, job_id: str, attempt: int, snapshot: ProgressSnapshot) -> None:
        """An encode of this node reported progress: sent with the node's next batch."""
        self.progress.add(job_id, attempt, snapshot)

    # ---- media this node serves to nodes that cannot see them (see MediaServer) ----

    async def read(self, path: str, offset: int, size: int) -> dict[str, Any]:
        return await self.media.read(path, offset, size)

    async def open_upload(
        self, final: str, tag: str, *, overwrite: bool, make_folder: bool = False
    ) -> str:
        return await self.media.open_upload(final, tag, overwrite=overwrite,
                                            make_folder=make_folder)  # fmt: skip

    async def write(self, upload: str, offset: int, data: bytes, crc: int) -> None:
        await self.media.write(upload, offset, data, crc)

    async def commit(self, upload: str, size: int) -> None:
        await self.media.commit(upload, size)

    async def abort(self, upload: str) -> None:
        await self.media.abort(upload)

    async def probe(self, path: str) -> MediaInfo:
        return await self.media.probe(path)

    async def index(self, path: str, video_index: int, audio_index: int | None) -> FrameIndex:
        return await self.media.index(path, video_index, audio_index)

    async def remove_partials(self, folder: str, job_id: str, tasks: bool = False) -> None:
        await self.media.remove_partials(folder, job_id, tasks)


_CPU_MODEL: list[str] = []


def cpu_model() -> str:
    """This machine's CPU model name (``/proc/cpuinfo``; ``unknown`` elsewhere), read once."""
    if not _CPU_MODEL:
        name = "unknown"
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                    name = " ".join(value.split())
                    break
        except OSError:
            pass
        _CPU_MODEL.append(name)
    return _CPU_MODEL[0]


def node_info(
    ray_node: dict[str, Any], snapshot: dict[str, Any] | None, error: str | None = None
) -> NodeInfo:
    """A :class:`NodeInfo` from one ``ray.nodes()`` entry and its agent's snapshot."""
    resources = dict(ray_node.get("Resources", {}))
    base = NodeInfo(
        node_id=ray_node["NodeID"],
        address=ray_node["NodeManagerAddress"],
        cpus=float(resources.get("CPU", 0.0)),
        resources=resources,
        labels=dict(ray_node.get("Labels", {})),
        hostname=ray_node.get("NodeManagerHostname", ""),
        agent_error=error,
    )
    if snapshot is None:
        return base
    return NodeInfo(
        node_id=base.node_id,
        address=base.address,
        cpus=base.cpus,
        resources=base.resources,
        labels=base.labels,
        hostname=snapshot.get("hostname") or base.hostname,
        load_1m=snapshot.get("load_1m"),
        gpu_source=snapshot.get("gpu_source", "unknown"),
        gpus=tuple(GpuReading.from_dict(g) for g in snapshot.get("gpus", [])),
        codecs={
            uuid: {c: Capability.from_dict(v) for c, v in caps.items()}
            for uuid, caps in snapshot.get("codecs", {}).items()
        },
        agent_error=snapshot.get("error") or error,
        ffmpeg=FfmpegBuild.from_dict(snapshot["ffmpeg"]) if snapshot.get("ffmpeg") else None,
        quality=FfmpegBuild.from_dict(snapshot["quality"]) if snapshot.get("quality") else None,
        ffmpeg_error=snapshot.get("ffmpeg_error"),
        reported=True,
        detecting=bool(snapshot.get("detecting")),
        scratch=snapshot.get("scratch"),
        media=tuple(Sight.from_dict(m) for m in snapshot.get("media", [])),
        cpu_model=str(snapshot.get("cpu_model") or ""),
    )
