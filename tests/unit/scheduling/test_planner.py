"""The pure placement core: cores, GPU memory, NVENC sessions, codecs, priorities."""

from __future__ import annotations

from typing import Any

import pytest

from cluster import GpuRef, Hardware, Job, JobKind, JobSpec, Policy
from cluster.control.rules.dispatch import plan_round
from cluster.errors import CostModelError
from cluster.model.capability import Capability, CodecState
from cluster.scheduling.costs import CostModel
from cluster.scheduling.planner import (
    Demand,
    GpuState,
    NodeState,
    Placement,
    Planner,
    autoscaler_bundle,
    memory_resource,
    place,
    queue_key,
    session_resource,
)

VERIFIED = Capability(CodecState.VERIFIED, "one-frame trial encode succeeded")
COSTS = CostModel()
MARGIN = COSTS.safety_margin_mb


def node(name: str, cpus: float, used: float = 0, running: int = 0, **kw: Any) -> NodeState:
    return NodeState(name, f"10.0.0.{len(name)}", cpus, cpus_used=used, running=running, **kw)


def gpu(uuid: str, total_mb: int, *, codecs: tuple[str, ...] = ("h264", "hevc"), **kw: Any):
    return GpuState(
        uuid,
        int(uuid[-1]),
        f"Test GPU {uuid}",
        total_mb,
        codecs=dict.fromkeys(codecs, VERIFIED),
        **kw,
    )


def job(codec: str = "h264", w: int = 640, h: int = 360, hw: Hardware = Hardware.CPU) -> Demand:
    return Demand(JobKind.TRANSCODE, hw, codec, w, h)


def test_cores_by_codec_and_size_capped_by_the_largest_node() -> None:
    assert COSTS.cores("h264", 640, 360) == 1 and COSTS.cores("h264", 1920, 1080) == 2
    assert COSTS.cores("hevc", 3840, 2160) == 8
    small = place(job("hevc", 3840, 2160), [node("a", 2)])
    assert small is not None and small.cpus == 2


def test_pack_takes_the_tightest_node_that_fits_and_spread_the_emptiest() -> None:
    nodes = [node("a", 8, used=6, running=3), node("bb", 8, used=1, running=1)]
    packed = place(job(), nodes, Policy.PACK)
    spread = place(job(), nodes, Policy.SPREAD)
    assert packed is not None and packed.node_id == "a"
    assert spread is not None and spread.node_id == "bb"
    assert "1 of 2 free cores" in packed.reason and "best fit" in packed.reason


def test_nothing_fits_when_cores_or_the_job_cap_run_out() -> None:
    assert place(job("h264", 1920, 1080), [node("a", 4, used=3)]) is None
    assert place(job(), [node("a", 4, running=2, max_jobs=2)]) is None
    assert place(job(), [node("a", 4, running=1, max_jobs=2)]) is not None


def test_a_round_never_gives_the_same_cores_twice() -> None:
    planner = Planner([node("a", 4), node("bb", 2)])
    placed = [planner.place(job("h264", 1920, 1080)) for _ in range(4)]
    assert [p.node_id if p else None for p in placed] == ["bb", "a", "a", None]
    assert planner.exhausted()


def test_gpu_best_fit_by_free_memory_keeps_the_big_hole_for_4k() -> None:
    small, big = gpu("g1", 1536), gpu("g2", 24576)  # 1 GiB and 23.5 GiB usable
    planner = Planner([node("a", 8, gpus=(small, big))])
    hd = planner.place(job("h264", 1920, 1080, Hardware.GPU))
    assert hd is not None and hd.gpu_uuid == "g1" and hd.hardware is Hardware.GPU
    assert hd.gpu_memory_mb == COSTS.gpu_memory("h264", 1920, 1080)
    uhd = planner.place(job("hevc", 3840, 2160, Hardware.GPU))
    assert uhd is not None and uhd.gpu_uuid == "g2"
    assert "GPU 2 (Test GPU g2)" in uhd.reason and "23.5 GiB free" in uhd.reason
    assert dict(uhd.resources) == {
        memory_resource("g2"): COSTS.gpu_memory("hevc", 3840, 2160),
        session_resource("g2"): 1.0,
    }
    spread = place(
        job("h264", 1920, 1080, Hardware.GPU), [node("a", 8, gpus=(small, big))], Policy.SPREAD
    )
    assert spread is not None and spread.gpu_uuid == "g2"


