"""Moving media: through Ray between two nodes vs ``cp``; S3 (moto) throughput; a batch
with its media in ``s3://`` vs on local disk. Side by side, in one run.

1. **Node to node.** A local multi-node Ray cluster: a head, a node that sees the media
   root and one that declares it sees none. On the blind node, framefleet's own
   :class:`~cluster.nodes.stager.Stager` fetches a large file from the seeing node's
   agent (checksummed chunks through Ray, as a job placed there does) and sends it back
   (written to a partial file there, renamed when whole). Baseline: ``cp`` of the same
   file on the same disk (a node's local copy, the fastest a move could be here).
   Target: Ray's throughput at least half of ``cp``'s.
2. **Object storage.** framefleet's S3 transfer (multipart, 8 threads) downloading and
   uploading the same file to moto's S3 server on 127.0.0.1, beside ``cp`` (for the
   record: moto is a Python server, far slower than MinIO or S3).
3. **A batch.** ``bench/throughput.py``'s batch through framefleet with inputs and
   outputs in ``s3://`` (moto) vs on local disk; the ratio, and how much of the
   difference the jobs' own fetch and upload times explain (the rest is the control
   plane: HEADs, presigned probes, scratch).

    .venv/bin/python bench/transfer.py [--mib 1024] [--clips 8] [--quick]
"""

from __future__ import annotations

import os
import secrets

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# A Cluster's head refuses to start without a token: this run's own, in the environment
# (every node inherits it), never ~/.ray.
os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
os.environ.pop("RAY_AUTH_TOKEN_PATH", None)

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.report import Row, add_arguments, at_least, emit
from bench.throughput import run_framefleet, spec_for
from cluster import (
    NO_MEDIA_ENV,
    CoordinatorConfig,
    Fleet,
    RuntimeConfig,
    make_sample,
    mark_root,
)
from cluster.storage.objects import ObjectStore, Transfer
from cluster.storage.urls import parse_object_url
from tests.helpers import ObjectServer, local_s3_environment

MIB = 1024 * 1024


def timed_cp(source: Path, target: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["cp", str(source), str(target)], check=True)
    return time.perf_counter() - started


def moved_through_ray(path: str, seer: str, scratch: str, namespace: str) -> dict[str, float]:
    """On the blind node: fetch ``path`` from ``seer``'s agent, then send it back beside
    itself; seconds each (framefleet's Stager and RayPeer, as a job uses them)."""
    from cluster.nodes.stager import Stager
    from cluster.ray_edge.actors import RayPeer
    from cluster.storage.stage import StagePlan

    local = os.path.join(scratch, "j.1", "in", os.path.basename(path))
    back = path + ".back"
    out = os.path.join(scratch, "j.1", "out", "back")
    plan = StagePlan(os.path.join(scratch, "j.1"), ObjectStore(None, None),
                     fetch=((path, local),), push=((back, out),), peer=seer)  # fmt: skip

    async def main() -> dict[str, float]:
        stager = Stager(plan, peer=RayPeer(seer, namespace))
        try:
            started = time.perf_counter()
            await stager.fetch()
            fetched = time.perf_counter() - started
            os.link(local, out)
            started = time.perf_counter()
            await stager.push([out])
            return {"fetch_s": fetched, "send_s": time.perf_counter() - started}
        finally:
            stager.remove()

    return asyncio.run(main())


