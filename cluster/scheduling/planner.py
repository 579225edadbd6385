"""Where a job runs: the pure scheduling core.

The coordinator builds a :class:`Planner` from a snapshot of the cluster (each node's
cores, and each GPU's memory, encoder sessions and verified codecs, with what running
jobs hold) and asks it, job by job in priority order, for a :class:`Placement`. The
planner commits each placement to its own copy of the snapshot, so one dispatch round
never gives the same room twice. No Ray here.

It keeps free GPUs per codec and free nodes sorted by what they have left, so a decision
is a binary search plus a short scan, not a pass over every GPU: the simulation in
``bench/scheduler_sim.py`` places jobs on 1,000 nodes x 8 GPUs in tens of microseconds.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass, field
from enum import StrEnum

from cluster.model.capability import Capability
from cluster.model.jobs import GpuRef, Hardware, JobKind, JobPlacement
from cluster.scheduling.costs import CostModel

EPS = 1e-9
UNCAPPED_SESSIONS = 1 << 20
NVENC_GPU_SHARE = 0.125


class Policy(StrEnum):
    PACK = "pack"
    """Best fit: the GPU or node with the least room that still fits, keeping large holes
    (a whole GPU's memory, a whole node's cores) for large jobs such as 4K."""
    SPREAD = "spread"
    """Worst fit: the GPU or node with the most room, to spread heat and load."""


@dataclass(frozen=True, slots=True)
class GpuState:
    """One GPU in the snapshot: its size, live readings, and what our jobs hold."""

    uuid: str
    index: int
    name: str
    memory_total_mb: int
    memory_free_live_mb: int | None = None
    """NVML's free memory now (other processes count too); ``None`` for static GPUs."""
    memory_reserved_mb: int = 0
    """What framefleet's running jobs on this GPU are accounted to hold."""
    sessions: int = 0
    """framefleet's NVENC sessions running here."""
    sessions_live: int | None = None
    """NVML's count of all NVENC sessions on this GPU."""
    max_sessions: int = 0
    """The driver's session cap; 0 = none."""
    codecs: dict[str, Capability] = field(default_factory=dict)
    ray_resources: bool = True
    """Whether the node registered this GPU's Ray resources (``framefleet node start``)."""

    def free_mb(self, margin_mb: int) -> int:
        accounted = self.memory_total_mb - self.memory_reserved_mb
        if self.memory_free_live_mb is not None:
            accounted = min(accounted, self.memory_free_live_mb)
        return accounted - margin_mb

    def sessions_free(self) -> int:
        if not self.max_sessions:
            return UNCAPPED_SESSIONS
        return self.max_sessions - max(self.sessions, self.sessions_live or 0)

    def can_encode(self, codec: str) -> bool:
        cap = self.codecs.get(codec)
        return cap is not None and cap.state.usable


@dataclass(frozen=True, slots=True)
class NodeState:
    node_id: str
    address: str
    cpus: float
    cpus_used: float = 0.0
    running: int = 0
    max_jobs: int | None = None
    gpus: tuple[GpuState, ...] = ()
    encoders: frozenset[str] | None = None
    """Encoders the node's own ffmpeg has (empty: no ffmpeg, it runs nothing); ``None``
    means not known and not checked (simulations)."""
    memory_mb: float | None = None
    """Memory Ray offers on the node; ``None``: not checked (simulations)."""
    memory_used_mb: float = 0.0

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
    encoder: str | None = None
    """The software encoder a CPU placement needs in the node's ffmpeg (transcodes)."""
    images: int = 0
    """Thumbnail jobs: how many images (their memory grows with it, up to 8)."""