def test_free_memory_is_the_smaller_of_accounted_and_live_less_the_margin() -> None:
    need = COSTS.gpu_memory("h264", 1920, 1080)
    # Accounted: plenty. Live (another process holds most of it): not enough.
    busy = gpu("g1", 16384, memory_free_live_mb=need + MARGIN - 1)
    assert place(job("h264", 1920, 1080, Hardware.GPU), [node("a", 4, gpus=(busy,))]) is None
    ok = gpu("g1", 16384, memory_free_live_mb=need + MARGIN)
    assert place(job("h264", 1920, 1080, Hardware.GPU), [node("a", 4, gpus=(ok,))]) is not None
    reserved = gpu("g1", need + MARGIN + 100, memory_reserved_mb=101)
    assert place(job("h264", 1920, 1080, Hardware.GPU), [node("a", 4, gpus=(reserved,))]) is None


def test_memory_is_committed_within_a_round_so_a_gpu_is_never_over_subscribed() -> None:
    need = COSTS.gpu_memory("h264", 1280, 720)
    planner = Planner([node("a", 64, gpus=(gpu("g1", 3 * need + MARGIN),))])
    placed = [planner.place(job("h264", 1280, 720, Hardware.GPU)) for _ in range(5)]
    assert sum(p is not None for p in placed) == 3


def test_session_caps_count_every_process_and_auto_falls_back_to_cpu() -> None:
    capped = gpu("g1", 24576, max_sessions=3, sessions=1, sessions_live=3)  # 2 others
    nodes = [node("a", 4, gpus=(capped,))]
    assert place(job(hw=Hardware.GPU), nodes) is None
    auto = place(job(hw=Hardware.AUTO), nodes)
    assert auto is not None and auto.hardware is Hardware.CPU and auto.gpu_uuid is None
    assert "no GPU with room" in auto.reason
    free = gpu("g1", 24576, max_sessions=3, sessions=1, sessions_live=2)
    placed = place(job(hw=Hardware.GPU), [node("a", 4, gpus=(free,))])
    assert placed is not None and "1/3 sessions" in placed.reason


def test_auto_takes_a_gpu_when_one_fits_and_light_jobs_stay_on_cpu() -> None:
    nodes = [node("a", 4, gpus=(gpu("g1", 8192),))]
    auto = place(job(hw=Hardware.AUTO), nodes)
    assert auto is not None and auto.hardware is Hardware.GPU and auto.cpus == 1
    validate = place(Demand(JobKind.VALIDATE, Hardware.AUTO, "h264", 640, 360), nodes)
    assert validate is not None and validate.hardware is Hardware.CPU


def test_only_verified_or_declared_codecs_get_nvenc_work() -> None:
    failed = Capability(CodecState.FAILED, "trial encode failed: the H100 has no NVENC hardware")
    h100 = GpuState("g0", 0, "NVIDIA H100", 81559, codecs={"h264": failed, "hevc": failed})
    declared = GpuState(
        "g1", 1, "L4 (declared)", 23034, codecs={"h264": Capability(CodecState.DECLARED)}
    )
    planner = Planner([node("a", 8, gpus=(h100,)), node("bb", 8, gpus=(declared,))])
    h264 = planner.place(job("h264", hw=Hardware.GPU))
    assert h264 is not None and h264.gpu_uuid == "g1"
    assert planner.place(job("hevc", hw=Hardware.GPU)) is None
    never = planner.never(job("hevc", hw=Hardware.GPU))
    assert never is not None and "no GPU in the cluster can encode hevc with NVENC" in never
    assert "H100 has no NVENC hardware" in never and "--hardware auto or cpu" in never
    assert planner.never(job("hevc", hw=Hardware.AUTO)) is None


def test_a_job_larger_than_any_gpu_is_refused_with_the_sizes() -> None:
    nodes = [node("a", 8, gpus=(gpu("g1", 1024),))]
    never = Planner(nodes).never(job("hevc", 7680, 4320, Hardware.GPU))
    assert never is not None and "the largest GPU with hevc NVENC has 1024 MiB" in never
    assert Planner([node("a", 0)]).never(job()) is not None


