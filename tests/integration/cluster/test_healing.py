"""The farm heals itself on real parts: a real ffmpeg frozen mid-encode (SIGSTOP, as a
wedged NFS read or NVENC session leaves it) is killed by the watchdog, its node is
quarantined, given a trial job, and the job succeeds; nothing is left behind."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster import Fleet, Hardware
from cluster.ray_edge.runtime import Runtime
from tests.helpers import (
    alive,
    count_frames,
    ffmpeg_processes,
    leftovers,
    make_clip,
    transcode,
    wait_until,
)
from tests.integration.conftest import start_fleet

STALL_S = 8.0


@pytest.fixture(scope="module")
def fleet(ray_runtime: Runtime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    f = start_fleet(
        tmp_path_factory.mktemp("coordinator"),
        "coordinator-healing",
        stall_s=STALL_S,
        quarantine_after=1,
        quarantine_s=3.0,
        node_refresh_s=0.5,
    )
    yield f
    f.shutdown_coordinator()


def test_a_frozen_ffmpeg_is_killed_its_node_quarantined_tried_and_the_job_succeeds(
    fleet: Fleet, tmp_path: Path
) -> None:
    src = make_clip(tmp_path / "in.mp4", seconds=20, size="640x360")
    out = tmp_path / "out"
    out.mkdir()
    dst = out / "frozen.mkv"
    job = fleet.submit(transcode(src, dst, hardware=Hardware.CPU))
    frozen = wait_until(lambda: ffmpeg_processes(str(out)), timeout=60, step=0.02)
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)  # alive, holding its files, making no progress

    def quarantined() -> list[dict[str, object]]:
        return [dict(n.quarantine or {}) for n in fleet.nodes() if n.state == "quarantined"]

    (seen,) = wait_until(quarantined, timeout=STALL_S + 20)
    assert str(seen["reason"]).startswith("1 failures in a row, the last: stalled: no progress")
    wait_until(lambda: alive(frozen) == [], timeout=10)  # killed, though it was stopped
    assert fleet.get(job.id).status == "queued"  # waiting out the quarantine
    done = fleet.wait(job.id, timeout=120)  # then the trial job: this one, again
    assert (done.status, done.attempts) == ("succeeded", 2), done.reason
    (failure,) = done.failures
    assert failure.code == "stalled" and f"(limit {STALL_S:g} s)" in (failure.reason or "")
    # 640x360 x264 is expected at 4x real time or better: ten times 5 s at most.
    assert done.limits == {"stall_s": STALL_S, "max_runtime_s": 50.0}
    assert count_frames(dst) == 500
    assert leftovers(out) == [] and sorted(p.name for p in out.iterdir()) == ["frozen.mkv"]
    assert ffmpeg_processes(str(out)) == []
    (node,) = fleet.nodes()
    assert (node.state, node.quarantine) == ("ready", None)  # the trial healed it