def node_to_node(work: Path, mib: int, reps: int) -> list[Row]:
    from ray.cluster_utils import Cluster

    root = work / "media"
    root.mkdir()
    big = root / "big.bin"
    with big.open("wb") as f:
        for _ in range(mib):
            f.write(os.urandom(MIB))
    temp = Path(tempfile.mkdtemp(prefix="fft-", dir="/tmp"))
    os.environ["RAY_TMPDIR"] = str(temp)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "temp_dir": str(temp / "ray"), "include_dashboard": False,
        "object_store_memory": 512 * MIB, "env_vars": {NO_MEDIA_ENV: "1"}})  # fmt: skip
    try:
        seer = cluster.add_node(num_cpus=1, object_store_memory=512 * MIB)
        blind = cluster.add_node(num_cpus=1, object_store_memory=512 * MIB,
                                 env_vars={NO_MEDIA_ENV: "1"})  # fmt: skip
        cluster.wait_for_nodes()
        data = work / "data"
        fleet = Fleet.connect(
            RuntimeConfig(data_dir=data, address=cluster.address, coordinator_name="bench"),
            CoordinatorConfig(data_dir=data, media_roots=(root,),
                              root_ids=((str(root), mark_root(root)),), node_refresh_s=1.0),
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while not fleet.ping()["ready"] and time.monotonic() < deadline:
                time.sleep(0.5)
            remote = ray.remote(num_cpus=0)(moved_through_ray).options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(blind.node_id, soft=False)
            )
            scratch = work / "scratch"
            scratch.mkdir()
            cp, fetch, send = [], [], []
            for _ in range(reps):
                cp.append(timed_cp(big, work / "copy.bin"))
                (work / "copy.bin").unlink()
                got: dict[str, float] = ray.get(
                    remote.remote(str(big), seer.node_id, str(scratch), "framefleet")
                )
                fetch.append(got["fetch_s"])
                send.append(got["send_s"])
                assert (root / "big.bin.back").stat().st_size == big.stat().st_size
                (root / "big.bin.back").unlink()
        finally:
            fleet.shutdown_coordinator()
            fleet.close()
    finally:
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    t_cp, t_fetch, t_send = (statistics.median(v) for v in (cp, fetch, send))
    rate = {k: mib / t for k, t in (("cp", t_cp), ("fetch", t_fetch), ("send", t_send))}
    print(f"{mib} MiB, median of {reps}: cp {t_cp:.2f} s ({rate['cp']:.0f} MiB/s); through "
          f"Ray: fetch {t_fetch:.2f} s ({rate['fetch']:.0f} MiB/s), send back {t_send:.2f} s "
          f"({rate['send']:.0f} MiB/s)")  # fmt: skip
    return [
        Row(f"node-to-node fetch through Ray, {mib} MiB (vs cp)", f"{rate['fetch']:.0f} MiB/s",
            f"{rate['cp']:.0f} MiB/s", rate["fetch"] / rate["cp"], ">= 0.50",
            at_least(rate["fetch"] / rate["cp"], 0.5)),
        Row(f"node-to-node send back through Ray, {mib} MiB (vs cp)",
            f"{rate['send']:.0f} MiB/s", f"{rate['cp']:.0f} MiB/s", rate["send"] / rate["cp"],
            ">= 0.50", at_least(rate["send"] / rate["cp"], 0.5)),
    ]  # fmt: skip


def object_storage(work: Path, s3: ObjectServer, mib: int) -> list[Row]:
    big = work / "s3.bin"
    with big.open("wb") as f:
        for _ in range(mib):
            f.write(os.urandom(MIB))
    t_cp = timed_cp(big, work / "s3-copy.bin")
    store = ObjectStore(s3.endpoint, "us-east-1")
    url = parse_object_url(f"s3://{s3.bucket('bench')}/big.bin", what="output")
    transfer = Transfer(store)
    try:
        started = time.perf_counter()
        transfer.upload(big, url, lambda n: None)
        t_up = time.perf_counter() - started
        started = time.perf_counter()
        transfer.download(url, work / "s3-back.bin", lambda n: None)
        t_down = time.perf_counter() - started
    finally:
        transfer.close()
    assert (work / "s3-back.bin").stat().st_size == big.stat().st_size
    print(f"S3 (moto), {mib} MiB: upload {t_up:.2f} s, download {t_down:.2f} s; cp {t_cp:.2f} s")
    return [
        Row(f"S3 upload to moto, {mib} MiB (vs cp)", f"{mib / t_up:.0f} MiB/s",
            f"{mib / t_cp:.0f} MiB/s", t_cp / t_up, "for the record", None),
        Row(f"S3 download from moto, {mib} MiB (vs cp)", f"{mib / t_down:.0f} MiB/s",
            f"{mib / t_cp:.0f} MiB/s", t_cp / t_down, "for the record", None),
    ]  # fmt: skip


