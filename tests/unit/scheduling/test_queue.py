"""The ready queue's index: the same order a sort by ``queue_key`` gives, at any time,
without sorting the queue each round."""

from __future__ import annotations

import random
from itertools import islice

from cluster.scheduling.planner import queue_key
from cluster.scheduling.queue import ReadyQueue

AGING = 60.0


def sorted_ids(jobs: dict[str, tuple[int, int, float, bool]], now: float) -> list[str]:
    """The queue as a full sort orders it (the coordinator's rule before the index)."""

    def key(job_id: str) -> tuple[bool, tuple[float, int]]:
        priority, seq, since, finishing = jobs[job_id]
        return not finishing, queue_key(priority, seq, now - since, AGING)

    return sorted(jobs, key=key)


def test_the_index_orders_as_a_full_sort_would_while_jobs_age_come_and_go() -> None:
    rng = random.Random(7)
    queue = ReadyQueue(AGING)
    jobs: dict[str, tuple[int, int, float, bool]] = {}  # id -> (priority, seq, since, finishing)
    now, seq = 1000.0, 0
    for step in range(400):
        now += rng.choice([0.0, 0.5, 7.0, 31.0, 59.9, 60.0, 120.0])
        for _ in range(rng.randint(0, 6)):  # submitted, or re-queued with a later "since"
            seq += 1
            job_id = f"j{rng.randint(0, 300) if rng.random() < 0.2 else 1000 + seq}"
            old = jobs.get(job_id)
            entry = (rng.choice([0, 0, 0, 1, 5]), old[1] if old else seq,
                     now - rng.choice([0.0, 30.0, 200.0]), rng.random() < 0.05)  # fmt: skip
            jobs[job_id] = entry
            queue.add(job_id, priority=entry[0], seq=entry[1], since=entry[2], now=now,
                      finishing=entry[3])  # fmt: skip
        for job_id in rng.sample(sorted(jobs), min(len(jobs), rng.randint(0, 4))):
            del jobs[job_id]  # started or cancelled
            queue.discard(job_id)
        assert len(queue) == len(jobs)
        assert list(queue.ordered(now)) == sorted_ids(jobs, now), step


def test_a_round_reads_the_head_only_and_each_tenant_has_its_own_order() -> None:
    queue = ReadyQueue(AGING)
    for n in range(100_000):
        queue.add(f"a{n}", priority=0, seq=n, since=0.0, now=0.0, tenant="a")
    queue.add("b0", priority=0, seq=100_001, since=0.0, now=0.0, tenant="b")
    queue.add("urgent", priority=9, seq=100_002, since=0.0, now=0.0, tenant="a")
    assert list(islice(queue.ordered(1.0), 3)) == ["urgent", "a0", "a1"]
    per_tenant = queue.tenants(1.0)
    assert list(islice(per_tenant["a"], 2)) == ["urgent", "a0"]
    assert list(per_tenant["b"]) == ["b0"]


def test_waiting_lifts_old_low_priority_work_past_new_high_priority_work() -> None:
    queue = ReadyQueue(AGING)
    queue.add("old-low", priority=0, seq=1, since=0.0, now=0.0)
    queue.add("new-high", priority=2, seq=2, since=100.0, now=100.0)
    assert list(queue.ordered(100.0)) == ["new-high", "old-low"]  # one level gained of two
    assert list(queue.ordered(119.9)) == ["new-high", "old-low"]
    assert list(queue.ordered(120.0)) == ["old-low", "new-high"]  # two: a tie, by seq
