"""Where a job runs: the pure scheduling core.

The coordinator builds a :class:`Planner` from a snapshot of the cluster (each node's
cores, and each GPU's memory, encoder sessions and verified codecs, with what running
jobs hold) and asks it, job by job in priority order, for a :class:`Placement`. The
planner commits each placement to its own copy of the snapshot, so one dispatch round
never gives the same room twice. No Ray here.

It keeps free GPUs (grouped by the codecs they encode) and free nodes in sorted lists
(``sortedcontainers``: an insert or removal is O(log n), where a plain list moves half
of itself) keyed by what they have left, so a decision is a search plus a short scan,
not a pass over every GPU: ``bench/scheduler_sim.py`` places a job on 10,000 nodes x 8
GPUs in ~25 microseconds.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum

from sortedcontainers import SortedList

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
    metrics: frozenset[str] | None = None
    """Quality metrics its quality ffmpeg computes; ``None``: not checked (simulations)."""

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
    metrics: frozenset[str] = frozenset()
    """Quality metrics the node must compute (a quality job, a transcode that is scored)."""


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
    media_from: str | None = None
    """The node whose agent serves the job's media, when this node cannot see them."""
    spare_cpus: float = 0.0
    """Free cores given beyond the estimate, nothing waiting having use for them (see
    :meth:`Planner.give_spare`): counted as the job's on its node, not held in Ray, so the
    warm encoder of its shape is reused."""
    threads: int | None = None
    """ffmpeg's threads (``None``: one per core given)."""

    @property
    def cores(self) -> float:
        """The cores the job has on its node: its estimate and any spare ones."""
        return self.cpus + self.spare_cpus

    @property
    def thread_count(self) -> int:
        """How many threads its ffmpeg runs."""
        return self.threads or max(1, math.ceil(self.cores - 1e-6))

    def for_job(self, encoder: str | None) -> JobPlacement:
        """What the job records of this placement (with the encoder it runs)."""
        gpu = GpuRef(self.gpu_uuid, self.gpu_index, self.gpu_name) if self.gpu_uuid else None
        return JobPlacement(
            node_id=self.node_id,
            address=self.address,
            hardware=self.hardware,
            encoder=encoder,
            reason=self.reason,
            cpus=self.cores,
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
        "address", "cpus", "cpus_free", "encoders", "gpu_ready", "max_jobs", "memory",
        "memory_free", "metrics", "node_id", "running",
    )  # fmt: skip

    def __init__(self, n: NodeState) -> None:
        self.node_id, self.address, self.cpus = n.node_id, n.address, n.cpus
        self.cpus_free, self.running, self.max_jobs = n.cpus - n.cpus_used, n.running, n.max_jobs
        self.encoders, self.metrics = n.encoders, n.metrics
        self.memory = n.memory_mb
        self.memory_free = None if n.memory_mb is None else n.memory_mb - n.memory_used_mb
        self.gpu_ready = False
        """Whether its GPUs are indexed (it can start a GPU job), as last indexed."""

    def holds(self, memory_mb: int) -> bool:
        """Whether ``memory_mb`` more fits in the node's memory (unchecked when unknown)."""
        return self.memory_free is None or self.memory_free >= memory_mb

    def open(self) -> bool:
        return self.max_jobs is None or self.running < self.max_jobs

    def runs(self, encoder: str | None, metrics: frozenset[str] = frozenset()) -> bool:
        """Whether this node's ffmpeg can run a job that needs ``encoder`` (or just ffmpeg),
        and its quality ffmpeg compute ``metrics``."""
        if metrics and self.metrics is not None and not metrics <= self.metrics:
            return False
        if self.encoders is None:
            return True
        return bool(self.encoders) and (encoder is None or encoder in self.encoders)


