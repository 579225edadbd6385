"""Coordinator memory over many finished jobs: it must not grow with every job.

Starts an embedded cluster, submits ``--jobs`` probe jobs of one small clip in batches of
1,000, waits for all of them, and prints the coordinator's resident memory: at start,
after every batch, once all are done, and after the retention window
(``--retention`` s; finished jobs then live only in SQLite, still readable). The last
line is the growth per finished job, before and after the window.

    .venv/bin/python bench/coordinator_memory.py [--jobs 10000] [--retention 20]
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import Row, add_arguments, emit
from cluster import CoordinatorConfig, Fleet, JobKind, JobSpec, RuntimeConfig, make_sample

BATCH = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--retention", type=float, default=20.0)
    add_arguments(parser)
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.retention = min(args.jobs, 2000), min(args.retention, 5.0)
    work = Path(tempfile.mkdtemp(prefix="ffmem-"))
    try:
        clip = work / "clip.mp4"
        make_sample(clip, seconds=1, width=320, height=240)
        fleet = Fleet.connect(
            RuntimeConfig(data_dir=work / "data", coordinator_name="bench-memory"),
            CoordinatorConfig(
                data_dir=work / "data",
                finished_retention_s=args.retention,
                node_refresh_s=1.0,
            ),
        )
        try:
            growth = run(fleet, clip, args.jobs, args.retention)
            emit([Row(f"coordinator memory growth after {args.jobs:,} jobs and the window",
                      f"{growth:.2f} KiB/job", "-", None, "bounded (printed)", None)],
                 args.report)  # fmt: skip
        finally:
            fleet.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(fleet: Fleet, clip: Path, total: int, retention: float) -> float:
    start = fleet.ping()["memory_mb"]
    print(f"coordinator at start: {start:.1f} MiB")
    began = time.monotonic()
    ids: list[str] = []
    while len(ids) < total:
        n = min(BATCH, total - len(ids))
        specs = [JobSpec(kind=JobKind.PROBE, input=str(clip)) for _ in range(n)]
        ids += [j.id for j in fleet.submit_many(specs)]
        wait_all(fleet, len(ids))
        ping = fleet.ping()
        print(f"{len(ids):>6} jobs done: {ping['memory_mb']:.1f} MiB, {ping['jobs']} in memory "
              f"({time.monotonic() - began:.0f} s)")  # fmt: skip
    done = fleet.ping()["memory_mb"]
    time.sleep(retention + 3)  # past the retention window and a housekeeping round
    after = fleet.ping()
    assert fleet.get(ids[0]).status == "succeeded"  # still readable, from SQLite
    print(f"after the {retention:g} s retention window: {after['memory_mb']:.1f} MiB, "
          f"{after['jobs']} jobs in memory")  # fmt: skip
    print(f"growth per finished job: {(done - start) * 1024 / total:.2f} KiB while retained, "
          f"{(after['memory_mb'] - start) * 1024 / total:.2f} KiB after the window")  # fmt: skip
    return float((after["memory_mb"] - start) * 1024 / total)


def wait_all(fleet: Fleet, count: int) -> None:
    while True:
        ping = fleet.ping()
        if ping["queued"] == 0 and ping["running"] == 0:
            return
        time.sleep(0.5)


if __name__ == "__main__":
    main()
