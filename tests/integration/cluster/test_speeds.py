"""Learned speeds on a real multi-node Ray cluster of two kinds of nodes: a head without
CPUs, a fast worker of two cores and a slow worker of one core.

On a two-core CI machine a two-core worker is not faster than a one-core one in wall
time, and whatever else runs there changes both. So each worker's ffmpeg is a wrapper
that reads an encode's input at a set rate (``-readrate``, the real ffmpeg exec'd):
:data:`FAST_RATE` times real time on the fast worker, :data:`SLOW_RATE` on the slow one.
The encodes (libx264 ``veryfast``, 640x360) need a third of a core at the fast rate, so
the speeds hold on a busy machine. The two workers differ in cores, so they are two
kinds and placement goes by finish time.

What is checked, from the coordinator's own records (each job's ``created_at``,
``finished_at``, ``forecast`` and placement), so a slow machine stretches the timeline
without changing what is measured:

- after a warm-up (a few encodes on each worker), a batch submitted at once finishes
  when it was predicted to: the median error of the first prediction of each job's
  time from submit to finish is within :data:`ETA_TOLERANCE`;
- the batch goes where it finishes first: the fast worker runs most of it, and each
  placement reason names the predicted finish there and on the other kind;
- a coordinator restarted on the same data dir keeps what was learned;
- an export loaded into a fresh coordinator (another data dir) makes it warm.
"""

from __future__ import annotations

import math
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ray.cluster_utils import Cluster

from cluster import CoordinatorConfig, Fleet, Job, JobSpec, RuntimeConfig
from tests.helpers import count_frames, make_clip, transcode, wait_until
from tests.integration.conftest import private_cluster

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(300)]
NAME = "speeds"
FAST_RATE, SLOW_RATE = 4.0, 1.5
"""Times real time each worker's encodes read their input at."""
THROTTLE = """\
import os, sys
args = sys.argv[1:]
if "-progress" in args and "-i" in args:  # an encode: its input read at a set rate
    at = args.index("-i")
    args[at:at] = ["-readrate", "{rate:g}"]
os.execvp("ffmpeg", ["ffmpeg", *args])  # -version, -encoders: the real answers
"""
WARM_CLIP_S = 8
BATCH_CLIP_S = 16
"""640x360 at 25 fps: 4 s on the fast worker, about 11 s on the slow one."""
WARM_SLOW, WARM_FAST = 2, 4
"""Warm-up encodes on each worker (the fast one runs two at a time: one core each)."""
BATCH = 8
ETA_TOLERANCE = 0.25
THREADS = re.compile(r"threads for all (\d+) of the node's cores")
KIND = re.compile(r"finishes ~\d\d:\d\d on (.+?) \((\d+) cores?\)")


@dataclass
class Farm:
    cluster: Cluster
    root: Path
    fleet: Fleet
    fast: str
    """The two-core worker's node id."""
    slow: str
    warm_clip: Path
    clip: Path

    def name_of(self, node_id: str) -> str:
        return {self.fast: "fast", self.slow: "slow"}.get(node_id, node_id)


def connect(cluster: Cluster, root: Path, data: Path, name: str) -> Fleet:
    fleet = Fleet.connect(
        RuntimeConfig(data_dir=data, address=cluster.address, coordinator_name=name),
        CoordinatorConfig(
            data_dir=data,
            media_roots=(root,),
            max_attempts=2,
            retry_backoff_s=0.2,
            encoder_idle_s=120.0,  # warm encoders: a job's start costs ms, not an actor
            node_refresh_s=1.0,
        ),
    )
    wait_until(lambda: fleet.ping()["ready"], timeout=60)
    return fleet


def encodes(farm: Farm, clip: Path, folder: str, count: int) -> list[JobSpec]:
    """``count`` CPU h264 transcodes of ``clip``, each one encode (not split)."""
    out = farm.root / folder
    out.mkdir()
    return [
        transcode(
            clip, out / f"{i:02}.mp4", hardware="cpu", codec="h264", speed="fast", split="off"
        )
        for i in range(count)
    ]


def run_all(fleet: Fleet, specs: list[JobSpec], timeout: float = 90) -> list[Job]:
    """Submit ``specs`` at once and wait until every one has ended; all succeeded."""
    ids = [j.id for j in fleet.submit_many(specs)]

    def ended() -> list[Job] | None:
        jobs = [fleet.get(i) for i in ids]
        return jobs if all(j.status.terminal for j in jobs) else None

    jobs: list[Job] = wait_until(ended, timeout=timeout, step=0.3)
    failed = [(j.id, j.status, j.reason) for j in jobs if j.status != "succeeded"]
    assert not failed, failed
    return jobs


def exported(fleet: Fleet, limit: int = 5) -> list[dict[str, Any]]:
    """Every kept run, as ``framefleet speeds export`` reads them: a page at a time (a
    small page here, so paging is exercised), oldest first, without their ``seq``."""
    found: list[dict[str, Any]] = []
    after = 0
    while page := fleet.speeds(samples=True, after=after, limit=limit)["samples"]:
        assert len(page) <= limit and all(s["seq"] > after for s in page), page
        after = page[-1]["seq"]
        found += [{k: v for k, v in s.items() if k != "seq"} for s in page]
    return found


