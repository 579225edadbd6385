"""One gateway under a farm's load: 1,000 queued jobs and 200 SSE clients.

Starts ``framefleet serve`` (its own local Ray) and measures, in one run:

1. GET /v1/jobs/{id} from ``--pollers`` clients on the idle gateway (the baseline);
2. then submits ``--jobs`` short transcodes (1 s 160x120 clips, batches of 100) and,
   while the farm works through them, the same pollers again, plus ``--clients`` SSE
   clients, each following its share of the jobs one after another to their terminal
   events: requests per second under load against idle, event delivery (from the
   coordinator recording an event to a client reading it) p50/p99, and errors (HTTP
   errors, failed streams, a stream that missed its job's end, a job that did not
   succeed: target 0);
3. the gateway's and the coordinator's resident memory before the jobs, half-way and
   once all have finished, and the growth per finished job over the second half (after
   the warm-up). What grows is bounded: finished jobs stay in the coordinator's memory
   for its retention window (600 s), then live only in SQLite
   (``bench/coordinator_memory.py`` shows the drop); the gateway's job cache holds at
   most 10,000 jobs and the event log 20,000 events.

    .venv/bin/python bench/load.py [--jobs 1000] [--clients 200] [--pollers 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.api_load import free_port, pct, wait_ready  # noqa: E402
from bench.report import Row, add_arguments, at_most, emit  # noqa: E402
from tests.helpers import make_clip  # noqa: E402

TOKEN = "bench-token"  # noqa: S105
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
TERMINAL = {"succeeded", "failed", "cancelled"}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def coordinator_pid() -> int:
    """The coordinator actor's process (Ray titles it ``ray::CoordinatorActor``)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"ray::CoordinatorActor" in (entry / "cmdline").read_bytes():
                    return int(entry.name)
            except OSError:
                continue
    sys.exit("load: no coordinator process found")


class Tally:
    def __init__(self) -> None:
        self.requests: list[float] = []
        self.errors: list[str] = []
        self.delivery: list[float] = []
        self.events = 0
        self.ended: dict[str, str] = {}


async def poll(client: httpx.AsyncClient, ids: list[str], stop: float, tally: Tally) -> None:
    rng = random.Random()
    while time.monotonic() < stop:
        started = time.perf_counter()
        try:
            r = await client.get(f"/v1/jobs/{rng.choice(ids)}")
            if r.status_code != 200:
                tally.errors.append(f"GET {r.status_code}")
        except httpx.HTTPError as exc:
            tally.errors.append(f"GET {type(exc).__name__}")
        tally.requests.append(time.perf_counter() - started)


async def follow(client: httpx.AsyncClient, ids: list[str], tally: Tally) -> None:
    """Follow each of ``ids`` in turn to its terminal event (one stream at a time)."""
    for job_id in ids:
        first = True  # the job as of subscribing: not a delivery
        try:
            async with client.stream("GET", f"/v1/jobs/{job_id}/events") as r:
                if r.status_code != 200:
                    tally.errors.append(f"SSE {r.status_code}")
                    continue
                async for line in r.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    event = json.loads(line[5:])
                    if not first:
                        tally.delivery.append(time.time() - event["time"])
                    first = False
                    tally.events += 1
                    if event["status"] in TERMINAL:
                        tally.ended[job_id] = event["status"]
        except httpx.HTTPError as exc:
            tally.errors.append(f"SSE {type(exc).__name__}")
        if job_id not in tally.ended:
            tally.errors.append(f"SSE stream of {job_id} ended before the job")


async def polling(url: str, ids: list[str], pollers: int, seconds: float) -> Tally:
    tally = Tally()
    stop = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=60) as client:
        await asyncio.gather(*(poll(client, ids, stop, tally) for _ in range(pollers)))
    return tally


async def halfway(tally: Tally, n: int, pids: tuple[int, int]) -> tuple[float, float]:
    """The gateway's and coordinator's memory once half the jobs have ended."""
    while len(tally.ended) < n // 2:
        await asyncio.sleep(0.2)
    return rss_mb(pids[0]), rss_mb(pids[1])


async def under_load(
    url: str, clips: list[Path], out: Path, args: argparse.Namespace, pids: tuple[int, int]
) -> dict:
    tally = Tally()
    limits = httpx.Limits(max_connections=args.clients + args.pollers + 20)
    timeout = httpx.Timeout(60.0, read=None)
    async with httpx.AsyncClient(base_url=url, headers=HEADERS, limits=limits,
                                 timeout=timeout) as client:  # fmt: skip
        started = time.monotonic()
        ids: list[str] = []
        for first in range(0, len(clips), 100):
            inputs = [str(c) for c in clips[first : first + 100]]
            body = {"spec": {"speed": "fast", "hardware": "cpu"}, "inputs": inputs,
                    "output_dir": str(out)}  # fmt: skip
            r = await client.post("/v1/jobs/batch", json=body)
            r.raise_for_status()
            ids += r.json()["ids"]
        submitted = time.monotonic() - started
        print(f"submitted {len(ids)} jobs in {submitted:.1f} s")
        shares = [ids[i :: args.clients] for i in range(args.clients)]
        followers = [asyncio.create_task(follow(client, share, tally)) for share in shares]
        mid = asyncio.create_task(halfway(tally, len(ids), pids))
        polling_started = time.monotonic()
        pollers = [asyncio.create_task(poll(client, ids, float("inf"), tally))
                   for _ in range(args.pollers)]  # fmt: skip
        await asyncio.gather(*followers)
        for task in pollers:
            task.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)
        wall = time.monotonic() - started
        polled = time.monotonic() - polling_started
        listed = await list_all(client)
    failed = [j for j in listed if j["status"] != "succeeded"]
    return {"ids": ids, "tally": tally, "wall": wall, "polled": polled, "failed": failed,
            "mid": await mid}  # fmt: skip


