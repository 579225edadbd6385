"""Split-and-stitch: one long clip encoded whole by one worker vs split across N workers,
side by side in one run, on a local multi-node Ray cluster.

The cluster: a head without CPUs and N workers of one core each (N = 2 on a 2-core
machine; ``--workers`` where there are more cores). Every ffmpeg is held to the core it
was placed on (``-threads 1``). The whole encode runs on one worker (``split=off``); the
split one (``split=auto``: chunks of the clip across every free worker, longest first)
on all N. Printed: wall times, the speed-up, the efficiency (speed-up / N), the
split-and-stitch overhead as a share of the split job's wall time (everything outside
the chunks' own encoding: reading the frame index, dispatch, the join and its check),
and the quality and size of the two outputs (mean SSIM against the source).

Last, a **model** (not a measurement) of a 10-node farm encoding a 2-hour 1080p file,
from this run's per-chunk encoding rate scaled by pixels, its index read rate and its
join rate.

    .venv/bin/python bench/split.py [--workers 2] [--seconds 120] [--quick]
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
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.farm import one_core_workers
from bench.report import Row, add_arguments, at_least, at_most, emit
from cluster import Fleet, Job, JobKind, JobSpec, make_sample
from cluster.media.probe import probe
from cluster.media.split import index_file
from cluster.model.split import Segment
from tests.helpers import ssim_frames

FARM_NODES = 10
FARM_SECONDS = 2 * 3600
FARM_FPS = 30
P1080 = 1920 * 1080


def encode(fleet: Fleet, source: Path, output: Path, split: str) -> tuple[Job, float]:
    spec = JobSpec(kind=JobKind.TRANSCODE, input=str(source), output=str(output),
                   codec="h264", split=split, overwrite=True)  # fmt: skip
    started = time.perf_counter()
    job = fleet.wait(fleet.submit(spec).id, timeout=3600)
    wall = time.perf_counter() - started
    if job.status != "succeeded":
        raise SystemExit(f"bench: the {split} encode {job.status}: {job.reason}")
    return job, wall


def chunk_phase(fleet: Fleet, job: Job) -> tuple[float, list[tuple[int, float]]]:
    """Seconds from the first chunk's start to the last one's end; each chunk's (frames,
    encode seconds)."""
    assert job.split is not None
    chunks = [fleet.get(c.job_id) for c in job.split.chunks]
    starts = [c.started_at or 0.0 for c in chunks]
    ends = [c.finished_at or 0.0 for c in chunks]
    rates = [
        (c.task.step.frames, (c.finished_at or 0.0) - (c.started_at or 0.0))
        for c in chunks
        if c.task is not None and isinstance(c.task.step, Segment)
    ]
    return max(ends) - min(starts), rates


def run(work: Path, workers: int, seconds: float, size: tuple[int, int]) -> list[Row]:
    media = work / "media"
    media.mkdir()
    source = make_sample(media / "long.mp4", seconds=seconds, width=size[0], height=size[1])
    frames = probe(source).frame_count or 0
    with one_core_workers(work, media, workers) as fleet:
        whole, t_whole = encode(fleet, source, media / "whole.mp4", "off")
        split_arg = "auto" if seconds >= 60 else f"{seconds / (2 * workers):g}"
        split, t_split = encode(fleet, source, media / "split.mp4", split_arg)
        phase, rates = chunk_phase(fleet, split)
        whole_ffmpeg = (whole.result or {}).get("timings", {}).get("ffmpeg_s", 0.0)
        stitch_s = (split.result or {}).get("split", {}).get("stitch_s", 0.0)
    started = time.perf_counter()
    asyncio.run(index_file(str(source), (), 0, 1))
    index_s = time.perf_counter() - started

    assert split.split is not None and whole.split is not None
    speedup = t_whole / t_split
    efficiency = speedup / workers
    overhead = max(0.0, t_split - phase) / t_split
    ssim_whole = statistics.fmean(ssim_frames(media / "whole.mp4", source))
    ssim_split = statistics.fmean(ssim_frames(media / "split.mp4", source))
    size_whole = (media / "whole.mp4").stat().st_size
    size_split = (media / "split.mp4").stat().st_size
    print(f"{seconds:g} s at {size[0]}x{size[1]} ({frames} frames), {workers} workers of one "
          f"core: whole {t_whole:.2f} s on one; split {t_split:.2f} s "
          f"({split.split.why})")  # fmt: skip
    print(
        f"speed-up {speedup:.2f}, efficiency {efficiency:.2f}; chunks encoded in {phase:.2f} s, "
        f"the rest {t_split - phase:.2f} s ({overhead:.1%}; join and check {stitch_s:.2f} s)"
    )
    print(
        f"the chunks' encodes took {sum(t for _, t in rates):.2f} s together, the whole "
        f"file's ffmpeg {whole_ffmpeg:.2f} s (N encoders share the machine with Ray's own "
        "processes; one encoder leaves them a core)"
    )
    print(
        f"SSIM vs source: whole {ssim_whole:.5f}, split {ssim_split:.5f}; size whole "
        f"{size_whole} B, split {size_split} B ({size_split / size_whole - 1:+.2%})"
    )
    rows = [
        Row(f"split across {workers} one-core workers vs whole on one ({seconds:g} s clip)",
            f"{t_split:.2f} s", f"{t_whole:.2f} s", efficiency,
            ">= 0.85 efficiency (speed-up / N)", at_least(efficiency, 0.85)),
        Row("split-and-stitch overhead (share of the split job's wall time)",
            f"{t_split - phase:.2f} s", f"{t_split:.2f} s", overhead, "<= 0.05",
            at_most(overhead, 0.05)),
        Row("split vs whole: mean SSIM against the source", f"{ssim_split:.5f}",
            f"{ssim_whole:.5f}", ssim_split - ssim_whole, "within 0.005",
            abs(ssim_split - ssim_whole) <= 0.005),
        Row("split vs whole: output size", f"{size_split} B", f"{size_whole} B",
            size_split / size_whole, "within 5 %", abs(size_split / size_whole - 1) <= 0.05),
    ]  # fmt: skip
    return rows + farm_model(rates, size, frames, index_s, stitch_s, size_split, seconds)


def farm_model(
    rates: list[tuple[int, float]],
    size: tuple[int, int],
    frames: int,
    index_s: float,
    stitch_s: float,
    output_bytes: int,
    seconds: float,
) -> list[Row]:
    """What 10 such one-core nodes would take for a 2-hour 1080p file: a model."""
    fps_here = sum(f for f, _ in rates) / sum(t for _, t in rates)
    fps_1080 = fps_here * size[0] * size[1] / P1080  # encoding cost taken as linear in pixels
    total = FARM_SECONDS * FARM_FPS
    whole_s = total / fps_1080
    # Reading the index and joining (a copy, then a read of the packets) cost per packet:
    # scaled by frames, not pixels.
    scale = total / frames
    index_farm = index_s * scale
    stitch_farm = stitch_s * scale
    chunks = max(1, round(FARM_SECONDS / max(20.0, FARM_SECONDS / (2 * FARM_NODES))))
    per_chunk = total / chunks / fps_1080
    split_s = index_farm + per_chunk * -(-chunks // FARM_NODES) + stitch_farm
    print(f"MODEL, not a measurement: a 2 h 1080p30 file on {FARM_NODES} one-core nodes at "
          f"this run's per-chunk rate scaled by pixels ({fps_1080:.1f} fps per node): whole "
          f"{whole_s / 3600:.1f} h on one; split into {chunks} chunks {split_s / 3600:.2f} h "
          f"(frame index {index_farm:.0f} s, join {stitch_farm:.0f} s; output "
          f"~{output_bytes * scale * P1080 / (size[0] * size[1]) / 2**30:.1f} GiB at this "
          "clip's bits per pixel)")  # fmt: skip
    return [
        Row(f"MODEL: 2 h 1080p on {FARM_NODES} nodes, split vs whole on one",
            f"{split_s / 3600:.2f} h", f"{whole_s / 3600:.1f} h", whole_s / split_s,
            "for the record (a model)", None),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=max(2, min(8, (os.cpu_count() or 2))))
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    add_arguments(parser)
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.width, args.height = 40.0, 640, 360
    work = Path(tempfile.mkdtemp(prefix="ff-split-"))
    try:
        rows: list[Any] = run(work, args.workers, args.seconds, (args.width, args.height))
        emit(rows, args.report)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
