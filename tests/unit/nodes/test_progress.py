"""A node's progress batches: newest report per encode, one batch in flight, sent once per
interval (or at once for an encode's last report)."""

from __future__ import annotations

import asyncio

from cluster.model.progress import ProgressReport, ProgressSnapshot
from cluster.nodes.progress import ProgressBatcher
from tests.helpers import until_true


def test_each_encode_sends_its_newest_report_and_nothing_when_idle() -> None:
    async def scenario() -> list[list[ProgressReport]]:
        sent: list[list[ProgressReport]] = []

        async def send(batch: list[ProgressReport]) -> None:
            sent.append(batch)

        batcher = ProgressBatcher(send, interval_s=0.01)
        for frame in range(1, 6):  # five reports of job a, three of b, before a batch
            batcher.add("a", 1, ProgressSnapshot(frame=frame))
            if frame <= 3:
                batcher.add("b", 2, ProgressSnapshot(frame=frame * 10))
        runner = asyncio.create_task(batcher.run())
        await until_true(lambda: sent)  # the next interval sends it
        await batcher.flush()  # nothing held: nothing sent
        runner.cancel()
        return sent

    sent = asyncio.run(scenario())
    assert len(sent) == 1
    assert [(r.job_id, r.attempt, r.snapshot.frame) for r in sent[0]] == [
        ("a", 1, 5), ("b", 2, 30)]  # fmt: skip


def test_a_slow_head_gets_one_batch_at_a_time_and_only_the_newest_reports() -> None:
    async def scenario() -> tuple[list[list[int | None]], int, int]:
        sent: list[list[int | None]] = []
        in_flight = peak = 0
        gate = asyncio.Event()

        async def send(batch: list[ProgressReport]) -> None:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            sent.append([r.snapshot.frame for r in batch])
            await gate.wait()  # the head takes its time
            in_flight -= 1

        batcher = ProgressBatcher(send, interval_s=0.001)
        runner = asyncio.create_task(batcher.run())
        batcher.add("a", 1, ProgressSnapshot(frame=1))
        await until_true(lambda: sent)  # the first batch is stuck at the head
        for frame in range(2, 50):
            batcher.add("a", 1, ProgressSnapshot(frame=frame))
            await asyncio.sleep(0)
        held = batcher.held  # newer reports replaced older ones while it waited
        gate.set()
        await until_true(lambda: len(sent) == 2)
        runner.cancel()
        return sent, peak, held

    sent, peak, held = asyncio.run(scenario())
    assert (peak, held) == (1, 1)
    assert sent == [[1], [49]]


def test_an_encodes_last_report_goes_at_once_and_a_failed_send_is_dropped() -> None:
    async def scenario() -> tuple[list[int | None], int]:
        sent: list[int | None] = []
        calls = 0

        async def send(batch: list[ProgressReport]) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise ConnectionError("the head is restarting")
            sent.extend(r.snapshot.frame for r in batch)

        batcher = ProgressBatcher(send, interval_s=3600)  # only a last report sends now
        runner = asyncio.create_task(batcher.run())
        batcher.add("a", 1, ProgressSnapshot(frame=10, done=True))
        await until_true(lambda: calls == 1)  # sent at once (and failed)
        batcher.add("b", 1, ProgressSnapshot(frame=20, done=True))
        await until_true(lambda: sent)
        runner.cancel()
        return sent, batcher.held

    sent, held = asyncio.run(scenario())
    assert sent == [20]  # the failed batch is not resent (an outcome carries the last word)
    assert held == 0
