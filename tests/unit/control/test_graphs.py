"""Job graphs on the fake backend: split-and-stitch's orchestration (plan, chunks, their
failures and retries, a node lost, a restart resumed, cancel, the stitch failing) and a
kind of graph written in the test, run by the same engine. No Ray, no ffmpeg."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from cluster import ErrorCode, Job, JobCounter, JobKind, JobSpec
from cluster.control.fakes import Behaviour, FakeClip, FakeClock, fake_node
from cluster.control.graphs import KINDS
from cluster.control.records.jobtable import Move
from cluster.control.rules.graph import (
    Expansion,
    Farm,
    Finished,
    Keep,
    Plan,
    TaskPlan,
    Tasks,
    checked,
    next_steps,
    progress,
)
from cluster.errors import EncodeError, InputError, SpecError, WorkerLost
from cluster.media.work import WorkOrder
from cluster.model.graph import Graph, Phase, TaskRef
from cluster.model.jobs import JobStatus
from cluster.model.media import MediaInfo
from cluster.model.progress import ProgressReport, ProgressSnapshot
from cluster.model.split import Segment, Split, chunk_name
from tests.helpers import until_true
from tests.unit.control.test_coordinator import TERMINAL, on_farm
from tests.unit.control.test_coordinator import Farm as Coordinated

LONG = {"in.mp4": FakeClip(duration_s=120)}
"""Two minutes at 25 fps, a keyframe every 10 s: split=30 cuts 4 chunks at keyframes."""
TWO = [fake_node("node-a", cpus=2), fake_node("node-b", cpus=2)]
"""Two nodes with room for two chunks each."""


def key(order: WorkOrder) -> str:
    """``c001`` ... or ``stitch``: which task of its job an order is."""
    return order.job_id.rsplit("-", 1)[-1]


def chunks(order: WorkOrder) -> bool:
    return order.segment is not None


def script(**by_key: Any) -> Any:
    """Each task does what ``by_key`` says for its key (a list: by attempt; the last
    repeats); anything else succeeds."""

    def step(order: WorkOrder) -> Any:
        what = by_key.get(key(order), Behaviour.SUCCEED)
        if isinstance(what, list):
            return what[min(order.attempt, len(what)) - 1]
        return what

    return step


def split_spec(farm: Coordinated, split: str = "30", **kw: Any) -> JobSpec:
    return farm.spec(split=split, **kw)


async def until_chunks(farm: Coordinated, job_id: str, status: str, at_least: int = 1) -> Job:
    """The job once at least ``at_least`` of its chunks are ``status``."""

    def enough() -> bool:
        split = farm.coordinator.table.get(job_id).split
        return split is not None and sum(c.status == status for c in split.chunks) >= at_least

    await until_true(enough)
    return await farm.coordinator.get(job_id)


# ---- split-and-stitch, end to end on the fake ------------------------------------------


def test_a_long_clip_is_split_its_chunks_spread_and_stitched_once_all_are_done(
    tmp_path: Path,
) -> None:
    async def test(farm: Coordinated) -> None:
        job = await farm.coordinator.submit(split_spec(farm))
        done = await farm.until(job.id, TERMINAL)
        assert done.status == "succeeded", done.reason
        split = done.split
        assert split is not None and split.mode == "chunks"
        assert split.why == (
            "split into 4 chunks of about 30.0 s on cpu: split=30 s asked; "
            "3 of 3 cuts at source keyframes"
        )
        assert [c.status for c in split.chunks] == ["succeeded"] * 4
        assert {c.node_id for c in split.chunks} == {"node-a", "node-b"}
        assert [c.frames_done for c in split.chunks] == [750] * 4
        orders = farm.backend.orders
        assert [key(o) for o in orders] == ["c001", "c002", "c003", "c004", "stitch"]
        assert all(o.encoder == "libx264" for o in orders)
        stitch = orders[-1].stitch
        assert stitch is not None and len(stitch.chunks) == 4
        assert stitch.chunks[0] == chunk_name("out.mp4", job.id, 0)
        assert done.reason is not None
        assert done.reason.startswith("completed in ")
        assert done.reason.endswith("4 chunks on 2 nodes, joined and checked in 0.0 s")
        assert done.result is not None and done.result["split"]["chunks"] == 4
        assert done.placement is not None
        assert done.placement.reason.startswith("stitching 4 chunks: ")
        assert (done.progress.percent, done.progress.frame) == (100.0, 3000)
        assert done.graph is not None and done.graph.phase is Phase.DONE
        assert [j.id for j in await farm.coordinator.list_jobs()] == [job.id]  # tasks hidden
        reasons = await farm.reasons(job.id)
        assert split.why in reasons  # running, saying what was decided

    on_farm(tmp_path, test, nodes=TWO, clips=LONG)


def test_a_chunk_that_fails_is_retried_alone(tmp_path: Path) -> None:
    async def test(farm: Coordinated) -> None:
        job = await farm.coordinator.submit(split_spec(farm))
        done = await farm.until(job.id, TERMINAL)
        assert done.status == "succeeded", done.reason
        assert done.split is not None
        assert [c.attempts for c in done.split.chunks] == [1, 1, 2, 1]
        assert [key(o) for o in farm.backend.orders].count("c003") == 2
        assert farm.coordinator.counters[JobCounter.RETRIES] == 1

    died = EncodeError("ffmpeg died")
    on_farm(tmp_path, test, nodes=TWO, clips=LONG,
            script=script(c003=[died, Behaviour.SUCCEED]))  # fmt: skip


def test_a_chunk_that_fails_for_good_fails_the_job_naming_it_and_stops_the_rest(
    tmp_path: Path,
) -> None:
    async def test(farm: Coordinated) -> None:
        job = await farm.coordinator.submit(split_spec(farm))
        done = await farm.until(job.id, TERMINAL)
        assert (done.status, done.error_code) == ("failed", "truncated")
        assert done.reason is not None
        assert done.reason.startswith("chunk 2 (frames 750-1499, 30.00-60.00 s) failed on 10.0.")
        assert done.reason.endswith(": in.mp4: truncated")
        await farm.coordinator.graphs.settled(done)
        after = await farm.coordinator.get(job.id)
        assert after.split is not None
        statuses = sorted(c.status for c in after.split.chunks)
        assert statuses == ["cancelled", "cancelled", "cancelled", "failed"]
        assert not any(e.killed for e in farm.backend.encoders)  # stopped when asked
        assert farm.backend.encoders and not [o for o in farm.backend.orders if o.stitch]

    truncated = InputError("in.mp4: truncated", code=ErrorCode.TRUNCATED)
    hang = Behaviour.HANG
    on_farm(tmp_path, test, nodes=TWO, clips=LONG,
            script=script(c001=hang, c002=truncated, c003=hang, c004=hang))  # fmt: skip


def test_a_chunk_whose_node_left_runs_again_elsewhere_uncharged(tmp_path: Path) -> None:
    nodes = [fake_node("node-a"), fake_node("node-b")]

    def step(order: WorkOrder) -> Any:
        if key(order) == "c002" and order.attempt == 1:
            gone = next(e.placement.node_id for e in farm_ref[0].backend.encoders
                        if order in e.orders)  # fmt: skip
            farm_ref[0].backend.node_list[:] = [n for n in nodes if n.node_id != gone]
            return WorkerLost("the encoder was lost")
        return Behaviour.SUCCEED

    farm_ref: list[Coordinated] = []

    async def test(farm: Coordinated) -> None:
        farm_ref.append(farm)
        job = await farm.coordinator.submit(split_spec(farm))
        done = await farm.until(job.id, TERMINAL)
        assert done.status == "succeeded", done.reason
        assert done.split is not None
        lost = done.split.chunks[1]
        assert lost.attempts == 2 and lost.node_id in {"node-a", "node-b"}
        assert farm.coordinator.counters[JobCounter.NODE_LOSSES] == 1
        task = await farm.coordinator.get(lost.job_id)
        assert task.requeues == 1  # not one of its attempts

    on_farm(tmp_path, test, nodes=list(nodes), clips=LONG, max_attempts=1, script=step)


def test_a_restart_reuses_the_finished_chunks_and_runs_the_rest(tmp_path: Path) -> None:
    hang = Behaviour.HANG

    async def test(farm: Coordinated) -> None:
        job = await farm.coordinator.submit(split_spec(farm))
        await until_chunks(farm, job.id, "succeeded", 1)
        await until_chunks(farm, job.id, "running", 3)
        for task in farm.coordinator._tasks:  # the process dies: nothing winds down
            task.cancel()
        farm.backend.script = script()
        farm.coordinator = farm.open()
        done = await farm.until(job.id, TERMINAL)
        assert done.status == "succeeded", done.reason
        assert done.split is not None
        assert [c.reused for c in done.split.chunks] == [True, False, False, False]
        assert done.split.reused == 1
        assert done.result is not None and done.result["split"]["reused"] == 1
        assert [c.attempts for c in done.split.chunks] == [1, 2, 2, 2]
        assert [key(o) for o in farm.backend.orders].count("c001") == 1  # not encoded again
        reasons = await farm.reasons(job.id)
        assert any(r.endswith("; resumed with 1 of 4 chunks done") for r in reasons)

    on_farm(tmp_path, test, nodes=TWO, clips=LONG,
            script=script(c002=hang, c003=hang, c004=hang))  # fmt: skip


def test_cancel_stops_every_chunk_and_removes_every_chunk_file(tmp_path: Path) -> None:
    async def test(farm: Coordinated) -> None:
        job = await farm.coordinator.submit(split_spec(farm))
        await until_chunks(farm, job.id, "running", 4)
        made = [tmp_path / chunk_name("out.mp4", job.id, i) for i in range(2)]
        for path in made:
            path.write_bytes(b"chunk")
        partial = tmp_path / f".{made[0].name}.{job.id}-c003.1.partial"
        partial.write_bytes(b"half")
        cancelled = await farm.coordinator.cancel(job.id)
        assert (cancelled.status, cancelled.reason) == ("cancelled", "cancelled by user")
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
        after = await farm.coordinator.get(job.id)
        assert after.split is not None
        assert {c.status for c in after.split.chunks} == {"cancelled"}
        assert len(farm.backend.encoders) == 4 and not any(e.killed for e in farm.backend.encoders)
        again = await farm.coordinator.cancel(job.id)  # idempotent
        assert again.status == "cancelled"

    on_farm(tmp_path, test, nodes=TWO, clips=LONG, script=script(**dict.fromkeys(
        ("c001", "c002", "c003", "c004"), Behaviour.HANG)))  # fmt: skip


def test_a_stitch_that_fails_fails_the_job_with_its_reason_and_no_chunk_file_stays(
    tmp_path: Path,
) -> None:
    seam = "stitched video has a frame repeated at 30.000 s, in chunk 2 (frames 750-1499)"

    async def test(farm: Coordinated) -> None:
        job = await farm.coordinator.submit(split_spec(farm))
        done = await farm.until(job.id, TERMINAL)
        assert (done.status, done.error_code) == ("failed", "encode_failed")
        assert done.reason == f"{seam}; gave up after 1 attempts"
        await farm.coordinator.graphs.settled(done)
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
        assert done.split is not None
        assert [c.status for c in done.split.chunks] == ["succeeded"] * 4

    on_farm(tmp_path, test, nodes=TWO, clips=LONG, max_attempts=1,
            script=script(stitch=EncodeError(seam)))  # fmt: skip


def test_progress_is_the_chunks_frames_weighted(tmp_path: Path) -> None:
    async def test(farm: Coordinated) -> None:
        c = farm.coordinator
        job = await c.submit(split_spec(farm))
        running = await until_chunks(farm, job.id, "running", 4)
        assert running.split is not None
        first = running.split.chunks[0].job_id
        await c.report_progress(first, 1, ProgressSnapshot(frame=375, fps=50.0))
        now = await c.get(job.id)
        assert now.progress is not None
        assert (now.progress.frame, now.progress.percent) == (375, 12.5)
        assert (now.progress.fps, now.progress.eta_s) == (50.0, 52.5)
        assert now.split is not None and now.split.chunks[0].frames_done == 375
        await c.report_progress(first, 2, ProgressSnapshot(frame=700))  # a stale attempt
        assert (await c.get(job.id)).progress.frame == 375
        await c.cancel(job.id)

    on_farm(tmp_path, test, nodes=TWO, clips=LONG, script=script(**dict.fromkeys(
        ("c001", "c002", "c003", "c004"), Behaviour.HANG)))  # fmt: skip


def test_a_nodes_batch_of_chunk_progress_is_applied_in_one_step(tmp_path: Path) -> None:
    async def test(farm: Coordinated) -> None:
        c = farm.coordinator
        job = await c.submit(split_spec(farm))
        running = await until_chunks(farm, job.id, "running", 4)
        assert running.split is not None
        chunks = [chunk.job_id for chunk in running.split.chunks]
        seq = c.table.events.last_seq
        woken: list[int] = []
        waiter = asyncio.create_task(c.events(seq, [job.id], timeout=5))
        waiter.add_done_callback(lambda t: woken.append(len(t.result().events)))
        await asyncio.sleep(0)
        recomputed: list[str] = []
        progressed = c.graphs.progressed

        def counted(task: Job) -> None:
            recomputed.append(task.id)
            progressed(task)

        c.graphs.progressed = counted  # type: ignore[method-assign]
        await c.report_batch(
            [
                ProgressReport(chunks[0], 1, ProgressSnapshot(frame=375)),
                ProgressReport(chunks[1], 1, ProgressSnapshot(frame=300)),
                ProgressReport(chunks[2], 9, ProgressSnapshot(frame=999)),
                ProgressReport("no-such-job", 1, ProgressSnapshot(frame=1)),
            ]
        )
        await asyncio.wait_for(waiter, 1)
        now = await c.get(job.id)
        assert now.progress is not None and now.progress.frame == 675  # the stale attempt
        assert len(recomputed) == 1  # and the unknown job are ignored; the job once
        assert woken == [1]  # its followers see one event for the batch, woken once
        await c.cancel(job.id)

    on_farm(tmp_path, test, nodes=TWO, clips=LONG, script=script(**dict.fromkeys(
        ("c001", "c002", "c003", "c004"), Behaviour.HANG)))  # fmt: skip


@pytest.mark.parametrize(
    ("clip", "split", "nodes", "why"),
    [
        (FakeClip(), "auto", TWO, "not split: 10.0 s is shorter than 60 s (split=auto)"),
        (FakeClip(120), "off", TWO, "not split: split=off"),
        (FakeClip(120), "auto", [fake_node(cpus=1)],
         "not split: one encoder only free now where the media are seen (split=auto)"),
        (FakeClip(120, vfr=True), "30", TWO, "not split: variable frame rate: the frame at"),
    ],
)  # fmt: skip
def test_what_is_kept_whole_says_why(
    tmp_path: Path, clip: FakeClip, split: str, nodes: list[Any], why: str
) -> None:
    async def test(farm: Coordinated) -> None:
        job = await farm.coordinator.submit(split_spec(farm, split))
        done = await farm.until(job.id, TERMINAL)
        assert done.status == "succeeded", done.reason
        assert done.split is not None and done.split.why.startswith(why), done.split.why
        assert done.graph is not None and done.graph.phase is Phase.DONE
        assert [key(o) for o in farm.backend.orders] == [job.id]  # one ffmpeg, no tasks
        assert done.reason is not None and done.reason.startswith("completed in")

    on_farm(tmp_path, test, nodes=nodes, clips={"in.mp4": clip})


def test_a_split_decided_while_the_farm_was_busy_waits_for_the_hardware_chosen(
    tmp_path: Path,
) -> None:
    """A queued job behind a long one is planned on the hardware the planner picks, and
    placed once room frees (the index is read once)."""

    async def test(farm: Coordinated) -> None:
        c = farm.coordinator
        long = await c.submit(farm.spec("first.mp4", split="off"))
        await farm.until(long.id, {"running"})
        job = await c.submit(split_spec(farm))
        waiting = await farm.settled(job.id)
        assert waiting.status == "running"  # its chunks wait for the core the first holds
        assert waiting.split is not None and len(waiting.split.chunks) == 4
        assert {ch.status for ch in waiting.split.chunks} == {"queued"}
        await c.cancel(long.id)
        done = await farm.until(job.id, TERMINAL)
        assert done.status == "succeeded", done.reason
        assert farm.backend.indexed == [str(tmp_path / "in.mp4")]

    def step(order: WorkOrder) -> Any:
        return Behaviour.HANG if "first" in (order.spec.output or "") else Behaviour.SUCCEED

    on_farm(tmp_path, test, nodes=[fake_node(cpus=1)], clips=LONG, script=step)


# ---- a kind of graph written here, run by the same engine -------------------------------


class Pair:
    """Validates a file twice, in two halves, then joins the halves' verdicts: a diamond
    a, b -> c written as data, to show a new kind needs no change to the coordinator."""

    name = "pair"

    def plan(self, job: Job, media: MediaInfo, farm: Farm) -> Plan | None:
        if job.spec.kind is not JobKind.VALIDATE or job.task is not None:
            return None
        if media.duration_s and media.duration_s < 5:
            return Keep(Split.whole("too short for two halves"))
        refs = (TaskRef("a", weight=1.0), TaskRef("b", weight=1.0),
                TaskRef("c", needs=("a", "b"), finishing=True, doing="joining"))  # fmt: skip
        graph = Graph(self.name, Phase.PLANNING, why="in two halves", tasks=refs, unit="half")
        return checked(Expansion(graph, tuple(TaskPlan(r, job.spec) for r in refs), None))

    def expand(self, job: Job, media: MediaInfo, note: Any, facts: Any) -> Keep | Expansion:
        raise AssertionError("a pair reads nothing first")

    def grow(self, parent: Job, tasks: Tasks) -> None:
        return None

    def finish(self, parent: Job, tasks: Tasks, now: float) -> Finished:
        return Finished(f"both halves valid; {len(tasks)} tasks", {"halves": 2})

    def view(self, parent: Job, tasks: Tasks) -> Split | None:
        return parent.split

    def adopt(self, job: Job) -> Expansion | None:
        return None


def test_a_kind_written_as_data_runs_on_the_same_engine(tmp_path: Path) -> None:
    async def test(farm: Coordinated) -> None:
        spec = JobSpec(kind=JobKind.VALIDATE, input=str(tmp_path / "in.mp4"))
        job = await farm.coordinator.submit(spec)
        done = await farm.until(job.id, TERMINAL)
        assert (done.status, done.reason) == ("succeeded", "both halves valid; 3 tasks")
        assert done.result == {"halves": 2}
        order = [key(o) for o in farm.backend.orders]
        assert sorted(order[:2]) == ["a", "b"] and order[2] == "c"  # c waited for both
        assert done.placement is not None and done.placement.reason.startswith("joining: ")
        assert farm.coordinator.counters.finished[("validate", "h264", "none", "succeeded")] == 1

    on_farm(tmp_path, test, nodes=TWO, kinds=(Pair(), *KINDS))


class Rounds:
    """Grows a round at a time: task ``r1``, then ``r2`` (what ``r1`` found decides
    it), then finishes; each task remembered under a memo key (the input and round)."""

    name = "rounds"

    def __init__(self, *, broken: bool = False) -> None:
        self.broken = broken

    def plan(self, job: Job, media: MediaInfo, farm: Farm) -> Plan | None:
        if job.spec.kind is not JobKind.VALIDATE or job.task is not None:
            return None
        ref = TaskRef("r1", weight=1.0, memo=f"rounds:{job.spec.input}:1")
        graph = Graph(self.name, Phase.PLANNING, why="round 1", tasks=(ref,))
        return checked(Expansion(graph, (TaskPlan(ref, job.spec),), None))

    def expand(self, job: Job, media: MediaInfo, note: Any, facts: Any) -> Keep | Expansion:
        raise AssertionError("rounds read nothing first")

    def grow(self, parent: Job, tasks: Tasks) -> Expansion | None:
        if self.broken:
            raise KeyError("a1")
        if "r2" in tasks:
            return None
        ref = TaskRef("r2", weight=1.0, memo=f"rounds:{parent.spec.input}:2")
        return Expansion(Graph(self.name, Phase.RUNNING, why="round 2", tasks=(ref,)),
                         (TaskPlan(ref, parent.spec),), None)  # fmt: skip

    def finish(self, parent: Job, tasks: Tasks, now: float) -> Finished:
        reused = sorted(k for k, t in tasks.items() if (t.result or {}).get("reused"))
        return Finished(f"{len(tasks)} rounds", {"reused": reused})

    def view(self, parent: Job, tasks: Tasks) -> Split | None:
        return parent.split

    def adopt(self, job: Job) -> Expansion | None:
        return None


def test_a_graph_grows_a_round_at_a_time_and_reuses_what_a_memo_key_kept(tmp_path: Path) -> None:
    async def test(farm: Coordinated) -> None:
        spec = JobSpec(kind=JobKind.VALIDATE, input=str(tmp_path / "in.mp4"))
        first = await farm.until((await farm.coordinator.submit(spec)).id, TERMINAL)
        assert (first.status, first.reason) == ("succeeded", "2 rounds")
        assert first.graph is not None and [r.key for r in first.graph.tasks] == ["r1", "r2"]
        assert sorted(key(o) for o in farm.backend.orders) == ["r1", "r2"]
        assert first.result == {"reused": []}
        # The same work again: both rounds are remembered, nothing runs.
        again = await farm.until((await farm.coordinator.submit(spec)).id, TERMINAL)
        assert (again.status, again.result) == ("succeeded", {"reused": ["r1", "r2"]})
        assert len(farm.backend.orders) == 2

    on_farm(tmp_path, test, nodes=TWO, kinds=(Rounds(), *KINDS))


def test_a_kind_that_breaks_while_growing_fails_its_job_instead_of_leaving_it_running(
    tmp_path: Path,
) -> None:
    async def test(farm: Coordinated) -> None:
        spec = JobSpec(kind=JobKind.VALIDATE, input=str(tmp_path / "in.mp4"))
        done = await farm.until((await farm.coordinator.submit(spec)).id, TERMINAL)
        assert done.status == "failed" and done.error_code is ErrorCode.INTERNAL
        assert (done.reason or "").startswith("internal error: its rounds graph could not go on")

    on_farm(tmp_path, test, nodes=TWO, kinds=(Rounds(broken=True), *KINDS))


def test_a_graph_with_a_cycle_or_a_missing_task_is_refused() -> None:
    spec = JobSpec(kind=JobKind.VALIDATE, input="/m/a.mp4")
    cycle = (TaskRef("a", needs=("b",)), TaskRef("b", needs=("a",)))
    graph = Graph("x", Phase.PLANNING, tasks=cycle)
    with pytest.raises(ValueError, match="must not have a cycle"):
        checked(Expansion(graph, tuple(TaskPlan(r, spec) for r in cycle), None))
    lonely = (TaskRef("a", needs=("zz",)),)
    with pytest.raises(ValueError, match="needs a task that is not in its graph"):
        checked(Expansion(Graph("x", Phase.PLANNING, tasks=lonely),
                          (TaskPlan(lonely[0], spec),), None))  # fmt: skip


# ---- the pure rules ----------------------------------------------------------------------


def task(key_: str, status: JobStatus, **kw: Any) -> Job:
    spec = JobSpec(kind=JobKind.VALIDATE, input="/m/a.mp4")
    return Job(id=f"p-{key_}", spec=spec, status=status, **kw)


def test_next_steps_release_what_waited_finish_and_end() -> None:
    refs = (TaskRef("a", weight=1.0, frames=10), TaskRef("b", weight=1.0, frames=10),
            TaskRef("c", needs=("a", "b"), finishing=True))  # fmt: skip
    graph = Graph("k", Phase.RUNNING, tasks=refs)
    S = JobStatus
    half = {"a": task("a", S.SUCCEEDED), "b": task("b", S.RUNNING), "c": task("c", S.WAITING)}
    assert next_steps(graph, half).release == ()
    both = half | {"b": task("b", S.SUCCEEDED)}
    step = next_steps(graph, both)
    assert (step.release, step.phase, step.finish) == (("c",), Phase.FINISHING, False)
    assert next_steps(graph, both | {"c": task("c", S.SUCCEEDED)}).finish
    failed = half | {"b": task("b", S.FAILED, reason="broken", error_code=ErrorCode.ENCODE_FAILED)}
    assert next_steps(graph, failed).end == (S.FAILED, "broken", ErrorCode.ENCODE_FAILED)


def test_progress_weighs_each_task_and_counts_the_frames_made() -> None:
    refs = (TaskRef("a", weight=100.0, frames=100), TaskRef("b", weight=300.0, frames=300),
            TaskRef("c", needs=("a", "b"), finishing=True))  # fmt: skip
    graph = Graph("k", Phase.RUNNING, tasks=refs, frame_s=0.04)
    S = JobStatus
    tasks = {"a": task("a", S.SUCCEEDED),
             "b": task("b", S.RUNNING, progress=ProgressSnapshot(frame=100, fps=20.0))}  # fmt: skip
    p = progress(graph, tasks, now=5.0)
    assert p is not None
    assert (p.frame, p.percent, p.fps, p.eta_s, p.out_time_s) == (200, 50.0, 20.0, 10.0, 8.0)
    joining = ProgressSnapshot(fps=900.0, eta_s=1.5)
    stitching = {"a": task("a", S.SUCCEEDED), "b": task("b", S.SUCCEEDED),
                 "c": task("c", S.RUNNING, progress=joining)}  # fmt: skip
    p = progress(graph, stitching, now=6.0)
    assert p is not None and (p.percent, p.fps, p.eta_s) == (100.0, 900.0, 1.5)


def test_tasks_that_count_no_frames_give_their_share_and_time_left() -> None:
    refs = (TaskRef("v1080", weight=400.0), TaskRef("v360", weight=100.0),
            TaskRef("package", needs=("v1080", "v360"), finishing=True))  # fmt: skip
    graph = Graph("package", Phase.RUNNING, tasks=refs)
    S = JobStatus
    busy = ProgressSnapshot(percent=25.0, fps=30.0, eta_s=30.0)
    tasks = {"v1080": task("v1080", S.RUNNING, progress=busy), "v360": task("v360", S.SUCCEEDED)}
    p = progress(graph, tasks, now=5.0)
    assert p is not None
    # 100 + 0.25 * 400 of 500 done; 300 left at the rate that leaves 30 s for v1080's 300
    assert (p.frame, p.percent, p.fps, p.eta_s) == (0, 40.0, 30.0, 30.0)


# ---- what a second read of the engine found ----------------------------------------------


def test_a_job_retried_long_after_it_ended_runs(tmp_path: Path) -> None:
    """A finished job leaves memory after the retention window; a retry reads it back and
    it runs (it used to wait for a probe that was never taken)."""

    async def test(farm: Coordinated) -> None:
        c = farm.coordinator
        job = await c.submit(farm.spec())
        assert (await farm.until(job.id, TERMINAL)).status == "failed"
        clock.advance(3600)
        assert c.table.forget_finished(clock()) == 1 and job.id not in c.table.jobs
        farm.backend.script = script()
        await c.retry(job.id)
        done = await farm.until(job.id, TERMINAL)
        assert (done.status, done.attempts) == ("succeeded", 1)

    clock = FakeClock()
    truncated = InputError("in.mp4: truncated", code=ErrorCode.TRUNCATED)
    on_farm(tmp_path, test, clock=clock, finished_retention_s=600,
            script=lambda order: truncated)  # fmt: skip


def test_auto_counts_only_the_encoders_that_may_take_work(tmp_path: Path) -> None:
    async def test(farm: Coordinated) -> None:
        await farm.coordinator.drain("node-b")
        job = await farm.coordinator.submit(split_spec(farm, "auto"))
        done = await farm.until(job.id, TERMINAL)
        assert done.split is not None
        assert done.split.why == (
            "not split: one encoder only free now where the media are seen (split=auto)"
        )

    nodes = [fake_node("node-a", cpus=1), fake_node("node-b", cpus=1)]
    on_farm(tmp_path, test, nodes=nodes, clips=LONG)


class Fan(Pair):
    """a, then b and c (both need a), then d (needs both): one task releases two."""

    name = "fan"

    def plan(self, job: Job, media: MediaInfo, farm: Farm) -> Plan | None:
        if job.spec.kind is not JobKind.VALIDATE or job.task is not None:
            return None
        refs = (TaskRef("a", weight=1.0), TaskRef("b", needs=("a",), weight=1.0),
                TaskRef("c", needs=("a",), weight=1.0),
                TaskRef("d", needs=("b", "c"), finishing=True))  # fmt: skip
        graph = Graph(self.name, Phase.PLANNING, why="fanned", tasks=refs)
        return checked(Expansion(graph, tuple(TaskPlan(r, job.spec) for r in refs), None))


def test_a_task_that_releases_two_releases_each_once(tmp_path: Path) -> None:
    async def test(farm: Coordinated) -> None:
        spec = JobSpec(kind=JobKind.VALIDATE, input=str(tmp_path / "in.mp4"))
        job = await farm.coordinator.submit(spec)
        done = await farm.until(job.id, TERMINAL)
        assert done.status == "succeeded", done.reason
        order = [key(o) for o in farm.backend.orders]
        assert order[0] == "a" and sorted(order[1:3]) == ["b", "c"] and order[3] == "d"
        assert len(order) == 4

    on_farm(tmp_path, test, nodes=TWO, kinds=(Fan(), *KINDS))


def test_a_task_is_not_retried_alone(tmp_path: Path) -> None:
    async def test(farm: Coordinated) -> None:
        job = await farm.coordinator.submit(split_spec(farm))
        done = await farm.until(job.id, TERMINAL)
        assert done.split is not None
        chunk = done.split.chunks[0].job_id
        with pytest.raises(SpecError, match=f"is a task of job {job.id}; retry that job"):
            await farm.coordinator.retry(chunk)

    on_farm(tmp_path, test, nodes=TWO, clips=LONG)


def test_tasks_left_running_by_a_crash_after_their_job_ended_are_wound_down(
    tmp_path: Path,
) -> None:
    async def test(farm: Coordinated) -> None:
        c = farm.coordinator
        job = await c.submit(split_spec(farm))
        await until_chunks(farm, job.id, "running", 4)
        (tmp_path / chunk_name("out.mp4", job.id, 0)).write_bytes(b"chunk")
        parent = c.table.get(job.id)  # it ends, and the process dies before its tasks do
        c.table.move(Move(parent, JobStatus.FAILED, "a failure", ErrorCode.ENCODE_FAILED))
        for task in c._tasks:
            task.cancel()
        farm.coordinator = c = farm.open()
        after = await c.get(job.id)
        await c.graphs.settled(after)
        assert after.split is not None
        assert {ch.status for ch in after.split.chunks} == {"cancelled"}
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
        c.dispatch_now()
        assert len(farm.backend.orders) == 4  # nothing ran again

    on_farm(tmp_path, test, nodes=TWO, clips=LONG, script=script(**dict.fromkeys(
        ("c001", "c002", "c003", "c004"), Behaviour.HANG)))  # fmt: skip


def test_a_job_split_by_an_older_framefleet_resumes_on_its_graph(tmp_path: Path) -> None:
    """What a framefleet before job graphs stored: the job with its chunks in ``split``
    and no graph, each chunk a sub-job named by ``chunk``, no stitch record."""

    async def test(farm: Coordinated) -> None:
        c = farm.coordinator
        job = await c.submit(split_spec(farm))
        await until_chunks(farm, job.id, "succeeded", 1)
        await until_chunks(farm, job.id, "running", 3)
        for task in c._tasks:
            task.cancel()
        store = c.table.store
        parent = store.load(job.id)
        assert parent is not None and parent.split is not None
        live = c.table.get(job.id).split
        assert live is not None
        older = parent.to_dict() | {"graph": None, "split": live.to_dict()}
        rows = [(json.dumps(older), "transcode", job.id)]
        for chunk in parent.split.chunks:
            record = store.load(chunk.job_id)
            assert record is not None and record.task is not None
            segment = record.task.step
            assert isinstance(segment, Segment)
            data = record.to_dict()
            del data["task"], data["graph"]
            data["chunk"] = {"parent": job.id, "segment": asdict(segment)}
            rows.append((json.dumps(data), "chunk", chunk.job_id))
        db = sqlite3.connect(store.path)
        with db:
            db.executemany("UPDATE jobs SET record = ?, kind = ? WHERE id = ?", rows)
            db.execute("DELETE FROM jobs WHERE id = ?", (f"{job.id}-stitch",))
        db.close()
        farm.backend.script = script()
        farm.coordinator = c = farm.open()
        done = await farm.until(job.id, TERMINAL)
        assert done.status == "succeeded", done.reason
        assert done.split is not None and done.split.reused == 1
        assert [key(o) for o in farm.backend.orders].count("c001") == 1
        assert key(farm.backend.orders[-1]) == "stitch"
        assert any(
            r.endswith("resumed with 1 of 4 chunks done") for r in await farm.reasons(job.id)
        )

    hang = Behaviour.HANG
    on_farm(tmp_path, test, nodes=TWO, clips=LONG,
            script=script(c002=hang, c003=hang, c004=hang))  # fmt: skip