class _Gpu:
    __slots__ = (
        "free", "group", "indexed", "memory_key", "name", "node", "session_key", "sessions",
        "sessions_free", "state", "usable",
    )  # fmt: skip

    def __init__(self, g: GpuState, node: int, margin_mb: int) -> None:
        self.state, self.node, self.name = g, node, g.name
        self.indexed = False
        self.free = g.free_mb(margin_mb)
        self.sessions = g.sessions
        self.sessions_free = g.sessions_free()
        self.usable = tuple(sorted(c for c in g.codecs if g.can_encode(c)))
        self.memory_key, self.session_key = memory_resource(g.uuid), session_resource(g.uuid)
        self.group: SortedList | None = None
        """The index of the GPUs that encode the same codecs, when indexed."""


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
        self._groups: dict[tuple[str, ...], SortedList] = {}
        """Usable codecs -> (free MiB, GPU) of such GPUs that can start a job now: one
        index per GPU (one insert and one removal per decision), searched per codec."""
        self._by_codec: dict[str, list[SortedList]] = {}
        self._cpu = SortedList()
        """(free cores, node) of the nodes that can start a job now."""
        self._largest_cpus = max((n.cpus for n in nodes), default=0.0)
        sizes = [n.memory for n in self._nodes if n.cpus > 0]
        self._roomiest: float | None = (
            max(s for s in sizes if s is not None) if sizes and None not in sizes else None
        )
        """The most memory a node with cores has (``None``: not known for some node)."""
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
        self._shapes: dict[tuple[JobKind, str, int, int, int], tuple[int, int]] = {}
        self._cpu_miss: dict[tuple[str | None, int, frozenset[str]], float] = {}
        self._runnable: dict[str | None, bool] = {}
        """Per encoder: whether any node with cores has it (for :meth:`never`)."""
        self._gpu_at = {g.state.uuid: i for i, g in enumerate(self._gpus)}
        for node in self._nodes:
            node.gpu_ready = self._gpu_node_ready(node)
        groups: dict[tuple[str, ...], list[tuple[int, int]]] = {}
        for gi, gpu in enumerate(self._gpus):  # built in bulk: one sort, not n inserts
            if gpu.usable and self._gpu_open(gpu):
                gpu.indexed = True
                groups.setdefault(gpu.usable, []).append((gpu.free, gi))
        for usable, entries in groups.items():
            self._group(usable).update(entries)
        for gpu in self._gpus:
            if gpu.indexed:
                gpu.group = self._groups[gpu.usable]
        self._cpu = SortedList(
            (node.cpus_free, ni) for ni, node in enumerate(self._nodes) if self._cpu_open(node)
        )

    # ---- indexes ---------------------------------------------------------------------

    def _gpu_node_ready(self, node: _Node) -> bool:
        """Whether a GPU job could start on ``node`` (a free core, under its job cap)."""
        return node.open() and node.cpus_free >= min(self.costs.nvenc_cpu_cores, node.cpus) - EPS

    def _gpu_open(self, g: _Gpu) -> bool:
        """A GPU is indexed while it has room, on a node that can start a GPU job: so
        decisions never scan GPUs whose node is out of cores."""
        return g.sessions_free > 0 and g.free > 0 and self._nodes[g.node].gpu_ready

    def _group(self, usable: tuple[str, ...]) -> SortedList:
        group = self._groups.get(usable)
        if group is None:
            group = self._groups[usable] = SortedList()
            for codec in usable:
                self._by_codec.setdefault(codec, []).append(group)
        return group

    @staticmethod
    def _cpu_open(node: _Node) -> bool:
        return node.open() and node.cpus_free > EPS

    def _index_gpu(self, gi: int, g: _Gpu) -> None:
        if g.usable and self._gpu_open(g):
            g.indexed = True
            if g.group is None:
                g.group = self._group(g.usable)
            g.group.add((g.free, gi))

    def _unindex_gpu(self, gi: int, g: _Gpu) -> None:
        if g.indexed and g.group is not None:
            g.indexed = False
            g.group.discard((g.free, gi))

    def _index_node(self, ni: int, node: _Node) -> None:
        if self._cpu_open(node):
            self._cpu.add((node.cpus_free, ni))
        ready = self._gpu_node_ready(node)
        if ready is node.gpu_ready:  # its GPUs' entries depend only on their own room
            return
        node.gpu_ready = ready
        for gi in self._node_gpus[ni]:
            g = self._gpus[gi]
            if g.indexed and not ready:
                self._unindex_gpu(gi, g)
            elif ready and not g.indexed:
                self._index_gpu(gi, g)

    def _unindex_node(self, ni: int, node: _Node) -> None:
        self._cpu.discard((node.cpus_free, ni))

    # ---- decisions -------------------------------------------------------------------

    def place(self, demand: Demand, avoid: Collection[str] = ()) -> Placement | None:
        """Where ``demand`` runs now (committed to this snapshot), or ``None`` if nowhere;
        never on the nodes in ``avoid`` (ids: where the job already failed)."""
        if not avoid:
            return self._place(demand)
        closed = []
        for node_id in avoid:
            ni = self._node_at.get(node_id)
            if ni is not None:
                node = self._nodes[ni]
                closed.append((ni, node, node.max_jobs))
                self._unindex_node(ni, node)
                node.max_jobs = node.running  # closed for this decision
                self._index_node(ni, node)
        try:
            return self._place(demand)
        finally:
            for ni, node, cap in closed:
                self._unindex_node(ni, node)
                node.max_jobs = cap
                self._index_node(ni, node)
            self._gpu_miss.clear()  # misses seen with nodes closed say nothing of them
            self._cpu_miss.clear()

    def runs_elsewhere(self, demand: Demand, avoid: Collection[str]) -> bool:
        """Whether a node outside ``avoid`` could run ``demand`` when idle (its ffmpeg has
        the encoder, or one of its GPUs encodes the codec)."""
        outside = {ni for ni, n in enumerate(self._nodes) if n.node_id not in avoid}
        gpu = demand.kind is JobKind.TRANSCODE and demand.hardware is not Hardware.CPU
        if gpu and any(g.node in outside and demand.codec in g.usable for g in self._gpus):
            return True
        if demand.hardware is Hardware.GPU and demand.kind is JobKind.TRANSCODE:
            return False
        return any(self._nodes[ni].cpus > 0 and self._nodes[ni].runs(demand.encoder,
                                                                    demand.metrics)
                   for ni in outside)  # fmt: skip

    def _place(self, demand: Demand) -> Placement | None:
        nvenc = demand.kind is JobKind.TRANSCODE and demand.hardware is not Hardware.CPU
        if nvenc:
            placed = self._place_gpu(demand)
            if placed is not None or demand.hardware is Hardware.GPU:
                return placed
        return self._place_cpu(demand, fell_back=nvenc)

    @property
    def node_ids(self) -> frozenset[str]:
        return frozenset(self._node_at)

    def exhausted(self) -> bool:
        """Nothing more can start anywhere in this round."""
        return not self._cpu

    def _place_gpu(self, demand: Demand) -> Placement | None:
        groups = self._by_codec.get(demand.codec)
        if not groups:
            return None
        need, ram = self._gpu_needs(demand)
        if need >= self._gpu_miss.get(demand.codec, 1 << 62):
            return None
        short_of_ram = False
        for _, gi in _fits(groups, need, spread=self.policy is Policy.SPREAD):
            g = self._gpus[gi]
            node = self._nodes[g.node]
            if not node.holds(ram):
                short_of_ram = True
                continue
            if demand.metrics and not node.runs(None, demand.metrics):
                short_of_ram = True  # passed over for its metrics: not a miss of memory
                continue  # scored after the encode: its quality ffmpeg must compute them
            if self._gpu_node_ready(node):  # always, as indexed; kept as a guard
                cpus = min(self.costs.nvenc_cpu_cores, node.cpus)
                return self._commit_gpu(gi, g, node, cpus, need, ram)
        if not short_of_ram:  # only GPU memory decides what a larger demand meets
            self._gpu_miss[demand.codec] = need
        return None

    def _gpu_needs(self, demand: Demand) -> tuple[int, int]:
        """(GPU MiB, host MiB) of a GPU placement: a few shapes recur, so looked up once."""
        key = (demand.kind, demand.codec, demand.width, demand.height, demand.images)
        needs = self._shapes.get(key)
        if needs is None:
            gpu = self.costs.gpu_memory(demand.codec, demand.width, demand.height)
            needs = self._shapes[key] = (gpu, self._memory(demand, gpu=True))
        return needs

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
            resources = ((g.memory_key, float(need)), (g.session_key, 1.0))
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
        elif demand.kind is JobKind.QUALITY:
            want = self.costs.score_cores(demand.width, demand.height)
        else:
            want = self.costs.light_job_cores
        want = min(want, self._largest_cpus)
        ram = self._memory(demand, gpu=False)
        miss_key = (demand.encoder, ram, demand.metrics)
        if want >= self._cpu_miss.get(miss_key, float("inf")):
            return None
        # Nodes whose ffmpeg lacks the encoder, or whose memory is taken, are passed over.
        nodes = self._nodes
        order = self._cpu.irange((want - EPS, -1), reverse=self.policy is Policy.SPREAD)
        ni = next((i for _, i in order
                   if nodes[i].runs(demand.encoder, demand.metrics) and nodes[i].holds(ram)),
                  None)  # fmt: skip
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

    def give_spare(self, placement: Placement, share: int, node_threads: bool) -> Placement:
        """Work-conserving cores: ``placement``, just made on a node where nothing waiting
        could use the cores left free, takes ``share`` of them (counted on the node), and
        with ``node_threads`` its ffmpeg gets threads for the node's every core (as the
        jobs beside it end, it uses theirs too; new work is still placed by what is
        counted)."""
        ni = self._node_at[placement.node_id]
        node = self._nodes[ni]
        share = min(share, int(node.cpus_free + 1e-6))
        if share > 0:
            self._unindex_node(ni, node)
            node.cpus_free -= share
            self._index_node(ni, node)
        cores = placement.cpus + share
        threads = max(math.ceil(cores - 1e-6), int(node.cpus)) if node_threads else None
        said = []
        if share:
            said.append(f"{cores:g} cores ({share:g} free beyond the estimate; nothing waiting)")
        if threads and threads > cores + 1e-6:
            said.append(f"threads for all {threads} of the node's cores (nothing waiting)")
        if not said:
            return placement
        return replace(placement, spare_cpus=float(share), threads=threads,
                       reason=f"{placement.reason}; {', '.join(said)}")  # fmt: skip

    def take(self, placement: Placement) -> bool:
        """Commit ``placement``, made by a planner over some of these nodes (a kind's, see
        :mod:`~cluster.scheduling.finish`), to this one too; ``False`` (nothing taken)
        when this one no longer has that room."""
        ni = self._node_at.get(placement.node_id)
        if ni is None:
            return False
        node = self._nodes[ni]
        if node.cpus_free < placement.cpus - EPS or not node.open():
            return False
        if placement.gpu_uuid is not None:
            gi = self._gpu_at.get(placement.gpu_uuid)
            if gi is None:
                return False
            g = self._gpus[gi]
            if g.free < placement.gpu_memory_mb or g.sessions_free <= 0:
                return False
            self._unindex_gpu(gi, g)
            g.free -= placement.gpu_memory_mb
            g.sessions += 1
            g.sessions_free -= 1
            self._index_gpu(gi, g)
        self._take_cpus(ni, node, placement.cpus, placement.memory_mb)
        return True

    def free_cpus(self, node_id: str) -> float:
        """Cores of the node not counted to any job now."""
        return self._nodes[self._node_at[node_id]].cpus_free

    def release(self, placement: Placement) -> None:
        """Give a placement's room back (a job's end; nothing for a node or GPU this
        snapshot no longer has)."""
        self._gpu_miss.clear()
        self._cpu_miss.clear()
        ni = self._node_at.get(placement.node_id)
        if ni is None:
            return
        node = self._nodes[ni]
        self._unindex_node(ni, node)
        node.cpus_free += placement.cores
        node.running -= 1
        if node.memory_free is not None:
            node.memory_free += placement.memory_mb
        self._index_node(ni, node)
        gi = self._gpu_at.get(placement.gpu_uuid) if placement.gpu_uuid is not None else None
        if gi is not None:
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
            scores = [g for g in able if self._nodes[g.node].runs(None, demand.metrics)]
            if demand.metrics and able and not scores:  # scored after the encode, there
                missing = ", ".join(sorted(demand.metrics))
                return (
                    f"no node with a GPU that encodes {demand.codec} has an ffmpeg that "
                    f"computes {missing}; use --hardware auto or cpu, or give that node "
                    "framefleet's pinned static ffmpeg (imageio-ffmpeg)"
                )
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
        if (roomiest := self._roomiest) is not None:
            gpu = demand.kind is JobKind.TRANSCODE and demand.hardware is Hardware.GPU
            ram = self._memory(demand, gpu=gpu)
            if ram > roomiest:
                return (
                    f"needs about {ram} MiB of memory; the largest node offers {roomiest:.0f} MiB"
                )
        if demand.metrics and not self._any_node_scores(demand.metrics):
            missing = ", ".join(sorted(demand.metrics))
            return (
                f"no node in the cluster has an ffmpeg that computes {missing}; start a node "
                "with framefleet's pinned static ffmpeg (pip install imageio-ffmpeg) or an "
                "ffmpeg built with libvmaf"
            )
        both = demand.metrics and demand.encoder
        if both and not any(n.cpus > 0 and n.runs(demand.encoder, demand.metrics)
                            for n in self._nodes):  # fmt: skip
            missing = ", ".join(sorted(demand.metrics))
            return (f"no node in the cluster has an ffmpeg with {demand.encoder} and computes "
                    f"{missing}; start a node that does both")  # fmt: skip
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

    def _any_node_scores(self, metrics: frozenset[str]) -> bool:
        return any(n.cpus > 0 and n.runs(None, metrics) for n in self._nodes)

    def _why_no_codec(self, codec: str) -> str:
        for g in self._gpus:
            cap = g.state.codecs.get(codec)
            if cap is not None and cap.reason:
                return f" (GPU {g.state.index} ({g.name}): {cap.reason})"
        return "" if self._gpus else " (no GPUs)"