def test_gpu_jobs_need_a_free_core_on_the_gpu_node_and_respect_its_cap() -> None:
    nodes = [node("a", 4, used=4, gpus=(gpu("g1", 8192),))]
    assert place(job(hw=Hardware.GPU), nodes) is None
    capped = [node("a", 4, running=1, max_jobs=1, gpus=(gpu("g1", 8192),))]
    assert place(job(hw=Hardware.GPU), capped) is None


def test_a_retry_avoids_the_nodes_where_it_failed_and_the_others_stay_whole() -> None:
    nodes = [node("a", 8, used=6, running=3, gpus=(gpu("GPU-1", 16_000),)),
             node("bb", 8, gpus=(gpu("GPU-2", 16_000),))]  # fmt: skip
    planner = Planner(nodes, Policy.PACK)
    assert planner.place(job(), avoid={"a"}).node_id == "bb"  # PACK alone would pick a
    gpu_job = planner.place(job(hw=Hardware.GPU), avoid={"bb"})
    assert gpu_job is not None and gpu_job.gpu_uuid == "GPU-1"
    assert planner.place(job()).node_id == "a"  # a is open again after the decisions
    assert planner.place(job(), avoid={"a", "bb"}) is None
    assert planner.place(job()) is not None  # a miss with nodes closed is not remembered
    assert planner.runs_elsewhere(job(), {"a"}) and not planner.runs_elsewhere(job(), {"a", "bb"})
    assert planner.runs_elsewhere(job(hw=Hardware.GPU), {"a"})
    only_a = Planner([node("a", 8, gpus=(gpu("GPU-1", 16_000),)), node("bb", 8)])
    assert not only_a.runs_elsewhere(job(hw=Hardware.GPU), {"a"})


def test_release_gives_the_room_back() -> None:
    planner = Planner([node("a", 1, gpus=(gpu("g1", 8192, max_sessions=1),))])
    first = planner.place(job(hw=Hardware.GPU))
    assert first is not None and planner.place(job(hw=Hardware.GPU)) is None
    planner.release(first)
    assert planner.place(job(hw=Hardware.GPU)) is not None


def test_placement_without_registered_ray_resources_asks_ray_for_none() -> None:
    unregistered = gpu("g1", 8192, ray_resources=False)
    placed = place(job(hw=Hardware.GPU), [node("a", 4, gpus=(unregistered,))])
    assert placed is not None and placed.resources == ()
    assert placed.for_job("h264_nvenc").gpu == GpuRef("g1", 1, "Test GPU g1")


def test_priority_then_fifo_and_aging_lifts_old_low_priority_work() -> None:
    jobs = [("low-old", 0, 1, 300.0), ("high", 3, 2, 0.0), ("high-later", 3, 3, 0.0)]
    order = sorted(jobs, key=lambda j: queue_key(j[1], j[2], j[3], aging_s=1e9))
    assert [j[0] for j in order] == ["high", "high-later", "low-old"]
    aged = sorted(jobs, key=lambda j: queue_key(j[1], j[2], j[3], aging_s=60))
    assert [j[0] for j in aged] == ["low-old", "high", "high-later"]  # 5 levels gained


def test_a_cost_model_file_overrides_the_tables(tmp_path) -> None:
    path = tmp_path / "costs.json"
    path.write_text(
        '{"gpu_memory_mb": {"h264": [[921600, 200], [8294400, 900]]}, "safety_margin_mb": 0}'
    )
    costs = CostModel.from_file(path)
    assert (
        costs.gpu_memory("h264", 1280, 720) == 200 and costs.gpu_memory("h264", 7680, 4320) == 900
    )
    assert costs.gpu_memory("hevc", 1280, 720) == COSTS.gpu_memory("hevc", 1280, 720)
    placed = place(
        job("h264", 1280, 720, Hardware.GPU), [node("a", 2, gpus=(gpu("g1", 200),))], costs=costs
    )
    assert placed is not None and placed.gpu_memory_mb == 200
    path.write_text('{"gpu_mem": {}}')
    with pytest.raises(CostModelError, match="unknown key"):
        CostModel.from_file(path)