async def list_all(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    found, cursor = [], 0
    while True:
        page = (await client.get("/v1/jobs", params={"cursor": cursor, "limit": 500})).json()
        found += page["jobs"]
        if page["next_cursor"] is None:
            return found
        cursor = page["next_cursor"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--pollers", type=int, default=4)
    ap.add_argument("--idle-seconds", type=float, default=8.0)
    add_arguments(ap)
    args = ap.parse_args()
    if args.quick:
        args.jobs = min(args.jobs, 300)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    tmp = Path(tempfile.mkdtemp(prefix="ffload-"))
    server = None
    try:
        media, out = tmp / "media", tmp / "out"
        media.mkdir()
        out.mkdir()
        clip = make_clip(media / "clip.mp4", seconds=1, size="160x120")
        clips = [clip] + [Path(shutil.copy(clip, media / f"c{i:04d}.mp4"))
                          for i in range(1, args.jobs)]  # fmt: skip
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = os.environ | {"FRAMEFLEET_API_TOKENS": TOKEN,
                            "FRAMEFLEET_MEDIA_ROOTS": f"{media},{out}"}  # fmt: skip
        env.pop("RAY_ADDRESS", None)
        framefleet = str(Path(sys.executable).with_name("framefleet"))
        server = subprocess.Popen(
            [framefleet, "serve", "--port", str(port), "--data-dir", str(tmp / "data")],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_ready(url, "/readyz", server)
        probe = httpx.post(f"{url}/v1/jobs", headers=HEADERS, timeout=60,
                           json={"kind": "probe", "input": str(clip)})  # fmt: skip
        probe.raise_for_status()
        time.sleep(2)
        coordinator = coordinator_pid()
        idle = asyncio.run(polling(url, [probe.json()["id"]], args.pollers, args.idle_seconds))
        before = (rss_mb(server.pid), rss_mb(coordinator))
        print(f"before: gateway {before[0]:.1f} MiB, coordinator {before[1]:.1f} MiB")
        pids = (server.pid, coordinator)
        result = asyncio.run(under_load(url, clips[: args.jobs], out, args, pids))
        time.sleep(3)  # a housekeeping round
        after = (rss_mb(server.pid), rss_mb(coordinator))
        mid = result["mid"]
        print(f"half the jobs done: gateway {mid[0]:.1f} MiB, coordinator {mid[1]:.1f} MiB")
        print(f"after: gateway {after[0]:.1f} MiB, coordinator {after[1]:.1f} MiB")
        emit(report(args, idle, result, before, after), args.report)
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def report(
    args: argparse.Namespace,
    idle: Tally,
    result: dict,
    before: tuple[float, float],
    after: tuple[float, float],
) -> list[Row]:
    tally: Tally = result["tally"]
    n = len(result["ids"])
    idle_rate = len(idle.requests) / args.idle_seconds
    rate = len(tally.requests) / result["polled"]
    errors = len(tally.errors) + len(idle.errors) + len(result["failed"])
    missed = n - len(tally.ended)
    print(f"idle: {len(idle.requests)} GETs by {args.pollers} pollers: {idle_rate:,.0f} req/s, "
          f"p99 {pct(idle.requests, 0.99) * 1e3:.1f} ms")  # fmt: skip
    print(f"under load: {n} jobs done in {result['wall']:.0f} s; {len(tally.requests)} GETs: "
          f"{rate:,.0f} req/s, p50 {pct(tally.requests, 0.5) * 1e3:.1f} ms, "
          f"p99 {pct(tally.requests, 0.99) * 1e3:.1f} ms; {tally.events:,} SSE events to "
          f"{args.clients} clients: delivery p50 {pct(tally.delivery, 0.5) * 1e3:.1f} ms, "
          f"p99 {pct(tally.delivery, 0.99) * 1e3:.1f} ms")  # fmt: skip
    print(
        f"errors: {errors} ({sorted(set(tally.errors + idle.errors))[:5]}; "
        f"{len(result['failed'])} jobs not succeeded; {missed} streams missed their end)"
    )
    mid = result["mid"]
    half = n - n // 2
    gateway_kib = (after[0] - mid[0]) * 1024 / half
    coordinator_kib = (after[1] - mid[1]) * 1024 / half
    p99 = pct(tally.delivery, 0.99)
    return [
        Row(f"GET /v1/jobs/{{id}}, {n:,} jobs queued and {args.clients} SSE clients",
            f"{rate:,.0f} req/s", f"{idle_rate:,.0f} req/s (idle)", rate / idle_rate,
            "printed", None),
        Row(f"SSE event delivery p50/p99, {args.clients} clients, {tally.events:,} events",
            f"{pct(tally.delivery, 0.5) * 1e3:.0f}/{p99 * 1e3:.0f} ms", "-", None,
            "p99 <= 250 ms", at_most(p99, 0.25)),
        Row(f"gateway memory, before -> after {n:,} jobs",
            f"{before[0]:.0f} -> {after[0]:.0f} MiB", "-", None, "printed", None),
        Row(f"coordinator memory, before -> after {n:,} jobs (retained)",
            f"{before[1]:.0f} -> {after[1]:.0f} MiB", "-", None, "printed", None),
        Row("memory growth per finished job over the second half, gateway / coordinator",
            f"{gateway_kib:.1f} / {coordinator_kib:.1f} KiB", "-", None, "printed", None),
        Row("errors (HTTP, streams, jobs)", f"{errors}", "-", None, "0", errors == 0),
    ]  # fmt: skip


if __name__ == "__main__":
    main()
