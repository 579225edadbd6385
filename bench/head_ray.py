"""Progress batching through real Ray: many node agents as actors on one machine, one head.

``bench/head.py`` measures the coordinator in one process, its farm's batches arriving
over a socket. This bench puts the same path on Ray, to show that a node's progress
batching holds there: the head's calls grow with the nodes, not the encodes. On one
private local Ray (``ray.init(address="local")``):

- **the nodes' agents** are the real :class:`~cluster.ray_edge.actors.NodeAgentActor`
  (``RemoteAgent``, with the product's ``agent_options``; each named for a simulated
  node, all on this machine's one Ray node), each with its real
  :class:`~cluster.nodes.progress.ProgressBatcher`;
- **the head** is the real :class:`~cluster.control.coordinator.Coordinator` in one
  actor (the product's ``coordinator_options``), whose ``report_batch`` and
  ``report_progress`` are the coordinator's own entry points (:class:`SimHead` counts
  the calls and times ``apply_progress``, then runs the coordinator's). Its backend
  (:class:`HeldFarm`) calls each agent's ``snapshot(roots, head)`` at every node refresh
  as ``RayBackend`` does, so the agents learn where to send their batches the product's
  way (``progress.send = head.report_batch.remote``);
- **the encodes** are simulated. One encoder actor per encode (as the product runs them)
  would be thousands of processes, so each :class:`EncodeHost` actor carries the encodes
  of :data:`NODES_PER_HOST` nodes, and each encode reports its progress once a second
  through one fire-and-forget Ray call, as ``EncoderActor``'s progress sink does:
  ``agent.report.remote(...)`` (the batched path), or, as a node without a batching
  agent does, ``head.report_progress.remote(...)`` (the path before batching: one call
  per encode per second to the head).

Unknown jobs: ``apply_progress`` ignores a report unless its job is running in that
attempt, so reports for made-up ids would cost the head almost nothing and measure
nothing. The jobs here are real: submitted through ``submit_many``, probed (a fake
clip), placed by the real planner and started by the real dispatch on the simulated
nodes (``max_jobs_per_node`` = encodes per node), whose encoders hold every job running
until the end. The hosts then report for exactly the (job, attempt) pairs the head
started, so every report takes the coordinator's full apply path (job state, watchdog,
event log).

One farm, four windows, one after another (each path with the machine to itself; the
simulated encoders make the same calls a second in each, only their receiver differs):

1. *rest*: no progress; the head's housekeeping and Ray's idle cost;
2. *batched*: encodes -> their node's agent -> one batch per node per second -> head;
3. *batched, grouped*: the same encodes sent to a quarter of the agents (as if each
   host's four nodes were one node of four times the encodes): the head's calls should
   fall to a quarter, its reports stay the same;
4. *per encode*: encodes -> head, one call each per second.

For each: calls/s arriving at the head, reports applied/s, the head actor's process CPU
(all its threads: Ray's core worker receiving calls as well as the coordinator) and
``apply_progress``'s own CPU, lag from a report's creation (its ``at``) to the head
applying it (p50/p99), and whether the head kept up (reports applied / reports the
encodes made; reports not at the head at the window's end). On the batched paths an
agent keeps only each encode's newest report and sends on a fixed beat of one second
(a send's round trip does not delay the next); a report replaced by a newer one before
its batch went is not sent (by design: the head holds each encode's progress at most a
batch old).

Targets: batched head calls <= 1.2 x agents per second; >= 95 % of reports applied; lag
p99 <= 2 s (the README's). Sizes: what this machine holds. Every report is a Ray call
received by an agent (~2 ms of CPU each on 2 shared cores) and sent by a host (~1 ms):
the node side of a farm, which on a farm runs on its nodes, here shares two cores with
the head; past ~300 reports a second it saturates them and the agents, not the head,
fall behind (32 x 16 encodes: 72 % applied, lag p99 2.9 s, the head at 6 % of a core).
Each agent is a Ray worker process of ~55 MiB (PSS).

    .venv/bin/python bench/head_ray.py [--nodes 32] [--encodes 8] [--window 20]
    .venv/bin/python bench/head_ray.py --quick      # 8 nodes x 16 encodes, 8 s windows
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.head import CLIP, ClipMedia  # noqa: E402
from bench.report import Row, add_arguments, at_least, at_most, emit  # noqa: E402
from cluster.config import CoordinatorConfig, RuntimeConfig  # noqa: E402
from cluster.control.coordinator import Coordinator  # noqa: E402
from cluster.control.fakes import fake_node  # noqa: E402
from cluster.control.heap import Heap  # noqa: E402
from cluster.media.work import WorkOrder, WorkOutcome  # noqa: E402
from cluster.model.jobs import Hardware, JobKind, JobSpec  # noqa: E402
from cluster.model.progress import ProgressReport, ProgressSnapshot  # noqa: E402
from cluster.nodes.agent import NodeInfo  # noqa: E402
from cluster.scheduling.planner import Placement  # noqa: E402
from cluster.storage.scratch import SCRATCH_ENV  # noqa: E402

NAMESPACE = "framefleet-bench"
TICK_S = 1.0
"""How often an encode reports (ffmpeg's pace; the batcher's interval too)."""
SLICES = 50
"""A host sends each second's reports in this many slices (each encode at its phase)."""
NODES_PER_HOST = 4
"""Nodes whose encodes one :class:`EncodeHost` process carries."""
BATCH = 500
"""Jobs per ``submit_many`` call while filling the farm."""
RUN_S = 400.0
"""A simulated encode's run time: none ends within the bench."""
CALLS_FACTOR = 1.2
ABSORBED_TARGET = 0.95
LAG_TARGET_S = 2.0
BENCH_GROUP = "bench"
TALLY_TIMEOUT_S = 60.0
SETUP_TIMEOUT_S = 180.0
"""At most this long for the agents to start, or the farm to fill (a run never hangs)."""
NOISE = 0.02
"""Head CPU (cores) above its rest below which a per-call cost is not extrapolated."""
MODES = ("rest", "batched", "grouped", "direct")
"""The windows, in order: no progress; batched by each node's agent; batched by a quarter
of the agents (the same encodes as fewer, bigger nodes); one call per encode."""
ENTRY = {"batched": "batched", "grouped": "batched", "direct": "direct"}
"""The head's entry point each mode's reports arrive through."""


