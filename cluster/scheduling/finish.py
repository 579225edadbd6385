"""Placement by finish time, on a farm whose nodes differ.

Best fit by free memory or cores is not "finishes first" when an L4 stands next to a T4
next to a 64-core CPU box. Nodes are grouped into kinds (the same CPU model and cores,
the same GPUs: :func:`kind_of`); for each job, each kind that has room is asked for its
best-fit placement, and the job goes where it is predicted to finish first (its
seconds there from the learned speeds). A kind with no room now counts too, from when
its first running encode is predicted to end: if the job would finish sooner by waiting
for it, it waits (and that kind is held for it for its predicted time, so the next job
that would wait for the same kind sees it taken: earliest-finish-time list scheduling,
not every job queueing for the one fast node). Meanwhile the room it leaves goes to
jobs behind it (backfill), unless they too finish sooner by waiting.

A farm of one kind is placed as before (best fit), at no extra cost.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field, replace

from cluster.media.encoders import cpu_encoder
from cluster.model.jobs import Hardware, Job, JobKind
from cluster.scheduling.planner import Demand, Placement, Planner

WAIT_GAIN = 0.8
"""A job waits for a busier, faster kind only if it would finish in under this share of
the time it takes where it could start now (no waiting for a few percent)."""


def clock(at: float) -> str:
    """``14:05``: a predicted time as people read it (this machine's local time)."""
    return time.strftime("%H:%M", time.localtime(at))


Seconds = Callable[[Job, str, Hardware, str | None, float], float]
NodeKind = tuple[str, str, str | None, frozenset[str], frozenset[str], float]
"""A node as kinds are made of: id, name, GPU model, NVENC codecs, encoders, cores."""
"""A job's predicted run time on a node (id), on a GPU (its model) or CPU, given cores."""


@dataclass(slots=True)
class Kind:
    """Nodes alike: the same device, the same speed, the same abilities."""

    label: str
    """In words: ``gpu-2 (NVIDIA L4)``, ``cpu-1 (64 cores)``."""
    nodes: frozenset[str]
    ends: list[float]
    """The predicted ends of the encodes running on its nodes (a heap): each frees room
    for one more; a job that waits for this kind takes the earliest and runs from it."""
    gpu_name: str | None = None
    gpu_codecs: frozenset[str] = frozenset()
    """Codecs its GPUs' NVENC proved."""
    encoders: frozenset[str] = frozenset()
    """Its ffmpeg's encoders."""
    cores: float = 0.0

    def free_at(self, now: float) -> float:
        return max(self.ends[0], now) if self.ends else now

    def hold(self, now: float, run: float) -> None:
        """The earliest room is held for a job that waits for it, for ``run`` seconds."""
        if self.ends:
            heapq.heapreplace(self.ends, self.free_at(now) + run)
        else:
            heapq.heappush(self.ends, now + run)

    def runs(self, demand: Demand) -> Hardware | None:
        """Whether a node of this kind could run ``demand`` when idle, and on what."""
        transcode = demand.kind is JobKind.TRANSCODE
        if transcode and demand.hardware is not Hardware.CPU and demand.codec in self.gpu_codecs:
            return Hardware.GPU
        if demand.hardware is Hardware.GPU and transcode:
            return None
        if transcode and cpu_encoder(demand.codec).name not in self.encoders:
            return None
        return Hardware.CPU if self.cores > 0 else None


@dataclass(slots=True)
class FinishTime:
    """One dispatch round's kinds of nodes and how long a job takes where."""

    kinds: list[Kind]
    seconds: Seconds
    now: float
    cores_for: Callable[[Demand], float]
    """The cores a CPU placement of a demand is given (the cost model's estimate)."""
    waits: dict[str, str] = field(default_factory=dict)
    """Job id -> why it waits this round (a faster kind frees soon)."""
    may_wait: bool = True
    """``False``: only kinds with room now count (a forecast's replay, which frees room
    itself as it goes)."""

    def place(
        self, planner: Planner, job: Job, demand: Demand, avoid: Collection[str] = ()
    ) -> Placement | None:
        """Where ``job`` finishes first: placed (and committed to ``planner``), or
        ``None`` when it waits (no room anywhere, or a busy kind finishes it sooner)."""
        everyone = planner.node_ids
        avoided = frozenset(avoid)
        finishes: list[tuple[float, Kind]] = []
        now_best: tuple[float, Kind] | None = None
        later_best: tuple[float, Kind, float] | None = None
        for kind in self.kinds:
            if not kind.nodes - avoided:
                continue
            trial = planner.place(demand, avoided | (everyone - kind.nodes))
            if trial is not None:
                finish = self.now + self.seconds(job, trial.node_id, trial.hardware,
                                                 trial.gpu_name, trial.cores)  # fmt: skip
                planner.release(trial)
                finishes.append((finish, kind))
                if now_best is None or finish < now_best[0]:
                    now_best = (finish, kind)
                continue
            hardware = kind.runs(demand) if self.may_wait else None
            if hardware is None:
                continue
            gpu = kind.gpu_name if hardware is Hardware.GPU else None
            cores = min(self.cores_for(demand), kind.cores) if gpu is None else 1.0
            run = self.seconds(job, next(iter(kind.nodes)), hardware, gpu, cores)
            start = kind.free_at(self.now)
            finishes.append((start + run, kind))
            if later_best is None or start + run < later_best[0]:
                later_best = (start + run, kind, run)
        if now_best is None:
            return None
        finish, kind = now_best
        if later_best is not None:
            wait_finish, busy, run = later_best
            if wait_finish - self.now < WAIT_GAIN * (finish - self.now):
                busy.hold(self.now, run)  # the room it waits for is held for it
                self.waits[job.id] = (
                    f"waits for {busy.label}: finishes ~{clock(wait_finish)} there vs "
                    f"~{clock(finish)} on {kind.label}"
                )
                return None
        placed = planner.place(demand, avoided | (everyone - kind.nodes))
        if placed is None:  # cannot happen: the trial fitted and was given back
            return None
        others = sorted((f, k.label) for f, k in finishes if k is not kind)[:2]
        why = f"finishes ~{clock(finish)} on {kind.label}"
        if others:
            why += " vs " + " and ".join(f"~{clock(f)} on {label}" for f, label in others)
        return replace(placed, reason=f"{placed.reason}; {why}")


@dataclass(slots=True)
class Replay:
    """Placement by finish time in a forecast's replay: the kinds' room follows the
    replay's clock (:class:`~cluster.scheduling.eta.Placer`)."""

    nodes: list[NodeKind]
    jobs: dict[str, Job]
    seconds: Seconds
    cores_for: Callable[[Demand], float]
    finish: FinishTime | None = None

    def moved(self, clock: float, running: list[tuple[str, float]]) -> None:
        self.finish = FinishTime(kinds_of(self.nodes, running, clock), self.seconds, clock,
                                 self.cores_for)  # fmt: skip

    def place(self, planner: Planner, key: str, demand: Demand) -> Placement | None:
        if self.finish is None:
            return planner.place(demand)
        return self.finish.place(planner, self.jobs[key], demand)


def kinds_of(
    nodes: Iterable[NodeKind],
    ends: Iterable[tuple[str, float]],
    now: float,
) -> list[Kind]:
    """Kinds from each node's (id, label, GPU model, GPU codecs, encoders, cores) and the
    predicted ends of what runs on each node."""
    on_node: dict[str, list[float]] = {}
    for node_id, end in ends:
        on_node.setdefault(node_id, []).append(end)
    grouped: dict[tuple[str | None, frozenset[str], frozenset[str], float],
                  list[tuple[str, str]]] = {}  # fmt: skip
    for node_id, label, gpu, codecs, encoders, cores in nodes:
        grouped.setdefault((gpu, codecs, encoders, cores), []).append((node_id, label))
    kinds = []
    for (gpu, codecs, encoders, cores), members in grouped.items():
        ids = frozenset(n for n, _ in members)
        names = sorted(label for _, label in members)
        where = names[0] + (f" (+{len(names) - 1})" if len(names) > 1 else "")
        device = gpu if gpu else f"{cores:g} cores"
        ends_in = sorted(max(e, now) for n in ids for e in on_node.get(n, ()))
        kinds.append(Kind(f"{where} ({device})", ids, ends_in, gpu, codecs, encoders, cores))
    return sorted(kinds, key=lambda k: k.label)