def runs_by_device(fleet: Fleet) -> dict[str, int]:
    return {d["device"]: d["runs"] for d in fleet.speeds()["devices"]}


def runs_by_node(samples: list[dict[str, Any]]) -> Counter[str]:
    return Counter(s["node_id"] for s in samples)


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    root = tmp_path_factory.mktemp("speeds")
    with private_cluster("ffs-") as (cluster, _):
        fast = cluster.add_node(
            num_cpus=2, num_gpus=0, env_vars={"FRAMEFLEET_FFMPEG": throttled(root, FAST_RATE)}
        )
        slow = cluster.add_node(
            num_cpus=1, num_gpus=0, env_vars={"FRAMEFLEET_FFMPEG": throttled(root, SLOW_RATE)}
        )
        cluster.wait_for_nodes()
        warm_clip = make_clip(root / "warm.mp4", seconds=WARM_CLIP_S, size="640x360")
        clip = make_clip(root / "clip.mp4", seconds=BATCH_CLIP_S, size="640x360")
        first = connect(cluster, root, root / ".data", NAME)
        farm = Farm(cluster, root, first, str(fast.node_id), str(slow.node_id), warm_clip, clip)
        try:
            warm_up(farm)
            yield farm
        finally:
            farm.fleet.shutdown_coordinator()
            first.close()  # its connection to Ray is the one this process made


def throttled(root: Path, rate: float) -> str:
    """An ffmpeg whose encodes read their input at ``rate`` times real time."""
    path = root / f"ffmpeg-{rate:g}x" / "ffmpeg"
    path.parent.mkdir()
    path.write_text(f"#!{sys.executable}\n" + THROTTLE.replace("{rate:g}", f"{rate:g}"))
    path.chmod(0o755)
    return str(path)


def warm_up(farm: Farm) -> None:
    """A few encodes on each worker, the other drained: the slow one first, then the
    fast one, two at a time (one core each, as in the batch). In that order a drained
    worker is never the one predicted faster (a job could wait for it: its kind counted
    as free)."""
    fleet = farm.fleet
    fleet.drain(farm.fast)
    slow = run_all(fleet, encodes(farm, farm.warm_clip, "warm-slow", WARM_SLOW))
    fleet.drain(farm.fast, on=False)
    fleet.drain(farm.slow)
    fast = run_all(fleet, encodes(farm, farm.warm_clip, "warm-fast", WARM_FAST))
    fleet.drain(farm.slow, on=False)
    assert {farm.name_of(str(j.placement.node_id)) for j in slow if j.placement} == {"slow"}
    assert {farm.name_of(str(j.placement.node_id)) for j in fast if j.placement} == {"fast"}
    by_node = runs_by_node(exported(fleet))
    assert by_node == {farm.slow: WARM_SLOW, farm.fast: WARM_FAST}, by_node
    assert fleet.speeds()["runs"] == WARM_SLOW + WARM_FAST
    assert "samples" not in fleet.speeds()  # only when asked for
    print()
    for job in [*slow, *fast]:
        assert job.placement is not None
        ran = float(((job.result or {}).get("timings") or {}).get("ffmpeg_s") or 0.0)
        threads = THREADS.search(job.placement.reason)
        print(
            f"warm-up on {farm.name_of(job.placement.node_id)} ({job.placement.cpus:g} core"
            f"{', ' + threads.group(1) + ' threads' if threads else ''}): "
            f"{WARM_CLIP_S} s of media in {ran:.2f} s of ffmpeg ({WARM_CLIP_S / ran:.2f}x)"
        )


