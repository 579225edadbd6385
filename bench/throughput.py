"""Throughput: N clips through framefleet vs. the same ffmpeg commands under xargs -P <cores>.

Both sides run the identical ffmpeg argv (built by framefleet's own command
builder), side by side in one run, alternating which goes first, repeated;
medians are compared. framefleet is timed from the first submit to the last job
finished on a warm cluster (Ray started, encoder actors created by a warm-up);
start-up is printed separately. The last line is the ratio framefleet/xargs.

    .venv/bin/python bench/throughput.py [--clips 12] [--seconds 10] [--reps 3]
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse
import shlex
import shutil
import statistics
import subprocess
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


def run_framefleet(fleet: Fleet, clips: list[Path], out: Path) -> float:
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
    return time.perf_counter() - started


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
    args = parser.parse_args()
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
        run_framefleet(fleet, clips[: args.cores], warm)
        warmup = time.perf_counter() - t0
        print(
            f"cluster start-up: {startup:.2f} s (local Ray + coordinator); "
            f"warm-up ({args.cores} jobs, creates the encoder actors): {warmup:.2f} s"
        )

        times: dict[str, list[float]] = {"xargs": [], "framefleet": []}
        try:
            for rep in range(args.reps):
                order = ["xargs", "framefleet"] if rep % 2 == 0 else ["framefleet", "xargs"]
                for side in order:
                    out = work / f"out-{side}-{rep}"
                    out.mkdir()
                    if side == "xargs":
                        elapsed = run_xargs(clips, out, args.cores)
                    else:
                        elapsed = run_framefleet(fleet, clips, out)
                    check_outputs(out, clips)
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
        print(f"framefleet/xargs: {ours / xargs:.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