@dataclass(frozen=True, slots=True)
class Placement:
    node_id: str
    address: str
    hardware: Hardware
    cpus: float
    reason: str
    gpu_uuid: str | None = None
    gpu_index: int | None = None
    gpu_name: str | None = None
    gpu_memory_mb: int = 0
    memory_mb: int = 0
    """Host memory accounted to the job on its node."""
    resources: tuple[tuple[str, float], ...] = ()
    """Ray custom resources the encoder actor asks for (GPU memory MiB, one session)."""

    def for_job(self, encoder: str | None) -> JobPlacement:
        """What the job records of this placement (with the encoder it runs)."""
        gpu = GpuRef(self.gpu_uuid, self.gpu_index, self.gpu_name) if self.gpu_uuid else None
        return JobPlacement(
            node_id=self.node_id,
            address=self.address,
            hardware=self.hardware,
            encoder=encoder,
            reason=self.reason,
            cpus=self.cpus,
            gpu=gpu,
            gpu_memory_mb=self.gpu_memory_mb,
            memory_mb=self.memory_mb,
        )


def memory_resource(uuid: str) -> str:
    """The Ray resource that holds a GPU's memory in MiB."""
    return f"ff_gpu_mem_{uuid}"


def session_resource(uuid: str) -> str:
    """The Ray resource that holds a GPU's NVENC sessions."""
    return f"ff_nvenc_{uuid}"


class _Node:
    __slots__ = (
        "address", "cpus", "cpus_free", "encoders", "max_jobs", "memory", "memory_free",
        "node_id", "running",
    )  # fmt: skip

    def __init__(self, n: NodeState) -> None:
        self.node_id, self.address, self.cpus = n.node_id, n.address, n.cpus
        self.cpus_free, self.running, self.max_jobs = n.cpus - n.cpus_used, n.running, n.max_jobs
        self.encoders = n.encoders
        self.memory = n.memory_mb
        self.memory_free = None if n.memory_mb is None else n.memory_mb - n.memory_used_mb

    def holds(self, memory_mb: int) -> bool:
        """Whether ``memory_mb`` more fits in the node's memory (unchecked when unknown)."""
        return self.memory_free is None or self.memory_free >= memory_mb

    def open(self) -> bool:
        return self.max_jobs is None or self.running < self.max_jobs

    def runs(self, encoder: str | None) -> bool:
        """Whether this node's ffmpeg can run a job that needs ``encoder`` (or just ffmpeg)."""
        if self.encoders is None:
            return True
        return bool(self.encoders) and (encoder is None or encoder in self.encoders)


class _Gpu:
    __slots__ = ("free", "indexed", "name", "node", "sessions", "sessions_free", "state", "usable")

    def __init__(self, g: GpuState, node: int, margin_mb: int) -> None:
        self.state, self.node, self.name = g, node, g.name
        self.indexed = False
        self.free = g.free_mb(margin_mb)
        self.sessions = g.sessions
        self.sessions_free = g.sessions_free()
        self.usable = tuple(c for c in g.codecs if g.can_encode(c))


