"""Quality targets: per-title ladders against the fixed default ladder on three kinds of
clip, the CRF search's parallel efficiency, and the scorer's throughput.

1. **Per-title vs fixed.** Three masters made with lavfi sources (near-static test
   patterns, high motion with grain, animation-like flat colours), each packaged twice
   on a farm of N one-core workers: the default ladder (every rung at the codec's
   default CRF under its cap) and a per-title ladder for VMAF 95. Every rung of both is
   then scored here, independently (the static ffmpeg's libvmaf, the rung scaled back to
   the source's size, bicubic), and the packages' video bytes compared. Target: 20 % or
   more saved on the near-static clip with its top rung at the target.
2. **The search on one worker vs N.** The same ``target_vmaf`` transcode on a farm of one
   worker and on N workers (fresh farms: nothing remembered); the search's wall time
   (from the job's start to its final encode's) on each. Efficiency = T1 / (N x TN),
   target >= 0.8.
3. **Scoring throughput.** framefleet's scoring command (VMAF, and VMAF with PSNR, SSIM
   and XPSNR) on a 720p pair, in frames per second per core, with and without
   ``subsample``.

    .venv/bin/python bench/quality.py [--workers 2] [--seconds 12] [--width 960 --height 540]
        [--quick]
"""

from __future__ import annotations

import os
import secrets

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# A Cluster's head refuses to start without a token: this run's own, never ~/.ray.
os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
os.environ.pop("RAY_AUTH_TOKEN_PATH", None)

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imageio_ffmpeg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.farm import one_core_workers
from bench.report import Row, add_arguments, at_least, at_most, emit
from cluster import JobKind, JobSpec, Speed
from cluster.media.probe import probe
from cluster.media.quality import score_command
from cluster.model.quality import Model, Reference, ScoreOptions, ScoreStep, model_for

STATIC = imageio_ffmpeg.get_ffmpeg_exe()
TARGET = 95.0
CLIPS = {
    "near-static": "testsrc=s={w}x{h}:r=25",
    "high motion and grain": "testsrc2=s={w}x{h}:r=25,noise=alls=20:allf=t+u",
    "animation-like": "life=s={qw}x{qh}:r=4:ratio=0.5:mold=5:life_color=#f0c020:"
    "death_color=#202060,fps=25,scale={w}:{h}:flags=neighbor",
}
"""Static patterns and a counter; a moving pattern under grain; flat colours with hard
edges, drawn four times a second and held (as animation is drawn on fours)."""


def master(path: Path, source: str, seconds: float, size: tuple[int, int]) -> Path:
    w, h = size
    graph = source.format(w=w, h=h, qw=w // 4, qh=h // 4) + f",trim=duration={seconds:g}"
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i", graph,
                    "-c:v", "libx264", "-preset", "veryfast", "-crf", "10", "-pix_fmt",
                    "yuv420p", str(path)], check=True)  # fmt: skip
    return path


