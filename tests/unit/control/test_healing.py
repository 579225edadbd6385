"""The farm heals itself: the stall watchdog, quarantine, poison jobs and drains, on a
fake backend (no Ray, no ffmpeg); the same on real ffmpeg and Ray is in
tests/integration/cluster/test_healing.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from cluster import ErrorCode, Hardware, JobKind, JobSpec, NodeRecord, Speed
from cluster.control.coordinator import Coordinator
from cluster.control.fakes import (
    Behaviour,
    FakeBackend,
    FakeClock,
    FakeEncoder,
    fake_media,
    fake_node,
)
from cluster.control.rules.health import Health, HealthState
from cluster.control.rules.watchdog import MIN_STALL_S, Watchdog, limits_for
from cluster.errors import EncodeError, EncoderUnavailable, NodeNotFound
from cluster.media.work import WorkOrder
from cluster.model.counters import JobCounter
from cluster.model.progress import ProgressSnapshot
from cluster.scheduling.costs import CostModel
from cluster.scheduling.planner import Placement
from tests.unit.control.test_coordinator import TERMINAL, Farm, attempts, on_farm

COSTS = CostModel()

# ---- the watchdog's limits and clock ---------------------------------------------------


def test_default_limits_follow_the_expected_speed_and_never_go_below_a_minute() -> None:
    spec = JobSpec(kind=JobKind.TRANSCODE, input="/m/a.mp4", output="/m/b.mp4")
    small = limits_for(spec, Hardware.CPU, fake_media("a", duration_s=600), COSTS, stall_s=None,
                       runtime_factor=10)  # fmt: skip
    assert small.stall_s == MIN_STALL_S
    # 640x360 h264 is expected at 4x real time: 600 s in 150 s, ten times that at most.
    assert small.max_runtime_s == 1500
    slow = JobSpec(kind=JobKind.TRANSCODE, input="/m/a.mp4", output="/m/b.mp4", codec="av1",
                   speed=Speed.SLOW)  # fmt: skip
    big = limits_for(slow, Hardware.CPU, fake_media("a", duration_s=600, width=7680,
                     height=4320), COSTS, stall_s=None, runtime_factor=10)  # fmt: skip
    assert big.stall_s > 10 * MIN_STALL_S  # an 8K AV1 slow encode may sit still for minutes
    assert big.max_runtime_s > 100 * small.max_runtime_s
    set_ = limits_for(spec, Hardware.CPU, fake_media("a", duration_s=1), COSTS, stall_s=5,
                      runtime_factor=10)  # fmt: skip
    assert (set_.stall_s, set_.max_runtime_s) == (5, 10)  # never under twice the stall


def test_the_watchdog_reports_a_stall_and_a_run_past_its_ceiling_once() -> None:
    spec = JobSpec(kind=JobKind.TRANSCODE, input="/m/a.mp4", output="/m/b.mp4")
    limits = limits_for(spec, Hardware.CPU, fake_media("a", duration_s=1), COSTS, stall_s=10,
                        runtime_factor=10)  # fmt: skip
    dog = Watchdog()
    dog.track("moving", limits, "10.0.0.1", now=0)
    dog.track("stuck", limits, "10.0.0.2", now=0)
    for t in range(1, 19):
        dog.progressed("moving", ProgressSnapshot(frame=t, out_time_s=t / 25), now=t)
        dog.progressed("stuck", ProgressSnapshot(frame=3, out_time_s=0.12), now=t)
    assert dog.overdue(now=9) == []
    found = dict(dog.overdue(now=18))
    assert list(found) == ["stuck"]  # progress without advance is not progress
    assert str(found["stuck"]) == "stalled: no progress for 17 s on 10.0.0.2 (limit 10 s)"
    assert found["stuck"].code is ErrorCode.STALLED
    assert dog.overdue(now=19) == []  # reported once
    dog.progressed("moving", ProgressSnapshot(frame=30), now=20)
    (late,) = dog.overdue(now=21)
    assert late[0] == "moving" and late[1].code is ErrorCode.TIMED_OUT
    assert str(late[1]) == "timed out: ran 21 s, past its ceiling of 20 s, on 10.0.0.1"


def test_a_long_download_is_progress_and_its_time_is_allowed_for() -> None:
    spec = JobSpec(kind=JobKind.TRANSCODE, input="s3://media/a.mp4", output="s3://media/b.mp4")
    media = fake_media("a", duration_s=1)
    plain = limits_for(spec, Hardware.CPU, media, COSTS, stall_s=10, runtime_factor=10)
    staged = limits_for(spec, Hardware.CPU, media, COSTS, stall_s=10, runtime_factor=10,
                        transfer_bytes=2 * 50 * 2**30)  # a 50 GiB master, in and out  # fmt: skip
    assert staged.max_runtime_s - plain.max_runtime_s > 10 * 4000  # 100 GiB at 25 MiB/s, x10
    dog = Watchdog()
    dog.track("fetching", staged, "10.0.0.1", now=0)
    for t in range(1, 60):  # no frame yet, only bytes arriving
        dog.progressed("fetching", ProgressSnapshot(moved_bytes=t * 2**20), now=t)
    assert dog.overdue(now=60) == []
    dog.progressed("fetching", ProgressSnapshot(moved_bytes=59 * 2**20), now=61)  # no more
    (stalled,) = dog.overdue(now=72)
    assert stalled[0] == "fetching" and stalled[1].code is ErrorCode.STALLED


# ---- quarantine, by the clock ------------------------------------------------------------


def test_k_failures_in_a_row_quarantine_then_one_trial_heals_or_doubles_the_back_off() -> None:
    health = Health(after=3, window_s=100, base_s=10, max_s=25)
    gpu = "gpu:GPU-1"
    assert not health.failed(gpu, "a", "stalled", now=0)
    health.succeeded(gpu, now=1)  # a success in between: not in a row
    for i, job in enumerate("bcd"):
        quarantined = health.failed(gpu, job, "NVENC out of memory", now=2 + i)
    assert quarantined and health.state(gpu, now=5) is HealthState.QUARANTINED
    assert health.closed(gpu, now=11)
    view = health.view(gpu, now=5)
    assert view is not None
    assert view["reason"] == "3 failures in a row, the last: NVENC out of memory"
    assert view["until"] == 14
    # The back-off is over: one trial job may go.
    assert health.state(gpu, now=14) is HealthState.TRIAL and not health.closed(gpu, now=14)
    health.started(gpu, "trial-1", now=14)
    assert health.closed(gpu, now=14)  # only one trial at a time
    assert health.failed(gpu, "trial-1", "NVENC out of memory", now=15)
    view = health.view(gpu, now=15)
    assert view is not None
    assert view["until"] == 35 and view["reason"] == "trial job failed: NVENC out of memory"
    health.started(gpu, "trial-2", now=35)
    assert health.failed(gpu, "trial-2", "again", now=36)
    second = health.view(gpu, now=36)
    assert second is not None and second["until"] == 36 + 25  # capped
    health.started(gpu, "trial-3", now=61)
    health.succeeded(gpu, now=62)
    assert health.state(gpu, now=62) is HealthState.HEALTHY
    assert health.view(gpu, now=62) is None


def test_old_strikes_are_forgotten_and_a_poison_jobs_strikes_taken_back() -> None:
    health = Health(after=2, window_s=10)
    health.failed("node:n1", "a", "crash", now=0)
    assert not health.failed("node:n1", "b", "crash", now=11)  # the first one is too old
    health.forgive("b")
    assert not health.failed("node:n1", "c", "crash", now=12)  # b's strike was taken back
    assert health.failed("node:n1", "d", "crash", now=13)
    assert health.release("node:n1") and health.state("node:n1", now=14) is HealthState.HEALTHY
    assert not health.release("node:n1")


# ---- the coordinator, on a fake farm -----------------------------------------------------


class Recording(FakeBackend):
    """Remembers the node of every encoder it made, in order."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.placed: list[str] = []

    def create_encoder(self, placement: Placement) -> FakeEncoder:
        self.placed.append(placement.node_id)
        return super().create_encoder(placement)


