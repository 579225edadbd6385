"""The embedded cluster at rest: CPU and memory of framefleet's and Ray's own processes.

Side by side in one run, each in its own process: framefleet's embedded cluster (what
``framefleet serve`` and the one-shot CLI start; one small encode first, so a warm
encoder is resting too) and an empty private Ray (``address="local"``, its own temp dir,
Ray's defaults), the floor any Ray application pays. Each settles, then for
``--seconds`` (60; 15 with ``--quick``) the CPU time of every process of the cluster is
sampled: the driver and all its descendants (GCS, raylet, Ray's agents, workers;
framefleet's coordinator, node agent and encoders). Memory is PSS (shared pages split
between the processes that share them, so the sum is true). Prints each process, the
totals, and framefleet/plain Ray.

    .venv/bin/python bench/idle.py [--seconds 60] [--quick]
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import Row, add_arguments, emit  # noqa: E402

SETTLE_S = 5.0


def label(proc: psutil.Process) -> str:
    """A readable name: Ray's process titles (``ray::Coordinator``), else the program."""
    try:
        argv = proc.cmdline()
    except psutil.Error:
        return "?"
    if argv and argv[0].startswith("ray::"):
        return argv[0].split()[0]
    scripts = [Path(a).name for a in argv if a.endswith(".py")]
    if scripts:
        return f"{Path(argv[0]).name} {scripts[0]}"
    return Path(argv[0]).name if argv else proc.name()


def processes() -> list[psutil.Process]:
    me = psutil.Process()
    return [me, *me.children(recursive=True)]


def measure(seconds: float) -> dict:
    """CPU seconds per process over ``seconds``, and each process's PSS at the end."""
    before: dict[int, float] = {}
    for proc in processes():
        try:
            t = proc.cpu_times()
            before[proc.pid] = t.user + t.system
        except psutil.Error:
            pass
    time.sleep(seconds)
    rows = []
    for proc in processes():
        try:
            t = proc.cpu_times()
            pss = proc.memory_full_info().pss
        except psutil.Error:
            continue
        cpu = t.user + t.system - before.get(proc.pid, 0.0)
        rows.append({"name": label(proc), "cpu_s": cpu, "pss_mib": pss / 2**20})
    return {"seconds": seconds, "processes": rows}


def framefleet_side(seconds: float) -> dict:
    from cluster import (
        CoordinatorConfig,
        Fleet,
        Hardware,
        JobKind,
        JobSpec,
        RuntimeConfig,
        make_sample,
    )

    work = Path(tempfile.mkdtemp(prefix="ffidle-"))
    try:
        clip = make_sample(work / "clip.mp4", seconds=1, width=320, height=240)
        data = work / "data"
        fleet = Fleet.connect(
            RuntimeConfig(data_dir=data, num_cpus=2), CoordinatorConfig(data_dir=data)
        )
        try:
            spec = JobSpec(kind=JobKind.TRANSCODE, input=str(clip), output=str(work / "o.mp4"),
                           hardware=Hardware.CPU)  # fmt: skip
            job = fleet.submit(spec)
            while not fleet.get(job.id).status.terminal:
                time.sleep(0.2)
            time.sleep(SETTLE_S)
            return measure(seconds)
        finally:
            fleet.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def ray_side(seconds: float) -> dict:
    import ray

    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    try:
        ray.init(address="local", _temp_dir=temp, num_cpus=2, configure_logging=False)
        try:
            time.sleep(SETTLE_S)
            return measure(seconds)
        finally:
            ray.shutdown()
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def show(title: str, result: dict) -> tuple[float, float]:
    seconds = result["seconds"]
    procs = sorted(result["processes"], key=lambda p: -p["cpu_s"])
    cpu = sum(p["cpu_s"] for p in procs)
    pss = sum(p["pss_mib"] for p in procs)
    print(f"\n{title}: {len(procs)} processes over {seconds:g} idle seconds")
    for p in procs:
        print(f"  {p['name'][:44]:<44} {p['cpu_s'] / seconds:6.2%} of a core "
              f"{p['pss_mib']:7.1f} MiB")  # fmt: skip
    print(f"  {'total':<44} {cpu / seconds:6.2%} of a core {pss:7.1f} MiB")
    return cpu / seconds, pss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--side", choices=("framefleet", "ray"), help=argparse.SUPPRESS)
    add_arguments(ap)
    args = ap.parse_args()
    seconds = min(args.seconds, 15.0) if args.quick else args.seconds
    if args.side:  # one side, in its own process: the result as JSON on the last line
        result = framefleet_side(seconds) if args.side == "framefleet" else ray_side(seconds)
        print(json.dumps(result))
        return
    results = {}
    for side in ("ray", "framefleet"):
        run = subprocess.run(
            [sys.executable, __file__, "--side", side, "--seconds", str(seconds)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if run.returncode != 0:
            sys.exit(f"idle: the {side} side failed:\n{run.stderr[-2000:]}")
        results[side] = json.loads(run.stdout.strip().splitlines()[-1])
    ray_cpu, ray_mem = show("empty private Ray (Ray's defaults)", results["ray"])
    ours_cpu, ours_mem = show("framefleet's embedded cluster", results["framefleet"])
    emit(
        [
            Row("idle cluster CPU (share of one core)", f"{ours_cpu:.2%}", f"{ray_cpu:.2%}",
                ours_cpu / ray_cpu if ray_cpu else None, "printed", None),
            Row("idle cluster memory (PSS)", f"{ours_mem:,.0f} MiB", f"{ray_mem:,.0f} MiB",
                ours_mem / ray_mem, "printed", None),
        ],
        args.report,
    )  # fmt: skip


if __name__ == "__main__":
    main()