def vmaf(distorted: Path, reference: Path) -> float:
    """libvmaf's pooled mean, the distorted scaled back to the reference's size."""
    info = probe(str(reference)).require_video()
    graph = (f"[0:v]scale={info.width}:{info.height}:flags=bicubic,setpts=PTS-STARTPTS[d];"
             "[1:v]setpts=PTS-STARTPTS[r];[d][r]libvmaf=n_threads=2")  # fmt: skip
    done = subprocess.run([STATIC, "-hide_banner", "-nostdin", "-i", str(distorted), "-i",
                           str(reference), "-lavfi", graph, "-f", "null", "-"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    found = re.search(r"VMAF score: ([0-9.]+)", done.stderr)
    return float(found[1]) if found else float("nan")


def rungs(package: Path, source: Path) -> dict[str, tuple[int, float]]:
    """Each video rung of a package: (bytes of its segments, VMAF at the display size)."""
    found = {}
    for folder in sorted(p for p in package.iterdir() if p.is_dir() and p.name[0] == "v"):
        parts = [folder / "init.mp4", *sorted(folder.glob("seg_*.m4s"))]
        joined = package.parent / f"{package.name}-{folder.name}.mp4"
        joined.write_bytes(b"".join(p.read_bytes() for p in parts))
        found[folder.name] = (sum(p.stat().st_size for p in parts), vmaf(joined, source))
        joined.unlink()
    return found


def per_title(work: Path, workers: int, seconds: float, size: tuple[int, int]) -> list[Row]:
    media = work / "media"
    media.mkdir(parents=True)
    masters = {name: master(media / f"m{i}.mp4", src, seconds, size)
               for i, (name, src) in enumerate(CLIPS.items())}  # fmt: skip
    rows = []
    with one_core_workers(work, media, workers) as fleet:
        for i, (name, source) in enumerate(masters.items()):
            fixed, titled = media / f"fixed{i}", media / f"titled{i}"
            specs = [JobSpec(kind=JobKind.PACKAGE, input=str(source), output=str(fixed),
                             speed=Speed.FAST),
                     JobSpec(kind=JobKind.PACKAGE, input=str(source), output=str(titled),
                             speed=Speed.FAST, target_vmaf=TARGET)]  # fmt: skip
            jobs = [fleet.wait(fleet.submit(s).id, timeout=3600) for s in specs]
            for job in jobs:
                if job.status != "succeeded":
                    raise SystemExit(f"bench: a package {job.status}: {job.reason}")
            ours, base = rungs(titled, source), rungs(fixed, source)
            explained = (jobs[1].result or {}).get("ladder", {}).get("rungs", [])
            print(f"{name}: fixed ladder {sum(b for b, _ in base.values()) / 1e6:.2f} MB; "
                  f"per-title {sum(b for b, _ in ours.values()) / 1e6:.2f} MB")  # fmt: skip
            for rung in explained:
                measured = ours.get(rung["rung"], (0, float("nan")))[1]
                fixed_vmaf = base.get(rung["rung"], (0, float("nan")))[1]
                print(f"  {rung['name']:<12} {'kept' if rung['kept'] else 'dropped'}: CRF "
                      f"{rung['crf']}, VMAF {measured:.2f} (fixed ladder {fixed_vmaf:.2f}); "
                      f"{rung['why']}")  # fmt: skip
            saved = sum(b for b, _ in ours.values()) / sum(b for b, _ in base.values())
            top = max(ours, key=lambda k: int(re.sub(r"\D", "", k) or 0))
            top_vmaf = ours[top][1]
            met = at_most(saved, 0.80) and top_vmaf >= TARGET - 1.0 if i == 0 else None
            rows.append(Row(
                f"{name} clip: per-title ladder (VMAF {TARGET:g}) vs the fixed default ladder, "
                "video bytes",
                f"{sum(b for b, _ in ours.values())} B, top rung VMAF {top_vmaf:.2f}",
                f"{sum(b for b, _ in base.values())} B, top rung VMAF {base[top][1]:.2f}"
                if top in base else f"{sum(b for b, _ in base.values())} B",
                saved, "<= 0.80 with the top rung at the target" if i == 0 else "for the record",
                met))  # fmt: skip
    return rows


def search_wall(work: Path, workers: int, source: Path) -> tuple[float, int]:
    """The search's wall time of a target_vmaf transcode on a fresh farm of ``workers``
    one-core workers, and how many probes it ran."""
    media = work / "media"
    media.mkdir(parents=True)
    local = media / source.name
    shutil.copy(source, local)
    with one_core_workers(work, media, workers) as fleet:
        spec = JobSpec(kind=JobKind.TRANSCODE, input=str(local), output=str(media / "out.mp4"),
                       speed=Speed.FAST, target_vmaf=TARGET, split="off")  # fmt: skip
        job = fleet.wait(fleet.submit(spec).id, timeout=3600)
        if job.status != "succeeded":
            raise SystemExit(f"bench: the search {job.status}: {job.reason}")
        encode = fleet.get(f"{job.id}-encode")
        probes = len((job.result or {})["search"]["probes"])
        return (encode.started_at or 0.0) - (job.started_at or 0.0), probes


def efficiency(work: Path, workers: int, seconds: float, size: tuple[int, int]) -> list[Row]:
    work.mkdir(parents=True, exist_ok=True)
    source = master(work / "search.mp4", CLIPS["high motion and grain"], seconds, size)
    one, probes_one = search_wall(work / "one", 1, source)
    many, probes_many = search_wall(work / "many", workers, source)
    value = one / (workers * many)
    print(f"search: {probes_one} CRFs on 1 worker in {one:.1f} s; {probes_many} CRFs on "
          f"{workers} workers in {many:.1f} s")  # fmt: skip
    return [Row(f"the CRF search's wall time, 1 worker vs {workers} (efficiency "
                f"T1 / ({workers} x T{workers}))", f"{many:.1f} s on {workers}",
                f"{one:.1f} s on 1", value, ">= 0.80", at_least(value, 0.8))]  # fmt: skip


def throughput(work: Path, seconds: float, size: tuple[int, int]) -> list[Row]:
    reference = master(work / "ref.mp4", CLIPS["high motion and grain"], seconds, size)
    distorted = work / "dist.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-i", str(reference), "-c:v",
                    "libx264", "-preset", "veryfast", "-crf", "30", str(distorted)],
                   check=True)  # fmt: skip
    info = probe(str(reference))
    video = info.require_video()
    frames = info.frame_count or 0
    ref = Reference(str(reference), video.width, video.height, video.frame_rate or (25, 1),
                    8, frames)  # fmt: skip
    dist_info = probe(str(distorted))
    rows = []
    for metrics, subsample, threads in (("vmaf", 1, 1), ("vmaf", 5, 1), ("vmaf", 1, 2),
                                        ("vmaf,psnr,ssim,xpsnr", 1, 2)):  # fmt: skip
        options = ScoreOptions.parse({"metrics": metrics, "subsample": subsample})
        step = ScoreStep(ref, options, str(model_for(Model.AUTO, video.height)))
        logs = work / f"logs-{subsample}-{threads}-{len(metrics)}"
        logs.mkdir()
        command = score_command(step, str(distorted), dist_info, logs=str(logs), threads=threads)
        started = time.perf_counter()
        subprocess.run([STATIC, *command.argv[1:]], check=True, capture_output=True)
        took = time.perf_counter() - started
        rate = frames / took / threads
        print(f"scoring {metrics} at {video.width}x{video.height}, subsample {subsample}, "
              f"{threads} thread(s): {frames / took:.1f} frames/s, {rate:.1f} a core")  # fmt: skip
        rows.append(Row(f"scoring {metrics}, subsample {subsample}, {threads} core(s), "
                        f"{video.height}p", f"{rate:.1f} frames/s per core", "-", None,
                        "for the record", None))  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=max(2, min(8, os.cpu_count() or 2)))
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--width", type=int, default=960)
    parser.add_argument("--height", type=int, default=540)
    add_arguments(parser)
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.width, args.height = 8.0, 640, 360
    size = (args.width, args.height)
    work = Path(tempfile.mkdtemp(prefix="ff-quality-"))
    try:
        rows = throughput(work, args.seconds, size)
        rows += per_title(work / "ladders", args.workers, args.seconds, size)
        rows += efficiency(work / "search", args.workers, args.seconds, size)
        emit(rows, args.report)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
