"""The queue played forward: predicted starts and finishes on a copy of the planner."""

from __future__ import annotations

import pytest

from cluster import Hardware, JobKind
from cluster.scheduling.costs import CostModel
from cluster.scheduling.eta import forecast
from cluster.scheduling.planner import Demand, NodeState, Placement, Planner

SMALL = Demand(JobKind.TRANSCODE, Hardware.CPU, "h264", 640, 360)  # one core


def test_jobs_start_as_room_frees_and_finish_after_their_own_time() -> None:
    planner = Planner([NodeState("n1", "10.0.0.1", 4)], costs=CostModel())
    queue = [(i, SMALL) for i in range(10)]
    got = forecast(planner, [], queue, lambda key, p: 10.0, now=100.0)
    starts = sorted(f.start_at for f in got.values())
    assert starts == [100.0] * 4 + [110.0] * 4 + [120.0] * 2
    assert all(f.finish_at == f.start_at + 10.0 for f in got.values())
    assert got[9].finish_at == 130.0


def test_what_runs_is_waited_for_and_each_node_has_its_own_speed() -> None:
    planner = Planner([NodeState("slow", "10.0.0.1", 1, cpus_used=1, running=1),
                       NodeState("fast", "10.0.0.2", 1)], costs=CostModel())  # fmt: skip
    running = [(Placement("slow", "10.0.0.1", Hardware.CPU, 1.0, ""), 130.0)]

    def seconds(key: int, placement: Placement) -> float:
        return 10.0 if placement.node_id == "fast" else 40.0

    got = forecast(planner, running, [(0, SMALL), (1, SMALL), (2, SMALL)], seconds, now=100.0)
    assert (got[0].start_at, got[0].finish_at, got[0].node_id) == (100.0, 110.0, "fast")
    assert (got[1].start_at, got[1].node_id) == (110.0, "fast")
    assert got[2].start_at == 120.0  # fast again: it frees before the slow one's job ends


def test_past_the_horizon_the_finishing_rate_is_kept_up() -> None:
    planner = Planner([NodeState("n1", "10.0.0.1", 2)], costs=CostModel())
    queue = [(i, SMALL) for i in range(100)]
    got = forecast(planner, [], queue, lambda key, p: 10.0, now=0.0, horizon=20)
    assert len(got) == 100
    assert got[99].finish_at == pytest.approx(500.0, rel=0.05)  # 2 at a time, 10 s each
    assert all(got[i].start_at <= got[i + 1].start_at for i in range(99))
