"""Placement by finish time and honest ETAs, by simulation on a farm whose nodes differ.

A mixed batch (H.264 and HEVC, 720p to 2160p, 1 to 10 minutes of media, ``hardware:
auto``) on a simulated heterogeneous farm: nodes with an L4 or a T4 (NVENC) and 8 cores,
and CPU boxes of 8, 32 and 64 cores whose cores differ in speed. Each encode's true
speed is drawn around a device's real ratio (NVENC on an L4 ~1.7x a T4; x264 per core
on a fast desktop part ~1.6x a 64-core server part) with 10 % noise per run.

The real code decides: the planner and the dispatcher's round
(:func:`~cluster.control.rules.dispatch.plan_round`), today's best fit against
placement by finish time (:mod:`cluster.scheduling.finish`) fed by the learned model
(:mod:`cluster.scheduling.speeds`) after a warm-up batch, and the forecast the
coordinator shows (:func:`~cluster.scheduling.eta.forecast`) made at submit. Printed:
makespan and mean completion time of each policy (target: finish time >= 15 % better on
both) and the ETA error at submit (median and p90 of |predicted - actual| / actual
completion time).

    .venv/bin/python bench/eta.py [--jobs 400] [--seed 7]
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import statistics
import sys
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import Row, add_arguments, at_least, at_most, emit
from cluster.control.rules.dispatch import plan_round
from cluster.model.capability import Capability, CodecState
from cluster.model.jobs import Hardware, Job, JobKind, JobSpec
from cluster.scheduling.costs import CostModel, expected_speed
from cluster.scheduling.eta import forecast
from cluster.scheduling.finish import FinishTime, Replay
from cluster.scheduling.planner import Demand, GpuState, NodeState, Placement, Planner
from cluster.scheduling.speeds import Device, SpeedModel, SpeedSample, Work

OK = Capability(CodecState.VERIFIED)
COSTS = CostModel()
X264 = frozenset({"libx264", "libx265", "h264_nvenc", "hevc_nvenc"})
# name, count, cores, GPU model (None: CPU only), speed per core of its CPU
FARM = [
    ("l4", 4, 8, "NVIDIA L4", 1.2),
    ("t4", 4, 8, "Tesla T4", 1.0),
    ("cpu64", 2, 64, None, 0.8),
    ("cpu32", 2, 32, None, 1.0),
    ("cpu8", 4, 8, None, 1.3),
]
NVENC_SPEED = {"NVIDIA L4": 14.0, "Tesla T4": 8.0}
"""H.264 1080p times real time on one NVENC session (HEVC: 0.7 of it)."""
X264_PER_CORE = 0.35
"""libx264 medium 1080p times real time per core of a reference core (HEVC: 0.3 of it)."""
NOISE = 0.10


@dataclass(slots=True)
class Sim:
    job: Job
    demand: Demand
    media_s: float


def build_farm() -> tuple[list[NodeState], dict[str, tuple[str, float, str | None]]]:
    nodes: list[NodeState] = []
    info: dict[str, tuple[str, float, str | None]] = {}
    for name, count, cores, gpu, per_core in FARM:
        for i in range(count):
            node_id = f"{name}-{i}"
            gpus: tuple[GpuState, ...] = ()
            if gpu:
                gpus = (GpuState(f"GPU-{node_id}", 0, gpu, 23000, max_sessions=3,
                                 codecs={"h264": OK, "hevc": OK}),)  # fmt: skip
            nodes.append(NodeState(node_id, f"10.0.{len(nodes)}.1", cores, gpus=gpus))
            info[node_id] = (name, per_core, gpu)
    return nodes, info


def make_jobs(n: int, rng: random.Random, start: int = 0) -> list[Sim]:
    sims = []
    for i in range(start, start + n):
        codec = rng.choice(["h264", "h264", "hevc"])
        width, height = rng.choice([(1280, 720), (1920, 1080), (1920, 1080), (3840, 2160)])
        media_s = rng.uniform(60, 600)
        spec = JobSpec(JobKind.TRANSCODE, input=f"/m/{i}.mov", output=f"/o/{i}.mp4",
                       codec=codec, hardware=Hardware.AUTO)  # fmt: skip
        job = Job(id=f"j{i}", spec=spec, seq=i)
        demand = Demand(JobKind.TRANSCODE, Hardware.AUTO, codec, width, height,
                        encoder="libx264" if codec == "h264" else "libx265")  # fmt: skip
        sims.append(Sim(job, demand, media_s))
    return sims


def true_speed(sim: Sim, placement: Placement, info: dict[str, tuple[str, float, str | None]],
               rng: random.Random | None) -> float:  # fmt: skip
    pixels = sim.demand.width * sim.demand.height / (1920 * 1080)
    codec = 1.0 if sim.demand.codec == "h264" else 0.7
    if placement.gpu_name:
        base = NVENC_SPEED[placement.gpu_name] * codec / pixels
    else:
        per_core = info[placement.node_id][1]
        cpu_codec = 1.0 if sim.demand.codec == "h264" else 0.3
        base = X264_PER_CORE * per_core * placement.cores * cpu_codec / pixels
    return base * (rng.lognormvariate(0, NOISE) if rng else 1.0)


def prior(sim: Sim, hardware: Hardware) -> float:
    from cluster.model.media import MediaInfo, VideoStream

    video = VideoStream(index=0, codec="h264", width=sim.demand.width, height=sim.demand.height,
                        pix_fmt="yuv420p", bit_depth=8, frame_rate=(25, 1))  # fmt: skip
    media = MediaInfo(path="", format_name="mov", duration_s=sim.media_s, size_bytes=None,
                      bit_rate=None, video=video)  # fmt: skip
    return expected_speed(sim.job.spec, hardware, media, COSTS)


def device(
    node_id: str, gpu: str | None, cores: float, info: dict[str, tuple[str, float, str | None]]
) -> Device:
    if gpu:
        return Device("gpu", gpu)
    return Device("cpu", info[node_id][0], int(2 ** round(math.log2(max(cores, 1)))))


def work(sim: Sim, hardware: Hardware) -> Work:
    encoder = f"{sim.demand.codec}_nvenc" if hardware is Hardware.GPU else sim.demand.encoder or ""
    return Work.of(encoder, "medium", sim.demand.height, 25.0, "h264", False)


def run(
    sims: list[Sim],
    info: dict[str, tuple[str, float, str | None]],
    rng: random.Random,
    model: SpeedModel | None,
    *,
    learn: SpeedModel | None = None,
) -> tuple[dict[str, float], dict[str, Placement], float]:
    """Every job of ``sims`` queued at 0 and placed round by round as encodes end:
    best fit without ``model``, by finish time with it. Each job's end, placement."""
    nodes, _ = build_farm()
    planner = Planner(nodes, costs=COSTS)
    by_id = {s.job.id: s for s in sims}
    queue = list(sims)
    ends: list[tuple[float, int, str, Placement]] = []
    done: dict[str, float] = {}
    where: dict[str, Placement] = {}
    clock, tie = 0.0, 0

    def seconds(job: Job, node_id: str, hw: Hardware, gpu: str | None, cores: float) -> float:
        assert model is not None
        sim = by_id[job.id]
        est = model.predict(node_id, device(node_id, gpu, cores, info), work(sim, hw),
                            prior(sim, hw))  # fmt: skip
        return sim.media_s / est.speed

    names = {n.node_id: n.node_id for n in nodes}
    while queue or ends:
        finish = None
        if model is not None:
            running_ends = [(p.node_id, end) for end, _, _, p in ends]
            now_states = states_now(nodes, [p for _, _, _, p in ends])
            finish = FinishTime.of(now_states, names, running_ends, seconds, clock,
                                   costs=COSTS)  # fmt: skip
        plan = plan_round([(s.job, s.demand) for s in queue], planner, planner, COSTS,
                          finish=finish)  # fmt: skip
        started = {job.id for job, _ in plan.start}
        for job, placement in plan.start:
            sim = by_id[job.id]
            speed = true_speed(sim, placement, info, rng)
            end = clock + sim.media_s / speed
            heapq.heappush(ends, (end, tie, job.id, placement))
            tie += 1
            where[job.id] = placement
            if learn is not None:
                hw = placement.hardware
                learn.learn(SpeedSample(clock, placement.node_id,
                                        device(placement.node_id, placement.gpu_name,
                                               placement.cores, info),
                                        work(sim, hw), sim.media_s, sim.media_s / speed,
                                        prior=prior(sim, hw)))  # fmt: skip
        queue = [s for s in queue if s.job.id not in started]
        if not ends:
            break
        clock, _, job_id, placement = heapq.heappop(ends)
        planner.release(placement)
        done[job_id] = clock
        while ends and ends[0][0] <= clock:
            _, _, other, p = heapq.heappop(ends)
            planner.release(p)
            done[other] = clock
    return done, where, clock