def say(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


# ---- the head: the real coordinator in an actor, on held encodes --------------------


class HeldEncoder:
    """An encoder handle whose run lasts until it is cancelled: the job stays running
    (its progress comes from an :class:`EncodeHost`)."""

    def __init__(self, farm: HeldFarm, node_id: str) -> None:
        self.farm = farm
        self.node_id = node_id
        self.done: asyncio.Future[str] | None = None

    async def run(self, order: WorkOrder) -> WorkOutcome:
        self.done = asyncio.get_running_loop().create_future()
        key = (order.job_id, order.attempt)
        self.farm.started[key] = self.node_id
        try:
            status = await self.done
        finally:
            self.farm.started.pop(key, None)
        return WorkOutcome(order.job_id, order.attempt, status, elapsed_s=0.0)

    async def cancel(self, job_id: str) -> bool:
        self.kill()
        return True

    async def shutdown(self) -> None:
        self.kill()

    def kill(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result("cancelled")


class HeldFarm(ClipMedia):
    """The head's backend: one simulated node per agent, of ``slots`` cores; each refresh
    asks every agent for its snapshot with the head's handle, as ``RayBackend`` does."""

    def __init__(self, head: Any, agents: dict[str, Any], slots: int) -> None:
        self.head = head
        self.agents = agents
        self.infos = [fake_node(node_id, cpus=float(slots)) for node_id in agents]
        self.started: dict[tuple[str, int], str] = {}
        """(job, attempt) -> node, of every encode running."""

    async def nodes(self) -> list[NodeInfo]:
        calls = [agent.snapshot.remote((), self.head) for agent in self.agents.values()]
        await asyncio.gather(*calls, return_exceptions=True)
        return list(self.infos)

    def create_encoder(self, placement: Placement) -> HeldEncoder:
        return HeldEncoder(self, placement.node_id)


class Warned(logging.Handler):
    """The coordinator's warnings, counted (a watchdog stopping encodes: the head fell
    behind)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.first: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.first) < 3:
            self.first.append(record.getMessage()[:200])


class SimHead(Coordinator):
    """The coordinator as the head actor, on a :class:`HeldFarm`. Its progress entry
    points are the coordinator's, counted; ``apply_progress`` is timed (its thread CPU)
    and each report's lag from its creation recorded."""

    def __init__(self, root: str, agents: dict[str, Any], slots: int) -> None:
        import ray

        data = Path(root)
        self.held = HeldFarm(ray.get_runtime_context().current_actor, agents, slots)
        config = CoordinatorConfig(data_dir=data / "data", media_roots=(data,),
                                   max_jobs_per_node=slots, max_queued_jobs=0)  # fmt: skip
        super().__init__(config, self.held, probe=self.held.probe, index=self.held.index,
                         heap=Heap())  # fmt: skip
        self.warned = Warned()
        logging.getLogger("framefleet").addHandler(self.warned)
        self.calls = {"batched": 0, "direct": 0}
        self.reports = {"batched": 0, "direct": 0}
        """Calls, and reports in them, by entry point: ``report_batch``, ``report_progress``."""
        self.applied = 0
        self.apply_cpu = 0.0
        self.lags = array("d")
        self.start()

    async def report_batch(self, reports: list[ProgressReport]) -> None:
        self.calls["batched"] += 1
        self.reports["batched"] += len(reports)
        await super().report_batch(reports)

    async def report_progress(self, job_id: str, attempt: int, snapshot: ProgressSnapshot) -> None:
        self.calls["direct"] += 1
        self.reports["direct"] += 1
        await super().report_progress(job_id, attempt, snapshot)

    def apply_progress(self, reports: Iterable[ProgressReport]) -> int:
        reports = reports if isinstance(reports, list) else list(reports)
        began = time.thread_time()
        applied = super().apply_progress(reports)
        self.apply_cpu += time.thread_time() - began
        now = time.time()
        self.lags.extend(now - r.snapshot.at for r in reports if r.snapshot.at is not None)
        self.applied += applied
        return applied

    async def fill(self, jobs: int, within_s: float) -> int:
        """Submit ``jobs`` jobs and wait (at most ``within_s``) until they all run."""
        source, out = Path(self.config.data_dir).parent / "in.mp4", self.config.data_dir / "out"
        source.write_bytes(b"sim")
        out.mkdir(parents=True, exist_ok=True)
        specs = [JobSpec(JobKind.TRANSCODE, str(source), str(out / f"{i:06d}.mp4"),
                         codec="h264", hardware=Hardware.CPU, split="off")
                 for i in range(jobs)]  # fmt: skip
        for first in range(0, jobs, BATCH):
            await self.submit_many(specs[first : first + BATCH])
        deadline = time.monotonic() + within_s
        while len(self.held.started) < jobs and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        return len(self.held.started)

    def placed(self) -> list[tuple[str, str, int]]:
        """(node, job, attempt) of every encode running."""
        return [(node, job, attempt) for (job, attempt), node in self.held.started.items()]

    def tally(self) -> dict[str, Any]:
        """Counts so far, with the lags recorded since the last tally (then forgotten)."""
        lags, self.lags = self.lags, array("d")
        return {"at": time.monotonic(), "cpu": time.process_time(), "calls": dict(self.calls),
                "reports": dict(self.reports), "applied": self.applied, "apply_cpu": self.apply_cpu,
                "lags": lags, "running": len(self.held.started), "warnings": self.warned.count,
                "first_warnings": list(self.warned.first)}  # fmt: skip


# ---- the encodes: simulated, each reporting once a second through a Ray call --------


@dataclass(frozen=True, slots=True)
class Encode:
    node_id: str
    job_id: str
    attempt: int
    began: float

    def snapshot(self, now: float) -> ProgressSnapshot:
        part = min(max((now - self.began) / RUN_S, 0.0), 1.0)
        speed = CLIP.duration_s / RUN_S
        out_time = part * CLIP.duration_s
        return ProgressSnapshot(frame=int(out_time * CLIP.fps), fps=round(speed * CLIP.fps, 1),
                                out_time_s=round(out_time, 3), speed=round(speed, 3),
                                percent=round(part * 100, 2), eta_s=round((1 - part) * RUN_S, 1),
                                at=now)  # fmt: skip


class EncodeHost:
    """The encodes of a few nodes: each reports once a second, at its own phase in the
    second, through one fire-and-forget call: ``agent.report`` (``batched``, as
    ``EncoderActor``'s sink; ``grouped``: all to the agent of the host's first node, as if
    its nodes were one), ``head.report_progress`` (``direct``: a node without a batching
    agent), or not at all (``rest``)."""

    def __init__(self, head: Any, agents: dict[str, Any], seed: int) -> None:
        self.head = head
        self.agents = agents
        self.rng = random.Random(seed)
        self.mode = "rest"
        self.slices: list[list[Encode]] = [[] for _ in range(SLICES)]
        self.sent = dict.fromkeys(ENTRY, 0)
        """Reports made, by mode."""
        self.first = next(iter(agents))
        """The node whose agent takes all this host's reports when ``grouped``."""
        self.late = 0.0
        """The longest a slice went out after its time (the host itself fell behind)."""
        self._task: asyncio.Task[None] | None = None

    async def begin(self, encodes: list[tuple[str, str, int]]) -> None:
        now = time.time()
        for node_id, job_id, attempt in encodes:
            began = now - self.rng.random() * RUN_S / 2
            self.slices[self.rng.randrange(SLICES)].append(Encode(node_id, job_id, attempt, began))
        self._task = asyncio.create_task(self._tick())

    async def switch(self, mode: str) -> None:
        self.mode = mode

    async def tally(self) -> dict[str, Any]:
        late, self.late = self.late, 0.0
        return {"at": time.monotonic(), "cpu": time.process_time(), "sent": dict(self.sent),
                "late": late}  # fmt: skip

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        step = TICK_S / SLICES
        due = loop.time()
        while True:
            for group in self.slices:
                wait = due - loop.time()
                self.late = max(self.late, -wait)
                if wait < -TICK_S:  # the host fell a second behind: no catching up (an
                    due, wait = loop.time(), 0.0  # encoder reports at its pace, no faster)
                await asyncio.sleep(max(wait, 0.0))  # and the loop answers tally meanwhile
                due += step
                if self.mode == "rest" or not group:
                    continue
                now = time.time()
                for e in group:
                    if self.mode == "direct":
                        self.head.report_progress.remote(e.job_id, e.attempt, e.snapshot(now))
                    else:
                        agent = self.agents[e.node_id if self.mode == "batched" else self.first]
                        agent.report.remote(e.job_id, e.attempt, e.snapshot(now))
                self.sent[self.mode] += len(group)


# ---- one run ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    nodes: int
    encodes: int
    """Per node."""
    window_s: float
    warmup_s: float
    rest_s: float
    fill_s: float = 120.0


@dataclass(frozen=True, slots=True)
class Window:
    mode: str
    seconds: float
    running: int
    agents: int
    """Agents batching (``grouped``: a quarter of them, each taking four nodes' encodes)."""
    calls_s: float
    """Calls arriving at the head (``report_batch`` or ``report_progress``)."""
    reports_s: float
    """Reports in them."""
    applied_s: float
    """Reports the head found current and applied."""
    sent_s: float
    """Reports the encodes made (each a Ray call to its agent, or to the head)."""
    head_cpu: float
    """The head actor's process, in cores."""
    apply_cpu: float
    """``apply_progress`` alone, in cores."""
    hosts_cpu: float
    agents_cpu: float
    """Every node agent's process together, in cores."""
    ray_cpu: float
    """Ray's own processes (GCS, raylet, ...), in cores."""
    lag_p50_s: float
    lag_p99_s: float
    lags: int
    behind: int
    """Reports made on this path since it began that have not reached the head by the
    window's end: queued in Ray (per encode), or held, or replaced by a newer one of the
    same encode, by an agent (batched)."""
    host_late_s: float
    warnings: int

    @property
    def absorbed(self) -> float:
        return self.applied_s / self.sent_s if self.sent_s else float("nan")


AGENT, RAY = "NodeAgentActor", "ray"


class Procs:
    """This run's Ray processes (the driver's descendants: another Ray on the machine is
    not counted), by what their titles say they are: node agents, or Ray's own."""

    def __init__(self) -> None:
        import psutil

        self.roles: dict[str, list[Any]] = {}
        for proc in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                title = " ".join(proc.cmdline())
                role = next((r for r in (AGENT, "SimHead", "EncodeHost") if f"ray::{r}" in title),
                            RAY)  # fmt: skip
                self.roles.setdefault(role, []).append(proc)

    @property
    def count(self) -> int:
        return sum(map(len, self.roles.values()))

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far, by role."""
        import psutil

        spent: dict[str, float] = {}
        for role, procs in self.roles.items():
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    spent[role] = spent.get(role, 0.0) + times.user + times.system
        return spent

    def pss_mib(self) -> float:
        import psutil

        total = 0
        for procs in self.roles.values():
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_full_info().pss
        return total / 2**20


def percentile(values: array[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.contextmanager
def environment(changes: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``changes`` for the block (Ray's processes inherit it)."""
    old = {k: os.environ.get(k) for k in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run(plan: Plan) -> tuple[list[Window], dict[str, Any]]:
    """Start a private Ray, the farm and the head; measure each window; stop it all."""
    tmp = Path(tempfile.mkdtemp(prefix="ffheadray-"))
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    changes = {"RAY_USAGE_STATS_ENABLED": "0", SCRATCH_ENV: str(tmp / "scratch"),
               "PYTHONPATH": path}  # fmt: skip
    try:
        with environment(changes):
            import ray

            began = time.monotonic()
            ray.init(address="local", _temp_dir=str(tmp / "ray"), num_cpus=os.cpu_count() or 2,
                     include_dashboard=False, namespace=NAMESPACE, configure_logging=False,
                     log_to_driver=False)  # fmt: skip
            try:
                say(f"Ray up in {time.monotonic() - began:.1f} s")
                return farm(plan, tmp)
            finally:
                ray.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def farm(plan: Plan, tmp: Path) -> tuple[list[Window], dict[str, Any]]:
    import ray

    from cluster.ray_edge.actors import AGENT_PREFIX, RemoteAgent, agent_options
    from cluster.ray_edge.backend import coordinator_options

    began = time.monotonic()
    ray_node = ray.get_runtime_context().get_node_id()
    ids = [f"sim-{i:03d}" for i in range(plan.nodes)]
    agents: dict[str, Any] = {
        node_id: RemoteAgent.options(
            **{**agent_options(ray_node, NAMESPACE), "name": AGENT_PREFIX + node_id}
        ).remote()
        for node_id in ids
    }
    ray.get([a.snapshot.remote() for a in agents.values()], timeout=SETUP_TIMEOUT_S)  # up
    say(f"{plan.nodes} node agents up in {time.monotonic() - began:.1f} s")
    runtime = RuntimeConfig(data_dir=tmp, namespace=NAMESPACE)
    options = {**coordinator_options(runtime), "max_restarts": 0}
    wrap: Any = ray.remote  # (its stubs lack concurrency_groups)
    remote = wrap(concurrency_groups={BENCH_GROUP: 1})(SimHead)
    head: Any = remote.options(**options).remote(str(tmp), agents, plan.encodes)
    groups = [ids[i : i + NODES_PER_HOST] for i in range(0, plan.nodes, NODES_PER_HOST)]
    hosts: list[Any] = [
        ray.remote(EncodeHost).options(num_cpus=0).remote(head, {n: agents[n] for n in group}, seed)
        for seed, group in enumerate(groups)
    ]
    began = time.monotonic()
    jobs = plan.nodes * plan.encodes
    running = ray.get(head.fill.remote(jobs, plan.fill_s), timeout=SETUP_TIMEOUT_S)
    say(f"{running:,} of {jobs:,} encodes running after {time.monotonic() - began:.1f} s "
        f"({len(hosts)} encode hosts)")  # fmt: skip
    by_node: dict[str, list[tuple[str, str, int]]] = {}
    for placed in ray.get(head.placed.remote(), timeout=SETUP_TIMEOUT_S):
        by_node.setdefault(placed[0], []).append(placed)
    ray.get([h.begin.remote([p for n in g for p in by_node.get(n, [])])
             for h, g in zip(hosts, groups, strict=True)], timeout=SETUP_TIMEOUT_S)  # fmt: skip
    procs = Procs()
    say(f"Ray's processes: {procs.count}, {procs.pss_mib():,.0f} MiB (PSS)")
    windows = []
    for mode in MODES:
        ray.get([h.switch.remote(mode) for h in hosts], timeout=TALLY_TIMEOUT_S)
        say(f"{title(mode, plan)}: warming up {plan.warmup_s:g} s")
        time.sleep(plan.warmup_s)
        windows.append(window(plan, mode, head, hosts, procs))
        show(windows[-1], plan)
    last, *_ = tallies(head, [])
    return windows, {"first_warnings": last["first_warnings"]}


def tallies(head: Any, hosts: list[Any]) -> list[dict[str, Any]]:
    """The head's counts, then each host's. The head answers in a concurrency group of
    its own (its own thread): not behind the calls queued for it when it falls behind."""
    import ray

    calls = [head.tally.options(concurrency_group=BENCH_GROUP).remote(),
             *[h.tally.remote() for h in hosts]]  # fmt: skip
    answers: list[dict[str, Any]] = ray.get(calls, timeout=TALLY_TIMEOUT_S)
    return answers


def window(plan: Plan, mode: str, head: Any, hosts: list[Any], procs: Procs) -> Window:

    seconds = plan.rest_s if mode == "rest" else plan.window_s
    h0, *s0 = tallies(head, hosts)
    c0, t0 = procs.cpu(), time.monotonic()
    time.sleep(seconds)
    c1, t1 = procs.cpu(), time.monotonic()
    h1, *s1 = tallies(head, hosts)
    span = h1["at"] - h0["at"]
    entry = ENTRY.get(mode, "batched")
    sent = sum(b["sent"].get(mode, 0) - a["sent"].get(mode, 0) for a, b in zip(s0, s1, strict=True))
    made = sum(n for s in s1 for m, n in s["sent"].items() if ENTRY[m] == entry)
    host_span = statistics.fmean(b["at"] - a["at"] for a, b in zip(s0, s1, strict=True))
    hosts_cpu = sum(b["cpu"] - a["cpu"] for a, b in zip(s0, s1, strict=True))
    lags = h1["lags"]
    agents = math.ceil(plan.nodes / NODES_PER_HOST) if mode == "grouped" else plan.nodes
    return Window(
        mode=mode, seconds=span, running=h1["running"], agents=agents,
        calls_s=(sum(h1["calls"].values()) - sum(h0["calls"].values())) / span,
        reports_s=(sum(h1["reports"].values()) - sum(h0["reports"].values())) / span,
        applied_s=(h1["applied"] - h0["applied"]) / span,
        sent_s=sent / host_span, head_cpu=(h1["cpu"] - h0["cpu"]) / span,
        apply_cpu=(h1["apply_cpu"] - h0["apply_cpu"]) / span, hosts_cpu=hosts_cpu / host_span,
        agents_cpu=(c1.get(AGENT, 0.0) - c0.get(AGENT, 0.0)) / (t1 - t0),
        ray_cpu=(c1.get(RAY, 0.0) - c0.get(RAY, 0.0)) / (t1 - t0),
        lag_p50_s=percentile(lags, 0.5), lag_p99_s=percentile(lags, 0.99), lags=len(lags),
        behind=max(made - h1["reports"][entry], 0),
        host_late_s=max(s["late"] for s in s1), warnings=h1["warnings"] - h0["warnings"],
    )  # fmt: skip


# ---- the report ---------------------------------------------------------------------


def title(mode: str, plan: Plan) -> str:
    encodes = plan.nodes * plan.encodes
    grouped = math.ceil(plan.nodes / NODES_PER_HOST)
    return {
        "rest": "rest: no progress",
        "batched": f"batched: {plan.nodes} agents x {plan.encodes} encodes",
        "grouped": f"batched: {grouped} agents x {encodes // grouped} encodes",
        "direct": f"per encode (before): {encodes} encodes -> head",
    }[mode]


def show(w: Window, plan: Plan) -> None:
    ms = 1e3
    print(f"\n--- {title(w.mode, plan)}; {w.running:,} running; window {w.seconds:.1f} s")
    print(f"head calls: {w.calls_s:,.1f}/s carrying {w.reports_s:,.0f} reports/s; applied "
          f"{w.applied_s:,.0f}/s of {w.sent_s:,.0f}/s the encodes made "
          f"({w.absorbed:.1%})")  # fmt: skip
    print(f"head actor CPU: {w.head_cpu:.1%} of a core (apply_progress {w.apply_cpu:.1%}); "
          f"beside it: node agents {w.agents_cpu:.1%}, encode hosts {w.hosts_cpu:.1%}, "
          f"Ray's daemons {w.ray_cpu:.1%}; load {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores")  # fmt: skip
    print(f"lag report made -> applied: p50 {w.lag_p50_s * ms:,.0f} ms, p99 "
          f"{w.lag_p99_s * ms:,.0f} ms ({w.lags:,} reports); not at the head at the end: "
          f"{w.behind:,}; hosts late by up to {w.host_late_s * ms:,.0f} ms; "
          f"{w.warnings} warnings")  # fmt: skip
    sys.stdout.flush()


def capacity(windows: list[Window], plan: Plan) -> None:
    """The head's CPU per call, less its rest, and what one core takes at that cost (a
    line through one point: on this machine, with everything else sharing it)."""
    rest = next(w.head_cpu for w in windows if w.mode == "rest")
    print("\nthe head actor's CPU per call, less its rest (one core's worth, linearly):")
    for w in windows:
        if w.mode == "rest" or w.calls_s <= 0 or w.head_cpu <= rest:
            continue
        per_call = (w.head_cpu - rest) / w.calls_s
        size = w.reports_s / w.calls_s
        calls = 1.0 / per_call
        if w.head_cpu - rest < NOISE:
            print(f"  {title(w.mode, plan)}: {per_call * 1e3:.2f} ms a call (within the "
                  "noise of the head's own housekeeping)")  # fmt: skip
            continue
        print(f"  {title(w.mode, plan)}: {per_call * 1e3:.2f} ms a call of {size:,.1f} "
              f"reports; one core: ~{calls:,.0f} calls/s, {calls * size:,.0f} encodes "
              "at 1 Hz")  # fmt: skip


def rows(windows: list[Window], plan: Plan) -> list[Row]:
    by = {w.mode: w for w in windows}
    batched, grouped, direct, rest = by["batched"], by["grouped"], by["direct"], by["rest"]
    encodes = plan.nodes * plan.encodes
    scale = f"{plan.nodes} agents x {plan.encodes} encodes, Ray"

    def ratio(a: float, b: float) -> float | None:
        return a / b if b and not math.isnan(a) and not math.isnan(b) else None

    def calls(w: Window) -> Row:
        bound = CALLS_FACTOR * w.agents / TICK_S
        return Row(f"head calls/s, {w.agents} agents x {encodes // w.agents} encodes (Ray)",
                   f"{w.calls_s:,.1f}/s batched", f"{direct.calls_s:,.0f}/s per encode",
                   ratio(w.calls_s, direct.calls_s),
                   f"<= {CALLS_FACTOR:g} x agents/s ({bound:,.1f})",
                   at_most(w.calls_s, bound))  # fmt: skip

    ms = 1e3
    return [
        calls(batched),
        calls(grouped),
        Row(f"reports applied / made ({scale})", f"{batched.absorbed:.1%}",
            f"{direct.absorbed:.1%}", ratio(batched.absorbed, direct.absorbed),
            f">= {ABSORBED_TARGET:.0%}", at_least(batched.absorbed, ABSORBED_TARGET)),
        Row(f"head actor CPU ({scale}; at rest {rest.head_cpu:.1%})",
            f"{batched.head_cpu:.1%} of a core", f"{direct.head_cpu:.1%} of a core",
            ratio(batched.head_cpu, direct.head_cpu), "-", None),
        Row(f"progress lag p99, made -> applied ({scale})",
            f"{batched.lag_p99_s * ms:,.0f} ms", f"{direct.lag_p99_s * ms:,.0f} ms",
            ratio(batched.lag_p99_s, direct.lag_p99_s), f"<= {LAG_TARGET_S * ms:,.0f} ms",
            at_most(batched.lag_p99_s, LAG_TARGET_S)),
    ]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, help="node agents (actors; default 32, quick 8)")
    ap.add_argument("--encodes", type=int, help="encodes per node (default 8, quick 16)")
    ap.add_argument("--window", type=float, help="seconds measured per path (default 20)")
    add_arguments(ap)
    args = ap.parse_args()
    # A SIGTERM (a timeout) ends the run through its cleanup: Ray stopped, folders removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("head_ray: stopped by SIGTERM"))
    quick = args.quick
    plan = Plan(
        nodes=args.nodes or (8 if quick else 32),
        encodes=args.encodes or (16 if quick else 8),
        window_s=args.window or (8.0 if quick else 20.0),
        warmup_s=3.0 if quick else 5.0,
        rest_s=3.0 if quick else 5.0,
    )
    say(f"load before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    windows, extra = run(plan)
    capacity(windows, plan)
    for text in extra["first_warnings"]:
        say(f"coordinator: {text}")
    print()
    emit(rows(windows, plan), args.report)


if __name__ == "__main__":
    main()
