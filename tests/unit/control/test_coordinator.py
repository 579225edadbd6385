"""The coordinator's branches on a fake backend: no Ray, no ffmpeg, milliseconds each."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cluster import CoordinatorConfig, CostModel, ErrorCode, Job, JobCounter, JobKind, JobSpec
from cluster.control.coordinator import Coordinator
from cluster.control.fakes import (
    Behaviour,
    FakeBackend,
    FakeClip,
    FakeClock,
    FakeEncoder,
    Script,
    fake_node,
)
from cluster.control.graphs import KINDS
from cluster.control.rules.dispatch import MAX_AUTOSCALER_BUNDLES
from cluster.control.rules.graph import GraphKind
from cluster.control.running import encodes as encodes_module
from cluster.errors import (
    EncodeError,
    IdempotencyConflict,
    InputError,
    JobFailure,
    SpecError,
    WorkerLost,
)
from cluster.media.work import WorkOrder
from cluster.scheduling.planner import Placement
from tests.helpers import until_true

T = TypeVar("T")
TERMINAL = {"succeeded", "failed", "cancelled"}


class Farm:
    """A coordinator on a fake backend (its clips probed and indexed without ffprobe),
    with a media root holding ``in.mp4``; ``clock``: its time (real by default)."""

    def __init__(
        self,
        root: Path,
        backend: FakeBackend,
        *,
        clock: Callable[[], float] = time.time,
        kinds: tuple[GraphKind, ...] = KINDS,
        **config: Any,
    ) -> None:
        self.root = root
        self.backend = backend
        self.clock = clock
        self.kinds = kinds
        self.config = CoordinatorConfig(
            data_dir=root / "data",
            media_roots=(root,),
            node_refresh_s=0.02,
            retry_backoff_s=0.01,
            **config,
        )
        self.coordinator = self.open()

    def open(self) -> Coordinator:
        coordinator = Coordinator(self.config, self.backend, probe=self.backend.probe,
                                  index=self.backend.index, kinds=self.kinds,
                                  now=self.clock)  # fmt: skip
        coordinator.start()
        return coordinator

    async def settled(self, job_id: str) -> Job:
        """The job once its input is probed and what it needs read, after one more
        dispatch round: what could start has started (no fixed sleep)."""
        c = self.coordinator

        def ready() -> bool:
            job = c.table.get(job_id)
            planning = job.graph is not None and job.graph.phase == "planning"
            return job.input_media is not None and not planning

        await until_true(ready)
        c.dispatch_now()
        return await c.get(job_id)

    def spec(self, name: str = "out.mp4", **kw: Any) -> JobSpec:
        return JobSpec(kind=JobKind.TRANSCODE, input=str(self.root / "in.mp4"),
                       output=str(self.root / name), **kw)  # fmt: skip

    async def until(self, job_id: str, status: set[str]) -> Job:
        """The job once it is in one of ``status``."""
        table = self.coordinator.table
        return await until_true(lambda: in_status(table.get(job_id), status))

    async def reasons(self, job_id: str) -> list[str]:
        batch = await self.coordinator.events(0, [job_id], timeout=0)
        return [e.reason or "" for e in batch.events if e.type == "status"]


def in_status(job: Job, status: set[str]) -> Job | None:
    """A copy of ``job`` if it is in one of ``status``."""
    return job.snapshot() if job.status in status else None


def on_farm(
    tmp_path: Path,
    test: Callable[[Farm], Awaitable[T]],
    *,
    script: Script | None = None,
    nodes: list[Any] | None = None,
    clips: dict[str, FakeClip] | None = None,
    **config: Any,
) -> T:
    (tmp_path / "in.mp4").write_bytes(b"fake")

    async def main() -> T:
        farm = Farm(tmp_path, FakeBackend(nodes, script, clips), **config)
        try:
            return await test(farm)
        finally:
            await farm.coordinator.shutdown()

    return asyncio.run(main())


def attempts(*steps: Any) -> Script:
    """A script: attempt N does ``steps[N-1]`` (the last one repeats)."""
    return lambda order: steps[min(order.attempt, len(steps)) - 1]


def test_a_job_runs_and_succeeds(tmp_path: Path) -> None:
    async def test(farm: Farm) -> None:
        job = await farm.coordinator.submit(farm.spec())
        done = await farm.until(job.id, TERMINAL)
        assert done.status == "succeeded"
        assert done.reason.startswith("completed in")
        assert done.placement.encoder == "libx264"

    on_farm(tmp_path, test)


def test_a_retryable_failure_is_retried_then_succeeds(tmp_path: Path) -> None:
    async def test(farm: Farm) -> None:
        job = await farm.coordinator.submit(farm.spec())
        done = await farm.until(job.id, TERMINAL)
        assert (done.status, done.attempts) == ("succeeded", 2)
        reasons = await farm.reasons(job.id)
        assert any(r.startswith("attempt 1 failed: ffmpeg died") for r in reasons)
        assert farm.coordinator.counters[JobCounter.RETRIES] == 1

    on_farm(tmp_path, test, script=attempts(EncodeError("ffmpeg died"), Behaviour.SUCCEED))


def test_a_job_that_keeps_failing_gives_up_after_its_attempts(tmp_path: Path) -> None:
    async def test(farm: Farm) -> None:
        job = await farm.coordinator.submit(farm.spec())
        done = await farm.until(job.id, TERMINAL)
        assert (done.status, done.attempts) == ("failed", 3)
        assert done.reason == "ffmpeg died; gave up after 3 attempts"
        assert done.error_code == ErrorCode.ENCODE_FAILED

    on_farm(tmp_path, test, script=attempts(EncodeError("ffmpeg died")))


def test_a_failure_that_is_the_inputs_fault_is_not_retried(tmp_path: Path) -> None:
    async def test(farm: Farm) -> None:
        job = await farm.coordinator.submit(farm.spec())
        done = await farm.until(job.id, TERMINAL)
        assert (done.status, done.attempts) == ("failed", 1)
        assert done.reason == "in.mp4: truncated"
        assert done.error_code == "truncated"

    truncated = InputError("in.mp4: truncated", code=ErrorCode.TRUNCATED)
    on_farm(tmp_path, test, script=attempts(truncated))


def test_a_job_whose_node_left_is_placed_again_whatever_its_attempts(tmp_path: Path) -> None:
    nodes = [fake_node("node-a"), fake_node("node-b")]

    def script(order: WorkOrder) -> Any:
        if order.attempt == 1:  # its node goes away with the encoder
            backend.node_list[:] = [n for n in backend.node_list if n.node_id != placed[0]]
            return WorkerLost("the encoder was lost")
        return Behaviour.SUCCEED

    placed: list[str] = []

    class Recording(FakeBackend):
        def create_encoder(self, placement: Placement) -> FakeEncoder:
            placed.append(placement.node_id)
            return super().create_encoder(placement)

    backend = Recording(nodes, script)

    async def main() -> None:
        (tmp_path / "in.mp4").write_bytes(b"")
        farm = Farm(tmp_path, backend, max_attempts=1)
        try:
            job = await farm.coordinator.submit(farm.spec())
            done = await farm.until(job.id, TERMINAL)
            assert done.status == "succeeded"
            assert placed[0] != placed[1]
            assert any("left the cluster mid-job; placing again" in r
                       for r in await farm.reasons(job.id))  # fmt: skip
            assert farm.coordinator.counters[JobCounter.NODE_LOSSES] == 1
        finally:
            await farm.coordinator.shutdown()

    asyncio.run(main())


def test_cancelling_a_queued_job_and_a_running_one(tmp_path: Path) -> None:
    async def test(farm: Farm) -> None:
        running = await farm.coordinator.submit(farm.spec())
        await farm.until(running.id, {"running"})
        job = await farm.coordinator.cancel(running.id)
        assert (job.status, job.error_code) == ("cancelled", "cancelled")
        assert not farm.backend.encoders[0].killed  # it stopped when asked: kept warm
        queued = await farm.coordinator.submit(farm.spec("b.mp4"))
        job = await farm.coordinator.cancel(queued.id)
        assert job.status == "cancelled"
        again = await farm.coordinator.cancel(queued.id)  # idempotent
        assert again.status == "cancelled"

    on_farm(tmp_path, test, script=attempts(Behaviour.HANG))


def test_an_encoder_that_ignores_cancel_is_killed_within_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(encodes_module, "CANCEL_WAIT_S", 0.2)

    async def test(farm: Farm) -> None:
        job = await farm.coordinator.submit(farm.spec())
        await farm.until(job.id, {"running"})
        done = await asyncio.wait_for(farm.coordinator.cancel(job.id), 2)
        assert done.status == "cancelled"
        assert farm.backend.encoders[0].killed

    on_farm(tmp_path, test, script=attempts(Behaviour.FREEZE))


def test_shutdown_puts_running_jobs_back_in_the_queue(tmp_path: Path) -> None:
    async def test(farm: Farm) -> None:
        job = await farm.coordinator.submit(farm.spec())
        await farm.until(job.id, {"running"})
        await farm.coordinator.shutdown()
        farm.coordinator = farm.open()  # a new life on the same SQLite file
        back = await farm.coordinator.get(job.id)
        assert (back.status, back.reason) == ("queued", "re-queued: framefleet was shut down")

    on_farm(tmp_path, test, script=attempts(Behaviour.HANG, Behaviour.SUCCEED))


def test_after_a_crash_running_jobs_are_queued_again_and_their_partials_removed(
    tmp_path: Path,
) -> None:
    async def test(farm: Farm) -> None:
        job = await farm.coordinator.submit(farm.spec())
        await farm.until(job.id, {"running"})
        partial = tmp_path / f".out.mp4.{job.id}.partial"
        partial.write_bytes(b"half")
        for task in farm.coordinator._tasks:  # the process dies: nothing winds down
            task.cancel()
        farm.coordinator = farm.open()
        back = await farm.coordinator.get(job.id)
        assert back.reason == "re-queued: the coordinator restarted"
        assert not partial.exists()
        done = await farm.until(job.id, TERMINAL)
        assert done.status == "succeeded"

    on_farm(tmp_path, test, script=attempts(Behaviour.HANG, Behaviour.SUCCEED))


def test_an_idempotency_key_returns_its_job_and_refuses_another_request(tmp_path: Path) -> None:
    async def test(farm: Farm) -> None:
        first = await farm.coordinator.submit(farm.spec(), "key-1")
        again = await farm.coordinator.submit(farm.spec(), "key-1")
        assert again.id == first.id
        with pytest.raises(IdempotencyConflict, match="used for a different request"):
            await farm.coordinator.submit(farm.spec("other.mp4"), "key-1")
        await farm.coordinator.shutdown()
        farm.coordinator = farm.open()  # keys survive a restart
        assert (await farm.coordinator.submit(farm.spec(), "key-1")).id == first.id

    on_farm(tmp_path, test)


def test_an_idempotency_key_expires(tmp_path: Path) -> None:
    async def test(farm: Farm) -> None:
        first = await farm.coordinator.submit(farm.spec(), "key-1")
        clock.advance(59)
        assert (await farm.coordinator.submit(farm.spec(), "key-1")).id == first.id
        clock.advance(1)
        assert (await farm.coordinator.submit(farm.spec(), "key-1")).id != first.id

    clock = FakeClock()
    on_farm(tmp_path, test, idempotency_ttl_s=60, clock=clock)


def test_a_batch_is_queued_whole_or_not_at_all(tmp_path: Path) -> None:
    async def test(farm: Farm) -> None:
        good = farm.spec("a.mp4")
        bad = JobSpec(kind=JobKind.TRANSCODE, input=str(farm.root / "in.mp4"),
                      output=str(farm.root.parent / "b.mp4"))  # fmt: skip
        with pytest.raises(JobFailure, match=r"^job 2 of 2: .*outside"):
            await farm.coordinator.submit_many([good, bad])
        assert await farm.coordinator.list_jobs() == []
        jobs = await farm.coordinator.submit_many([good, farm.spec("b.mp4")], "batch-1")
        again = await farm.coordinator.submit_many([good, farm.spec("b.mp4")], "batch-1")
        assert [j.id for j in again] == [j.id for j in jobs]
        # One file under two names (resolved once, by the coordinator): refused whole.
        (farm.root / "sub").mkdir()
        twice = [farm.spec("c.mp4"), farm.spec("sub/../c.mp4")]
        with pytest.raises(SpecError, match=r"^jobs 1 and 2 of 2 both write .*c\.mp4; give"):
            await farm.coordinator.submit_many(twice)
        assert len(await farm.coordinator.list_jobs()) == 2

    on_farm(tmp_path, test)


def test_a_custom_cost_model_judges_capacity_while_a_node_is_suspect(tmp_path: Path) -> None:
    """A worker lost on a node that stays makes it suspect for 10 s; a job the cost model
    says can never fit must still fail at once, by that cost model."""
    huge = CostModel(memory_mb={"h264": [(1 << 62, 10**6)], "hevc": [(1 << 62, 1)],
                                "av1": [(1 << 62, 1)]})  # fmt: skip

    async def test(farm: Farm) -> None:
        await farm.coordinator.submit(farm.spec(codec="hevc"))  # its worker is lost
        await until_true(lambda: farm.coordinator.view.has_suspects)
        job = await farm.coordinator.submit(farm.spec("big.mp4"))
        done = await farm.until(job.id, TERMINAL)
        assert (done.status, done.error_code) == ("failed", "no_capacity")
        assert "needs about 1000000 MiB of memory" in (done.reason or "")

    nodes = [fake_node("node-a"), fake_node("node-b")]
    script = attempts(WorkerLost("lost"), Behaviour.HANG)
    on_farm(tmp_path, test, costs=huge, nodes=nodes, script=script)


def test_a_round_costs_what_changed_not_the_length_of_the_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,200 jobs behind one long encode on a one-slot farm, then run one by one: each is
    offered to the job graphs once and read for placement a few times in all, not once
    per round (which would be some 700,000 times each), and they start in queue order."""
    from cluster.control.rules.dispatch import demand_for

    read = 0

    def counted(job: Job, media: Any) -> Any:
        nonlocal read
        read += 1
        return demand_for(job, media)

    monkeypatch.setattr("cluster.control.coordinator.demand_for", counted)
    started: list[str] = []

    def script(order: WorkOrder) -> Behaviour:
        started.append(order.spec.output.rsplit("/", 1)[-1])
        return Behaviour.HANG if order.spec.output.endswith("long.mp4") else Behaviour.SUCCEED

    async def test(farm: Farm) -> None:
        c = farm.coordinator
        considered = 0
        consider = c.graphs.consider

        def counting(job: Job, where: Any) -> Any:
            nonlocal considered
            considered += 1
            return consider(job, where)

        c.graphs.consider = counting  # type: ignore[method-assign,assignment]
        long = await c.submit(farm.spec("long.mp4"))
        await farm.until(long.id, {"running"})
        jobs = await c.submit_many([farm.spec(f"o{n:04}.mp4") for n in range(1200)])
        await until_true(lambda: all(c.table.get(j.id).input_media for j in jobs))
        c._forecast_every = c._shapes_at = math.inf  # no forecast, no autoscaler shapes: the
        read = 0  # rounds alone are counted
        for _ in range(20):  # rounds with nothing changed read the queue's head only
            c.dispatch_now()
        assert considered == 1201 and read <= 20, (considered, read)
        read, began = 0, time.monotonic()
        await c.cancel(long.id)
        for job in jobs:
            await farm.until(job.id, TERMINAL)
        seconds = math.ceil(time.monotonic() - began) + 1
        assert considered == 1201  # once each, however many rounds ran
        assert read <= 2 * 1200 + seconds * MAX_AUTOSCALER_BUNDLES, (read, seconds)
        assert started == ["long.mp4", *(f"o{n:04}.mp4" for n in range(1200))]

    on_farm(tmp_path, test, script=script, nodes=[fake_node(cpus=1)])