def predicted(
    sims: list[Sim], info: dict[str, tuple[str, float, str | None]], model: SpeedModel
) -> dict[str, float]:
    """The forecast at submit (what the coordinator records as ``finish_at_submit``)."""
    nodes, _ = build_farm()
    by_id = {s.job.id: s for s in sims}

    def seconds(job: Job, node_id: str, hw: Hardware, gpu: str | None, cores: float) -> float:
        sim = by_id[job.id]
        est = model.predict(node_id, device(node_id, gpu, cores, info), work(sim, hw),
                            prior(sim, hw))  # fmt: skip
        return sim.media_s / est.speed

    finish = FinishTime.of(nodes, {n.node_id: n.node_id for n in nodes}, [], seconds, 0.0,
                           costs=COSTS)  # fmt: skip
    assert finish is not None
    replay = Replay(finish, {s.job.id: s.job for s in sims})

    def run_s(key: str, p: Placement) -> float:
        return seconds(by_id[key].job, p.node_id, p.hardware, p.gpu_name, p.cores)

    got = forecast(Planner(nodes, costs=COSTS), [], [(s.job.id, s.demand) for s in sims],
                   run_s, 0.0, place=replay)  # fmt: skip
    return {k: f.finish_at for k, f in got.items()}


def states_now(nodes: list[NodeState], running: list[Placement]) -> list[NodeState]:
    """The farm with what runs on it, as the coordinator builds each round's states."""
    cores: dict[str, float] = {}
    count: dict[str, int] = {}
    gpu_use: dict[str, tuple[int, int]] = {}
    for p in running:
        cores[p.node_id] = cores.get(p.node_id, 0.0) + p.cores
        count[p.node_id] = count.get(p.node_id, 0) + 1
        if p.gpu_uuid:
            sessions, mb = gpu_use.get(p.gpu_uuid, (0, 0))
            gpu_use[p.gpu_uuid] = (sessions + 1, mb + p.gpu_memory_mb)
    return [replace(n, cpus_used=cores.get(n.node_id, 0.0), running=count.get(n.node_id, 0),
                    gpus=tuple(replace(g, sessions=gpu_use.get(g.uuid, (0, 0))[0],
                                       memory_reserved_mb=gpu_use.get(g.uuid, (0, 0))[1])
                               for g in n.gpus))
            for n in nodes]  # fmt: skip


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=400)
    ap.add_argument("--seed", type=int, default=7)
    add_arguments(ap)
    args = ap.parse_args()
    n = 120 if args.quick else args.jobs
    _, info = build_farm()
    model = SpeedModel()
    warm_rng = random.Random(args.seed + 1)
    # Warm-up: a batch placed by best fit (every kind of node runs some), learned from.
    run(make_jobs(n // 2, warm_rng, start=100_000), info, warm_rng, None, learn=model)
    sims = make_jobs(n, random.Random(args.seed))
    best_fit = run(sims, info, random.Random(args.seed + 2), None)
    by_finish = run(sims, info, random.Random(args.seed + 2), model)
    makespan_a, makespan_b = best_fit[2], by_finish[2]
    mean_a = statistics.fmean(best_fit[0].values())
    mean_b = statistics.fmean(by_finish[0].values())
    eta = predicted(sims, info, model)
    errors = [abs(eta[k] - by_finish[0][k]) / by_finish[0][k] for k in eta if k in by_finish[0]]
    gpu_a = sum(1 for p in best_fit[1].values() if p.gpu_name)
    gpu_b = sum(1 for p in by_finish[1].values() if p.gpu_name)
    print(f"farm: {sum(c for _, c, *_ in FARM)} nodes; {n} jobs; warm-up {n // 2} jobs, "
          f"{model.samples} runs learned")  # fmt: skip
    print(f"best fit:    makespan {makespan_a / 60:.1f} min, mean completion "
          f"{mean_a / 60:.1f} min, {gpu_a} of {n} on NVENC")  # fmt: skip
    print(f"finish time: makespan {makespan_b / 60:.1f} min, mean completion "
          f"{mean_b / 60:.1f} min, {gpu_b} of {n} on NVENC")  # fmt: skip
    print(f"ETA at submit: median error {statistics.median(errors):.1%}, "
          f"p90 {percentile(errors, 0.9):.1%} ({len(errors)} jobs)")  # fmt: skip
    better_span = 1 - makespan_b / makespan_a
    better_mean = 1 - mean_b / mean_a
    emit(
        [
            Row(
                "makespan, mixed batch on a heterogeneous farm (simulated)",
                f"{makespan_b / 60:.1f} min",
                f"best fit {makespan_a / 60:.1f} min",
                makespan_b / makespan_a,
                ">= 15 % better",
                at_least(better_span, 0.15),
            ),
            Row(
                "mean job completion (simulated)",
                f"{mean_b / 60:.1f} min",
                f"best fit {mean_a / 60:.1f} min",
                mean_b / mean_a,
                ">= 15 % better",
                at_least(better_mean, 0.15),
            ),
            Row(
                "ETA error at submit, median (simulated, warmed up)",
                f"{statistics.median(errors):.1%}",
                "-",
                None,
                "<= 25 %",
                at_most(statistics.median(errors), 0.25),
            ),
            Row(
                "ETA error at submit, p90 (simulated, warmed up)",
                f"{percentile(errors, 0.9):.1%}",
                "-",
                None,
                "for the record",
                None,
            ),
        ],
        args.report,
    )


if __name__ == "__main__":
    main()