def test_autoscaler_bundles_ask_for_cores_or_a_share_of_a_gpu() -> None:
    assert autoscaler_bundle(job("hevc", 1920, 1080)) == {"CPU": 4}
    assert autoscaler_bundle(job(hw=Hardware.GPU)) == {"CPU": 1.0, "GPU": 0.125}
    assert autoscaler_bundle(Demand(JobKind.VALIDATE, Hardware.AUTO, "h264")) == {"CPU": 1.0}


DEBIAN = frozenset({"libx264", "libx265", "libsvtav1", "h264_nvenc", "hevc_nvenc"})
NO_SVT = frozenset({"libx264", "libx265", "h264_nvenc", "hevc_nvenc"})


@pytest.mark.parametrize("policy", [Policy.PACK, Policy.SPREAD])
def test_cpu_work_goes_only_to_nodes_whose_ffmpeg_has_the_encoder(policy: Policy) -> None:
    nodes = [
        node("a", 8, encoders=NO_SVT),
        node("bb", 2, encoders=DEBIAN),
        node("ccc", 16, encoders=frozenset()),  # no ffmpeg at all: runs nothing
    ]
    planner = Planner(nodes, policy)
    av1 = Demand(JobKind.TRANSCODE, Hardware.CPU, "av1", 640, 360, encoder="libsvtav1")
    placed = planner.place(av1)
    assert placed is not None and placed.node_id == "bb"
    assert planner.place(av1) is None  # bb's cores are taken; a and ccc cannot run it
    h264 = Demand(JobKind.TRANSCODE, Hardware.CPU, "h264", 640, 360, encoder="libx264")
    placed = planner.place(h264)
    assert placed is not None and placed.node_id == "a"
    probe_like = Demand(JobKind.VALIDATE, Hardware.CPU, "h264")
    spots = [planner.place(probe_like) for _ in range(7)]
    assert {p.node_id for p in spots if p is not None} == {"a"}


def test_never_names_the_encoder_no_nodes_ffmpeg_has() -> None:
    planner = Planner([node("a", 8, encoders=NO_SVT)])
    av1 = Demand(JobKind.TRANSCODE, Hardware.CPU, "av1", encoder="libsvtav1")
    assert planner.never(av1) == (
        "no node in the cluster has an ffmpeg with libsvtav1; start a node whose ffmpeg "
        "has it (framefleet node start --ffmpeg PATH)"
    )
    # auto may still go to a GPU that can encode the codec
    gpus = (gpu("GPU-1", 24000, codecs=("av1",)),)
    planner = Planner([node("a", 8, encoders=NO_SVT, gpus=gpus)])
    auto = Demand(JobKind.TRANSCODE, Hardware.AUTO, "av1", encoder="libsvtav1")
    assert planner.never(auto) is None
    # nodes of unknown builds (simulations) are not checked
    assert Planner([node("a", 8)]).never(av1) is None


def test_memory_is_a_placement_resource_like_cores() -> None:
    # 16 cores but 3 GiB: x265 1080p takes 1 GiB (4 cores) a job, so memory runs out first.
    planner = Planner([node("a", 16, memory_mb=3072)])
    hevc = Demand(JobKind.TRANSCODE, Hardware.CPU, "hevc", 1920, 1080, encoder="libx265")
    placed = [planner.place(hevc) for _ in range(4)]
    assert [p.memory_mb if p else None for p in placed] == [1024, 1024, 1024, None]
    assert placed[0] is not None and placed[0].for_job("libx265").memory_mb == 1024
    planner.release(placed[0])
    assert planner.place(hevc) is not None  # given back, placed again


def test_a_thumbnail_jobs_memory_grows_with_its_seeking_images_up_to_8() -> None:
    costs = CostModel()
    one = costs.thumbnail_memory(1, 3840, 2160)
    eight = costs.thumbnail_memory(8, 3840, 2160)
    assert one < eight == costs.thumbnail_memory(100, 3840, 2160)  # past 8: one decode
    planner = Planner([node("a", 8, memory_mb=eight - 1)])
    thumbs = Demand(JobKind.THUMBNAIL, Hardware.CPU, "h264", 3840, 2160, images=50)
    assert planner.place(thumbs) is None
    assert planner.never(thumbs) == (
        f"needs about {eight} MiB of memory; the largest node offers {eight - 1} MiB"
    )
    assert Planner([node("b", 8, memory_mb=eight)]).place(thumbs) is not None


