"""The job graph's rules: what a kind of graph writes, and what a parent's tasks and
their states mean for it. Pure: the coordinator applies what these return.

A *kind* of multi-task job (:class:`GraphKind`; split-and-stitch is one) writes three
pure functions and a view:

- :meth:`~GraphKind.plan`: a probed job, and the farm as it is now -> keep it one job
  (:class:`Keep`), read something first where the media are (:class:`Read`), or its
  tasks (:class:`Expansion`);
- :meth:`~GraphKind.expand`: what was read -> keep it one job, or its tasks;
- :meth:`~GraphKind.finish`: every task succeeded -> the job's reason and result;
- :meth:`~GraphKind.view`: what the job shows of its tasks.

What any graph's tasks mean for their parent is decided here, once for every kind:
:func:`next_steps` (tasks to release, the parent's next phase, its ending),
:func:`progress` (weighted by each task's share of the work), :func:`resumed` (which
tasks a restarted job reuses) and :func:`winding_down` (what to stop when it ends).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from graphlib import CycleError, TopologicalSorter
from typing import Any, Protocol

from cluster.errors import ErrorCode, FramefleetError
from cluster.model.graph import Graph, Phase, Step, TaskRef
from cluster.model.jobs import Job, JobStatus
from cluster.model.media import MediaInfo
from cluster.model.package import PackageView
from cluster.model.progress import ProgressSnapshot
from cluster.model.spec import JobSpec
from cluster.model.split import FrameIndex, Split
from cluster.scheduling.planner import Planner

View = Split | PackageView
"""What a job shows of its graph (a kind's own record: split's :class:`Split`, a
package's :class:`PackageView`)."""


class Need(StrEnum):
    """What a plan may need read where the media are seen, before its tasks are known."""

    FRAMES = "frames"
    """Every frame's time in the input (:class:`~cluster.media.split.FrameIndex`)."""
    REFERENCE = "reference"
    """The probe of the job's reference (:class:`~cluster.model.media.MediaInfo`)."""


Facts = FrameIndex | MediaInfo | FramefleetError
"""What a :class:`Read` got: the fact, or why it could not be read."""


class Farm:
    """The farm as a kind may see it while planning: a planner over every node, to try
    placements on (each commits to this snapshot only), and the nodes that see the job's
    media (``None``: every node). Each is made on first use: a kind that asks nothing
    costs nothing."""

    def __init__(
        self,
        planner: Callable[[], Planner],
        seen: Callable[[], frozenset[str] | None] = lambda: None,
    ) -> None:
        self._make_planner = planner
        self._find_seen = seen

    @cached_property
    def planner(self) -> Planner:
        return self._make_planner()

    @cached_property
    def seen(self) -> frozenset[str] | None:
        return self._find_seen()


@dataclass(frozen=True, slots=True)
class Keep:
    """The job runs as one job; ``view`` says why."""

    view: View


@dataclass(frozen=True, slots=True)
class Read:
    """Read ``need`` where the media are seen, then :meth:`GraphKind.expand` with
    ``note`` (the kind's own reminder of what it was planning)."""

    need: Need
    note: Any = None


@dataclass(frozen=True, slots=True)
class TaskPlan:
    """One task to create: its place in the graph, what it runs, and its step."""

    ref: TaskRef
    spec: JobSpec
    step: Step | None = None
    media: MediaInfo | None = None
    """What its input holds, when not its job's input (a score of the job's output)."""


@dataclass(frozen=True, slots=True)
class Expansion:
    """A job's tasks. ``graph`` holds their places (its phase is set when applied);
    ``tasks`` are in the order they are queued; ``view`` is what the job shows."""

    graph: Graph
    tasks: tuple[TaskPlan, ...]
    view: View | None


@dataclass(frozen=True, slots=True)
class Refuse:
    """The job cannot run as asked: it fails with this reason and code."""

    reason: str
    code: ErrorCode = ErrorCode.INVALID_SPEC


Plan = Keep | Read | Expansion | Refuse


@dataclass(frozen=True, slots=True)
class Finished:
    """A graph's job succeeded: with this reason, result and notes."""

    reason: str
    result: dict[str, Any] | None
    notes: tuple[str, ...] = ()
    failed: ErrorCode | None = None
    """Every task succeeded, yet the job failed (a score below the floor asked for):
    with this code, the reason and the result."""


Tasks = Mapping[str, Job]
"""A graph's tasks that have a record, by key."""


class GraphKind(Protocol):
    """One kind of multi-task job (see the module docstring)."""

    @property
    def name(self) -> str: ...

    def plan(self, job: Job, media: MediaInfo, farm: Farm) -> Plan | None:
        """``None``: not a job of this kind."""
        ...

    def expand(
        self, job: Job, media: MediaInfo, note: Any, facts: Facts
    ) -> Keep | Expansion | Refuse: ...

    def grow(self, parent: Job, tasks: Tasks) -> Expansion | Refuse | None:
        """Every task succeeded: more tasks that follow from what they found (the next
        round of a search; its ``graph`` holds only the new tasks' places and the new
        reason; its ``view`` ``None``: the job's view stays), the job's end
        (:class:`Refuse`), or ``None``: :meth:`finish` it."""
        ...

    def finish(self, parent: Job, tasks: Tasks, now: float) -> Finished: ...

    def view(self, parent: Job, tasks: Tasks) -> View | None: ...

    def adopt(self, job: Job) -> Expansion | None:
        """A job an older framefleet ran as this kind without a graph (its sub-jobs stored
        by another name): its graph, to resume it; ``None``: not one."""
        ...


def checked(expansion: Expansion) -> Expansion:
    """``expansion``, once its graph is known to be a DAG whose tasks are planned once
    each, in an order where every task comes after what it needs; else a ValueError
    (a kind's bug)."""
    keys = [t.ref.key for t in expansion.tasks]
    if sorted(keys) != sorted(r.key for r in expansion.graph.tasks) or len(set(keys)) != len(keys):
        raise ValueError("an expansion must plan each task of its graph once")
    check_graph(expansion.graph)
    return expansion


def check_graph(graph: Graph) -> Graph:
    """``graph``, once its tasks' keys are unique and it is a DAG of its own tasks; else a
    ValueError (a kind's bug)."""
    keys = [r.key for r in graph.tasks]
    if len(set(keys)) != len(keys):
        raise ValueError("a job graph's tasks must have unique keys")
    try:
        TopologicalSorter({r.key: r.needs for r in graph.tasks}).prepare()
    except CycleError as exc:
        raise ValueError(f"a job graph must not have a cycle: {exc.args[1]}") from exc
    if any(n not in keys for r in graph.tasks for n in r.needs):
        raise ValueError("a task needs a task that is not in its graph")
    return graph


# ---- what a task's move means for its parent -------------------------------------------


@dataclass(frozen=True, slots=True)
class Next:
    """What happens to a parent now that its tasks are as they are."""

    release: tuple[str, ...] = ()
    """Waiting tasks (keys) whose needs all succeeded: queue them."""
    phase: Phase | None = None
    """The parent's new phase, if it changes."""
    end: tuple[JobStatus, str, ErrorCode] | None = None
    """A task failed or was cancelled for good: the parent ends so, saying which."""
    finish: bool = False
    """Every task succeeded: the kind's :meth:`~GraphKind.finish`."""


def next_steps(graph: Graph, tasks: Tasks) -> Next:
    """What ``graph``'s parent does next, given its tasks' states (a task with no record
    yet counts as waiting)."""
    status = {r.key: tasks[r.key].status if r.key in tasks else JobStatus.WAITING
              for r in graph.tasks}  # fmt: skip
    for ref in graph.tasks:
        if status[ref.key] in (JobStatus.FAILED, JobStatus.CANCELLED):
            return Next(end=_ending(ref, tasks[ref.key]))
    done = {k for k, s in status.items() if s is JobStatus.SUCCEEDED}
    if len(done) == len(graph.tasks):
        return Next(finish=True)
    release = tuple(
        r.key
        for r in graph.tasks
        if status[r.key] is JobStatus.WAITING and r.key in tasks and set(r.needs) <= done
    )
    others = [r for r in graph.tasks if not r.finishing]
    finishing = graph.phase is Phase.RUNNING and all(r.key in done for r in others)
    return Next(release=release, phase=Phase.FINISHING if finishing else None)


def _ending(ref: TaskRef, task: Job) -> tuple[JobStatus, str, ErrorCode]:
    code = task.error_code or ErrorCode.FAILED
    if not ref.label:
        why = task.reason or str(task.status)
    else:
        where = f" on {task.placement.where}" if task.placement else ""
        why = f"{ref.label} {task.status}{where}: {task.reason}"
    status = JobStatus.CANCELLED if code is ErrorCode.CANCELLED else JobStatus.FAILED
    return status, why, code


def resumed(graph: Graph, tasks: Tasks) -> tuple[frozenset[str], str]:
    """A parent queued again (its coordinator restarted) runs on: the tasks that had
    succeeded are reused; the reason says how many of its counted tasks (those with a
    share of the work) were done, and those are returned."""
    counted = [r.key for r in graph.tasks if r.weight > 0] or [r.key for r in graph.tasks]
    done = frozenset(k for k in counted if k in tasks and tasks[k].status is JobStatus.SUCCEEDED)
    why = f"{graph.why}; resumed with {len(done)} of {len(counted)} {graph.unit}s done"
    return done, why


def winding_down(tasks: Sequence[Job]) -> tuple[list[Job], list[Job]]:
    """A parent ended: its tasks not yet running are cancelled, those running stopped."""
    cancel = [t for t in tasks if t.status in (JobStatus.WAITING, JobStatus.QUEUED)]
    stop = [t for t in tasks if t.status is JobStatus.RUNNING]
    return cancel, stop


def ran_s(task: Job) -> float:
    """How long a task's last attempt took on its node (as its encoder timed it)."""
    timings = (task.result or {}).get("timings") or {}
    parts = [timings.get(k) for k in ("before_ffmpeg_s", "ffmpeg_s", "after_ffmpeg_s")]
    if all(isinstance(p, int | float) for p in parts):
        return float(sum(p for p in parts if p is not None))
    if isinstance(timings.get("node_s"), int | float):
        return float(timings["node_s"])
    if task.started_at and task.finished_at:
        return task.finished_at - task.started_at
    return 0.0


# ---- progress --------------------------------------------------------------------------


def progress(graph: Graph, tasks: Tasks, now: float) -> ProgressSnapshot | None:
    """The parent's progress: its tasks' done share of the work (each weighted), the
    frames made so far, the running tasks' frame rates summed, and the time left at that
    rate (a task that counts no frames, a package's rendition, at the rate its own time
    left implies; when only unweighted tasks run, theirs)."""
    total = sum(r.weight for r in graph.tasks)
    if total <= 0:
        return None
    done_w = left_w = rate = fps = 0.0
    frames = 0
    late: list[ProgressSnapshot] = []
    for ref in graph.tasks:
        task = tasks.get(ref.key)
        share, made = _share(ref, task)
        done_w += share * ref.weight
        frames += made
        running = task is not None and task.status is JobStatus.RUNNING
        if running and task is not None and task.progress is not None:
            task_fps = task.progress.fps or 0.0
            if ref.weight > 0:
                fps += task_fps
                if ref.frames:
                    rate += task_fps * ref.weight / ref.frames
                elif task.progress.eta_s:  # no frames counted: its own time left
                    rate += (1.0 - share) * ref.weight / task.progress.eta_s
            else:
                late.append(task.progress)
        left_w += (1.0 - share) * ref.weight
    all_frames = sum(r.frames for r in graph.tasks)
    frames = min(frames, all_frames) if all_frames else frames
    eta = left_w / rate if rate > 0 else None
    if not fps and late:  # only finishing work runs: its own rate and time left
        fps = sum(p.fps or 0.0 for p in late)
        etas = [p.eta_s for p in late if p.eta_s is not None]
        eta = max(etas) if etas else None
    return ProgressSnapshot(
        frame=frames,
        fps=round(fps, 2) if fps else None,
        out_time_s=round(frames * graph.frame_s, 3),
        percent=round(100.0 * min(done_w, total) / total, 2),
        eta_s=round(eta, 1) if eta is not None else None,
        at=now,
    )


def _share(ref: TaskRef, task: Job | None) -> tuple[float, int]:
    """How much of ``ref``'s work is done (0..1), and the frames it made."""
    if task is None:
        return 0.0, 0
    if task.status is JobStatus.SUCCEEDED:
        return 1.0, ref.frames
    if task.status is not JobStatus.RUNNING or task.progress is None:
        return 0.0, 0
    p = task.progress
    if ref.frames:
        made = min(p.frame or 0, ref.frames)
        return made / ref.frames, made
    return min((p.percent or 0.0) / 100.0, 1.0), 0
