"""The coordinator's view of the cluster: the nodes and what their agents report, nodes
just suspected lost, NVENC failures seen on real encodes, per-node job caps; and from it
the scheduler's snapshot and the users' node view.

:class:`ClusterView` owns that state; ``node_states`` and ``node_view`` are pure.

``node_states`` merges each :class:`~cluster.nodes.agent.NodeInfo` with the pool's usage and
with NVENC failures seen on real encodes, into the :class:`~cluster.scheduling.planner.NodeState`
the planner works on. ``node_view`` is the same for people (``GET /v1/nodes``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cluster.errors import NodeNotFound, ToolMissing
from cluster.media.encoders import CATALOG, Encoder, FfmpegBuild, available
from cluster.model.capability import Capability, CodecState
from cluster.nodes.agent import NodeInfo
from cluster.nodes.gpus import GpuReading
from cluster.scheduling.planner import GpuState, NodeState, memory_resource
from cluster.storage.roots import Sight

log = logging.getLogger("framefleet.coordinator.farm")
SUSPECT_NODE_S = 10.0
FIRST_VIEW_WAIT_S = 15.0
"""How long the first submit waits for every node to report its ffmpeg."""


def gpu_states(
    info: NodeInfo,
    gpu_used: Mapping[str, tuple[int, int]],
    failures: Mapping[tuple[str, str], Capability],
) -> tuple[GpuState, ...]:
    states = []
    for g in info.gpus:
        codecs = dict(info.codecs.get(g.uuid, {}))
        for codec in list(codecs):
            failed = failures.get((g.uuid, codec))
            if failed is not None:
                codecs[codec] = failed
        reserved, sessions = gpu_used.get(g.uuid, (0, 0))
        states.append(
            GpuState(
                uuid=g.uuid,
                index=g.index,
                name=g.name,
                memory_total_mb=g.memory_total_mb,
                memory_free_live_mb=g.memory_free_mb,
                memory_reserved_mb=reserved,
                sessions=sessions,
                sessions_live=g.encoder_sessions,
                max_sessions=g.max_encoder_sessions,
                codecs=codecs,
                ray_resources=memory_resource(g.uuid) in info.resources,
            )
        )
    return tuple(states)


def node_states(
    infos: list[NodeInfo],
    used: Mapping[str, tuple[float, int, int]],
    gpu_used: Mapping[str, tuple[int, int]],
    caps: Mapping[str, int | None],
    default_cap: int | None,
    failures: Mapping[tuple[str, str], Capability],
) -> list[NodeState]:
    states = []
    for info in infos:
        cpus_used, running, memory_used = used.get(info.node_id, (0.0, 0, 0))
        memory = info.resources.get("memory")  # bytes, as Ray counts it
        states.append(
            NodeState(
                node_id=info.node_id,
                address=info.address,
                cpus=info.cpus,
                cpus_used=cpus_used,
                running=running,
                max_jobs=caps.get(info.node_id, default_cap),
                gpus=gpu_states(info, gpu_used, failures),
                encoders=info.encoders,
                metrics=info.metrics,
                memory_mb=memory / 2**20 if memory else None,
                memory_used_mb=memory_used,
            )
        )
    return states


@dataclass(frozen=True, slots=True)
class GpuRecord:
    """One GPU for people: its agent's reading, what framefleet holds on it, NVENC states."""

    reading: GpuReading
    memory_reserved_mb: int
    sessions: int
    """NVENC sessions framefleet's jobs hold."""
    nvenc: Mapping[str, Capability]
    ray_resources: bool
    running_jobs: tuple[str, ...]
    quarantine: Mapping[str, Any] | None = None
    """Strikes and quarantine (state, reason, until when), if any."""

    def can_encode(self, codec: str) -> bool:
        """NVENC for ``codec`` proved by a trial encode (or declared by an inventory)."""
        cap = self.nvenc.get(codec)
        return cap is not None and cap.state in (CodecState.VERIFIED, CodecState.DECLARED)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.reading.to_dict(),
            "memory_reserved_mb": self.memory_reserved_mb,
            "sessions": self.sessions,
            "nvenc": {c: cap.to_dict() for c, cap in self.nvenc.items()},
            "ray_resources": self.ray_resources,
            "running_jobs": list(self.running_jobs),
            "quarantine": dict(self.quarantine) if self.quarantine else None,
        }


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One node for people (``GET /v1/nodes``, ``framefleet nodes``, /metrics)."""

    node_id: str
    address: str
    hostname: str
    cpus: float
    cpus_used: float
    memory_mb: int | None
    memory_used_mb: float
    load_1m: float | None
    max_jobs: int | None
    labels: Mapping[str, str]
    gpu_source: str
    agent_error: str | None
    ready: bool
    """Its agent has reported and finished its NVENC trials."""
    ffmpeg: FfmpegBuild | None
    ffmpeg_error: str | None
    gpus: tuple[GpuRecord, ...]
    running_jobs: tuple[str, ...]
    state: str = "ready"
    """``ready``, ``draining``, ``drained``, ``quarantined`` or ``trial``."""
    quarantine: Mapping[str, Any] | None = None
    draining_since: float | None = None
    scratch: Mapping[str, Any] | None = None
    """Its scratch space: ``path``, ``free_bytes``, ``used_bytes``, ``jobs``,
    ``budget_bytes`` (see :meth:`~cluster.storage.scratch.Scratch.usage`)."""
    media: tuple[Sight, ...] = ()
    """Whether it sees each local media root, at which path, and if not, why."""
    quality: FfmpegBuild | None = None
    """The ffmpeg it scores with, and the metrics it computes."""

    def can_run(self, encoder: Encoder) -> bool:
        """Its own ffmpeg has ``encoder``, and for NVENC one of its GPUs proved the codec."""
        if self.ffmpeg is None or encoder.name not in self.ffmpeg.encoders:
            return False
        if encoder.is_nvenc:
            return any(g.can_encode(encoder.codec) for g in self.gpus)
        return self.cpus > 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "address": self.address,
            "hostname": self.hostname,
            "cpus": self.cpus,
            "cpus_used": self.cpus_used,
            "memory_mb": self.memory_mb,
            "memory_used_mb": self.memory_used_mb,
            "load_1m": self.load_1m,
            "max_jobs": self.max_jobs,
            "labels": dict(self.labels),
            "gpu_source": self.gpu_source,
            "agent_error": self.agent_error,
            "ready": self.ready,
            "ffmpeg": self.ffmpeg.to_dict() if self.ffmpeg else None,
            "quality": self.quality.to_dict() if self.quality else None,
            "metrics": sorted(self.quality.metrics) if self.quality else [],
            "ffmpeg_error": self.ffmpeg_error,
            "gpus": [g.to_dict() for g in self.gpus],
            "running_jobs": list(self.running_jobs),
            "state": self.state,
            "quarantine": dict(self.quarantine) if self.quarantine else None,
            "draining_since": self.draining_since,
            "scratch": dict(self.scratch) if self.scratch else None,
            "media": [m.to_dict() for m in self.media],
        }


NodeHealth = Callable[[str, int], Mapping[str, Any]]
"""node id, its running jobs -> ``state``, ``quarantine``, ``draining_since``."""
GpuHealth = Callable[[str], Mapping[str, Any] | None]


def node_view(
    infos: list[NodeInfo],
    states: list[NodeState],
    running_jobs: Mapping[str, list[str]],
    jobs_on_gpu: Mapping[str, list[str]],
    node_health: NodeHealth | None = None,
    gpu_health: GpuHealth | None = None,
) -> list[NodeRecord]:
    """Nodes for people: CPUs, GPUs with readings and NVENC codec states, running jobs."""
    by_id = {s.node_id: s for s in states}
    view = []
    for info in infos:
        state = by_id[info.node_id]
        gpus = tuple(
            GpuRecord(
                reading=reading,
                memory_reserved_mb=gs.memory_reserved_mb,
                sessions=gs.sessions,
                nvenc=dict(gs.codecs),
                ray_resources=gs.ray_resources,
                running_jobs=tuple(jobs_on_gpu.get(reading.uuid, ())),
                quarantine=gpu_health(reading.uuid) if gpu_health else None,
            )
            for reading, gs in zip(info.gpus, state.gpus, strict=True)
        )
        running = tuple(running_jobs.get(info.node_id, ()))
        health = node_health(info.node_id, len(running)) if node_health else {}
        view.append(
            NodeRecord(
                node_id=info.node_id,
                address=info.address,
                hostname=info.hostname,
                cpus=info.cpus,
                cpus_used=state.cpus_used,
                memory_mb=round(state.memory_mb) if state.memory_mb is not None else None,
                memory_used_mb=state.memory_used_mb,
                load_1m=info.load_1m,
                max_jobs=state.max_jobs,
                labels={k: v for k, v in info.labels.items() if not k.startswith("ray.io/")},
                gpu_source=info.gpu_source,
                agent_error=info.agent_error,
                ready=info.reported and not info.detecting,
                ffmpeg=info.ffmpeg,
                ffmpeg_error=info.ffmpeg_error,
                gpus=gpus,
                running_jobs=running,
                state=health.get("state", "ready"),
                quarantine=health.get("quarantine"),
                draining_since=health.get("draining_since"),
                scratch=info.scratch,
                media=info.media,
                quality=info.quality,
            )
        )
    return view


Usage = Callable[[str], tuple[float, int, int]]
"""node id -> (cores, jobs, memory MiB) that busy encoders hold there."""


class ClusterView:
    """What the coordinator knows of the cluster, refreshed from its backend."""

    def __init__(
        self,
        nodes: Callable[[], Awaitable[list[NodeInfo]]],
        *,
        default_cap: int | None,
        local_encoders: tuple[Encoder, ...] | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._fetch = nodes
        self._now = now
        self._default_cap = default_cap
        self._local_encoders = local_encoders
        """What admission assumes before any node has reported (default: this process's
        ffmpeg; an autoscaling cluster may have no worker yet)."""
        self._nodes: list[NodeInfo] = []
        self._by_id: dict[str, NodeInfo] = {}
        self.refreshed = False
        self._reported = asyncio.Event()
        """Set once every alive node has reported (or the first submit stopped waiting)."""
        self._suspect: dict[str, float] = {}
        """Nodes where an encoder was just lost -> until when nothing is placed there."""
        self.nvenc_failures: dict[tuple[str, str], Capability] = {}
        """(GPU uuid, codec) -> why a real encode could not open NVENC there."""
        self._caps: dict[str, int | None] = {}
        """Per-node job caps set while running (``None``: only cores limit)."""

    @property
    def nodes(self) -> list[NodeInfo]:
        """The nodes as last read."""
        return self._nodes

    @nodes.setter
    def nodes(self, nodes: list[NodeInfo]) -> None:
        self._nodes = nodes
        self._by_id = {n.node_id: n for n in nodes}

    async def refresh(self) -> list[str]:
        """Read the nodes again; returns the ids of nodes that left."""
        nodes = await self._fetch()
        gone = sorted({n.node_id for n in self.nodes} - {n.node_id for n in nodes})
        for node_id in gone:
            log.warning("node %s left the cluster", node_id)
            self._caps.pop(node_id, None)
        self.nodes = nodes
        self.refreshed = True
        if nodes and all(n.reported for n in nodes):
            self._reported.set()
        return gone

    async def await_reports(self, wait_s: float = FIRST_VIEW_WAIT_S) -> None:
        """Admission judges encoders by what the nodes report: before the first submit,
        wait (bounded, once) for every alive node to have reported."""
        if self._reported.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._reported.wait(), wait_s)
        self._reported.set()

    def waiting_for(self) -> list[str]:
        """Nodes not ready yet, in words (for ``ping`` and ``/readyz``)."""
        return [
            f"{n.address} ({'proving NVENC' if n.reported else 'agent not reported yet'})"
            for n in self.nodes
            if not n.reported or n.detecting
        ]

    def node(self, node_id: str) -> NodeInfo | None:
        return self._by_id.get(node_id)

    def find(self, name: str) -> NodeInfo:
        """The node called ``name``: its id (or a unique prefix of 6+ characters), its
        address or its hostname; else a :class:`NodeNotFound` that lists them."""
        for node in self.nodes:
            if name in (node.node_id, node.address, node.hostname):
                return node
        found = [n for n in self.nodes if len(name) >= 6 and n.node_id.startswith(name)]
        if len(found) == 1:
            return found[0]
        known = ", ".join(f"{n.node_id[:12]} ({n.address})" for n in self.nodes) or "none"
        raise NodeNotFound(
            f"no node {name!r} in the cluster (give a node id, address or hostname, or a GPU "
            f"UUID; see `framefleet nodes`); nodes: {known}"
        )

    def gpu(self, uuid: str) -> tuple[NodeInfo, GpuReading] | None:
        for node in self.nodes:
            for gpu in node.gpus:
                if gpu.uuid == uuid:
                    return node, gpu
        return None

    def suspect(self, node_id: str, for_s: float = SUSPECT_NODE_S) -> None:
        """An encoder on ``node_id`` was lost: place nothing there for a while."""
        self._suspect[node_id] = self._now() + for_s

    @property
    def has_suspects(self) -> bool:
        now = self._now()
        return any(until > now for until in self._suspect.values())

    def set_cap(self, node_id: str, max_jobs: int | None) -> None:
        """A node's concurrent-job cap while running (``None``: only cores limit)."""
        self._caps[node_id] = max_jobs

    def nvenc_failed(self, uuid: str, codec: str, why: str) -> None:
        self.nvenc_failures[(uuid, codec)] = Capability(
            CodecState.FAILED, f"NVENC failed on a real encode: {why}"
        )

    def states(
        self, usage: Usage, gpu_used: Mapping[str, tuple[int, int]], *, placeable: bool = False
    ) -> list[NodeState]:
        """The planner's snapshot; ``placeable`` leaves out nodes that just lost a worker."""
        nodes = self.nodes
        if placeable and self.has_suspects:
            now = self._now()
            nodes = [n for n in nodes if self._suspect.get(n.node_id, 0.0) <= now]
        used = {n.node_id: usage(n.node_id) for n in nodes}
        return node_states(
            nodes, used, gpu_used, self._caps, self._default_cap, self.nvenc_failures
        )

    def metrics(self) -> frozenset[str] | None:
        """Quality metrics some node that can take work computes (``None``: no node has
        reported yet; judged when one does)."""
        reporting = [n for n in self.nodes if n.reported and n.cpus > 0]
        return frozenset().union(*(n.metrics for n in reporting)) if reporting else None

    def encoders(self) -> tuple[Encoder, ...]:
        """Encoders some node that can take work has in its own ffmpeg."""
        reporting = [n for n in self.nodes if n.reported and n.cpus > 0]
        if reporting:
            return available(frozenset().union(*(n.encoders for n in reporting)))
        if self._local_encoders is None:
            try:
                self._local_encoders = available()
            except ToolMissing:  # no ffmpeg on the head: the workers' will be judged
                self._local_encoders = CATALOG
        return self._local_encoders
