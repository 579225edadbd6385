"""Split-and-stitch on a real multi-node Ray cluster (a head without CPUs, three workers of
one core each): one file's video encoded in chunks across the workers, joined, and
checked with ffprobe and ffmpeg's SSIM filter against the source; cancel, a worker
removed and a coordinator restart in the middle of a split job.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import ray

from cluster import Fleet, Job
from tests.helpers import (
    count_frames,
    ffmpeg_processes,
    frame_times,
    make_clip,
    ssim_frames,
    streams,
    transcode,
    wait_until,
)
from tests.integration.conftest import one_core_workers

pytestmark = pytest.mark.multinode
NAME = "split"


@dataclass
class Farm:
    fleet: Fleet
    cluster: Any
    root: Path
    clip: Path
    """12 s, 25 fps, audio and subtitles (mkv); one keyframe: every cut is frame-exact."""
    long: Path
    """60 s at 640x360: long enough to act on while its chunks run."""


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    root = tmp_path_factory.mktemp("split")
    with one_core_workers("ffs-", root, NAME) as (fleet, cluster):
        clip = make_clip(root / "clip.mkv", seconds=12, subtitles=True)
        long = make_clip(root / "long.mp4", seconds=60, size="640x360")
        wait_until(lambda: fleet.ping()["ready"], timeout=60)
        yield Farm(fleet, cluster, root, clip, long)


def chunk_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".chunk." in p.name or "partial" in p.name)


def chunks_of(job: Job) -> list[Any]:
    assert job.split is not None
    return job.split.chunks


def chunks_done(fleet: Fleet, job_id: str, at_least: int) -> Job | None:
    job = fleet.get(job_id)
    done = [c for c in chunks_of(job) if c.status == "succeeded"] if job.split else []
    running = [c for c in chunks_of(job) if c.status == "running"] if job.split else []
    return job if len(done) >= at_least and running else None


def test_a_clip_split_across_workers_is_frame_exact_with_no_visible_seam(farm: Farm) -> None:
    out = farm.root / "out-split"
    out.mkdir()
    spec = transcode(farm.clip, out / "split.mkv", split="3")
    job = farm.fleet.wait(farm.fleet.submit(spec).id, timeout=240)
    assert job.status == "succeeded", job.reason
    split = job.split
    assert split is not None and split.mode == "chunks", job.split
    assert len(split.chunks) >= 3
    assert len({c.node_id for c in split.chunks}) >= 2, split.chunks
    assert "split into 4 chunks" in split.why and "decoded to the exact frame" in split.why
    assert {c.encoder for c in split.chunks} == {"libx264"}

    output = out / "split.mkv"
    assert count_frames(output) == count_frames(farm.clip) == 300
    times = frame_times(output)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(abs(g - 0.04) < 0.005 for g in gaps), gaps
    assert [s["codec_name"] for s in streams(output, "audio")] == ["aac"]
    assert [s["codec_name"] for s in streams(output, "subtitle")] == ["subrip"]
    ssim = ssim_frames(output, farm.clip)
    assert len(ssim) == 300
    median = statistics.median(ssim)
    for segment in split.segments[1:]:
        seam = ssim[segment.start_frame - 2 : segment.start_frame + 3]
        assert min(seam) >= median - 0.01, (segment, seam, median)
    assert chunk_files(out) == []
    assert job.result is not None and job.result["stitched"]["frames"] == 300

    # The same clip encoded whole: the same quality and about the same size.
    whole = farm.fleet.wait(farm.fleet.submit(transcode(farm.clip, out / "whole.mkv",
                                                        split="off")).id, timeout=120)  # fmt: skip
    assert whole.status == "succeeded" and whole.split is not None
    assert whole.split.why == "not split: split=off"
    mean_whole = statistics.fmean(ssim_frames(out / "whole.mkv", farm.clip))
    assert abs(statistics.fmean(ssim) - mean_whole) <= 0.005
    size_whole, size_split = (out / "whole.mkv").stat().st_size, output.stat().st_size
    assert abs(size_split - size_whole) <= 0.05 * size_whole, (size_split, size_whole)


def test_auto_keeps_a_short_clip_whole_and_says_why(farm: Farm) -> None:
    out = farm.root / "out-auto"
    out.mkdir()
    job = farm.fleet.wait(farm.fleet.submit(transcode(farm.clip, out / "a.mp4")).id, timeout=120)
    assert job.status == "succeeded" and job.split is not None
    assert job.split.why == "not split: 12.0 s is shorter than 60 s (split=auto)"
    assert count_frames(out / "a.mp4") == 300


def test_cancel_kills_every_chunk_and_removes_every_chunk_file(farm: Farm) -> None:
    out = farm.root / "out-cancel"
    out.mkdir()
    spec = transcode(farm.long, out / "c.mp4", split="5", speed="slow")
    job = farm.fleet.submit(spec)
    wait_until(lambda: chunks_done(farm.fleet, job.id, 0), timeout=120)
    cancelled = farm.fleet.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.reason == "cancelled by user"
    assert ffmpeg_processes(str(farm.long)) == []
    wait_until(lambda: chunk_files(out) == [], timeout=20)
    assert not (out / "c.mp4").exists()
    assert {c.status for c in chunks_of(farm.fleet.get(job.id))} <= {"succeeded", "cancelled"}
    assert [j.id for j in farm.fleet.list_jobs()].count(job.id) == 1
    assert not any("-c0" in j.id for j in farm.fleet.list_jobs())


def test_a_coordinator_restart_reuses_the_finished_chunks(farm: Farm) -> None:
    out = farm.root / "out-restart"
    out.mkdir()
    job = farm.fleet.submit(transcode(farm.long, out / "r.mp4", split="5"))
    before = wait_until(lambda: chunks_done(farm.fleet, job.id, 1), timeout=180)
    finished = {c.index for c in chunks_of(before) if c.status == "succeeded"}

    first_life = farm.fleet.ping()["pid"]
    ray.kill(ray.get_actor(NAME, namespace="framefleet"), no_restart=False)
    wait_until(lambda: farm.fleet.ping()["pid"] != first_life, timeout=60)
    done = farm.fleet.wait(job.id, timeout=300)
    assert done.status == "succeeded", done.reason
    assert done.split is not None
    reused = {c.index for c in done.split.chunks if c.reused}
    assert finished <= reused and done.split.reused == len(reused)
    assert all(c.attempts == 1 for c in done.split.chunks if c.index in finished)
    assert count_frames(out / "r.mp4") == 1500
    assert chunk_files(out) == []


def test_a_worker_lost_mid_job_costs_only_its_chunk(farm: Farm) -> None:
    out = farm.root / "out-lost"
    out.mkdir()
    job = farm.fleet.submit(transcode(farm.long, out / "l.mp4", split="5"))
    before = wait_until(lambda: chunks_done(farm.fleet, job.id, 1), timeout=180)
    finished = {c.index: c.attempts for c in chunks_of(before) if c.status == "succeeded"}
    victim = next(c for c in chunks_of(before) if c.status == "running")
    node = next(n for n in farm.cluster.worker_nodes if n.node_id == victim.node_id)
    farm.cluster.remove_node(node)
    done = farm.fleet.wait(job.id, timeout=300)
    assert done.status == "succeeded", done.reason
    assert done.split is not None
    after = {c.index: c for c in done.split.chunks}
    assert {i: after[i].attempts for i in finished} == finished  # not encoded again
    assert after[victim.index].attempts >= 2
    assert after[victim.index].node_id != victim.node_id
    assert count_frames(out / "l.mp4") == 1500
    assert chunk_files(out) == []