def test_a_forecast_of_many_running_encodes_lets_the_loop_run_between_its_slices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """400 encodes running and 50 queued: the loop's forecast runs in slices (here one
    step of 200 jobs at a time), other work runs between them, and when it is done every
    running and every queued job has its prediction."""
    from cluster.control import coordinator as coordinator_module

    monkeypatch.setattr(coordinator_module, "FORECAST_SLICE_S", 0.0)

    async def test(farm: Farm) -> None:
        c = farm.coordinator
        jobs = await c.submit_many([farm.spec(f"o{n:03}.mp4") for n in range(450)])
        await until_true(lambda: len(c.encodes.running) == 400, timeout=30)
        await until_true(lambda: all(c.table.get(j.id).input_media for j in jobs))
        for job in jobs:
            c.table.get(job.id).forecast = None
        turns = 0

        async def other_work() -> None:
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)

        ticker = asyncio.create_task(other_work())
        c._forecast_at = -math.inf
        c._forecast_later()
        task = c._forecasting_task
        assert task is not None
        await task
        ticker.cancel()
        assert turns >= 3, turns  # 400 running, 200 a step: the loop ran between them
        statuses = {c.table.get(j.id).status for j in jobs}
        assert statuses == {"running", "queued"}, statuses
        missing = [j.id for j in jobs if not (c.table.get(j.id).forecast or {}).get("finish_at")]
        assert missing == []

    on_farm(tmp_path, test, script=lambda order: Behaviour.HANG,
            nodes=[fake_node(cpus=400.0, memory_mb=2**20)], max_jobs_per_node=400)  # fmt: skip


