"""The graph engine: runs any job graph (:mod:`cluster.model.graph`) for the coordinator,
once for every kind (:data:`~cluster.control.graphs.KINDS`).

- **Planning.** A probed job is offered to the kinds (:meth:`GraphRunner.consider`); one
  keeps it whole, has something read first where the media are seen (the read runs
  here; :meth:`~GraphRunner.reads_done` expands it once read), or expands it into tasks.
  Its tasks are hidden jobs, created with the graph in one transaction: those that need
  others wait.
- **Tasks.** Each task is placed, run, retried (elsewhere after a node's fault) and
  stored like any job. When one moves (:meth:`~GraphRunner.moved`), the pure
  :func:`~cluster.control.rules.graph.next_steps` says what its parent does: release
  the tasks that waited for it, enter its finishing phase, end (a task failed for good,
  named in the reason), or succeed with the kind's summary. Progress is its tasks',
  weighted by their share of the work.
- **Ending.** Whatever the end, waiting and queued tasks are cancelled, running ones
  stopped (ffmpeg killed), then every file the tasks made is removed; a cancel returns
  once that is done (:meth:`~GraphRunner.settled`).
- **Restarts.** A parent queued again by a restart resumes: its finished tasks are reused,
  those that were running run again.

It writes through the job table and returns the state changes (:class:`Move`) for the
coordinator to apply, one at a time; it never moves a job itself, and never learns what
a chunk or a stitch is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from cluster.control.farm.reach import MediaReach
from cluster.control.graphs import KINDS
from cluster.control.records.jobtable import JobTable, Move
from cluster.control.rules.graph import (
    Expansion,
    Facts,
    Farm,
    GraphKind,
    Keep,
    Need,
    Plan,
    Read,
    Refuse,
    TaskPlan,
    Tasks,
    check_graph,
    next_steps,
    progress,
    resumed,
    winding_down,
)
from cluster.errors import ErrorCode, FramefleetError
from cluster.model.graph import Graph, Phase, TaskOf, advance, task_id
from cluster.model.jobs import Job, JobStatus
from cluster.model.media import MediaInfo

log = logging.getLogger("framefleet.coordinator")

CLEAR_WAIT_S = 30.0
"""How long an ended job waits for a node to remove its tasks' files."""
Stop = Callable[[str], Awaitable[object]]
"""Stops a task's encode, as a user's cancel (its ffmpeg killed)."""
Probe = Callable[[str], Awaitable[MediaInfo]]
"""The probe of a file a plan reads besides the input (a quality job's reference)."""


@dataclass(slots=True)
class _Reading:
    task: asyncio.Task[Facts]
    kind: GraphKind
    note: Any


