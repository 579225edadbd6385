"""Placement by finish time, on a farm whose nodes differ.

Best fit by free memory or cores is not "finishes first" when an L4 stands next to a T4
next to a 64-core CPU box. The nodes that may take work now are grouped into kinds (the
same GPU model and NVENC codecs, the same encoders and cores), each with a planner of its
own (:meth:`FinishTime.of`); for each job, each kind that has room gives its best-fit
placement, and the job goes where it is predicted to finish first (its seconds there
from the learned speeds); the round's planner takes the same room
(:meth:`~cluster.scheduling.planner.Planner.take`). A job costs a few decisions per kind,
whatever the farm's size. A kind with no room now counts too, from when
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

from cluster.model.jobs import Hardware, Job, JobKind
from cluster.scheduling.costs import CostModel
from cluster.scheduling.planner import Demand, NodeState, Placement, Planner, Policy

WAIT_GAIN = 0.8
"""A job waits for a busier, faster kind only if it would finish in under this share of
the time it takes where it could start now (no waiting for a few percent)."""


def clock(at: float) -> str:
    """``14:05``: a predicted time as people read it (this machine's local time)."""
    return time.strftime("%H:%M", time.localtime(at))


Seconds = Callable[[Job, str, Hardware, str | None, float], float]
"""A job's predicted run time on a node (id), on a GPU (its model) or CPU, given cores."""


@dataclass(slots=True)
class Kind:
    """Nodes alike: the same device, the same speed, the same abilities."""

    label: str
    """In words: ``gpu-2 (NVIDIA L4)``, ``cpu-1 (+3) (64 cores)``."""
    nodes: frozenset[str]
    ends: list[float]
    """The predicted ends of the encodes running on its nodes (a heap): each frees room
    for one more; a job that waits for this kind takes the earliest and runs from it."""
    planner: Planner
    """Its nodes alone, in step with the round's planner."""
    gpu_name: str | None = None
    gpu_codecs: frozenset[str] = frozenset()
    cores: float = 0.0
    _able: dict[Demand, bool] = field(default_factory=dict)

    def could_run(self, demand: Demand) -> bool:
        """Whether its nodes could run ``demand`` when idle (asked once per shape)."""
        able = self._able.get(demand)
        if able is None:
            able = self._able[demand] = self.planner.never(demand) is None
        return able

    def free_at(self, now: float) -> float:
        return max(self.ends[0], now) if self.ends else now

    def hold(self, now: float, run: float) -> None:
        """The earliest room is held for a job that waits for it, for ``run`` seconds."""
        if self.ends:
            heapq.heapreplace(self.ends, self.free_at(now) + run)
        else:
            heapq.heappush(self.ends, now + run)

    def hardware_for(self, demand: Demand) -> Hardware:
        """What a node of this kind would run ``demand`` on (NVENC where it can)."""
        gpu_ok = demand.kind is JobKind.TRANSCODE and demand.hardware is not Hardware.CPU
        return Hardware.GPU if gpu_ok and demand.codec in self.gpu_codecs else Hardware.CPU


def _key(state: NodeState) -> tuple[str | None, frozenset[str], frozenset[str] | None, float]:
    gpu = state.gpus[0] if state.gpus else None
    codecs = frozenset(c for g in state.gpus for c in g.codecs if g.can_encode(c))
    return (gpu.name if gpu else None, codecs, state.encoders, state.cpus)


def kinds_of(states: Iterable[NodeState]) -> int:
    """How many kinds of node (as :meth:`FinishTime.of` groups them) take work among
    ``states``: with fewer than two, placement by finish time is best fit."""
    return len({_key(s) for s in states if s.cpus > 0 and s.max_jobs != 0})


@dataclass(slots=True)
class FinishTime:
    """One dispatch round's kinds of nodes and how long a job takes where."""

    kinds: list[Kind]
    seconds: Seconds
    now: float
    cores_for: Callable[[Demand], float]
    """The cores a CPU placement of a demand is given (the cost model's estimate)."""
    may_wait: bool = True
    """``False``: only kinds with room now count (no job waits for a faster kind)."""
    waits: dict[str, str] = field(default_factory=dict)
    """Job id -> why it waits this round (a faster kind frees soon)."""
    _by_node: dict[str, Kind] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        states: list[NodeState],
        names: dict[str, str],
        ends: Iterable[tuple[str, float]],
        seconds: Seconds,
        now: float,
        *,
        policy: Policy = Policy.PACK,
        costs: CostModel | None = None,
        may_wait: bool = True,
    ) -> FinishTime | None:
        """The kinds among ``states`` (the nodes that may take work now: the round's
        planner's), each node named by ``names``, with the predicted ends of what runs on
        each; ``None`` for a farm of one kind (best fit places it as before)."""
        grouped: dict[tuple[str | None, frozenset[str], frozenset[str] | None, float],
                      list[NodeState]] = {}  # fmt: skip
        for state in states:
            if state.cpus > 0 and state.max_jobs != 0:  # a node capped at 0 takes nothing
                grouped.setdefault(_key(state), []).append(state)
        if len(grouped) < 2:
            return None
        on_node: dict[str, list[float]] = {}
        for node_id, end in ends:
            on_node.setdefault(node_id, []).append(end)
        costs = costs or CostModel()
        kinds = []
        for (gpu, codecs, _, cores), members in grouped.items():
            ids = frozenset(m.node_id for m in members)
            shown = sorted(names.get(m.node_id, m.address) for m in members)
            where = shown[0] + (f" (+{len(shown) - 1})" if len(shown) > 1 else "")
            device = gpu if gpu else f"{cores:g} core{'s' if cores != 1 else ''}"
            heap = sorted(max(e, now) for n in ids for e in on_node.get(n, ()))
            kinds.append(Kind(f"{where} ({device})", ids, heap, Planner(members, policy, costs),
                              gpu, codecs, cores))  # fmt: skip
        kinds.sort(key=lambda k: k.label)
        finish = cls(kinds, seconds, now, lambda d: costs.cores(d.codec, d.width, d.height),
                     may_wait)  # fmt: skip
        finish._by_node = {n: k for k in kinds for n in k.nodes}
        return finish

    def released(self, placement: Placement) -> None:
        """Room the round's planner gave back (its kind's planner gives it back too)."""
        kind = self._by_node.get(placement.node_id)
        if kind is not None:
            kind.planner.release(placement)

    def place(
        self, planner: Planner, job: Job, demand: Demand, avoid: Collection[str] = ()
    ) -> Placement | None:
        """Where ``job`` finishes first: placed (and committed to ``planner``), or
        ``None`` when it waits (no room anywhere, or a busy kind finishes it sooner)."""
        avoided = frozenset(avoid)
        finishes: list[tuple[float, Kind]] = []
        unknown: list[str] = []  # kinds with no room whose next end is not known yet
        now_best: tuple[float, Kind] | None = None
        later_best: tuple[float, Kind, float] | None = None
        for kind in self.kinds:
            if kind.nodes <= avoided:
                continue
            trial = kind.planner.place(demand, avoided & kind.nodes)
            if trial is not None:
                finish = self.now + self.seconds(job, trial.node_id, trial.hardware,
                                                 trial.gpu_name, trial.cores)  # fmt: skip
                kind.planner.release(trial)
                finishes.append((finish, kind))
                if now_best is None or finish < now_best[0]:
                    now_best = (finish, kind)
                continue
            if not self.may_wait or not kind.ends or not kind.could_run(demand):
                if kind.could_run(demand):
                    unknown.append(kind.label)
                continue  # never waited for: nothing there is known to end, or it never could
            hardware = kind.hardware_for(demand)
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
        placed = kind.planner.place(demand, avoided & kind.nodes)
        if placed is None or not planner.take(placed):
            if placed is not None:  # the round's planner gave that room out otherwise
                kind.planner.release(placed)
            return planner.place(demand, avoided)
        heapq.heappush(kind.ends, finish)  # it frees this room then: jobs after it see so
        others = [
            f"~{clock(f)} on {label}"
            for f, label in sorted((f, k.label) for f, k in finishes if k is not kind)
        ]
        others += [f"{label} busy" for label in unknown]  # fmt: skip
        why = f"finishes ~{clock(finish)} on {kind.label}"
        if others:
            why += " vs " + " and ".join(others[:2])
        return replace(placed, reason=f"{placed.reason}; {why}")


@dataclass(slots=True)
class Replay:
    """Placement by finish time in a forecast's replay (a
    :class:`~cluster.scheduling.eta.Placer`): the kinds' planners follow the replay's."""

    finish: FinishTime
    jobs: dict[str, Job]

    def moved(self, clock: float, running: list[tuple[str, float]]) -> None:
        self.finish.now = clock
        on_node: dict[str, list[float]] = {}
        for node_id, end in running:
            on_node.setdefault(node_id, []).append(end)
        for kind in self.finish.kinds:
            kind.ends = sorted(max(e, clock) for n in kind.nodes for e in on_node.get(n, ()))

    def place(self, planner: Planner, key: str, demand: Demand) -> Placement | None:
        return self.finish.place(planner, self.jobs[key], demand)

    def released(self, placement: Placement) -> None:
        self.finish.released(placement)
