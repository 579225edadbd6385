"""The job graph's vocabulary: one job that becomes a small DAG of tasks (pure data; the
rules are :mod:`cluster.control.rules.graph`, the kinds :mod:`cluster.control.graphs`).

A *parent* keeps its :class:`Graph`: which kind planned it, its :class:`Phase`, and its
tasks (:class:`TaskRef`: a key, the keys it needs, its share of the work). Its phase
changes only through :func:`advance`, by one table (:data:`PHASES`)::

    planning ──> running ──> finishing ──> done
        │                                   ▲
        ├──> whole (a kind looked and kept it one job) ──┤
        └───────────────────────────────────────────────┘ (it ended first)

``planning``: its tasks are being decided (what the plan needs is being read, a frame
index say); ``running``: its tasks run; ``finishing``: every other task succeeded and its
finishing tasks (a join, a package: they make the job's output) run; ``done``: it ended.

Each *task* is a hidden job (``job.task``, :class:`TaskOf`: its parent, its key, its
:data:`Step`), placed by the same planner, with its own attempts, stored in SQLite. A
task follows the jobs' one table (:data:`cluster.model.jobs.TRANSITIONS`), starting
``waiting`` while a task it needs has not succeeded::

    waiting ──> queued ──> running ──> succeeded
                   ▲          │  └───> failed / cancelled
                   └──────────┘ (a retry)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from cluster.errors import InvalidTransition
from cluster.model.package import PackageStep, RenditionStep
from cluster.model.plain import plain
from cluster.model.quality import ScoreStep
from cluster.model.search import ProbeStep
from cluster.model.split import Segment, Stitch

Step = Segment | Stitch | RenditionStep | PackageStep | ScoreStep | ProbeStep
"""What a task's work order does beyond its spec: encode some frames of the input, join
what other tasks made, encode one rendition of a package, package the renditions, or
score some frames against a reference, or probe a CRF (a sample encoded and scored).
(The coordinator hands it on; the media room
builds it.)"""


class Phase(StrEnum):
    PLANNING = "planning"
    WHOLE = "whole"
    """A kind looked at the job and kept it one job (the reason says why)."""
    RUNNING = "running"
    FINISHING = "finishing"
    DONE = "done"


PHASES: dict[Phase, frozenset[Phase]] = {
    Phase.PLANNING: frozenset({Phase.WHOLE, Phase.RUNNING, Phase.DONE}),
    Phase.WHOLE: frozenset({Phase.DONE}),
    Phase.RUNNING: frozenset({Phase.FINISHING, Phase.DONE}),
    Phase.FINISHING: frozenset({Phase.DONE}),
    Phase.DONE: frozenset(),
}


@dataclass(frozen=True, slots=True)
class TaskRef:
    """One task of a graph, as its parent keeps it."""

    key: str
    """Unique in the graph (``c001``, ``stitch``); the task's job id is
    ``<parent>-<key>``."""
    needs: tuple[str, ...] = ()
    """Keys of the tasks that must succeed before it is queued."""
    weight: float = 0.0
    """Its share of the job's work, in the graph's units (progress is weighted by it)."""
    frames: int = 0
    """Frames it adds to the job's count (its progress counts up to these)."""
    finishing: bool = False
    """It makes the job's output from what the others made: one core, no encoder,
    placed before queued work (it ends a job), and run in the ``finishing`` phase."""
    label: str = ""
    """How a reason names it (``chunk 3 (frames 150-224, 6.00-9.00 s)``); a task without
    one that fails ends the job with its own reason."""
    doing: str = ""
    """What it does, in words (``stitching 4 chunks``): its placement's reason says so."""
    memo: str = ""
    """A key for what it finds: a task with the same key that succeeded before (a retry,
    another job on the same input) gives its result instead of running again."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "memo": self.memo,
            "key": self.key,
            "needs": list(self.needs),
            "weight": self.weight,
            "frames": self.frames,
            "finishing": self.finishing,
            "label": self.label,
            "doing": self.doing,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskRef:
        return cls(**{**data, "needs": tuple(data.get("needs", ()))})


def task_id(parent: str, key: str) -> str:
    """A task's job id: its files (``.<name>.<id>...``) never match the parent's own
    partial-file pattern (``.*.<parent>.*partial``), so a retried task never removes
    another's files."""
    return f"{parent}-{key}"