def _fits(groups: list[SortedList], need: int, *, spread: bool) -> Iterator[tuple[int, int]]:
    """(free MiB, GPU) of the GPUs with ``need`` MiB free, across the codec's groups:
    tightest first (or roomiest first when ``spread``). By position (a search, then
    O(log n) reads), since the first entry is nearly always taken and an ``irange`` or a
    ``heapq.merge`` costs more than the whole search."""
    step = -1 if spread else 1
    at = [len(group) - 1 if spread else group.bisect_left((need, -1)) for group in groups]

    def head(k: int) -> tuple[int, int] | None:
        group, i = groups[k], at[k]
        if 0 <= i < len(group):
            entry: tuple[int, int] = group[i]
            if entry[0] >= need:
                return entry
        return None

    heads = [head(k) for k in range(len(groups))]
    while True:
        best = -1
        for k, entry in enumerate(heads):
            if entry is not None and (
                best < 0 or (entry > heads[best] if spread else entry < heads[best])  # type: ignore[operator]
            ):
                best = k
        if best < 0:
            return
        yield heads[best]  # type: ignore[misc]
        at[best] += step
        heads[best] = head(best)


def autoscaler_bundle(demand: Demand, costs: CostModel | None = None) -> dict[str, float]:
    """The Ray resource shape to ask the autoscaler for, for a job that cannot start: cores,
    plus a share of a GPU for NVENC work (a GPU takes about 8 encodes)."""
    costs = costs or CostModel()
    if demand.kind is JobKind.QUALITY:
        return {"CPU": costs.score_cores(demand.width, demand.height)}
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