def test_finished_jobs_leave_memory_in_the_order_they_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs are forgotten once past the retention window, oldest first, without looking
    at those still kept; a job that ended later, or was retried and runs, stays. (The
    backstop sweep of every job is off: what ended is found in the order it ended.)"""
    from cluster.control.fakes import FakeClock
    from cluster.control.records import jobtable

    monkeypatch.setattr(jobtable, "SWEEP_S", math.inf)
    clock = FakeClock()
    truncated = InputError("in.mp4: truncated", code=ErrorCode.TRUNCATED)

    async def test(farm: Farm) -> None:
        c = farm.coordinator
        farm.backend.script = lambda order: truncated  # they fail: a failed job may be retried
        early = [await c.submit(farm.spec(f"e{n}.mp4")) for n in range(3)]
        for job in early:
            await farm.until(job.id, TERMINAL)
        clock.advance(300)
        farm.backend.script = lambda order: Behaviour.SUCCEED
        late = await c.submit(farm.spec("late.mp4"))
        await farm.until(late.id, TERMINAL)
        clock.advance(301)  # the early ones are past 600 s, the late one is not
        farm.backend.script = lambda order: Behaviour.HANG
        await c.retry(early[0].id)
        await farm.until(early[0].id, {"running"})
        jobs = c.table.jobs  # housekeeping forgets them (every node refresh)
        await until_true(lambda: early[1].id not in jobs and early[2].id not in jobs)
        assert early[0].id in jobs and late.id in jobs
        assert (await c.get(early[1].id)).status == "failed"  # still in SQLite
        clock.advance(600)
        await until_true(lambda: late.id not in jobs)
        assert early[0].id in jobs  # it runs

    on_farm(tmp_path, test, clock=clock, finished_retention_s=600)


def test_a_forecast_forced_while_another_waits_to_begin_does_not_stop_later_ones(
    tmp_path: Path,
) -> None:
    """An import of speeds forces a forecast; one the loop had just started (not begun
    yet) is cancelled, and the loop's forecasts go on afterwards."""

    async def test(farm: Farm) -> None:
        c = farm.coordinator
        job = await c.submit(farm.spec())
        await farm.until(job.id, {"running"})
        c._forecast_at = -math.inf
        c._forecast_later()
        waiting = c._forecasting_task
        assert waiting is not None
        c._forecast(force=True)  # before the loop gave it its first turn
        await asyncio.sleep(0)
        assert waiting.cancelled()
        c._forecast_at = -math.inf
        c._forecast_later()
        again = c._forecasting_task
        assert again is not None and again is not waiting
        await again
        assert c._forecasting_task is None
        assert (c.table.get(job.id).forecast or {}).get("finish_at")

    on_farm(tmp_path, test, script=lambda order: Behaviour.HANG)