def run_on(tmp_path: Path, backend: FakeBackend, test: Any, **config: Any) -> None:
    (tmp_path / "in.mp4").write_bytes(b"fake")

    async def main() -> None:
        farm = Farm(tmp_path, backend, **config)
        try:
            await test(farm)
        finally:
            await farm.coordinator.shutdown()

    asyncio.run(main())


def test_a_stalled_encode_is_killed_and_retried_on_another_node(tmp_path: Path) -> None:
    backend = Recording([fake_node("node-a"), fake_node("node-b")],
                        attempts(Behaviour.HANG, Behaviour.SUCCEED))  # fmt: skip

    async def test(farm: Farm) -> None:
        job = await farm.coordinator.submit(farm.spec())
        done = await farm.until(job.id, TERMINAL)
        assert (done.status, done.attempts) == ("succeeded", 2)
        first, second = backend.placed
        assert first != second
        (failure,) = done.failures
        assert (failure.node_id, failure.code, failure.fault) == (first, "stalled", "node")
        assert failure.reason.startswith("stalled: no progress for")
        assert done.placement is not None
        assert f"; not on {failure.address}, where it failed" in done.placement.reason
        assert done.limits == {"stall_s": 0.2, "max_runtime_s": 25.0}
        reasons = await farm.reasons(job.id)
        assert any(r.startswith("attempt 1 failed: stalled: no progress for") for r in reasons)
        assert farm.coordinator.counters[JobCounter.STALLS] == 1

    run_on(tmp_path, backend, test, stall_s=0.2)