class GraphRunner:
    def __init__(
        self,
        table: JobTable,
        reach: MediaReach,
        *,
        stop: Stop,
        wake: Callable[[], None],
        kinds: tuple[GraphKind, ...] = KINDS,
        now: Callable[[], float] = time.time,
        probe: Probe | None = None,
    ) -> None:
        self._table = table
        self._probe = probe
        self._reach = reach
        self._stop = stop
        self._wake = wake
        self._kinds = {k.name: k for k in kinds}
        self._now = now
        self._reads: dict[str, _Reading] = {}
        """Reads a plan needs, by job id; kept until :meth:`reads_done` takes them."""
        self._ending: dict[str, asyncio.Task[None]] = {}
        """Jobs whose running tasks are being stopped and files removed."""

    # ---- planning --------------------------------------------------------------------

    def consider(self, job: Job, farm: Farm) -> tuple[bool, list[Move]]:
        """A queued, probed job: whether it is placed as it is now (a task, or a job no
        kind makes a graph of, or one kept whole), and the moves its graph makes (its
        tasks started, or resumed after a restart)."""
        graph = job.graph
        if job.task is not None or (graph is not None and graph.phase is Phase.WHOLE):
            return True, []
        if graph is None:
            for kind in self._kinds.values():
                if (older := kind.adopt(job)) is not None:
                    return False, self._adopt(job, older)
        if graph is None or (graph.phase is Phase.PLANNING and job.id not in self._reads):
            kinds = self._kinds.values() if graph is None else [self._kinds[graph.kind]]
            for kind in kinds:
                plan = kind.plan(job, self._media(job), farm)
                if plan is not None:
                    return self._planned(job, kind, plan)
            return True, []
        if graph.phase in (Phase.RUNNING, Phase.FINISHING):
            return False, self._resume(job)
        return False, []  # planning: what it needs is being read

    def reads_done(self) -> list[Move]:
        """Expand the jobs whose reads ended (a job that changed meanwhile is left)."""
        moves: list[Move] = []
        for job_id, reading in list(self._reads.items()):
            if not reading.task.done():
                continue
            del self._reads[job_id]
            job = self._table.jobs.get(job_id)
            graph = job.graph if job else None
            if job is None or job.status is not JobStatus.QUEUED or graph is None:
                continue
            if graph.phase is not Phase.PLANNING or job.input_media is None:
                continue
            expanded = reading.kind.expand(job, self._media(job), reading.note,
                                           reading.task.result())  # fmt: skip
            moves += self._planned(job, reading.kind, expanded)[1]
        return moves

    def _planned(self, job: Job, kind: GraphKind, plan: Plan) -> tuple[bool, list[Move]]:
        base = job.graph or Graph(kind.name, Phase.PLANNING)
        if isinstance(plan, Keep):
            kept = advance(replace(base, why=plan.view.why), Phase.WHOLE)
            self._table.set_graph(job, kept, save=False)  # saved with the decision
            self._decided(job, plan.view)
            return True, []
        if isinstance(plan, Refuse):
            self._table.set_graph(job, replace(base, why=plan.reason))
            log.info("job %s: %s", job.id, plan.reason)
            return False, [Move(job, JobStatus.FAILED, plan.reason, plan.code,
                                since=JobStatus.QUEUED)]  # fmt: skip
        if isinstance(plan, Read):
            self._table.set_graph(job, base)
            task = asyncio.create_task(self._read(job, plan.need))
            task.add_done_callback(lambda _: self._wake())
            self._reads[job.id] = _Reading(task, kind, plan.note)
            return False, []
        return False, self._expand(job, base, plan)

    def _decided(self, job: Job, view: Any) -> None:
        log.info("job %s: %s", job.id, view.why)
        self._table.set_view(job, view, save=True, publish=True)

    async def _read(self, job: Job, need: Need) -> Facts:
        media = self._media(job)
        try:
            if need is Need.FRAMES:
                return await self._reach.index(job.spec.input, media)
            if need is Need.REFERENCE and job.spec.reference and self._probe is not None:
                return await self._probe(job.spec.reference)
            raise ValueError(f"no way to read {need}")
        except FramefleetError as exc:
            return exc

    def _expand(self, job: Job, base: Graph, expansion: Expansion) -> list[Move]:
        """Create the graph's tasks (waiting while they need others) with the graph, in
        one transaction; the job runs."""
        now, media = self._now(), self._media(job)
        graph = replace(advance(base, Phase.RUNNING), why=expansion.graph.why,
                        tasks=expansion.graph.tasks, unit=expansion.graph.unit,
                        frame_s=expansion.graph.frame_s, started_at=now)  # fmt: skip
        tasks = [self._recalled(_task(job, plan, media, now), plan) for plan in expansion.tasks]
        log.info("job %s: %s", job.id, graph.why)
        self._table.add_tasks(job, graph, expansion.view, tasks)
        return [Move(job, JobStatus.RUNNING, graph.why, since=JobStatus.QUEUED)]

    def _grow(self, parent: Job, graph: Graph, more: Expansion) -> list[Move]:
        """More tasks for a running job (a kind's :meth:`~GraphKind.grow`), created with
        its grown graph in one transaction; the dispatcher places them."""
        keys = {r.key for r in graph.tasks}
        if any(t.ref.key in keys for t in more.tasks):
            raise ValueError("a grown graph must add new tasks only")
        grown = replace(graph, why=more.graph.why or graph.why,
                        tasks=graph.tasks + tuple(t.ref for t in more.tasks))  # fmt: skip
        check_graph(grown)  # still a DAG
        now, media = self._now(), self._media(parent)
        made = [self._recalled(_task(parent, plan, media, now), plan) for plan in more.tasks]
        log.info("job %s: %s", parent.id, grown.why)
        shown = more.view if more.view is not None else (parent.package or parent.split)
        self._table.add_tasks(parent, grown, shown, made)  # no view given: the job's stays
        self._wake()
        if all(t.status is JobStatus.SUCCEEDED for t in made):  # all known: on at once
            return self._next(parent, self._table.tasks_of(parent))
        return []

    def _recalled(self, task: Job, plan: TaskPlan) -> Job:
        """``task``, succeeded with what a task with its memo key found before, if any."""
        found = self._table.store.recall(plan.ref.memo) if plan.ref.memo else None
        if found is None:
            return task
        log.info("job %s: %s reused (%s)", task.id, plan.ref.doing or plan.ref.key, plan.ref.memo)
        task.status, task.result = JobStatus.SUCCEEDED, {**found, "reused": True}
        task.started_at = task.finished_at = task.updated_at
        task.reason = "reused: the same work succeeded before"
        return task

    def _adopt(self, job: Job, expansion: Expansion) -> list[Move]:
        """A job an older framefleet ran as sub-jobs without a graph: its graph, with the
        records it already has (finished ones reused), the rest created; it resumes."""
        now, media = self._now(), self._media(job)
        started = job.split.started_at if job.split else None
        graph = replace(expansion.graph, phase=Phase.RUNNING, started_at=started or now)
        have = {p.ref.key for p in expansion.tasks if self._table.find(task_id(job.id, p.ref.key))}
        missing = [_task(job, plan, media, now) for plan in expansion.tasks
                   if plan.ref.key not in have]  # fmt: skip
        log.info("job %s: adopted as a %s graph (%d tasks made now)", job.id, graph.kind,
                 len(missing))  # fmt: skip
        self._table.add_tasks(job, graph, expansion.view, missing)
        return self._resume(job)

    def _resume(self, job: Job) -> list[Move]:
        """A job queued again while its tasks ran (a restart): its finished tasks are
        reused; it runs on."""
        graph = job.graph
        if graph is None:
            return []
        done, why = resumed(graph, self._table.tasks_of(job))
        self._table.set_graph(job, replace(graph, reused=graph.reused | done))
        return [Move(job, JobStatus.RUNNING, why, since=JobStatus.QUEUED)]

    # ---- tasks -----------------------------------------------------------------------

    def moved(self, job: Job) -> list[Move]:
        """What follows from ``job``'s move, for its graph."""
        if job.task is not None:
            return self._task_moved(job)
        graph = job.graph
        if graph is None:
            return []
        if job.status.terminal:  # its graph is done with it (the table moved both)
            return self._end(job) if graph.tasks else []
        if job.status is JobStatus.RUNNING and graph.phase in (Phase.RUNNING, Phase.FINISHING):
            tasks = self._table.tasks_of(job)
            self._show(job, tasks, save=True)  # its tasks, as they start or resume
            return self._next(job, tasks)
        return []

    def _task_moved(self, task: Job) -> list[Move]:
        parent = self._parent(task)
        if parent is None:
            return []
        memo = next((r.memo for r in parent.graph.tasks if task.task and r.key == task.task.key),
                    "") if parent.graph else ""  # fmt: skip
        kept = memo and task.status is JobStatus.SUCCEEDED and task.result is not None
        if kept and parent.status is JobStatus.RUNNING:  # not one stopped as its job ended
            self._table.store.remember(memo, task.result or {}, self._now())
        of, placed, limits = task.task, task.placement, task.limits
        if of and of.finishing and task.status is JobStatus.RUNNING and placed and limits:
            # The task that makes the job's output: the job shows where it runs.
            self._table.set_placement(parent, placed, limits)
        tasks = self._table.tasks_of(parent)
        self._show(parent, tasks, save=parent.status.terminal)  # else saved with its moves
        running = parent.graph is not None and parent.graph.phase in (
            Phase.RUNNING,
            Phase.FINISHING,
        )
        if parent.status is not JobStatus.RUNNING or not running:
            return []  # ended (its tasks wind down), or queued again (resumed later)
        return self._next(parent, tasks)

    def _next(self, parent: Job, tasks: Tasks) -> list[Move]:
        graph = parent.graph
        if graph is None:
            return []
        step = next_steps(graph, tasks)
        if step.end is not None:
            status, why, code = step.end
            return [Move(parent, status, why, code, since=JobStatus.RUNNING)]
        if step.finish:
            try:
                return self._finish(parent, graph, tasks)
            except Exception as exc:  # a kind's bug must end its job, never leave it running
                log.exception("job %s: its %s graph could not go on", parent.id, graph.kind)
                return [Move(parent, JobStatus.FAILED, f"internal error: its {graph.kind} graph "
                             f"could not go on ({exc}); see the coordinator's log",
                             ErrorCode.INTERNAL, since=JobStatus.RUNNING)]  # fmt: skip
        if step.phase is not None:
            self._table.set_graph(parent, advance(graph, step.phase))
        self._table.set_progress(parent, progress(graph, tasks, self._now()))
        return [Move(tasks[k], JobStatus.QUEUED, "what it needs is done", since=JobStatus.WAITING)
                for k in step.release]  # fmt: skip

    def _finish(self, parent: Job, graph: Graph, tasks: Tasks) -> list[Move]:
        """Every task succeeded: the kind grows the graph, ends the job, or finishes it."""
        grown = self._kinds[graph.kind].grow(parent, tasks)
        if isinstance(grown, Refuse):
            return [Move(parent, JobStatus.FAILED, grown.reason, grown.code,
                         progress=progress(graph, tasks, self._now()),
                         since=JobStatus.RUNNING)]  # fmt: skip
        if grown is not None:
            return self._grow(parent, graph, grown)
        if graph.phase is Phase.RUNNING:
            graph = advance(graph, Phase.FINISHING)
            self._table.set_graph(parent, graph)
        done = self._kinds[graph.kind].finish(parent, tasks, self._now())
        last = progress(graph, tasks, self._now())
        if done.failed is not None:
            return [Move(parent, JobStatus.FAILED, done.reason, done.failed, result=done.result,
                         notes=done.notes, progress=last, since=JobStatus.RUNNING)]  # fmt: skip
        return [Move(parent, JobStatus.SUCCEEDED, done.reason, result=done.result,
                     notes=done.notes, progress=last, since=JobStatus.RUNNING)]  # fmt: skip

    def progressed(self, task: Job) -> None:
        """A task reported progress: its job's is recomputed from its tasks'."""
        parent = self._parent(task)
        if parent is None or parent.graph is None or parent.status is not JobStatus.RUNNING:
            return
        tasks = self._table.tasks_of(parent)
        self._table.set_progress(parent, progress(parent.graph, tasks, self._now()))
        self._show(parent, tasks, save=False)

    def _show(self, parent: Job, tasks: Tasks, *, save: bool) -> None:
        graph = parent.graph
        if graph is not None:
            view = self._kinds[graph.kind].view(parent, tasks)
            self._table.set_view(parent, view, save=save)

    def _parent(self, task: Job) -> Job | None:
        """The job whose graph ``task`` is part of (``None``: it is not, any more: its job
        was retried and kept whole, say)."""
        of = task.task
        parent = self._table.jobs.get(of.parent) if of else None
        graph = parent.graph if parent else None
        if graph is None or of is None or of.key not in {r.key for r in graph.tasks}:
            return None
        return parent

    # ---- ending ----------------------------------------------------------------------

    def _end(self, parent: Job) -> list[Move]:
        """``parent`` ended: its tasks not yet running are cancelled, those running
        stopped; then every file its tasks made is removed."""
        cancel, stop = winding_down(list(self._table.tasks_of(parent).values()))
        why = f"its job {parent.status}"
        task = asyncio.create_task(self._wind_down(parent, [self._stop(t.id) for t in stop]))
        self._ending[parent.id] = task
        task.add_done_callback(lambda _: self._ending.pop(parent.id, None))
        return [Move(t, JobStatus.CANCELLED, why, ErrorCode.CANCELLED, since=t.status)
                for t in cancel]  # fmt: skip

    async def _wind_down(self, parent: Job, stops: list[Awaitable[object]]) -> None:
        await asyncio.gather(*stops, return_exceptions=True)
        remote = self._reach.clear_partials(parent, tasks=True)
        if remote is not None:  # a node that sees the folder removes them: wait for it
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(remote), CLEAR_WAIT_S)

    def unfinished(self) -> list[Move]:
        """After a restart: jobs that ended while some of their tasks had not (the
        coordinator stopped between the two) wind those down now."""
        moves: list[Move] = []
        for job in list(self._table.jobs.values()):
            if job.task is None and job.status.terminal and job.graph and job.graph.tasks:
                tasks = self._table.tasks_of(job).values()
                if any(not t.status.terminal for t in tasks):
                    moves += self._end(job)
        return moves

    async def settled(self, job: Job) -> None:
        """Wait until ``job``, which ended, has stopped its tasks and removed their files."""
        task = self._ending.get(job.id)
        if task is not None:
            await asyncio.shield(task)

    async def shutdown(self) -> None:
        for reading in self._reads.values():
            reading.task.cancel()
        await asyncio.gather(*(r.task for r in self._reads.values()), return_exceptions=True)
        self._reads.clear()

    @staticmethod
    def _media(job: Job) -> MediaInfo:
        if job.input_media is None:
            raise ValueError(f"job {job.id} has not been probed")
        return job.input_media


def _task(parent: Job, plan: TaskPlan, media: MediaInfo, now: float) -> Job:
    """The hidden job of one task of ``parent``'s graph: waiting while it needs others."""
    ref = plan.ref
    return Job(
        id=task_id(parent.id, ref.key),
        spec=plan.spec,
        seq=parent.seq,
        status=JobStatus.WAITING if ref.needs else JobStatus.QUEUED,
        created_at=now,
        updated_at=now,
        max_attempts=parent.max_attempts,
        input_media=plan.media or media,
        owner=parent.owner,
        tenant=parent.tenant,
        task=TaskOf(parent.id, ref.key, plan.step, ref.finishing, ref.doing),
    )