@pytest.mark.parametrize("policy", list(Policy))
def test_indexed_decisions_match_a_scan_of_every_gpu_and_node(policy: Policy) -> None:
    """The planner's sorted indexes (one per set of codecs a GPU encodes) give the same
    answer as the rule they implement, checked by scanning everything, over random
    clusters and random sequences of placements and releases."""
    import random

    for seed in range(150):
        rng = random.Random(seed)
        nodes = [
            node(
                f"n{i}",
                rng.choice([1, 2, 4, 8]),
                max_jobs=rng.choice([None, None, 2]),
                memory_mb=rng.choice([None, 4096.0, 16384.0]),
                encoders=rng.choice([None, frozenset({"libx264"}), frozenset({"libx265"})]),
                gpus=tuple(
                    gpu(
                        f"n{i}g{k}",
                        rng.choice([2048, 4096, 8192, 16384]),
                        codecs=tuple(c for c in ("h264", "hevc", "av1") if rng.random() < 0.6),
                        max_sessions=rng.choice([0, 1, 3]),
                    )
                    for k in range(rng.randint(0, 3))
                ),
            )
            for i in range(rng.randint(1, 5))
        ]
        planner, scan = Planner(nodes, policy), _Scan(nodes, policy)
        held: list[Placement] = []
        for _ in range(60):
            if held and rng.random() < 0.3:
                done = held.pop(rng.randrange(len(held)))
                planner.release(done)
                scan.release(done)
                continue
            codec = rng.choice(["h264", "hevc", "av1"])
            w, h = rng.choice([(640, 360), (1920, 1080), (3840, 2160)])
            demand = Demand(
                JobKind.TRANSCODE,
                rng.choice(list(Hardware)),
                codec,
                w,
                h,
                encoder={"h264": "libx264", "hevc": "libx265"}.get(codec, "libsvtav1"),
            )
            got, want = planner.place(demand), scan.place(demand)
            where = (got.node_id, got.gpu_uuid) if got else None
            assert where == want, f"seed {seed}: {demand}"
            if got is not None:
                scan.take(got)
                held.append(got)


class _Scan:
    """The placement rule by brute force: every GPU, then every node, each time."""

    def __init__(self, nodes: list[NodeState], policy: Policy) -> None:
        self.nodes, self.policy = nodes, policy
        self.cpus = {n.node_id: n.cpus for n in nodes}
        self.running = dict.fromkeys(self.cpus, 0)
        self.ram = {n.node_id: n.memory_mb for n in nodes}
        self.free = {g.uuid: g.free_mb(MARGIN) for n in nodes for g in n.gpus}
        self.sessions = {g.uuid: 0 for n in nodes for g in n.gpus}

    def _open(self, n: NodeState, cores: float, ram: int) -> bool:
        held = self.ram[n.node_id]
        return (
            (n.max_jobs is None or self.running[n.node_id] < n.max_jobs)
            and self.cpus[n.node_id] >= cores - 1e-9
            and self.cpus[n.node_id] > 1e-9
            and (held is None or held >= ram)
        )

    def place(self, d: Demand) -> tuple[str, str | None] | None:
        pick = min if self.policy is Policy.PACK else max
        if d.hardware is not Hardware.CPU:
            need = COSTS.gpu_memory(d.codec, d.width, d.height)
            ram = COSTS.memory(d.codec, d.width, d.height, software=False)
            fits = [
                ((self.free[g.uuid], gi), (n.node_id, g.uuid))
                for gi, (n, g) in enumerate((n, g) for n in self.nodes for g in n.gpus)
                if g.can_encode(d.codec)
                and self.free[g.uuid] >= need
                and (not g.max_sessions or self.sessions[g.uuid] < g.max_sessions)
                and self._open(n, min(COSTS.nvenc_cpu_cores, n.cpus), ram)
            ]
            if fits or d.hardware is Hardware.GPU:
                return pick(fits)[1] if fits else None
        want = min(COSTS.cores(d.codec, d.width, d.height), max(n.cpus for n in self.nodes))
        ram = COSTS.memory(d.codec, d.width, d.height, software=True)
        fits_cpu = [
            ((self.cpus[n.node_id], ni), (n.node_id, None))
            for ni, n in enumerate(self.nodes)
            if self._open(n, want, ram) and (n.encoders is None or d.encoder in n.encoders)
        ]
        return pick(fits_cpu)[1] if fits_cpu else None

    def take(self, p: Placement, sign: int = 1) -> None:
        self.cpus[p.node_id] -= sign * p.cpus
        self.running[p.node_id] += sign
        if self.ram[p.node_id] is not None:
            self.ram[p.node_id] -= sign * p.memory_mb  # type: ignore[operator]
        if p.gpu_uuid:
            self.free[p.gpu_uuid] -= sign * p.gpu_memory_mb
            self.sessions[p.gpu_uuid] += sign

    def release(self, p: Placement) -> None:
        self.take(p, -1)


