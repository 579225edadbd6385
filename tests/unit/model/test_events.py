"""The job event log that subscribers long-poll."""

from __future__ import annotations

import asyncio
import time

from cluster.model.events import EventBatch, EventLog
from cluster.model.jobs import Job, JobKind, JobSpec, JobStatus


def publish(log: EventLog, job_id: str, status: str = "running") -> int:
    spec = JobSpec(kind=JobKind.PROBE, input="/media/in.mp4")
    return log.publish(Job(id=job_id, spec=spec, status=JobStatus(status)))


def test_since_returns_only_newer_events_for_the_chosen_jobs_in_order() -> None:
    log = EventLog(start=0)
    for job in ("a", "b", "a", "c", "a"):
        publish(log, job)
    events, gap = log.since(1, frozenset({"a"}))
    assert [e.seq for e in events] == [3, 5] and not gap
    assert [e.seq for e in log.since(3)[0]] == [4, 5]
    assert log.since(5) == ([], False)


def test_a_subscriber_that_fell_behind_or_predates_a_restart_gets_a_gap() -> None:
    log = EventLog(maxlen=3, start=0)
    for _ in range(6):
        publish(log, "a")
    events, gap = log.since(1)
    assert gap and [e.seq for e in events] == [4, 5, 6]
    assert log.since(3)[1] is False  # nothing was lost between 3 and the oldest kept, 4
    assert log.since(99) == ([], True)  # a cursor ahead of the log


def test_a_restarted_log_numbers_above_the_old_one_so_old_cursors_see_a_gap() -> None:
    before = EventLog()
    for _ in range(50):
        publish(before, "a")
    cursor = before.last_seq
    after = EventLog(now=lambda: time.time() + 0.002)  # the coordinator restarted, 2 ms on
    publish(after, "a", "succeeded")
    events, gap = after.since(cursor)
    assert gap and [e.status for e in events] == ["succeeded"]
    assert after.since(after.last_seq) == ([], False)


async def settle() -> None:
    """Let every task that can run run (a few turns of the loop, no clock)."""
    for _ in range(10):
        await asyncio.sleep(0)


def test_wait_wakes_on_a_matching_event_and_times_out_with_the_cursor() -> None:
    async def scenario() -> tuple[EventBatch, EventBatch]:
        log = EventLog(start=0)
        publish(log, "other")
        waiter = asyncio.create_task(log.wait(log.last_seq, frozenset({"a"}), timeout=5))
        await settle()
        publish(log, "other")
        await settle()
        assert not waiter.done()  # another job's event does not answer it
        publish(log, "a", "succeeded")
        woke = await asyncio.wait_for(waiter, 1)
        idle = await log.wait(log.last_seq, timeout=0.05)
        return woke, idle

    woke, idle = asyncio.run(scenario())
    assert [(e.job_id, e.status) for e in woke.events] == [("a", "succeeded")]
    assert woke.last_seq == 3 and not woke.gap
    assert idle == EventBatch(events=(), last_seq=3, gap=False)


def test_a_held_batch_wakes_its_subscribers_once_with_every_event() -> None:
    async def scenario() -> tuple[list[int], EventBatch]:
        log = EventLog(start=0)
        woken: list[int] = []

        async def subscriber() -> EventBatch:
            batch = await log.wait(0, timeout=5)
            woken.append(len(batch.events))
            return batch

        waiter = asyncio.create_task(subscriber())
        await settle()
        with log.held():
            for n in range(100):
                publish(log, f"job-{n}")
                await settle()  # a held batch wakes nobody, however long it takes
                assert not waiter.done()
        return woken, await asyncio.wait_for(waiter, 1)

    woken, batch = asyncio.run(scenario())
    assert woken == [100]
    assert [e.job_id for e in batch.events] == [f"job-{n}" for n in range(100)]