class Planner:
    """Places jobs on one snapshot, committing each placement to it."""

    def __init__(
        self,
        nodes: list[NodeState],
        policy: Policy = Policy.PACK,
        costs: CostModel | None = None,
    ) -> None:
        self.policy = policy
        self.costs = costs or CostModel()
        self._nodes = [_Node(n) for n in nodes]
        self._gpus: list[_Gpu] = []
        self._by_codec: dict[str, list[tuple[int, int]]] = {}
        self._cpu: list[tuple[float, int]] = []
        self._largest_cpus = max((n.cpus for n in nodes), default=0.0)
        margin = self.costs.safety_margin_mb
        self._node_gpus: list[list[int]] = [[] for _ in nodes]
        for ni, n in enumerate(nodes):
            for state in n.gpus:
                self._node_gpus[ni].append(len(self._gpus))
                self._gpus.append(_Gpu(state, ni, margin))
        self._node_at = {n.node_id: i for i, n in enumerate(self._nodes)}
        # The smallest demand that found no room, per codec (and for cores): a larger
        # one cannot fit either until room is given back, so it is answered at once.
        self._gpu_miss: dict[str, int] = {}
        self._cpu_miss: dict[tuple[str | None, int], float] = {}
        self._runnable: dict[str | None, bool] = {}
        """Per encoder: whether any node with cores has it (for :meth:`never`)."""
        self._gpu_at = {g.state.uuid: i for i, g in enumerate(self._gpus)}
        for gi, gpu in enumerate(self._gpus):
            self._index_gpu(gi, gpu)
        for ni, node in enumerate(self._nodes):
            self._index_node(ni, node)

    # ---- indexes ---------------------------------------------------------------------

    def _gpu_node_ready(self, node: _Node) -> bool:
        """Whether a GPU job could start on ``node`` (a free core, under its job cap)."""
        return node.open() and node.cpus_free >= min(self.costs.nvenc_cpu_cores, node.cpus) - EPS

    def _index_gpu(self, gi: int, g: _Gpu) -> None:
        """Index a GPU that has room, on a node that can start a GPU job: so decisions
        never scan GPUs whose node is out of cores."""
        if g.sessions_free > 0 and g.free > 0 and self._gpu_node_ready(self._nodes[g.node]):
            g.indexed = True
            for codec in g.usable:
                insort(self._by_codec.setdefault(codec, []), (g.free, gi))

    def _unindex_gpu(self, gi: int, g: _Gpu) -> None:
        if not g.indexed:
            return
        g.indexed = False
        for codec in g.usable:
            entries = self._by_codec.get(codec, [])
            i = bisect_left(entries, (g.free, gi))
            if i < len(entries) and entries[i] == (g.free, gi):
                del entries[i]

    def _index_node(self, ni: int, node: _Node) -> None:
        if node.open() and node.cpus_free > EPS:
            insort(self._cpu, (node.cpus_free, ni))
        ready = self._gpu_node_ready(node)
        for gi in self._node_gpus[ni]:
            g = self._gpus[gi]
            if g.indexed and not ready:
                self._unindex_gpu(gi, g)
            elif ready and not g.indexed:
                self._index_gpu(gi, g)

    def _unindex_node(self, ni: int, node: _Node) -> None:
        i = bisect_left(self._cpu, (node.cpus_free, ni))
        if i < len(self._cpu) and self._cpu[i] == (node.cpus_free, ni):
            del self._cpu[i]

    # ---- decisions -------------------------------------------------------------------

    def place(self, demand: Demand) -> Placement | None:
        """Where ``demand`` runs now (committed to this snapshot), or ``None`` if nowhere."""
        nvenc = demand.kind is JobKind.TRANSCODE and demand.hardware is not Hardware.CPU
        if nvenc:
            placed = self._place_gpu(demand)
            if placed is not None or demand.hardware is Hardware.GPU:
                return placed
        return self._place_cpu(demand, fell_back=nvenc)

    def exhausted(self) -> bool:
        """Nothing more can start anywhere in this round."""
        return not self._cpu

    def _place_gpu(self, demand: Demand) -> Placement | None:
        entries = self._by_codec.get(demand.codec)
        if not entries:
            return None
        need = self.costs.gpu_memory(demand.codec, demand.width, demand.height)
        if need >= self._gpu_miss.get(demand.codec, 1 << 62):
            return None
        ram = self._memory(demand, gpu=True)
        start = bisect_left(entries, (need, -1))
        order = range(start, len(entries))
        if self.policy is Policy.SPREAD:
            order = range(len(entries) - 1, start - 1, -1)
        short_of_ram = False
        for i in order:
            gi = entries[i][1]
            g = self._gpus[gi]
            node = self._nodes[g.node]
            if not node.holds(ram):
                short_of_ram = True
                continue
            if self._gpu_node_ready(node):  # always, as indexed; kept as a guard
                cpus = min(self.costs.nvenc_cpu_cores, node.cpus)
                return self._commit_gpu(gi, g, node, cpus, need, ram)
        if not short_of_ram:  # only GPU memory decides what a larger demand meets
            self._gpu_miss[demand.codec] = need
        return None

    def _memory(self, demand: Demand, *, gpu: bool) -> int:
        """Host MiB a demand is accounted on its node (see :mod:`cluster.scheduling.costs`)."""
        if demand.kind is JobKind.THUMBNAIL:
            return self.costs.thumbnail_memory(demand.images or 1, demand.width, demand.height)
        software = demand.kind is JobKind.TRANSCODE and not gpu
        return self.costs.memory(demand.codec, demand.width, demand.height, software=software)

    def _commit_gpu(
        self, gi: int, g: _Gpu, node: _Node, cpus: float, need: int, ram: int
    ) -> Placement:
        s = g.state
        cap = f"/{s.max_sessions}" if s.max_sessions else ""
        reason = (
            f"GPU {s.index} ({s.name}) on {node.address}: {g.free / 1024:.1f} GiB free, "
            f"{g.sessions}{cap} sessions; {'best' if self.policy is Policy.PACK else 'spread'}"
            " fit"
        )
        self._unindex_gpu(gi, g)
        g.free -= need
        g.sessions += 1
        g.sessions_free -= 1
        self._index_gpu(gi, g)
        self._take_cpus(g.node, node, cpus, ram)
        resources: tuple[tuple[str, float], ...] = ()
        if s.ray_resources:
            resources = ((memory_resource(s.uuid), float(need)), (session_resource(s.uuid), 1.0))
        return Placement(
            node.node_id,
            node.address,
            Hardware.GPU,
            cpus,
            reason,
            gpu_uuid=s.uuid,
            gpu_index=s.index,
            gpu_name=s.name,
            gpu_memory_mb=need,
            memory_mb=ram,
            resources=resources,
        )

    def _place_cpu(self, demand: Demand, *, fell_back: bool) -> Placement | None:
        if not self._cpu:
            return None
        if demand.kind is JobKind.TRANSCODE:
            want = self.costs.cores(demand.codec, demand.width, demand.height)
        else:
            want = self.costs.light_job_cores
        want = min(want, self._largest_cpus)
        ram = self._memory(demand, gpu=False)
        miss_key = (demand.encoder, ram)
        if want >= self._cpu_miss.get(miss_key, float("inf")):
            return None
        start = bisect_left(self._cpu, (want - EPS, -1))
        order = range(start, len(self._cpu))
        if self.policy is Policy.SPREAD:
            order = range(len(self._cpu) - 1, start - 1, -1)
        # Nodes whose ffmpeg lacks the encoder, or whose memory is taken, are passed over.
        nodes = self._nodes
        ni = next((self._cpu[i][1] for i in order if nodes[self._cpu[i][1]].runs(demand.encoder)
                   and nodes[self._cpu[i][1]].holds(ram)), None)  # fmt: skip
        if ni is None:
            self._cpu_miss[miss_key] = want
            return None
        node = self._nodes[ni]
        cpus = min(want, node.cpus)
        why = "; no GPU with room for this codec now" if fell_back else ""
        reason = (
            f"CPU on {node.address}: {cpus:g} of {node.cpus_free:g} free cores "
            f"({node.running} job{'s' if node.running != 1 else ''} running); "
            f"{'best' if self.policy is Policy.PACK else 'spread'} fit{why}"
        )
        self._take_cpus(ni, node, cpus, ram)
        return Placement(node.node_id, node.address, Hardware.CPU, cpus, reason, memory_mb=ram)

    def _take_cpus(self, ni: int, node: _Node, cpus: float, ram: int) -> None:
        self._unindex_node(ni, node)
        node.cpus_free -= cpus
        node.running += 1
        if node.memory_free is not None:
            node.memory_free -= ram
        self._index_node(ni, node)

    def release(self, placement: Placement) -> None:
        """Give a placement's room back (the simulation's job completions)."""
        self._gpu_miss.clear()
        self._cpu_miss.clear()
        ni = self._node_at[placement.node_id]
        node = self._nodes[ni]
        self._unindex_node(ni, node)
        node.cpus_free += placement.cpus
        node.running -= 1
        if node.memory_free is not None:
            node.memory_free += placement.memory_mb
        self._index_node(ni, node)
        if placement.gpu_uuid is not None:
            gi = self._gpu_at[placement.gpu_uuid]
            g = self._gpus[gi]
            self._unindex_gpu(gi, g)
            g.free += placement.gpu_memory_mb
            g.sessions -= 1
            g.sessions_free += 1
            self._index_gpu(gi, g)

    # ---- what can never fit ------------------------------------------------------------

    def never(self, demand: Demand) -> str | None:
        """Why no node of this cluster could run ``demand`` even when idle, else ``None``."""
        if demand.hardware is Hardware.GPU and demand.kind is JobKind.TRANSCODE:
            able = [g for g in self._gpus if demand.codec in g.usable]
            if not able:
                why = self._why_no_codec(demand.codec)
                return (
                    f"no GPU in the cluster can encode {demand.codec} with NVENC{why}; "
                    "use --hardware auto or cpu"
                )
            need = self.costs.gpu_memory(demand.codec, demand.width, demand.height)
            margin = self.costs.safety_margin_mb
            if all(g.state.memory_total_mb - margin < need for g in able):
                biggest = max(g.state.memory_total_mb for g in able)
                return (
                    f"needs about {need} MiB of GPU memory; the largest GPU with "
                    f"{demand.codec} NVENC has {biggest} MiB (less a {margin} MiB margin)"
                )
            return None
        if self._largest_cpus <= 0:
            return "no node in the cluster has CPUs; add a node with `framefleet node start`"
        sizes = [n.memory for n in self._nodes if n.cpus > 0]
        if sizes and None not in sizes:
            gpu = demand.kind is JobKind.TRANSCODE and demand.hardware is Hardware.GPU
            ram = self._memory(demand, gpu=gpu)
            roomiest = max(s for s in sizes if s is not None)
            if ram > roomiest:
                return (
                    f"needs about {ram} MiB of memory; the largest node offers {roomiest:.0f} MiB"
                )
        if not self._any_node_runs(demand.encoder):
            nvenc = demand.kind is JobKind.TRANSCODE and demand.hardware is Hardware.AUTO
            if nvenc and any(demand.codec in g.usable for g in self._gpus):
                return None
            what = demand.encoder or "a working ffmpeg"
            return (
                f"no node in the cluster has an ffmpeg with {what}; start a node whose "
                "ffmpeg has it (framefleet node start --ffmpeg PATH)"
            )
        return None

    def _any_node_runs(self, encoder: str | None) -> bool:
        known = self._runnable.get(encoder)
        if known is None:
            known = self._runnable[encoder] = any(
                n.cpus > 0 and n.runs(encoder) for n in self._nodes
            )
        return known

    def _why_no_codec(self, codec: str) -> str:
        for g in self._gpus:
            cap = g.state.codecs.get(codec)
            if cap is not None and cap.reason:
                return f" (GPU {g.state.index} ({g.name}): {cap.reason})"
        return "" if self._gpus else " (no GPUs)"


