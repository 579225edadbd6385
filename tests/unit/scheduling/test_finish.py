"""Placement by finish time on a farm whose nodes differ: the job goes where it finishes
first, waits for a faster node that frees soon, does not all wait for the one fast node
(each waiting job holds it for its own time), never waits for nodes that could not run
it, and leaves a farm of one kind to best fit."""

from __future__ import annotations

from cluster import Hardware, Job, JobKind, JobSpec
from cluster.scheduling.costs import CostModel
from cluster.scheduling.finish import FinishTime
from cluster.scheduling.planner import Demand, NodeState, Planner

COSTS = CostModel()
SMALL = Demand(JobKind.TRANSCODE, Hardware.CPU, "h264", 640, 360, encoder="libx264")
SPEED = {"fast": 10.0, "slow": 40.0}  # seconds a job takes on each


def job(i: int) -> Job:
    return Job(id=f"j{i}", spec=JobSpec(JobKind.TRANSCODE, input=f"/m/{i}", output=f"/o/{i}"),
               seq=i)  # fmt: skip


def seconds(job: Job, node_id: str, hardware: Hardware, gpu: str | None, cores: float) -> float:
    return SPEED[node_id]


def setup(
    fast_busy_until: float | None, fast_encoders: frozenset[str] | None = None
) -> tuple[Planner, FinishTime]:
    busy = fast_busy_until is not None
    states = [NodeState("fast", "10.0.0.1", 1, cpus_used=1 if busy else 0,
                        running=1 if busy else 0, encoders=fast_encoders),
              NodeState("slow", "10.0.0.2", 2)]  # fmt: skip
    ends = [("fast", fast_busy_until)] if fast_busy_until is not None else []
    names = {"fast": "fast", "slow": "slow"}
    finish = FinishTime.of(states, names, ends, seconds, 0.0, costs=COSTS)
    assert finish is not None
    return Planner(states, costs=COSTS), finish


def test_a_job_goes_where_it_finishes_first_and_says_so() -> None:
    planner, finish = setup(None)
    placed = finish.place(planner, job(1), SMALL)
    assert placed is not None and placed.node_id == "fast"
    assert "finishes ~" in placed.reason and "on fast" in placed.reason and "vs ~" in placed.reason
    assert planner.free_cpus("fast") == 0  # the round's planner took the same room


def test_a_job_waits_for_a_faster_node_that_frees_soon_and_the_queue_spreads() -> None:
    planner, finish = setup(fast_busy_until=5.0)
    first = finish.place(planner, job(1), SMALL)  # 5 + 10 = 15 s there vs 40 s here
    assert first is None and "waits for fast" in finish.waits["j1"]
    second = finish.place(planner, job(2), SMALL)  # fast held until 15: 25 s < 32 s
    assert second is None
    third = finish.place(planner, job(3), SMALL)  # fast held until 25: 35 s > 32 s
    assert third is not None and third.node_id == "slow"


def test_a_job_never_waits_for_nodes_that_could_not_run_it() -> None:
    planner, finish = setup(fast_busy_until=5.0, fast_encoders=frozenset({"libx265"}))
    placed = finish.place(planner, job(1), SMALL)  # fast has no libx264: not waited for
    assert placed is not None and placed.node_id == "slow"


def test_a_farm_of_one_kind_is_left_to_best_fit() -> None:
    states = [NodeState("a", "10.0.0.1", 8), NodeState("b", "10.0.0.2", 8)]
    assert FinishTime.of(states, {}, [], seconds, 0.0, costs=COSTS) is None


def test_a_node_capped_at_no_jobs_or_busy_with_no_known_end_is_never_waited_for() -> None:
    states = [NodeState("fast", "10.0.0.1", 1, max_jobs=0), NodeState("slow", "10.0.0.2", 2)]
    assert FinishTime.of(states, {}, [], seconds, 0.0, costs=COSTS) is None  # one kind left
    busy = [NodeState("fast", "10.0.0.1", 1, cpus_used=1, running=1),
            NodeState("slow", "10.0.0.2", 2)]  # fmt: skip
    finish = FinishTime.of(busy, {}, [], seconds, 0.0, costs=COSTS)  # its end not known yet
    assert finish is not None
    placed = finish.place(Planner(busy, costs=COSTS), job(1), SMALL)
    assert placed is not None and placed.node_id == "slow"


def test_jobs_placed_in_the_same_round_count_as_running_for_the_jobs_after_them() -> None:
    planner, finish = setup(None)  # both idle: fast (1 core, 10 s a job), slow (2 cores, 40 s)
    first = finish.place(planner, job(1), SMALL)
    assert first is not None and first.node_id == "fast"
    assert finish.place(planner, job(2), SMALL) is None  # fast again at 10 + 10 < 32 s
    third = finish.place(planner, job(3), SMALL)  # fast held until 20: 30 s < 32 s: waits
    assert third is None
    fourth = finish.place(planner, job(4), SMALL)  # fast held until 30: 40 s > 32 s
    assert fourth is not None and fourth.node_id == "slow"


def test_a_job_whose_media_every_node_sees_is_placed_by_finish_time_too() -> None:
    from cluster.control.rules.dispatch import Reach, plan_round

    planner, finish = setup(None)
    seen = Reach(seers=frozenset({"fast", "slow"}), source="fast", source_address="10.0.0.1",
                 input_bytes=0, sends_back=True, worth_moving=False)  # fmt: skip
    plan = plan_round([(job(1), SMALL)], planner, planner, COSTS, lambda j: seen, finish=finish)
    assert [p.node_id for _, p in plan.start] == ["fast"]
    assert "finishes ~" in plan.start[0][1].reason