def test_a_failing_node_is_quarantined_given_a_trial_and_healed(tmp_path: Path) -> None:
    broken = {"yes": True}

    def script(order: WorkOrder) -> Any:
        return EncoderUnavailable("this node's ffmpeg crashed at start") if broken["yes"] else (
            Behaviour.SUCCEED)  # fmt: skip

    async def test(farm: Farm) -> None:
        c = farm.coordinator
        for name in ("a.mp4", "b.mp4"):
            job = await c.submit(farm.spec(name))
            done = await farm.until(job.id, TERMINAL)
            assert done.status == "failed"
        (node,) = await c.nodes()
        assert node.state == "quarantined"
        assert node.quarantine is not None
        assert node.quarantine["reason"] == (
            "2 failures in a row, the last: this node's ffmpeg crashed at start"
        )
        waiting = await c.submit(farm.spec("c.mp4"))
        assert (await farm.settled(waiting.id)).status == "queued"  # none while quarantined
        broken["yes"] = False
        clock.advance(59)
        assert (await farm.settled(waiting.id)).status == "queued"  # a minute: not yet
        clock.advance(1)
        c.dispatch_now()
        done = await farm.until(waiting.id, TERMINAL)  # the trial job
        assert done.status == "succeeded"
        (node,) = await c.nodes()
        assert (node.state, node.quarantine) == ("ready", None)
        assert c.counters[JobCounter.QUARANTINES] == 1

    clock = FakeClock()
    run_on(tmp_path, FakeBackend(None, script), test, max_attempts=1, quarantine_after=2,
           quarantine_s=60, clock=clock)  # fmt: skip


def test_strikes_and_quarantines_are_saved_and_restored() -> None:
    health = Health(after=3, base_s=60)
    health.failed("node:a", "j1", "stalled", now=0.0)
    health.failed("node:a", "j2", "stalled", now=1.0)
    health.failed("gpu:G", "j3", "nvenc", now=1.0)
    health.failed("gpu:G", "j4", "nvenc", now=2.0)
    health.failed("gpu:G", "j5", "nvenc", now=3.0)
    again = Health(after=3, base_s=60)  # a restarted coordinator
    again.restore(health.saved())
    assert again.state("gpu:G", 10.0) is HealthState.QUARANTINED
    assert again.view("gpu:G", 10.0) == health.view("gpu:G", 10.0)
    assert again.failed("node:a", "j6", "stalled", now=4.0)  # the third in a row, not the first
    assert again.saved().keys() == {"node:a", "gpu:G"}


