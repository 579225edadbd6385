"""Throughput: N clips through framefleet vs. the same ffmpeg commands under xargs -P <cores>.

Both sides run the identical ffmpeg argv (built by framefleet's own command
builder), side by side in one run, alternating which goes first, repeated;
medians are compared. framefleet is timed from the first submit to the last job
finished on a warm cluster (Ray started, encoder actors created by a warm-up);
start-up is printed separately.

framefleet gives each encode the threads of the cores it was placed on; xargs runs
ffmpeg's defaults, as a shell user would. The quality check compares one clip's
output from each side: size and SSIM against the source (same CRF, same preset).
Each job's ``timings`` say what framefleet added to ffmpeg's own run; their means
are printed. The last line is the ratio framefleet/xargs.

    .venv/bin/python bench/throughput.py [--clips 12] [--seconds 10] [--reps 3] [--quick]
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cluster import (
    CONTAINERS,
    CoordinatorConfig,
    Fleet,
    Hardware,
    JobKind,
    JobSpec,
    RuntimeConfig,
    Speed,
    available,
    make_sample,
    probe,
)
from cluster.media.argv import transcode_command
from cluster.media.encoders import choose_encoder

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.report import Row, add_arguments, at_most, emit


def spec_for(src: Path, dst: Path) -> JobSpec:
    return JobSpec(
        kind=JobKind.TRANSCODE,
        input=str(src),
        output=str(dst),
        codec="h264",
        speed=Speed.MEDIUM,
        hardware=Hardware.CPU,
        overwrite=True,
    )


def run_xargs(clips: list[Path], out: Path, cores: int) -> float:
    """The same commands framefleet runs, as a plain shell user would: xargs -P."""
    encoder = choose_encoder("h264", Hardware.CPU, available())
    lines = []
    for i, clip in enumerate(clips):
        command = transcode_command(
            spec_for(clip, out / f"{clip.stem}.mp4"),
            probe(clip),
            encoder,
            CONTAINERS["mp4"],
            job_id=f"x{i}",
        )
        partial, final = command.outputs[0]
        argv = shlex.join(command.argv)
        lines.append(f"{argv} > /dev/null && mv {shlex.quote(partial)} {shlex.quote(final)}")
    started = time.perf_counter()
    subprocess.run(
        ["xargs", "-0", "-P", str(cores), "-n", "1", "sh", "-c"],
        input="\0".join(lines).encode(),
        check=True,
    )
    return time.perf_counter() - started


def run_framefleet(fleet: Fleet, clips: list[Path], out: Path, timings: list[dict]) -> float:
    started = time.perf_counter()
    after = fleet.event_cursor()
    jobs = fleet.submit_many([spec_for(clip, out / f"{clip.stem}.mp4") for clip in clips])
    pending = {job.id for job in jobs}
    while pending:
        batch = fleet.events(after, sorted(pending), timeout=10)
        after = batch.last_seq
        for event in batch.events:
            if event.status.terminal:
                if event.status != "succeeded":
                    raise SystemExit(f"job {event.job_id} {event.status}: {event.reason}")
                pending.discard(event.job_id)
    elapsed = time.perf_counter() - started
    timings += [(fleet.get(job.id).result or {})["timings"] for job in jobs]
    return elapsed


def ssim(output: Path, source: Path) -> float:
    """Mean SSIM of ``output`` against ``source`` (ffmpeg's ssim filter, all planes)."""
    run = subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-i", str(output), "-i", str(source),
         "-lavfi", "[0:v][1:v]ssim", "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    found = re.search(r"All:([0-9.]+)", run.stderr)
    assert found, run.stderr[-500:]
    return float(found.group(1))


def breakdown(timings: list[dict], wall: float, cores: int) -> None:
    """What framefleet added to each job, from the jobs' own timings."""
    n = len(timings)

    def mean_ms(key: str) -> float:
        return sum(t[key] for t in timings) / n * 1e3

    ffmpeg = sum(t["ffmpeg_s"] for t in timings)
    idle = (wall * cores - ffmpeg) / n
    starts = sorted(t["ffmpeg_started_at"] for t in timings)
    ends = sorted(t["ffmpeg_started_at"] + t["ffmpeg_s"] for t in timings)
    gaps = [start - end for start, end in zip(starts[cores:], ends, strict=False)]
    if gaps:  # a core freed by one ffmpeg until the next ffmpeg starts on it
        print(
            f"ffmpeg exit -> next ffmpeg start: median {statistics.median(gaps) * 1e3:.0f} ms, "
            f"max {max(gaps) * 1e3:.0f} ms over {len(gaps)} hand-overs"
        )
    print(
        f"per job, mean of {n}: ffmpeg {mean_ms('ffmpeg_s'):.0f} ms; framefleet added: "
        f"encoder call {mean_ms('dispatch_s'):.1f} ms, before ffmpeg (open, check files) "
        f"{mean_ms('before_ffmpeg_s'):.1f} ms, after ffmpeg (check, rename) "
        f"{mean_ms('after_ffmpeg_s'):.1f} ms"
    )
    print(
        f"core-time not spent in ffmpeg: {idle * 1e3:.0f} ms per job "
        f"(wall x cores - sum of ffmpeg runs, / jobs: probe, dispatch, gaps, the tail)"
    )


def check_outputs(out: Path, clips: list[Path]) -> None:
    for clip in clips:
        info = probe(out / f"{clip.stem}.mp4")
        assert info.video and info.video.codec == "h264", clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    add_arguments(parser)
    args = parser.parse_args()
    if args.quick:
        args.clips, args.seconds, args.reps = min(args.clips, 6), min(args.seconds, 4.0), 1
    width, height = (int(v) for v in args.size.split("x"))

    work = Path(tempfile.mkdtemp(prefix="ff-bench-"))
    try:
        src = work / "src"
        src.mkdir()
        first = make_sample(src / "clip00.mp4", seconds=args.seconds, width=width, height=height)
        clips = [first]
        for i in range(1, args.clips):
            clips.append(Path(shutil.copy(first, src / f"clip{i:02d}.mp4")))
        print(
            f"{args.clips} clips of {args.seconds:g} s at {args.size}, libx264 medium; "
            f"{args.cores} cores; {args.reps} repetitions"
        )

        t0 = time.perf_counter()
        data = work / "data"
        fleet = Fleet.connect(
            RuntimeConfig(data_dir=data, num_cpus=args.cores), CoordinatorConfig(data_dir=data)
        )
        startup = time.perf_counter() - t0
        warm = work / "warm"
        warm.mkdir()
        t0 = time.perf_counter()
        run_framefleet(fleet, clips[: args.cores], warm, [])
        warmup = time.perf_counter() - t0
        print(
            f"cluster start-up: {startup:.2f} s (local Ray + coordinator); "
            f"warm-up ({args.cores} jobs, creates the encoder actors): {warmup:.2f} s"
        )

        times: dict[str, list[float]] = {"xargs": [], "framefleet": []}
        timings: list[dict] = []
        quality: dict[str, tuple[float, int]] = {}
        try:
            for rep in range(args.reps):
                order = ["xargs", "framefleet"] if rep % 2 == 0 else ["framefleet", "xargs"]
                for side in order:
                    out = work / f"out-{side}-{rep}"
                    out.mkdir()
                    if side == "xargs":
                        elapsed = run_xargs(clips, out, args.cores)
                    else:
                        timings = []
                        elapsed = run_framefleet(fleet, clips, out, timings)
                        breakdown(timings, elapsed, args.cores)
                    check_outputs(out, clips)
                    if side not in quality:  # one sample: size and SSIM against the source
                        sample = out / f"{first.stem}.mp4"
                        quality[side] = (ssim(sample, first), sample.stat().st_size)
                    shutil.rmtree(out)
                    times[side].append(elapsed)
                print(
                    f"rep {rep + 1}: xargs {times['xargs'][-1]:.2f} s, "
                    f"framefleet {times['framefleet'][-1]:.2f} s"
                )
        finally:
            fleet.close()
        xargs, ours = statistics.median(times["xargs"]), statistics.median(times["framefleet"])
        print(f"median wall time: xargs -P {args.cores} {xargs:.2f} s, framefleet {ours:.2f} s")
        (s_ours, b_ours), (s_xargs, b_xargs) = quality["framefleet"], quality["xargs"]
        size = b_ours / b_xargs
        emit(
            [
                Row("batch SSIM vs source (one clip)", f"{s_ours:.4f}", f"{s_xargs:.4f}",
                    None, "within 0.005", abs(s_ours - s_xargs) <= 0.005),
                Row("batch output size (one clip)", f"{b_ours:,} B", f"{b_xargs:,} B",
                    size, "within 5 %", abs(size - 1) <= 0.05),
                Row(f"batch wall time, {args.clips} clips (xargs -P {args.cores})",
                    f"{ours:.2f} s", f"{xargs:.2f} s", ours / xargs, "<= 1.00",
                    at_most(ours / xargs, 1.0)),
            ],
            args.report,
        )  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
