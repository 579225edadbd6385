"""Where a job runs: the pure scheduling core.

Given what a job needs (:class:`Demand`) and what each node has and has given
out (:class:`NodeState`), :func:`place` picks a node or says why none fits now.
No Ray here: the coordinator feeds it views built from Ray's node table.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from cluster.jobs import Hardware, JobKind

# Cores one software encode keeps busy, by codec and frame size (pixels up to).
# libx264 sustains real time at 1080p on about two modern cores at preset medium;
# x265 and SVT-AV1 need roughly twice that. A job never asks for more cores than
# its node has.
CPU_CORES: dict[str, tuple[tuple[int, float], ...]] = {
    "h264": ((1280 * 720, 1), (1920 * 1080, 2), (2560 * 1440, 3), (1 << 62, 4)),
    "hevc": ((1280 * 720, 2), (1920 * 1080, 4), (1 << 62, 8)),
    "av1": ((1280 * 720, 2), (1920 * 1080, 4), (1 << 62, 8)),
}
LIGHT_JOB_CORES = 1.0
"""validate (decode only) and thumbnail jobs."""
NVENC_GPU_SHARE = 0.125
"""Ray GPU share per NVENC encode until per-GPU session accounting (8 per GPU)."""


class Policy(StrEnum):
    PACK = "pack"
    """Fill the busiest node that fits first, keeping whole nodes free for big jobs."""
    SPREAD = "spread"
    """Put each job on the least loaded node."""


@dataclass(frozen=True, slots=True)
class NodeState:
    node_id: str
    address: str
    cpus: float
    gpus: float = 0.0
    cpus_used: float = 0.0
    gpus_used: float = 0.0
    running: int = 0
    max_jobs: int | None = None

    @property
    def cpus_free(self) -> float:
        return self.cpus - self.cpus_used


@dataclass(frozen=True, slots=True)
class Demand:
    kind: JobKind
    hardware: Hardware
    codec: str
    width: int = 0
    height: int = 0

    def cpu_cores(self) -> float:
        if self.kind is not JobKind.TRANSCODE:
            return LIGHT_JOB_CORES
        if self.hardware is Hardware.GPU:
            return 1.0  # demuxing, decoding and scaling still run on the CPU
        pixels = self.width * self.height
        return next(cores for limit, cores in CPU_CORES[self.codec] if pixels <= limit)


@dataclass(frozen=True, slots=True)
class Placement:
    node_id: str
    address: str
    hardware: Hardware
    cpus: float
    gpus: float
    reason: str


def _fits(node: NodeState, cpus: float, gpus: float) -> bool:
    if node.max_jobs is not None and node.running >= node.max_jobs:
        return False
    if gpus and node.gpus - node.gpus_used < gpus - 1e-9:
        return False
    return node.cpus_free >= cpus - 1e-9


def place(demand: Demand, nodes: list[NodeState], policy: Policy = Policy.PACK) -> Placement | None:
    """The node for ``demand`` now, or ``None`` when none has room at the moment.

    ``auto`` resolves to CPU: NVENC is offered only where it has been verified.
    """
    hardware = Hardware.GPU if demand.hardware is Hardware.GPU else Hardware.CPU
    gpus = NVENC_GPU_SHARE if hardware is Hardware.GPU and demand.kind is JobKind.TRANSCODE else 0
    want = demand.cpu_cores()
    candidates = []
    for node in nodes:
        if node.cpus <= 0 or (gpus and node.gpus <= 0):
            continue
        cpus = min(want, node.cpus)
        if _fits(node, cpus, gpus):
            candidates.append((node, cpus))
    if not candidates:
        return None
    if policy is Policy.PACK:
        node, cpus = min(candidates, key=lambda c: (c[0].cpus_free - c[1], c[0].node_id))
    else:
        node, cpus = max(candidates, key=lambda c: (c[0].cpus_free / c[0].cpus, c[0].node_id))
    kind = "NVENC" if hardware is Hardware.GPU else "CPU"
    reason = (
        f"{kind} on {node.address}: {cpus:g} of {node.cpus_free:g} free cores"
        f" ({node.running} job{'s' if node.running != 1 else ''} running); {policy} fit"
    )
    return Placement(node.node_id, node.address, hardware, cpus, gpus, reason)


def has_capacity_for(demand: Demand, nodes: list[NodeState]) -> bool:
    """Whether any node could ever run ``demand`` (empty of other work)."""
    if demand.hardware is Hardware.GPU:
        return any(n.gpus > 0 for n in nodes)
    return any(n.cpus > 0 for n in nodes)