async def nodes_of(coordinator: Coordinator) -> list[NodeRecord]:
    """The nodes, once a (re)started coordinator has seen them."""
    while not (found := await coordinator.nodes()):
        await asyncio.sleep(0.01)
    return found


def test_a_quarantine_outlives_a_restart_and_an_operator_releases_it(tmp_path: Path) -> None:
    async def test(farm: Farm) -> None:
        job = await farm.coordinator.submit(farm.spec("a.mp4"))
        assert (await farm.until(job.id, TERMINAL)).status == "failed"
        (before,) = await farm.coordinator.nodes()
        assert before.state == "quarantined"
        await farm.coordinator.shutdown()  # a restart does not hand it K more jobs
        farm.coordinator = c = farm.open()
        (after,) = await nodes_of(c)
        assert after.state == "quarantined" and after.quarantine is not None
        assert before.quarantine is not None
        assert after.quarantine["until"] == before.quarantine["until"]
        assert after.quarantine["reason"] == before.quarantine["reason"]
        with pytest.raises(NodeNotFound, match="no node 'nope' in the cluster"):
            await c.release("nope")
        assert await c.release("node-1") == "node:node-1 released"
        assert (await c.nodes())[0].state == "ready"
        assert await c.release("node-1") == "node:node-1 was not quarantined"
        await c.shutdown()
        farm.coordinator = farm.open()  # the release is kept too
        assert (await nodes_of(farm.coordinator))[0].state == "ready"

    run_on(tmp_path, FakeBackend(None, attempts(EncoderUnavailable("no ffmpeg"))), test,
           max_attempts=1, quarantine_after=1, quarantine_s=600)  # fmt: skip


def test_a_job_that_crashes_encoders_on_three_nodes_is_poison_and_strikes_are_taken_back(
    tmp_path: Path,
) -> None:
    backend = Recording([fake_node(f"node-{x}") for x in "abc"],
                        attempts(EncodeError("ffmpeg was killed by signal 11")))  # fmt: skip

    async def test(farm: Farm) -> None:
        job = await farm.coordinator.submit(farm.spec())
        done = await farm.until(job.id, TERMINAL)
        assert (done.status, done.error_code, done.attempts) == ("failed", ErrorCode.POISON, 3)
        assert sorted(backend.placed) == ["node-a", "node-b", "node-c"]  # never the same twice
        assert done.reason is not None
        assert done.reason.startswith("poison: crashed encoders on nodes ")
        for node in await farm.coordinator.nodes():
            assert node.address in done.reason
            assert (node.state, node.quarantine) == ("ready", None)  # nothing held against them
        assert farm.coordinator.counters[JobCounter.POISON_JOBS] == 1

    run_on(tmp_path, backend, test, max_attempts=10, quarantine_after=2)


def test_a_drained_node_finishes_its_jobs_takes_no_new_ones_and_stays_drained(
    tmp_path: Path,
) -> None:
    async def test(farm: Farm) -> None:
        c = farm.coordinator
        running = await c.submit(farm.spec("a.mp4"))
        await farm.until(running.id, {"running"})
        node = await c.drain("node-1")
        assert (node.state, node.running_jobs) == ("draining", (running.id,))
        waiting = await c.submit(farm.spec("b.mp4"))
        assert (await farm.settled(waiting.id)).status == "queued"
        assert (await c.get(running.id)).status == "running"  # not stopped by the drain
        await c.cancel(running.id)
        assert (await c.nodes())[0].state == "drained"
        await c.shutdown()  # a restart keeps the drain
        farm.coordinator = farm.open()
        await farm.coordinator.drain("node-1")  # idempotent
        await nodes_of(farm.coordinator)
        assert (await farm.settled(waiting.id)).status == "queued"
        node = await farm.coordinator.drain("node-1", on=False)
        assert node.state == "ready"
        await farm.until(waiting.id, {"running"})

    on_farm(tmp_path, test, script=attempts(Behaviour.HANG))
