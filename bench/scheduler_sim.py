"""The placement core at farm scale, by simulation: no Ray, no ffmpeg.

Places at least 100,000 synthetic jobs (mixed codecs, resolutions, priorities and
hardware policies) on 1,000 simulated nodes x 8 GPUs of four models, in ticks: each
tick new jobs arrive, running ones finish and give their room back, and the queue is
offered to the planner in priority order with aging, as the coordinator does. Every
placement is checked against an independent ledger (GPU memory less the safety
margin, NVENC session caps, cores): over-subscriptions are counted, not assumed.

    .venv/bin/python bench/scheduler_sim.py [--jobs 100000] [--nodes 1000] [--seed 7]

Arrivals scale with the farm: a tick brings 25 jobs per node (``--per-tick`` to change
it), so 10,000 nodes and 1,000,000 jobs load the farm as 1,000 nodes and 100,000 jobs
do: for some ticks more jobs wait than fit, and each tick offers them all again.

With 64 cores per node (the default) nodes run out of cores before GPUs run out of
memory, as on real farms; to see how tightly GPU memory is packed, make memory the
bottleneck: ``--jobs 400000 --per-tick 60000 --cores-per-node 1024``.

A decision is either a placement or a "no room now" answer, which is far cheaper (the
planner remembers the smallest demand that found no room until room is given back); so
decisions/s depends on how loaded the farm is, and successful placements/s is printed
beside it, with the planner's build time (the coordinator builds one per dispatch round).

Prints decisions per second, p99 decision time, peak memory, GPU-memory utilization
against the bound (sum of GPU demands / capacity) and the over-subscription count.
Targets at farm scale (``--nodes 10000 --jobs 1000000``, what ``make bench`` runs):
>= 100,000 decisions/s, p99 <= 1 ms, 0 over-subscriptions.
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import Row, add_arguments, at_least, at_most, emit
from cluster.model.capability import Capability, CodecState
from cluster.model.jobs import Hardware, JobKind
from cluster.scheduling.costs import CostModel
from cluster.scheduling.planner import Demand, GpuState, NodeState, Placement, Planner, queue_key

OK = Capability(CodecState.VERIFIED)
MODELS = [  # name, MiB, codecs, session cap, share of GPUs
    ("NVIDIA L4", 23034, ("h264", "hevc", "av1"), 0, 0.4),
    ("Tesla T4", 15360, ("h264", "hevc"), 0, 0.3),
    ("NVIDIA GeForce RTX 4090", 24564, ("h264", "hevc", "av1"), 8, 0.2),
    ("NVIDIA A10", 23028, ("h264", "hevc"), 0, 0.1),
]
SIZES = [
    ((854, 480), 0.2),
    ((1280, 720), 0.3),
    ((1920, 1080), 0.35),
    ((2560, 1440), 0.05),
    ((3840, 2160), 0.1),
]
CODECS = [("h264", 0.5), ("hevc", 0.35), ("av1", 0.15)]
HARDWARE = [(Hardware.AUTO, 0.6), (Hardware.GPU, 0.25), (Hardware.CPU, 0.15)]


@dataclass(slots=True)
class SimJob:
    seq: int
    demand: Demand
    priority: int
    arrived: int
    duration: int


T = TypeVar("T")


def pick(rng: random.Random, choices: list[tuple[T, float]]) -> T:
    return rng.choices([c for c, _ in choices], weights=[w for _, w in choices])[0]


def build_nodes(n: int, cores: float, rng: random.Random) -> list[NodeState]:
    nodes = []
    for i in range(n):
        gpus = []
        for k in range(8):
            name, mib, codecs, cap, _ = rng.choices(MODELS, weights=[m[4] for m in MODELS])[0]
            gpus.append(
                GpuState(
                    f"GPU-{i:04d}-{k}",
                    k,
                    name,
                    mib,
                    max_sessions=cap,
                    codecs=dict.fromkeys(codecs, OK),
                )
            )
        nodes.append(
            NodeState(f"node-{i:04d}", f"10.{i // 250}.{i % 250}.1", cores, gpus=tuple(gpus))
        )
    return nodes


def arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--per-tick", type=int, help="arrivals per tick (default 25 per node)")
    ap.add_argument("--cores-per-node", type=float, default=64.0)
    ap.add_argument("--seed", type=int, default=7)
    add_arguments(ap)
    args = ap.parse_args()
    if args.quick:  # the same load, at half the 1,000-node scale
        args.jobs, args.nodes = min(args.jobs, 50_000), min(args.nodes, 500)
    if args.per_tick is None:
        args.per_tick = 25 * args.nodes
    return args


def slowest(timings: list[int]) -> str:
    """The sorted decision times' far tail: the cyclic collector's passes land here."""
    slow = [t for t in timings if t > 1_000_000]
    p999 = timings[int(0.999 * (len(timings) - 1))] / 1e6
    return (
        f"p99.9 {p999:.3f} ms, max {timings[-1] / 1e6:.1f} ms; "
        f"{len(slow)} decisions over 1 ms took {sum(slow) / 1e9:.2f} s in all"
    )


def main() -> None:
    args = arguments()
    rng = random.Random(args.seed)
    costs = CostModel()
    margin = costs.safety_margin_mb

    t0 = time.perf_counter()
    nodes = build_nodes(args.nodes, args.cores_per_node, rng)
    t1 = time.perf_counter()
    planner = Planner(nodes, costs=costs)
    build_s, planner_s = time.perf_counter() - t0, time.perf_counter() - t1
    gpus = {g.uuid: g for n in nodes for g in n.gpus}
    node_cpus = {n.node_id: n.cpus for n in nodes}
    capacity = sum(g.memory_total_mb - margin for g in gpus.values())

    # The independent ledger.
    mem: dict[str, float] = dict.fromkeys(gpus, 0.0)
    sessions: dict[str, int] = dict.fromkeys(gpus, 0)
    cpus: dict[str, float] = dict.fromkeys(node_cpus, 0.0)
    over = 0

    jobs = []
    for seq in range(args.jobs):
        w, h = pick(rng, SIZES)
        demand = Demand(JobKind.TRANSCODE, pick(rng, HARDWARE), pick(rng, CODECS), w, h)
        jobs.append(
            SimJob(seq, demand, rng.randrange(10), seq // args.per_tick, rng.randint(5, 40))
        )

    # The simulation's own million jobs and the snapshot are long-lived: keep them out
    # of the cyclic collector's full passes, as a long-running coordinator's start-up
    # state would be after gc.freeze(); what placement allocates is still collected.
    gc.freeze()
    queue: list[SimJob] = []
    running: dict[int, list[tuple[Placement]]] = {}
    timings: list[int] = []
    placed = gpu_placed = cpu_fallbacks = placed_ns = 0
    util_sum = bound_sum = 0.0
    util_ticks = 0
    tick = 0
    next_job = 0
    while next_job < len(jobs) or queue:
        for (done,) in running.pop(tick, []):  # finished: give the room back
            planner.release(done)
            cpus[done.node_id] -= done.cpus
            if done.gpu_uuid:
                mem[done.gpu_uuid] -= done.gpu_memory_mb
                sessions[done.gpu_uuid] -= 1
        while next_job < len(jobs) and jobs[next_job].arrived <= tick:
            queue.append(jobs[next_job])
            next_job += 1
        queue.sort(key=lambda j: queue_key(j.priority, j.seq, tick - j.arrived, aging_s=5))
        waiting: list[SimJob] = []
        for job in queue:
            start = time.perf_counter_ns()
            p = planner.place(job.demand)
            spent = time.perf_counter_ns() - start
            timings.append(spent)
            if p is None:
                waiting.append(job)
                continue
            placed += 1
            placed_ns += spent
            cpus[p.node_id] += p.cpus
            if cpus[p.node_id] > node_cpus[p.node_id] + 1e-9:
                over += 1
            if p.gpu_uuid:
                gpu_placed += 1
                g = gpus[p.gpu_uuid]
                mem[p.gpu_uuid] += p.gpu_memory_mb
                sessions[p.gpu_uuid] += 1
                if (
                    mem[p.gpu_uuid] > g.memory_total_mb - margin
                    or (g.max_sessions and sessions[p.gpu_uuid] > g.max_sessions)
                    or not g.can_encode(job.demand.codec)
                ):
                    over += 1
            elif job.demand.hardware is Hardware.AUTO:
                cpu_fallbacks += 1
            running.setdefault(tick + job.duration, []).append((p,))
        queue = waiting
        gpu_waiting = [j for j in queue if j.demand.hardware is Hardware.GPU]
        if gpu_waiting:  # GPUs are the bottleneck now: how full did placement get them?
            used = sum(mem.values())
            wanted = used + sum(
                costs.gpu_memory(j.demand.codec, j.demand.width, j.demand.height)
                for j in gpu_waiting
            )
            util_sum += used / capacity
            bound_sum += min(1.0, wanted / capacity)
            util_ticks += 1
        tick += 1

    decisions = len(timings)
    total_s = sum(timings) / 1e9
    timings.sort()
    p99_ms = timings[int(0.99 * (decisions - 1))] / 1e6
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"cluster: {args.nodes} nodes x 8 GPUs ({len(gpus)} GPUs, "
        f"{capacity / 1024 / 1024:.1f} TiB GPU memory), snapshot built in {build_s * 1e3:.0f} ms"
        f" (the planner over it: {planner_s * 1e3:.0f} ms)"
    )
    print(
        f"jobs: {args.jobs} over {tick} ticks; placed {placed} ({gpu_placed} on GPUs, "
        f"{cpu_fallbacks} auto jobs on CPUs)"
    )
    print(f"{decisions / total_s:,.0f} decisions/s ({decisions} decisions in {total_s:.2f} s)")
    print(
        f"successful placements alone: {placed / (placed_ns / 1e9):,.0f}/s "
        f"(mean {placed_ns / placed / 1e3:.1f} us); the rest are 'no room now' answers"
    )
    print(f"p99 decision time: {p99_ms:.3f} ms (median {timings[decisions // 2] / 1e3:.1f} us)")
    print(slowest(timings))
    print(f"peak memory: {peak_mib:.0f} MiB (process RSS)")
    if util_ticks:
        print(
            f"GPU-memory utilization while GPU jobs waited: {util_sum / util_ticks:.1%} "
            f"(bound {bound_sum / util_ticks:.1%} = sum of demands / capacity, "
            f"{util_ticks} ticks)"
        )
    else:
        print("GPU-memory utilization: GPU jobs never had to wait (raise --per-tick)")
    print(f"over-subscriptions: {over}")
    scale = f"{args.nodes:,} nodes x 8 GPUs, {args.jobs:,} jobs"
    rate = decisions / total_s
    placed_rate = placed / (placed_ns / 1e9)
    emit(
        [
            Row(f"placement decisions/s ({scale})", f"{rate:,.0f}/s", "-", None,
                ">= 100,000/s", at_least(rate, 100_000)),
            Row("successful placements/s (the rest: no room now)", f"{placed_rate:,.0f}/s",
                "-", None, "printed", None),
            Row("planner build over the snapshot", f"{planner_s * 1e3:,.0f} ms", "-", None,
                "printed", None),
            Row("placement p99 decision time", f"{p99_ms:.3f} ms", "-", None, "<= 1 ms",
                at_most(p99_ms, 1.0)),
            Row("over-subscriptions (independent ledger)", str(over), "-", None, "0", over == 0),
            Row("scheduler simulation peak memory", f"{peak_mib:,.0f} MiB", "-", None,
                "printed", None),
        ],
        args.report,
    )  # fmt: skip


if __name__ == "__main__":
    main()
