"""Fair share between tenants (weighted DRF): who gets the next free slot, the limits, and
what a placement says about it. Pure: a planner over made-up nodes."""

from __future__ import annotations

from collections import Counter

import pytest

from cluster import Hardware, Job, JobKind, JobSpec
from cluster.control.rules.dispatch import plan_round
from cluster.model.tenancy import Tenant, Tenants
from cluster.scheduling.costs import CostModel
from cluster.scheduling.fairshare import FairShare
from cluster.scheduling.planner import Demand, NodeState, Placement, Planner

COSTS = CostModel()


def job(i: int, tenant: str | None) -> Job:
    spec = JobSpec(JobKind.TRANSCODE, input=f"/m/{i}.mp4", output=f"/o/{i}.mp4")
    return Job(id=f"j{i}", spec=spec, seq=i, tenant=tenant)


def small() -> Demand:  # one core each (640x360 h264)
    return Demand(JobKind.TRANSCODE, Hardware.CPU, "h264", 640, 360)


def farm(cores: int = 8) -> Planner:
    return Planner([NodeState("n1", "10.0.0.1", cores)], costs=COSTS)


def placed(jobs: list[Job], share: FairShare, planner: Planner) -> list[Job]:
    ready = [(j, small()) for j in jobs]
    plan = plan_round(ready, planner, planner, COSTS, fair=share)
    return [j for j, _ in plan.start]


def test_a_tenant_alone_takes_the_whole_farm_in_queue_order() -> None:
    jobs = [job(i, "a") for i in range(12)]
    share = FairShare.of(Tenants(), [], 0, 8)
    started = placed(jobs, share, farm())
    assert [j.id for j in started] == [f"j{i}" for i in range(8)]  # idle share is lent


def test_the_next_slots_go_to_the_tenant_furthest_below_its_share() -> None:
    # Tenant a holds 6 of 8 cores already; b arrives with work: b gets the free slots,
    # even though a's queued jobs are older.
    running = [("a", Placement("n1", "x", Hardware.CPU, 1.0, "")) for _ in range(6)]
    share = FairShare.of(Tenants(), running, 0, 8)
    planner = Planner([NodeState("n1", "10.0.0.1", 8, cpus_used=6, running=6)], costs=COSTS)
    jobs = [job(i, "a") for i in range(5)] + [job(10 + i, "b") for i in range(5)]
    started = placed(jobs, share, planner)
    assert [j.tenant for j in started] == ["b", "b"]


def test_weights_split_an_empty_farm_in_their_ratio() -> None:
    tenants = Tenants((Tenant("a", weight=3), Tenant("b", weight=1)))
    jobs = [job(i, "a") for i in range(10)] + [job(20 + i, "b") for i in range(10)]
    share = FairShare.of(tenants, [], 0, 8)
    started = placed(jobs, share, farm())
    assert Counter(j.tenant for j in started) == {"a": 6, "b": 2}


def test_a_tenant_at_its_limit_waits_and_its_slots_go_to_others() -> None:
    tenants = Tenants((Tenant("a", max_running=2), Tenant("b", max_cores=3)))
    jobs = [job(i, "a") for i in range(5)] + [job(10 + i, "b") for i in range(5)]
    share = FairShare.of(tenants, [], 0, 8)
    started = placed(jobs, share, farm())
    assert Counter(j.tenant for j in started) == {"a": 2, "b": 3}


def test_the_placement_names_the_tenant_and_its_share_when_several_wait() -> None:
    tenants = Tenants((Tenant("team-a"), Tenant("team-b")))
    jobs = [job(1, "team-a"), job(2, "team-b")]
    share = FairShare.of(tenants, [], 2, 8)
    plan = plan_round([(j, small()) for j in jobs], farm(), farm(), COSTS, fair=share)
    reasons = [p.reason for _, p in plan.start]
    assert any("team-b: 0 of 2 GPUs, 1 of 8 cores, share 50 %" in r for r in reasons), reasons


def test_jobs_stored_before_tenants_belong_to_the_default_tenant() -> None:
    tenants = Tenants((Tenant("default", weight=1), Tenant("b", weight=1)))
    assert tenants.weight_share(None) == 0.5
    share = FairShare.of(tenants, [(None, Placement("n1", "x", Hardware.CPU, 2.0, ""))], 0, 8)
    assert share.dominant("default") == 0.25 and share.dominant("b") == 0.0


def test_a_tenant_held_at_max_cores_gets_no_spare_cores_beyond_it() -> None:
    tenants = Tenants((Tenant("b", max_cores=2),))
    share = FairShare.of(tenants, [], 0, 8)
    plan = plan_round([(job(i, "b"), small()) for i in range(3)], farm(), farm(), COSTS,
                      fair=share)  # fmt: skip
    assert len(plan.start) == 2
    assert sum(p.cores for _, p in plan.start) == 2  # not topped up with the idle cores


def test_a_share_is_among_the_tenants_with_work() -> None:
    tenants = Tenants((Tenant("a"), Tenant("b"), Tenant("c")))
    assert tenants.weight_share("b", ["a", "b"]) == 0.5  # c has nothing to do
    assert tenants.weight_share("b") == pytest.approx(1 / 3)  # everyone known


def test_an_auto_job_past_max_gpus_runs_on_the_cpu_and_one_too_big_fails_saying_why() -> None:
    from cluster.model.capability import Capability, CodecState
    from cluster.scheduling.planner import GpuState

    ok = Capability(CodecState.VERIFIED)
    gpu = GpuState("GPU-1", 0, "NVIDIA L4", 23000, codecs={"h264": ok})
    node = NodeState("n1", "10.0.0.1", 8, gpus=(gpu,))
    auto = Demand(JobKind.TRANSCODE, Hardware.AUTO, "h264", 640, 360)
    tenants = Tenants((Tenant("b", max_gpus=0, max_cores=1),))
    share = FairShare.of(tenants, [], 1, 8)
    planner = Planner([node], costs=COSTS)
    plan = plan_round([(job(1, "b"), auto)], planner, planner, COSTS, fair=share)
    assert [(j.id, p.hardware) for j, p in plan.start] == [("j1", Hardware.CPU)]
    big = Demand(JobKind.TRANSCODE, Hardware.CPU, "hevc", 3840, 2160)  # more than 1 core
    share = FairShare.of(tenants, [], 1, 8)
    planner = Planner([node], costs=COSTS)
    plan = plan_round([(job(2, "b"), big)], planner, planner, COSTS, fair=share)
    assert not plan.start and len(plan.never) == 1
    assert "max_cores" in plan.never[0][1] and "can never run within it" in plan.never[0][1]
