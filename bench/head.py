"""The real coordinator at farm scale: simulated nodes and encoders, no Ray, no ffmpeg.

The real :class:`~cluster.control.coordinator.Coordinator` runs in this process on a
simulated :class:`~cluster.control.farm.backend.Backend` (:class:`SimFarm`): nodes of 8
cores running 8 encodes each (``max_jobs_per_node=8``; a 360p H.264 job takes one core).
An encode's handle lives on the head's loop (the coordinator awaits its ``run`` as it
awaits a Ray call) and lasts a lognormal time around :data:`MEAN_RUN_S`, in real time:
20,000 running end ~100 a second. The nodes live in a second process, as nodes are other
machines: each node's ticker puts each of its encodes' progress into the node's
:class:`~cluster.nodes.progress.ProgressBatcher` once a second, which sends one batch a
second to ``coordinator.report_batch`` (over a socket, answered, one in flight: as the
node agent's Ray call). A subscriber long-polls ``coordinator.events`` as the gateway's
hub does, and ``submit_many`` keeps ``--queue`` jobs queued, at most 500 a call (what one
HTTP request carries): as many jobs arrive as end.

The farm grows through ``--sizes`` (nodes join): the queue is loaded once, into the
smallest farm; at each size the farm fills (encodes started while it fills are already
part way through, so it starts in its steady state), the queue is topped up and probed,
then ``--window`` seconds are measured:

- progress reports the head applied per second, and batches per second;
- the head's own CPU: thread CPU time of the coordinator's entry points the farm drives
  (``apply_progress``; the dispatch round ``_dispatch``; an encode's outcome, ``_complete``;
  ``submit_many``; the probe; housekeeping; forecasts; the subscriber's ``since``), each
  less the timed calls inside it, per 1,000 running encodes; beside it the CPU of the
  head's process (its event loop, the encoder handles, the socket) and the farm's;
- lag from an encoder's report (its ``batcher.add``) to the subscriber seeing it (the
  batch interval is part of it: half a second on average);
- ``submit_many`` throughput, loading the queue and into the loaded head (5 requests
  back to back after each window);
- dispatch latency, from a simulated encode's ``run`` returning to the next ``run`` on
  that node (the next job started in the freed slot);
- resident memory with the queue held;
- the head loop's stalls, each entry point's longest call and the garbage collector's
  passes: what holds the loop (and so progress, events and starts) longest;
- the largest farm one head core serves at 1 Hz, from the measured costs (the model:
  :func:`capacity`).

Targets: 20,000 running encodes at 1 Hz on one head, lag p99 <= 2 s, freed slot -> next
start p99 <= 100 ms, submit >= 2,000 jobs/s, memory <= 2 GiB. Timings need the machine to
itself: the machine's load is printed with each size.

    .venv/bin/python bench/head.py [--sizes 100,1000,2500] [--queue 100000] [--window 25]
    .venv/bin/python bench/head.py --quick          # 100 and 500 nodes, 10,000 queued
    .venv/bin/python bench/head.py --profile        # and cProfile each window
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import gc
import io
import logging
import math
import multiprocessing
import os
import pickle
import pstats
import random
import shutil
import socket
import statistics
import sys
import tempfile
import time
from array import array
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import Row, add_arguments, at_least, at_most, emit
from cluster.config import CoordinatorConfig
from cluster.control.coordinator import Coordinator
from cluster.control.fakes import FakeClip, fake_node
from cluster.control.heap import Heap
from cluster.media.work import WorkOrder, WorkOutcome
from cluster.model.events import EventType
from cluster.model.jobs import Hardware, JobKind, JobSpec
from cluster.model.media import MediaInfo
from cluster.model.progress import ProgressReport, ProgressSnapshot
from cluster.model.split import FrameIndex
from cluster.nodes.agent import NodeInfo
from cluster.nodes.progress import ProgressBatcher
from cluster.scheduling.planner import Placement

P = ParamSpec("P")
R = TypeVar("R")
ReportBatch = Callable[[list[ProgressReport]], Coroutine[Any, Any, None]]

SLOTS = 8
"""Encodes per node (8 cores, one core per 360p H.264 encode, ``max_jobs_per_node``)."""
BATCH = 500
"""Jobs per ``submit_many`` call (what one HTTP request carries)."""
CLIP = FakeClip(duration_s=600.0, width=640, height=360, audio=False)
"""Every input: 10 minutes of 360p (a speed of ~3x then matches the run times)."""
BURST = 5
"""Requests of :data:`BATCH` jobs sent back to back after each window: ``submit_many``'s
throughput into the loaded head."""
MEAN_RUN_S = 200.0
"""Mean simulated run time: 20,000 running encodes end ~100 a second."""
RUN_SIGMA = 0.5
TICK_S = 1.0
"""How often an encode reports progress (ffmpeg's pace, and the batcher's interval)."""
SPAN_TARGET = 20_000
LAG_TARGET_S = 2.0
DISPATCH_TARGET_S = 0.100
SUBMIT_TARGET = 2_000.0
MEMORY_TARGET_MIB = 2048.0


def say(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


# ---- the head's own CPU ------------------------------------------------------------


class Meter:
    """Thread CPU time of the coordinator's entry points, each call less the timed calls
    inside it (a forecast inside a dispatch round counts as the forecast's)."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.longest: dict[str, float] = {}
        """The longest call of each entry point (wall seconds, the calls inside it too)
        while recording: what holds the loop longest."""
        self.yielded: dict[str, int] = {}
        """Calls of an async entry point that gave the loop away (their time then holds
        other work too): none, where nothing is printed."""
        self._inner: list[float] = []
        self.batches: tuple[array[int], array[float]] = (array("i"), array("d"))
        """Each ``apply_progress`` call in the window: its reports, its CPU seconds."""
        self.recording = False
        self.applied = 0
        """Reports ``apply_progress`` found current (of running attempts) while recording."""
        self.collector = Collector()

    def _enter(self) -> tuple[float, float]:
        self._inner.append(0.0)
        return time.thread_time(), time.perf_counter()

    def _leave(self, name: str, start: tuple[float, float]) -> float:
        spent, wall = time.thread_time() - start[0], time.perf_counter() - start[1]
        inner = self._inner.pop()
        if self._inner:
            self._inner[-1] += spent
        self.cpu[name] = self.cpu.get(name, 0.0) + spent - inner
        self.calls[name] = self.calls.get(name, 0) + 1
        if self.recording and wall > self.longest.get(name, 0.0):
            self.longest[name] = wall
        return spent

    def wrap(self, name: str, fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def timed(*args: P.args, **kwargs: P.kwargs) -> R:
            start = self._enter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._leave(name, start)

        return timed

    def wrap_async(
        self, name: str, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        @functools.wraps(fn)
        async def timed(*args: P.args, **kwargs: P.kwargs) -> R:
            ran_other = [False]  # set by the loop's next turn: the call gave the loop away
            probe = asyncio.get_running_loop().call_soon(ran_other.__setitem__, 0, True)
            start = self._enter()
            try:
                return await fn(*args, **kwargs)
            finally:
                self._leave(name, start)
                probe.cancel()
                if ran_other[0]:
                    self.yielded[name] = self.yielded.get(name, 0) + 1

        return timed

    def wrap_steps(
        self, name: str, fn: Callable[P, Generator[None, None, R]]
    ) -> Callable[P, Generator[None, None, R]]:
        """A generator run in steps (a forecast in slices): each step timed, one call."""

        @functools.wraps(fn)
        def timed(*args: P.args, **kwargs: P.kwargs) -> Generator[None, None, R]:
            steps, cpu, longest = fn(*args, **kwargs), 0.0, 0.0
            try:
                while True:
                    start = time.thread_time(), time.perf_counter()
                    try:
                        next(steps)
                    except StopIteration as done:
                        return done.value
                    finally:
                        cpu += time.thread_time() - start[0]
                        longest = max(longest, time.perf_counter() - start[1])
                    yield
            finally:
                self.cpu[name] = self.cpu.get(name, 0.0) + cpu
                self.calls[name] = self.calls.get(name, 0) + 1
                if self.recording and longest > self.longest.get(name, 0.0):
                    self.longest[name] = longest

        return timed

    def wrap_progress(self, fn: Callable[[list[ProgressReport]], int]) -> Callable[..., int]:
        @functools.wraps(fn)
        def timed(reports: list[ProgressReport]) -> int:
            start = self._enter()
            applied = 0
            try:
                applied = fn(reports)
                return applied
            finally:
                spent = self._leave("apply_progress", start)
                if self.recording:
                    self.batches[0].append(len(reports))
                    self.batches[1].append(spent)
                    self.applied += applied

        return timed

    def snapshot(self) -> dict[str, tuple[float, int]]:
        return {k: (v, self.calls[k]) for k, v in self.cpu.items()}


def patch(owner: object, name: str, wrapped: Callable[..., Any]) -> None:
    """Put a timed twin in place of ``owner.name`` (the instance's attribute wins)."""
    setattr(owner, name, wrapped)


def instrument(coordinator: Coordinator, meter: Meter) -> None:
    """Timed twins of every entry point the farm drives (the loops call them through the
    instance, so these are what run)."""
    c = coordinator
    patch(c, "apply_progress", meter.wrap_progress(c.apply_progress))
    patch(c, "_dispatch", meter.wrap("dispatch round", c._dispatch))
    patch(c, "_forecasting", meter.wrap_steps("forecast", c._forecasting))
    patch(c.encodes, "_on_outcome", meter.wrap("complete (outcome)", c.encodes._on_outcome))
    patch(c, "_refresh_nodes", meter.wrap_async("housekeeping", c._refresh_nodes))
    patch(c.healer, "overdue", meter.wrap("housekeeping", c.healer.overdue))
    patch(c.pool, "reap", meter.wrap("housekeeping", c.pool.reap))
    patch(c.table, "forget_finished", meter.wrap("housekeeping", c.table.forget_finished))
    patch(c.table.events, "since", meter.wrap("events (subscriber)", c.table.events.since))
    patch(c.prober, "_run", meter.wrap_async("probe (per job)", c.prober._run))


class Warnings(logging.Handler):
    """framefleet's warnings, counted by kind (the first few shown): a watchdog killing
    encodes, or a node giving a batch up, says the head fell behind."""

    SHOWN = 5

    def __init__(self, *, quiet: bool = False) -> None:
        super().__init__(logging.WARNING)
        self.kinds: dict[str, int] = {}
        self.quiet = quiet

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        kind = " ".join(w for w in text.split()[:6] if not any(c.isdigit() for c in w))
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if not self.quiet and sum(self.kinds.values()) <= self.SHOWN:
            say(f"coordinator: {text}")


class Collector:
    """The cyclic garbage collector's passes while recording: a full pass over a head
    holding 100,000 jobs stops its loop like a long round."""

    def __init__(self) -> None:
        self.recording = False
        self.passes: dict[int, list[float]] = {}
        """Generation -> each pass's wall seconds."""
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        elif self.recording:
            self.passes.setdefault(info["generation"], []).append(time.perf_counter() - self._began)


# ---- the simulated farm: nodes in a process of their own ------------------------------


@dataclass(slots=True)
class Stats:
    on: bool = False
    """The window is open: latencies are recorded."""
    lags: array[float] = field(default_factory=lambda: array("d"))
    dispatch: array[float] = field(default_factory=lambda: array("d"))
    stalls: array[float] = field(default_factory=lambda: array("d"))
    completions: int = 0
    gaps: int = 0
    stopping: bool = False
    """The head's other callers stop (their loops end: see :func:`follow`)."""


@dataclass(frozen=True, slots=True)
class Encode:
    job_id: str
    attempt: int
    began: float
    """Wall-clock time its (virtual) run began: part way through for a warm-up encode."""
    run_s: float

    def snapshot(self, now: float, *, done: bool = False) -> ProgressSnapshot:
        part = 1.0 if done else min(max((now - self.began) / self.run_s, 0.0), 1.0)
        speed = CLIP.duration_s / self.run_s
        out_time = part * CLIP.duration_s
        return ProgressSnapshot(frame=int(out_time * CLIP.fps), fps=round(speed * CLIP.fps, 1),
                                out_time_s=round(out_time, 3), speed=round(speed, 3),
                                percent=round(part * 100, 2),
                                eta_s=round((1 - part) * self.run_s, 1), done=done,
                                at=now)  # fmt: skip


def post(writer: asyncio.StreamWriter, message: tuple[Any, ...]) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    writer.write(len(data).to_bytes(4, "big") + data)


async def receive(reader: asyncio.StreamReader) -> tuple[Any, ...]:
    size = int.from_bytes(await reader.readexactly(4), "big")
    message: tuple[Any, ...] = pickle.loads(await reader.readexactly(size))  # noqa: S301 (our child)
    return message


class SimNode:
    """A node (in the farm's process): its encodes, the ticker that reports their progress
    each second into its batcher, and the batcher that sends one batch a second to the
    head, one in flight (the head answers each, as a Ray call's result does)."""

    def __init__(self, node_id: str, writer: asyncio.StreamWriter) -> None:
        self.node_id = node_id
        self.writer = writer
        self.batcher = ProgressBatcher(self.send, interval_s=TICK_S)
        self.running: dict[tuple[str, int], Encode] = {}
        self.answer: asyncio.Future[None] | None = None

    async def send(self, batch: list[ProgressReport]) -> None:
        self.answer = asyncio.get_running_loop().create_future()
        post(self.writer, ("batch", self.node_id, batch))
        await self.answer

    async def tick(self, phase: float) -> None:
        """Every encode's progress, once a second (nodes' ticks are spread over it)."""
        loop = asyncio.get_running_loop()
        due = loop.time() + phase
        while True:
            await asyncio.sleep(max(due - loop.time(), 0.0))
            due += TICK_S
            now = time.time()
            for e in self.running.values():
                self.batcher.add(e.job_id, e.attempt, e.snapshot(now))


def farm_process(sock: socket.socket) -> None:
    """The farm's process: its nodes, told by the head what starts and ends where."""
    asyncio.run(serve_farm(sock))


async def serve_farm(sock: socket.socket) -> None:
    reader, writer = await asyncio.open_connection(sock=sock)
    given_up = Warnings(quiet=True)  # a batch the head did not take in 30 s: given up
    logger = logging.getLogger("framefleet")
    logger.addHandler(given_up)
    logger.propagate = False
    nodes: dict[str, SimNode] = {}
    tasks: list[asyncio.Task[None]] = []
    while True:
        what, *args = await receive(reader)
        if what == "start":  # node, Encode
            nodes[args[0]].running[args[1].job_id, args[1].attempt] = args[1]
        elif what == "end":  # node, job, attempt: its last report goes at once
            node = nodes[args[0]]
            ended = node.running.pop((args[1], args[2]), None)
            if ended is not None:
                node.batcher.add(args[1], args[2], ended.snapshot(time.time(), done=True))
        elif what == "taken":  # node: the head took its batch
            answer = nodes[args[0]].answer
            if answer is not None and not answer.done():
                answer.set_result(None)
        elif what == "grow":  # [(node, phase)]
            for node_id, phase in args[0]:
                sim = nodes[node_id] = SimNode(node_id, writer)
                tasks += [asyncio.create_task(sim.tick(phase)),
                          asyncio.create_task(sim.batcher.run())]  # fmt: skip
        elif what == "count":
            sent = [(n.batcher.sent_batches, n.batcher.sent_reports) for n in nodes.values()]
            counted = (time.process_time(), sum(r for _, r in sent), sum(given_up.kinds.values()))
            post(writer, ("counted", *counted))
        elif what == "stop":
            break
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    writer.close()


class SimEncoder:
    """An :class:`~cluster.control.farm.backend.EncoderHandle` whose runs last a drawn
    time (timed on the head's loop: the coordinator awaits them as it awaits Ray's
    calls); its node, in the farm's process, reports its progress meanwhile."""

    def __init__(self, farm: SimFarm, node_id: str) -> None:
        self.farm = farm
        self.node_id = node_id
        self.done: asyncio.Future[str] | None = None

    async def run(self, order: WorkOrder) -> WorkOutcome:
        farm, freed = self.farm, self.farm.freed[self.node_id]
        if freed:
            waited = time.perf_counter() - freed.popleft()
            if farm.stats.on:
                farm.stats.dispatch.append(waited)
        run_s = farm.rng.lognormvariate(farm.mu, RUN_SIGMA)
        now = time.time()
        began = now - farm.rng.random() * run_s if not farm.steady else now
        loop = asyncio.get_running_loop()
        done = self.done = loop.create_future()
        timer = loop.call_later(began + run_s - now, settle, done, "succeeded")
        encode = Encode(order.job_id, order.attempt, began, run_s)
        farm.post(("start", self.node_id, encode))
        try:
            status = await done
        finally:
            timer.cancel()
            self.done = None
            farm.post(("end", self.node_id, order.job_id, order.attempt))
        farm.stats.completions += 1
        freed.append(time.perf_counter())
        ran = time.time() - began  # a warm-up encode's whole (virtual) run: what it learns
        return WorkOutcome(order.job_id, order.attempt, status, elapsed_s=ran,
                           progress=encode.snapshot(time.time(), done=True),
                           result={"sim": True, "duration_s": CLIP.duration_s,
                                   "frames": CLIP.frames},
                           timings={"ffmpeg_s": ran})  # fmt: skip

    async def cancel(self, job_id: str) -> bool:
        await asyncio.sleep(0)  # a call to the encoder: what was started before it begins
        self.kill()
        return True

    async def shutdown(self) -> None:
        await self.cancel("")

    def kill(self) -> None:
        if self.done is not None:
            settle(self.done, "cancelled")


def settle(done: asyncio.Future[str], status: str) -> None:
    if not done.done():
        done.set_result(status)


class ClipMedia:
    """The Backend protocol's media reads and node chores for a simulated farm: every
    input is :data:`CLIP`, nothing is written, no autoscaler (``bench/head_ray.py`` too)."""

    async def probe(self, path: str, roots: tuple[Path, ...]) -> MediaInfo:
        return CLIP.media(path)

    async def index(
        self, path: str, roots: tuple[Path, ...], video_index: int, audio_index: int | None
    ) -> FrameIndex:
        return CLIP.index()

    async def probe_on(self, node_id: str, path: str) -> MediaInfo:
        return CLIP.media(path)

    async def index_on(
        self, node_id: str, path: str, video_index: int, audio_index: int | None
    ) -> FrameIndex:
        return CLIP.index()

    async def remove_partials_on(
        self, node_id: str, folder: str, job_id: str, tasks: bool = False
    ) -> None:
        return None

    async def request_capacity(self, bundles: list[dict[str, float]]) -> None:
        return None


class SimFarm(ClipMedia):
    """The coordinator's :class:`~cluster.control.farm.backend.Backend`: nodes of
    :data:`SLOTS` cores whose encoders are :class:`SimEncoder` s. The nodes' tickers and
    batchers run in the farm's process (:func:`serve_farm`); their batches arrive on the
    head's loop as calls from outside, as Ray's actor calls do, and are answered."""

    def __init__(self, sock: socket.socket, seed: int) -> None:
        self.sock = sock
        self.rng = random.Random(seed)
        self._phases = random.Random(seed + 1)
        self.mu = math.log(MEAN_RUN_S) - RUN_SIGMA**2 / 2
        self.steady = False
        """Unset while the farm fills: encodes then start part way through."""
        self.stats = Stats()
        self.node_list: list[NodeInfo] = []
        self.freed: dict[str, deque[float]] = {}
        """Per node: when each slot freed and not yet filled was freed (``perf_counter``)."""
        self._writer: asyncio.StreamWriter | None = None
        self._counted: asyncio.Future[tuple[float, int, int]] | None = None
        self._reader: asyncio.Task[None] | None = None

    async def begin(self, report_batch: ReportBatch) -> None:
        """Take the farm's batches (``report_batch``: the head's entry point for them)."""
        reader, self._writer = await asyncio.open_connection(sock=self.sock)
        self._reader = asyncio.create_task(self._take(reader, report_batch))

    def post(self, message: tuple[Any, ...]) -> None:
        if self._writer is not None and not self._writer.is_closing():
            post(self._writer, message)

    async def _take(self, reader: asyncio.StreamReader, report_batch: ReportBatch) -> None:
        while True:
            what, *args = await receive(reader)
            if what == "batch":  # node, reports: a call of the head's, then its answer
                await report_batch(args[1])
                self.post(("taken", args[0]))
            elif what == "counted" and self._counted is not None:
                self._counted.set_result((args[0], args[1], args[2]))

    async def count(self) -> tuple[float, int, int]:
        """The farm process's CPU seconds, the reports its nodes have sent, and the
        batches they gave up on (the head did not take them in 30 s)."""
        self._counted = asyncio.get_running_loop().create_future()
        self.post(("count",))
        return await self._counted

    def grow(self, nodes: int) -> None:
        """Nodes join until there are ``nodes`` (the head sees them at its next refresh)."""
        have = len(self.node_list)
        infos = [
            replace(
                fake_node(f"node-{i:05d}", cpus=float(SLOTS)), address=f"10.{i // 250}.{i % 250}.1"
            )
            for i in range(have, nodes)
        ]
        self.freed.update((info.node_id, deque()) for info in infos)
        self.post(("grow", [(i.node_id, self._phases.random() * TICK_S) for i in infos]))
        self.node_list = [*self.node_list, *infos]

    async def close(self) -> None:
        if self._writer is not None:
            self.post(("stop",))
            await self._writer.drain()
            self._writer.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    # the Backend protocol

    async def nodes(self) -> list[NodeInfo]:
        return list(self.node_list)

    def create_encoder(self, placement: Placement) -> SimEncoder:
        return SimEncoder(self, placement.node_id)


# ---- the head's other callers --------------------------------------------------------


async def watch_loop(stats: Stats) -> None:
    """How late the head's loop wakes a 50 ms sleeper: what a long round or forecast
    costs every other caller."""
    loop = asyncio.get_running_loop()
    while not stats.stopping:
        asked = loop.time()
        await asyncio.sleep(0.05)
        if stats.on:
            stats.stalls.append(loop.time() - asked - 0.05)


async def follow(coordinator: Coordinator, stats: Stats) -> None:
    """Long-poll the event log as the gateway's hub does; each progress event's lag from
    its encoder's report. It stops on :attr:`Stats.stopping`: on Python 3.11 a cancel
    can be lost in ``events``' ``asyncio.wait_for`` when an event arrives in the same
    turn of the loop, and at this rate one always does."""
    after = await coordinator.event_cursor()
    while not stats.stopping:
        batch = await coordinator.events(after, None, 25.0)
        now = time.time()
        after = batch.last_seq
        if not stats.on:
            continue
        stats.gaps += batch.gap
        for event in batch.events:
            if event.type is EventType.PROGRESS and event.progress and event.progress.at:
                stats.lags.append(now - event.progress.at)


class Submitter:
    """``submit_many`` in batches of :data:`BATCH`, each call timed (they do not give the
    loop away: the meter says so if one does)."""

    def __init__(self, coordinator: Coordinator, root: Path, meter: Meter) -> None:
        self.coordinator = coordinator
        self.submit = meter.wrap_async("submit_many", coordinator.submit_many)
        self.root = root
        self.made = 0
        self.jobs = 0
        self.seconds = 0.0
        self.stopping = False

    def specs(self, n: int) -> list[JobSpec]:
        first, self.made = self.made, self.made + n
        source, out = str(self.root / "in.mp4"), self.root / "out"
        return [
            JobSpec(JobKind.TRANSCODE, source, str(out / f"{i:07d}.mp4"), codec="h264",
                    hardware=Hardware.CPU, split="off")
            for i in range(first, self.made)
        ]  # fmt: skip

    async def add(self, n: int, within_s: float = math.inf) -> None:
        """Submit ``n`` jobs, :data:`BATCH` a call (fewer, past ``within_s`` seconds)."""
        deadline = time.monotonic() + within_s
        while n > 0 and time.monotonic() < deadline:
            specs = self.specs(min(n, BATCH))
            n -= len(specs)
            start = time.perf_counter()
            await self.submit(specs)
            self.seconds += time.perf_counter() - start
            self.jobs += len(specs)
            await asyncio.sleep(0)  # other callers between requests

    async def keep(self, target: int) -> None:
        """Top the queue back up to ``target`` twice a second: as many jobs arrive as
        encodes end (the steady state)."""
        while not self.stopping:
            short = target - len(self.coordinator.table.queue)
            if short > 0:
                await self.add(short)
            await asyncio.sleep(0.5)

    def rate(self) -> float:
        return self.jobs / self.seconds if self.seconds else float("nan")

    def reset(self) -> None:
        self.jobs, self.seconds = 0, 0.0


# ---- one run, the farm growing through the sizes -------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    sizes: tuple[int, ...]
    queue: int
    window_s: float
    warmup_s: float
    """At most this long to load the queue, and to fill each size."""
    shutdown_s: float = 60.0
    """At most this long for the coordinator's shutdown at the end."""
    seed: int = 7
    profile: bool = False


@dataclass(frozen=True, slots=True)
class Result:
    nodes: int
    running: float
    """Mean running encodes over the window."""
    full: bool
    """The farm was full when the window opened."""
    fill_s: float
    queued: int
    window_s: float
    reports_s: float
    """Reports applied per second (current: of a running attempt; an encode's last one,
    sent as it ends, usually finds its job ended already)."""
    sent_s: float
    """Reports the nodes' batchers sent per second (each encode's newest per batch)."""
    given_up: int
    """Batches the nodes gave up on in the window (the head had not taken them in 30 s)."""
    batches_s: float
    completions_s: float
    head_cpu: dict[str, tuple[float, int]]
    """Entry point -> (CPU seconds, calls) in the window."""
    longest: dict[str, float]
    """Entry point -> its longest call in the window (wall seconds)."""
    yielded: dict[str, int]
    farm_cpu_s: float
    """The farm's process (its nodes' tickers and batchers)."""
    process_cpu_s: float
    """The head's process (the coordinator, the encoder handles, the subscriber)."""
    per_batch_s: float
    per_report_s: float
    lag_p50_s: float
    lag_p99_s: float
    lags: int
    gaps: int
    submit_busy: float
    """jobs/s through ``submit_many`` into the loaded head (:data:`BURST` requests)."""
    dispatch_p50_s: float
    dispatch_p99_s: float
    dispatches: int
    rss_mib: float
    load: float
    """The machine's 1-minute load average at the window's end (other work on it shows)."""
    stall_p99_s: float
    stall_max_s: float
    collections: dict[int, list[float]]
    """The collector's passes in the window: generation -> each one's wall seconds."""
    profile: str = ""

    @property
    def head_s(self) -> float:
        return sum(cpu for cpu, _ in self.head_cpu.values())


@dataclass(slots=True)
class Run:
    results: list[Result] = field(default_factory=list)
    submit_load: float = float("nan")
    """jobs/s through ``submit_many`` while loading the queue into the smallest farm."""
    warnings: dict[str, int] = field(default_factory=dict)
    shutdown: tuple[int, float] = (0, float("nan"))
    """Encodes running at the end, and how long the coordinator's shutdown took (at
    most :attr:`Plan.shutdown_s`)."""


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: array[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def per_call(batches: tuple[array[int], array[float]]) -> tuple[float, float]:
    """``apply_progress``'s cost as ``per_batch + per_report * reports``: a least-squares
    line through its calls (batches hold 1 to 8 reports: an encode's last report is sent
    at once), neither below zero."""
    sizes, spent = batches
    if not sizes:
        return float("nan"), float("nan")
    if len(set(sizes)) < 2:
        return 0.0, statistics.fmean(spent) / max(sizes[0], 1)
    slope, intercept = statistics.linear_regression(list(map(float, sizes)), list(spent))
    if intercept < 0:  # noise around nothing: all of it per report
        return 0.0, sum(spent) / sum(sizes)
    return intercept, max(slope, 0.0)


async def until(check: Callable[[], bool], limit_s: float) -> bool:
    deadline = time.monotonic() + limit_s
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.5)
    return True


def seen(coordinator: Coordinator, nodes: int) -> bool:
    return len(coordinator.view.nodes) == nodes


def filled(coordinator: Coordinator, slots: int) -> bool:
    return len(coordinator.encodes.running) >= slots


def probed(coordinator: Coordinator, queue: int) -> bool:
    """The queue is topped up and every queued job's input probed."""
    jobs = coordinator.table.queue
    return len(jobs) > queue - BATCH and all(j.input_media is not None for j in jobs.values())


async def measure(plan: Plan, sock: socket.socket) -> Run:
    root = Path(tempfile.mkdtemp(prefix="ffhead-"))
    (root / "in.mp4").write_bytes(b"sim")
    (root / "out").mkdir()
    warned = Warnings()
    logger = logging.getLogger("framefleet")
    logger.addHandler(warned)
    logger.propagate = False
    farm = SimFarm(sock, plan.seed)
    config = CoordinatorConfig(data_dir=root / "data", media_roots=(root,),
                               max_jobs_per_node=SLOTS, max_queued_jobs=0)  # fmt: skip
    coordinator = Coordinator(config, farm, probe=farm.probe, index=farm.index, heap=Heap())
    meter = Meter()
    instrument(coordinator, meter)
    gc.callbacks.append(meter.collector)
    await farm.begin(coordinator.report_batch)
    coordinator.start()
    tasks = [asyncio.create_task(follow(coordinator, farm.stats)),
             asyncio.create_task(watch_loop(farm.stats))]  # fmt: skip
    submitter = Submitter(coordinator, root, meter)
    run = Run()
    try:
        for nodes in plan.sizes:
            began = time.monotonic()
            farm.steady = False  # encodes started while it fills are part way through
            farm.grow(nodes)
            slots = nodes * SLOTS
            await until(functools.partial(seen, coordinator, nodes), plan.warmup_s)
            if not run.results:  # the queue, and the first farm's fill (some end early)
                await submitter.add(plan.queue + slots + slots // 4, plan.warmup_s)
                run.submit_load = submitter.rate()
                say(f"{submitter.jobs:,} jobs submitted in {time.monotonic() - began:.1f} s")
                tasks.append(asyncio.create_task(submitter.keep(plan.queue)))
            full = await until(functools.partial(filled, coordinator, slots), plan.warmup_s)
            farm.steady = True
            fill_s = time.monotonic() - began
            say(f"{nodes:,} nodes: {'full' if full else 'NOT full'} after {fill_s:.1f} s")
            began = time.monotonic()
            ready = await until(functools.partial(probed, coordinator, plan.queue), plan.warmup_s)
            say(f"queue {'topped up and probed' if ready else 'NOT all probed'} after "
                f"{time.monotonic() - began:.1f} s; measuring {plan.window_s:g} s")  # fmt: skip
            result = await window(plan, nodes, coordinator, farm, meter, full, fill_s)
            submitter.reset()
            await submitter.add(BURST * BATCH)
            run.results.append(replace(result, submit_busy=submitter.rate()))
            show(run.results[-1])
    finally:
        farm.stats.stopping = submitter.stopping = True
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=30.0)
        began = time.monotonic()
        running = len(coordinator.encodes.running)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(coordinator.shutdown(), plan.shutdown_s)
        run.shutdown = (running, time.monotonic() - began)
        await farm.close()
        logger.removeHandler(warned)
        gc.callbacks.remove(meter.collector)
        shutil.rmtree(root, ignore_errors=True)
    run.warnings = dict(warned.kinds)
    return run


async def window(
    plan: Plan,
    nodes: int,
    coordinator: Coordinator,
    farm: SimFarm,
    meter: Meter,
    full: bool,
    fill_s: float,
) -> Result:
    """``plan.window_s`` seconds of the farm at ``nodes``, measured."""
    stats = farm.stats
    farm0, sent0, lost0 = await farm.count()
    # From here to the window's end without giving the loop away: the meter counts it all.
    before, yielded = meter.snapshot(), dict(meter.yielded)
    completions = stats.completions
    for kept in (stats.lags, stats.dispatch, stats.stalls, *meter.batches):
        del kept[:]
    meter.longest.clear()
    meter.collector.passes.clear()
    meter.applied = 0
    stats.gaps = 0
    profiler = cProfile.Profile() if plan.profile else None
    running: list[int] = []
    stats.on = meter.recording = meter.collector.recording = True
    cpu0, t0 = time.process_time(), time.perf_counter()
    if profiler is not None:
        profiler.enable()
    while time.perf_counter() - t0 < plan.window_s:
        await asyncio.sleep(0.5)  # what runs meanwhile is the head's (and this wait's)
        running.append(len(coordinator.encodes.running))
    if profiler is not None:
        profiler.disable()
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    stats.on = meter.recording = meter.collector.recording = False
    after = meter.snapshot()
    farm1, sent1, lost1 = await farm.count()
    head = {k: (v[0] - before.get(k, (0.0, 0))[0], v[1] - before.get(k, (0.0, 0))[1])
            for k, v in after.items()}  # fmt: skip
    per_batch, per_report = per_call(meter.batches)
    text = ""
    if profiler is not None:
        out = io.StringIO()
        found = pstats.Stats(profiler, stream=out)
        found.sort_stats("cumulative").print_stats(r"cluster/", 45)  # the product's, by total
        found.sort_stats("tottime").print_stats(25)  # anyone's, by own time
        text = out.getvalue()
    full = full and min(running) >= 0.99 * nodes * SLOTS
    return Result(
        nodes=nodes, running=statistics.fmean(running), full=full, fill_s=fill_s,
        queued=len(coordinator.table.queue), window_s=elapsed,
        reports_s=meter.applied / elapsed, sent_s=(sent1 - sent0) / elapsed,
        given_up=lost1 - lost0,
        batches_s=len(meter.batches[0]) / elapsed,
        completions_s=(stats.completions - completions) / elapsed, head_cpu=head,
        longest=dict(meter.longest),
        yielded={k: v - yielded.get(k, 0) for k, v in meter.yielded.items()},
        farm_cpu_s=farm1 - farm0, process_cpu_s=cpu,
        per_batch_s=per_batch, per_report_s=per_report,
        lag_p50_s=percentile(stats.lags, 0.5), lag_p99_s=percentile(stats.lags, 0.99),
        lags=len(stats.lags), gaps=stats.gaps, submit_busy=float("nan"),
        dispatch_p50_s=percentile(stats.dispatch, 0.5),
        dispatch_p99_s=percentile(stats.dispatch, 0.99), dispatches=len(stats.dispatch),
        rss_mib=rss_mib(), load=os.getloadavg()[0], stall_p99_s=percentile(stats.stalls, 0.99),
        stall_max_s=max(stats.stalls, default=float("nan")), profile=text,
        collections={k: list(v) for k, v in meter.collector.passes.items()},
    )  # fmt: skip


# ---- the model and the report -------------------------------------------------------


PER_JOB = ("submit_many", "probe (per job)", "dispatch round", "complete (outcome)")
"""The head's entry points whose work is per job (the rest is per second or per report)."""


def per_job(r: Result) -> tuple[float, float]:
    """The head's CPU seconds per job ended and replaced (:data:`PER_JOB`), and its other
    CPU seconds per second (all but those and ``apply_progress``)."""
    work = sum(r.head_cpu.get(k, (0.0, 0))[0] for k in PER_JOB)
    progress = r.head_cpu.get("apply_progress", (0.0, 0))[0]
    ended = max(r.completions_s * r.window_s, 1.0)
    return work / ended, (r.head_s - progress - work) / r.window_s


def capacity(results: list[Result]) -> tuple[float, str]:
    """The largest farm (encodes) one head core serves at 1 Hz progress.

    Per second, ``N`` nodes of 8 encodes cost the head

        N * (b + 8 r)  +  8 N * lam * c  +  f   CPU seconds,

    all measured at the largest size run: ``b`` and ``r`` the cost of a progress batch
    and of each report in it (the line through every ``apply_progress`` call), ``lam``
    each encode's completion rate (completions / running), ``c`` the head's cost per job
    that ends and is replaced (the window is a steady state: as many jobs are submitted
    as end; ``submit_many``, the probe, the dispatch rounds that settle and start jobs,
    the outcome: per job ended) and ``f`` the rest per second (housekeeping, forecasts,
    the subscriber). The ``N`` where the sum is one second, in encodes (8 N), is the
    answer: linear beyond the largest size, so optimistic where a cost grows with the
    farm (a planner rebuild reads every node; a forecast, every running encode; a full
    collector pass, every object). Only the entry points' own CPU counts: the head's
    process spends more (its event loop; here the socket to the farm, as Ray's calls)."""
    big = max(results, key=lambda r: r.nodes)
    lam = big.completions_s / max(big.running, 1.0)
    per_node = big.per_batch_s + SLOTS * big.per_report_s
    c, f = per_job(big)
    n = max(1.0 - f, 0.0) / (per_node + SLOTS * lam * c)
    why = (f"at {big.nodes:,} nodes: b {big.per_batch_s * 1e6:.1f} us/batch, "
           f"r {big.per_report_s * 1e6:.2f} us/report, lam {lam * 1e3:.2f}/ks per encode, "
           f"c {c * 1e3:.2f} ms per job, f {f * 1e3:.0f} ms/s")  # fmt: skip
    return n * SLOTS, why


def show(r: Result) -> None:
    ms = 1e3
    print(
        f"\n--- {r.nodes:,} nodes x {SLOTS} = {r.nodes * SLOTS:,} slots: "
        f"{r.running:,.0f} running on average (farm {'full' if r.full else 'NOT full'}, "
        f"filled in {r.fill_s:.0f} s); {r.queued:,} queued; window {r.window_s:.1f} s"
    )
    print(
        f"progress: {r.reports_s:,.0f} reports/s absorbed ({r.sent_s:,.0f}/s sent) in "
        f"{r.batches_s:,.0f} batches/s; {r.completions_s:.1f} completions/s"
        + (f"; {r.given_up:,} batches given up (not taken in 30 s)" if r.given_up else "")
    )
    share = r.head_s / r.window_s
    print(
        f"head CPU (entry points): {share:.1%} of a core, {share / max(r.running / 1000, 1e-9):.2%}"
        f" per 1,000 running; the head's process {r.process_cpu_s / r.window_s:.1%}, the farm's "
        f"{r.farm_cpu_s / r.window_s:.1%}"
    )
    for name, (cpu, calls) in sorted(r.head_cpu.items(), key=lambda kv: -kv[1][0]):
        if calls:
            gave = r.yielded.get(name, 0)
            print(
                f"  {name:20} {cpu / r.window_s:7.1%} of a core, {calls:8,} calls, "
                f"{cpu / calls * 1e6:9.1f} us/call, longest {r.longest.get(name, 0) * 1e3:6.1f} ms"
                + (f" ({gave} gave the loop away)" if gave else "")
            )
    c, f = per_job(r)
    print(
        f"  apply_progress: {r.per_batch_s * 1e6:.1f} us/batch + {r.per_report_s * 1e6:.2f} "
        f"us/report; per job ended and replaced: {c * 1e3:.2f} ms; the rest: {f * 1e3:.0f} ms/s"
    )
    print(
        f"lag report -> subscriber: p50 {r.lag_p50_s * ms:.0f} ms, p99 {r.lag_p99_s * ms:.0f} "
        f"ms ({r.lags:,} events, {r.gaps} gaps)"
    )
    print(
        f"freed slot -> next start: p50 {r.dispatch_p50_s * ms:.0f} ms, p99 "
        f"{r.dispatch_p99_s * ms:.0f} ms ({r.dispatches:,} starts)"
    )
    print(f"head loop stalls: p99 {r.stall_p99_s * ms:.0f} ms, longest {r.stall_max_s * ms:.0f} ms")
    passes = ", ".join(
        f"gen {g}: {len(t)} passes, {sum(t) * ms:,.0f} ms in all, longest {max(t) * ms:,.0f} ms"
        for g, t in sorted(r.collections.items())
    )
    print(f"garbage collector: {passes or 'no pass'}")
    print(f"submit_many into the loaded head: {r.submit_busy:,.0f} jobs/s")
    print(f"memory: {r.rss_mib:,.0f} MiB resident; load {r.load:.1f} on {os.cpu_count()} cores")
    if r.profile:
        print(r.profile)
    sys.stdout.flush()


def rows(run: Run) -> list[Row]:
    load = run.submit_load
    out = [Row(f"submit_many loading the queue (batches of {BATCH})", f"{load:,.0f} jobs/s", "-",
               None, ">= 2,000 jobs/s", at_least(load, SUBMIT_TARGET))]  # fmt: skip
    for r in run.results:
        scale = f"{r.nodes:,} nodes, {r.running:,.0f} running"
        want = r.running / TICK_S
        share = r.head_s / r.window_s
        out += [
            Row(f"progress reports absorbed/s ({scale})", f"{r.reports_s:,.0f}/s",
                f"running x 1 Hz {want:,.0f}/s", r.reports_s / want if want else None,
                ">= 95 % of running x 1 Hz", at_least(r.reports_s, 0.95 * want) and r.full),
            Row(f"progress batches/s ({r.nodes:,} nodes)", f"{r.batches_s:,.0f}/s", "-", None,
                "printed", None),
            Row(f"head CPU per 1,000 running ({r.nodes:,} nodes)",
                f"{share / max(r.running / 1000, 1e-9):.2%} of a core",
                f"head process {r.process_cpu_s / r.window_s:.0%}", None, "printed", None),
            Row(f"lag report -> subscriber p99 ({r.nodes:,} nodes)", f"{r.lag_p99_s:.2f} s",
                f"p50 {r.lag_p50_s:.2f} s", None, "<= 2 s", at_most(r.lag_p99_s, LAG_TARGET_S)),
            Row(f"freed slot -> next start p99 ({r.nodes:,} nodes)",
                f"{r.dispatch_p99_s * 1e3:,.0f} ms", f"p50 {r.dispatch_p50_s * 1e3:,.0f} ms",
                None, "<= 100 ms", at_most(r.dispatch_p99_s, DISPATCH_TARGET_S)),
            Row(f"submit_many into the loaded head ({r.nodes:,} nodes)",
                f"{r.submit_busy:,.0f} jobs/s", "-", None, ">= 2,000 jobs/s",
                at_least(r.submit_busy, SUBMIT_TARGET)),
            Row(f"head memory, {r.queued:,} queued ({r.nodes:,} nodes)", f"{r.rss_mib:,.0f} MiB",
                "-", None, "<= 2 GiB", at_most(r.rss_mib, MEMORY_TARGET_MIB)),
        ]  # fmt: skip
    encodes, why = capacity(run.results)
    print(
        f"\nlargest farm one head core serves at 1 Hz (model): {encodes:,.0f} encodes "
        f"({encodes / SLOTS:,.0f} nodes); {why}"
    )
    out.append(Row("largest farm one head core serves at 1 Hz (model)", f"{encodes:,.0f} encodes",
                   "-", None, ">= 20,000 encodes", at_least(encodes, SPAN_TARGET)))  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", help="nodes, comma-separated (default 100,1000,2500)")
    ap.add_argument("--queue", type=int, help="jobs kept queued (default 100,000)")
    ap.add_argument("--window", type=float, help="seconds measured per size (default 25)")
    ap.add_argument("--warmup", type=float, help="at most this long per wait (default 120)")
    ap.add_argument("--profile", action="store_true", help="cProfile each window")
    ap.add_argument("--seed", type=int, default=7)
    add_arguments(ap)
    args = ap.parse_args()
    sizes = [100, 500] if args.quick else [100, 1000, 2500]
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    plan = Plan(
        sizes=tuple(sorted(set(sizes))),
        queue=args.queue or (10_000 if args.quick else 100_000),
        window_s=args.window or (10.0 if args.quick else 25.0),
        warmup_s=args.warmup or (30.0 if args.quick else 120.0),
        shutdown_s=20.0 if args.quick else 60.0,
        seed=args.seed,
        profile=args.profile,
    )
    started = time.monotonic()
    head_end, farm_end = socket.socketpair()
    farm = multiprocessing.get_context("fork").Process(
        target=farm_process, args=(farm_end,), name="farm", daemon=True
    )
    farm.start()  # forked before any loop or thread exists here
    farm_end.close()
    try:
        run = asyncio.run(measure(plan, head_end))
    finally:
        farm.join(10.0)
        if farm.is_alive():
            farm.kill()
    for kind, count in sorted(run.warnings.items(), key=lambda kv: -kv[1]):
        print(f"coordinator warned {count:,} times: {kind} ...")
    running, took = run.shutdown
    ended = "" if took < plan.shutdown_s else " and had not ended when the bench left it"
    print(f"the coordinator's shutdown with {running:,} encodes running took {took:.1f} s{ended}")
    print(f"(the run took {time.monotonic() - started:.0f} s)")
    emit(rows(run), args.report)


if __name__ == "__main__":
    main()