def queued(name: str) -> Job:
    return Job(id=name, spec=JobSpec(kind=JobKind.TRANSCODE, input=f"/m/{name}.mov",
                                     output=f"/m/{name}.mp4"))  # fmt: skip


def test_free_cores_go_to_the_last_job_only_when_nothing_waits() -> None:
    # A 4-core node, a 640x360 H.264 encode estimated at 1 core.
    planner = Planner([node("n", 4)])
    alone = plan_round([(queued("a"), job())], planner, planner, COSTS)
    [(_, placed)] = alone.start
    assert (placed.cpus, placed.spare_cpus, placed.cores, placed.thread_count) == (1, 3, 4, 4)
    assert placed.reason.endswith("; 4 cores (3 free beyond the estimate; nothing waiting)")
    assert planner.free_cpus("n") == 0  # counted: the next job waits for them
    assert placed.for_job("libx264").cpus == 4


def test_a_job_placed_beside_waiting_work_keeps_its_estimate() -> None:
    planner = Planner([node("n", 2, used=1, running=1)])  # one core left
    ready = [(queued("a"), job()), (queued("b"), job())]  # b does not fit: it waits
    placed = plan_round(ready, planner, Planner([node("n", 2)]), COSTS)
    [(_, first)] = placed.start
    assert len(placed.waiting) == 1
    assert (first.cores, first.thread_count, first.spare_cpus) == (1, 1, 0)
    assert "beyond the estimate" not in first.reason


def test_jobs_started_together_share_free_cores_and_a_lone_one_gets_the_nodes_threads() -> None:
    planner = Planner([node("n", 5)])
    both = plan_round([(queued("a"), job()), (queued("b"), job())], planner, planner, COSTS)
    # 3 free: 1 more each
    assert [(p.cores, p.thread_count) for _, p in both.start] == [(2, 2), (2, 2)]
    assert planner.free_cpus("n") == 1
    # The last of a batch, placed as a neighbour still runs: one core free, none spare;
    # its threads cover the node, so it takes the neighbour's core when that one ends.
    tail = Planner([node("n", 2, used=1, running=1)])
    [(_, last)] = plan_round([(queued("c"), job())], tail, tail, COSTS).start
    assert (last.cores, last.spare_cpus, last.thread_count) == (1, 0, 2)
    assert last.reason.endswith("; threads for all 2 of the node's cores (nothing waiting)")


def test_no_core_is_spare_while_other_queued_jobs_are_about_to_be_ready() -> None:
    planner = Planner([node("n", 4)])  # b and c are being probed: a keeps its estimate
    [(_, placed)] = plan_round([(queued("a"), job())], planner, planner, COSTS,
                               others_waiting=True).start  # fmt: skip
    assert (placed.cores, placed.threads) == (1, None) and planner.free_cpus("n") == 3


def test_gpu_and_light_jobs_keep_their_estimate() -> None:
    planner = Planner([node("n", 4)])
    probe = Demand(JobKind.VALIDATE, Hardware.CPU, "h264", 640, 360)
    [(_, placed)] = plan_round([(queued("v"), probe)], planner, planner, COSTS).start
    assert (placed.spare_cpus, placed.threads) == (0, None)