def autoscaler_bundle(demand: Demand, costs: CostModel | None = None) -> dict[str, float]:
    """The Ray resource shape to ask the autoscaler for, for a job that cannot start: cores,
    plus a share of a GPU for NVENC work (a GPU takes about 8 encodes)."""
    costs = costs or CostModel()
    if demand.kind is not JobKind.TRANSCODE:
        return {"CPU": costs.light_job_cores}
    if demand.hardware is Hardware.GPU:
        return {"CPU": costs.nvenc_cpu_cores, "GPU": NVENC_GPU_SHARE}
    return {"CPU": costs.cores(demand.codec, demand.width, demand.height)}


def queue_key(priority: int, seq: int, waited_s: float, aging_s: float) -> tuple[float, int]:
    """Sort key for the queue: higher priority first, FIFO within a priority, and one
    priority level gained per ``aging_s`` waited, so low-priority work is not starved."""
    return (-(priority + max(waited_s, 0.0) // aging_s), seq)


def place(
    demand: Demand,
    nodes: list[NodeState],
    policy: Policy = Policy.PACK,
    costs: CostModel | None = None,
) -> Placement | None:
    """One decision on a fresh snapshot (see :class:`Planner` for a round of them)."""
    return Planner(nodes, policy, costs).place(demand)