def test_a_batch_finishes_when_predicted_where_it_finishes_first(farm: Farm) -> None:
    fleet = farm.fleet
    assert not fleet.list_jobs(status="queued") and not fleet.list_jobs(status="running")
    submitted = fleet.submit_many(encodes(farm, farm.clip, "batch", BATCH))
    ids = [j.id for j in submitted]
    first_seen: dict[str, tuple[float, str, dict[str, Any]]] = {}
    """Job id -> when this poll first saw its prediction, its status and forecast then."""

    def ended() -> list[Job] | None:
        jobs = [fleet.get(i) for i in ids]
        now = time.time()
        for job in jobs:
            if job.forecast and job.forecast.get("finish_at_submit") is not None:
                first_seen.setdefault(job.id, (now, str(job.status), dict(job.forecast)))
        return jobs if all(j.status.terminal for j in jobs) else None

    jobs: list[Job] = wait_until(ended, timeout=120, step=0.2)
    failed = [(j.id, j.status, j.reason) for j in jobs if j.status != "succeeded"]
    assert not failed, failed
    assert all(j.attempts == 1 for j in jobs), [(j.id, j.attempts) for j in jobs]
    assert count_frames(Path(str(jobs[0].spec.output))) == BATCH_CLIP_S * 25

    # Every job was given a prediction, within a forecast round or two of its submit
    # (first seen by this poll: an upper bound).
    missing = [j.id for j in jobs if not (j.forecast and "finish_at_submit" in j.forecast)]
    assert not missing, f"jobs never given a prediction: {missing}"
    errors, rows = [], []
    for job in sorted(jobs, key=lambda j: j.seq):
        assert job.forecast is not None and job.finished_at is not None and job.placement
        predicted = float(job.forecast["finish_at_submit"]) - job.created_at
        actual = job.finished_at - job.created_at
        errors.append(abs(predicted - actual) / actual)
        seen, status, first = first_seen.get(job.id, (job.finished_at, "?", {}))
        start = float(first.get("start_at", 0.0)) - job.created_at
        started = float(job.started_at or 0.0) - job.created_at
        rows.append(
            f"  {job.id[:8]} on {farm.name_of(job.placement.node_id):4} "
            f"({job.placement.cpus:g} core): predicted {predicted:5.1f} s, took {actual:5.1f} s "
            f"(error {errors[-1]:4.0%}); first seen {seen - job.created_at:3.1f} s after "
            f"submit, {status}, predicted start {start:4.1f} s (started {started:4.1f} s)"
        )
    on = Counter(farm.name_of(j.placement.node_id) for j in jobs if j.placement)
    start = min(j.created_at for j in jobs)
    end = max(float(j.finished_at or 0.0) for j in jobs)
    median = statistics.median(errors)
    print(
        f"\nbatch of {BATCH} ({BATCH_CLIP_S} s clips): {dict(on)}, all done "
        f"{end - start:.1f} s after submit; median ETA error {median:.0%}, "
        f"max {max(errors):.0%}\n" + "\n".join(rows)
    )
    for job in jobs:
        assert job.placement is not None
        print(f"  {job.id[:8]}: {job.placement.reason}")
    late = [j.id for j in jobs if first_seen.get(j.id, (math.inf,))[0] - j.created_at > 10]
    assert not late, f"first predictions seen over 10 s after submit: {late}"
    assert median <= ETA_TOLERANCE, f"median ETA error {median:.0%} > {ETA_TOLERANCE:.0%}"

    # Where it finishes first: the fast worker ran most of the batch; each reason names
    # the predicted finish on the kind chosen and on the other kind.
    assert on["fast"] > on["slow"], on
    for job in jobs:
        assert job.placement is not None
        reason = job.placement.reason
        kinds = [int(cores) for _, cores in KIND.findall(reason)]
        chosen = 2 if job.placement.node_id == farm.fast else 1
        assert "finishes ~" in reason and " vs " in reason, reason
        assert kinds[:1] == [chosen], reason
        other = rf"\({3 - chosen} cores?\)"
        # The other kind with its predicted finish, or busy (its next end not known yet).
        assert re.search(rf" vs (~\d\d:\d\d on .+ {other}|.+ {other} busy)", reason), reason


def test_a_restarted_coordinator_keeps_what_it_learned(farm: Farm) -> None:
    before, kept = farm.fleet.speeds(), exported(farm.fleet)
    assert runs_by_node(kept)[farm.fast] >= WARM_FAST
    farm.fleet.shutdown_coordinator()
    farm.fleet = connect(farm.cluster, farm.root, farm.root / ".data", NAME)

    assert exported(farm.fleet) == kept
    assert farm.fleet.speeds() == before  # the model rebuilt, the same
    jobs = run_all(farm.fleet, encodes(farm, farm.clip, "after-restart", 3))
    check_warm(farm, jobs)
    assert len(exported(farm.fleet)) == len(kept) + 3


def test_an_export_makes_a_fresh_coordinator_warm(farm: Farm) -> None:
    samples, devices = exported(farm.fleet), runs_by_device(farm.fleet)
    farm.fleet.shutdown_coordinator()  # one coordinator places on the workers at a time
    farm.fleet = connect(farm.cluster, farm.root, farm.root / ".fresh", NAME + "-fresh")

    assert farm.fleet.speeds(samples=True) == {"devices": [], "runs": 0, "samples": []}
    assert farm.fleet.load_speeds(samples) == len(samples)
    assert farm.fleet.load_speeds(samples) == 0  # nothing new the second time
    assert runs_by_device(farm.fleet) == devices
    assert exported(farm.fleet) == samples
    # The same cluster: the same node ids, so a job's prediction rests on its node's runs.
    check_warm(farm, run_all(farm.fleet, encodes(farm, farm.clip, "after-import", 3)))


def check_warm(farm: Farm, jobs: list[Job]) -> None:
    """Every job placed on one core was predicted from what its node ran, not from the
    static table alone (a lone job given both cores of the fast worker is a device, CPU
    model x 2 cores, that may not have run yet: left out)."""
    found = []
    for job in jobs:
        assert job.placement is not None and job.forecast is not None, job
        found.append((farm.name_of(job.placement.node_id), job.placement.cpus,
                      job.forecast.get("basis"), job.forecast.get("speed")))  # fmt: skip
    print("\n" + "\n".join(f"  on {n} ({c:g} core): basis {b}, speed {s}" for n, c, b, s in found))
    one_core = [f for f in found if f[1] == 1]
    assert one_core, found
    assert all(basis not in (None, "static") for _, _, basis, _ in one_core), found