@dataclass(frozen=True, slots=True)
class Graph:
    """A parent's graph: which kind planned it, its phase, its tasks."""

    kind: str
    phase: Phase
    why: str = ""
    """What was decided, in words (the job's reason while its tasks run)."""
    tasks: tuple[TaskRef, ...] = ()
    unit: str = "task"
    """What its counted tasks (weight above 0) are called, in a reason (``chunk``)."""
    frame_s: float = 0.0
    """One frame's duration, for the job's output time (0: not told)."""
    started_at: float | None = None
    """When its first tasks were queued (its wall time counts from here)."""
    reused: frozenset[str] = field(default_factory=frozenset)
    """Tasks that had succeeded before the job last ran again (a coordinator restart):
    not run again."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "phase": str(self.phase),
            "why": self.why,
            "tasks": [t.to_dict() for t in self.tasks],
            "unit": self.unit,
            "frame_s": self.frame_s,
            "started_at": self.started_at,
            "reused": sorted(self.reused),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Graph:
        return cls(
            kind=data["kind"],
            phase=Phase(data["phase"]),
            why=data.get("why", ""),
            tasks=tuple(TaskRef.from_dict(t) for t in data.get("tasks", ())),
            unit=data.get("unit", "task"),
            frame_s=float(data.get("frame_s", 0.0)),
            started_at=data.get("started_at"),
            reused=frozenset(data.get("reused", ())),
        )


def advance(graph: Graph, phase: Phase) -> Graph:
    """``graph`` in ``phase``, or :class:`InvalidTransition` (staying put is allowed)."""
    if phase is not graph.phase and phase not in PHASES[graph.phase]:
        allowed = ", ".join(sorted(PHASES[graph.phase])) or "nothing, it is final"
        raise InvalidTransition(
            f"a {graph.kind} graph in {graph.phase} cannot go to {phase} (allowed: {allowed})"
        )
    return replace(graph, phase=phase)


@dataclass(frozen=True, slots=True)
class TaskOf:
    """What makes a job a task: whose, which, and what its work order does."""

    parent: str
    key: str
    step: Step | None = None
    finishing: bool = False
    doing: str = ""
    """What it does, in words: its placement's reason starts with it."""

    def to_dict(self) -> dict[str, Any]:
        step: dict[str, Any] | None = None
        if isinstance(self.step, Segment):
            step = {"segment": plain(self.step)}
        elif isinstance(self.step, Stitch):
            step = {"stitch": self.step.to_dict()}
        elif isinstance(self.step, RenditionStep):
            step = {"rendition": self.step.to_dict()}
        elif isinstance(self.step, PackageStep):
            step = {"package": self.step.to_dict()}
        elif isinstance(self.step, ScoreStep):
            step = {"score": self.step.to_dict()}
        elif isinstance(self.step, ProbeStep):
            step = {"probe": self.step.to_dict()}
        return {"parent": self.parent, "key": self.key, "step": step,
                "finishing": self.finishing, "doing": self.doing}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskOf:
        raw = data.get("step") or {}
        step: Step | None = None
        if "segment" in raw:
            step = Segment(**raw["segment"])
        elif "stitch" in raw:
            step = Stitch.from_dict(raw["stitch"])
        elif "rendition" in raw:
            step = RenditionStep.from_dict(raw["rendition"])
        elif "package" in raw:
            step = PackageStep.from_dict(raw["package"])
        elif "score" in raw:
            step = ScoreStep.from_dict(raw["score"])
        elif "probe" in raw:
            step = ProbeStep.from_dict(raw["probe"])
        finishing, doing = bool(data.get("finishing", False)), str(data.get("doing", ""))
        return cls(data["parent"], data["key"], step, finishing, doing)

    @classmethod
    def from_chunk(cls, data: dict[str, Any]) -> TaskOf:
        """A chunk sub-job as an older framefleet stored it (``chunk``: parent and
        segment), read as the task it is."""
        segment = Segment(**data["segment"])
        return cls(data["parent"], f"c{segment.index + 1:03d}", segment)