def batch(work: Path, s3: ObjectServer, clips: int, seconds: float, reps: int) -> list[Row]:
    src = work / "clips"
    src.mkdir()
    first = make_sample(src / "clip00.mp4", seconds=seconds, width=640, height=360)
    paths = [first] + [Path(shutil.copy(first, src / f"clip{i:02d}.mp4")) for i in range(1, clips)]
    bucket = s3.bucket("batch")
    urls = [s3.put(p, f"s3://{bucket}/in/{p.name}") for p in paths]
    data = work / "batch-data"
    fleet = Fleet.connect(
        RuntimeConfig(data_dir=data, scratch=work / "batch-scratch"),
        CoordinatorConfig(data_dir=data, media_roots=(work,), object_roots=(f"s3://{bucket}",),
                          s3_endpoint=s3.endpoint, s3_region="us-east-1"),
    )  # fmt: skip
    times: dict[str, list[float]] = {"local": [], "s3": []}
    moved: list[float] = []
    try:
        (work / "warm").mkdir()
        run_framefleet(fleet, paths[: os.cpu_count() or 1], work / "warm", [])
        for rep in range(reps):
            for side in ("local", "s3") if rep % 2 == 0 else ("s3", "local"):
                out = work / f"out-{side}-{rep}"
                out.mkdir()
                timings: list[dict[str, Any]] = []
                if side == "local":
                    times[side].append(run_framefleet(fleet, paths, out, timings))
                else:
                    specs = [(u, f"s3://{bucket}/out{rep}/{Path(u).stem}.mp4") for u in urls]
                    times[side].append(run_urls(fleet, specs, timings))
                    moved += [t.get("fetch_s", 0) + t.get("upload_s", 0) for t in timings]
    finally:
        fleet.close()
    local, remote = statistics.median(times["local"]), statistics.median(times["s3"])
    cores = os.cpu_count() or 1
    explained = statistics.mean(moved) * clips / cores  # per batch, over the cores
    print(f"batch of {clips} x {seconds:g} s clips: local {local:.2f} s, s3 {remote:.2f} s; "
          f"the jobs' own fetch + upload time, spread over {cores} cores: {explained:.2f} s of "
          f"the {remote - local:.2f} s difference")  # fmt: skip
    return [
        Row(f"batch of {clips} clips, media in s3:// (moto) vs local disk", f"{remote:.2f} s",
            f"{local:.2f} s", remote / local, "for the record", None),
    ]  # fmt: skip


def run_urls(fleet: Fleet, pairs: list[tuple[str, str]], timings: list[dict[str, Any]]) -> float:
    base = spec_for(Path("/in.mp4"), Path("/out.mp4"))  # the same settings, URLs for paths
    specs = [replace(base, input=i, output=o) for i, o in pairs]
    started = time.perf_counter()
    jobs = fleet.submit_many(specs)
    done = [fleet.wait(job.id, timeout=600) for job in jobs]
    elapsed = time.perf_counter() - started
    for job in done:
        if job.status != "succeeded":
            raise SystemExit(f"job {job.id} {job.status}: {job.reason}")
        timings.append((job.result or {})["timings"])
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="the large file's size")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--reps", type=int, default=3)
    add_arguments(parser)
    args = parser.parse_args()
    if args.quick:
        args.mib, args.clips, args.seconds, args.reps = 128, 4, 3.0, 1
    local_s3_environment()  # moto on 127.0.0.1; before any Ray starts (its workers inherit it)
    work = Path(tempfile.mkdtemp(prefix="ff-transfer-"))
    s3 = ObjectServer().start()
    try:
        rows = node_to_node(work, args.mib, args.reps)
        rows += object_storage(work, s3, min(args.mib, 256))
        rows += batch(work, s3, args.clips, args.seconds, args.reps)
        emit(rows, args.report)
    finally:
        s3.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
