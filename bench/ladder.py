"""A streaming package: a 4-rung H.264 ladder of one master, framefleet across one-core
workers vs the one ffmpeg command a user would write, side by side on the same cores.

framefleet: a local Ray cluster (a head without CPUs, N workers of one core each; N = 2
on a 2-core machine), one ``package`` job (renditions and, where worth it, chunks of the
heavier rungs across the workers; its own segments, playlists, MPD and check). The
baseline: one ffmpeg, one decode, a ``split`` filter into four scalers and four libx264
encoders with the same settings (preset, CRF, caps, a fixed GOP), audio once, the ``hls``
muxer writing fMP4 segments with ``-var_stream_map``; its threads are ffmpeg's default
(every core). Printed: wall times and their ratio (target <= 1.0), bytes per rung, and
each rung's mean SSIM against the source scaled to the rung (both outputs).

Last, a **model** (not a measurement): the same ladder of a 2-hour master on 10 such
nodes, from this run's per-task encoding rates.

    .venv/bin/python bench/ladder.py [--workers 2] [--seconds 60] [--quick]
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.farm import one_core_workers
from bench.report import Row, add_arguments, at_most, emit
from cluster import (
    JobKind,
    JobSpec,
    PackageOptions,
    Speed,
    make_sample,
)
from cluster.media.ladder import default_cap
from cluster.media.probe import probe
from cluster.model.package import GOP_S, gop_frames

HEIGHTS = (1080, 720, 540, 360)
PRESET = "veryfast"  # framefleet's speed=fast for libx264
CRF = 23
FARM_NODES = 10
FARM_SECONDS = 2 * 3600


def baseline(source: Path, out: Path, fps: float, segment_s: float) -> float:
    """The one ffmpeg command: one decode, four encodes, HLS fMP4 with a master playlist."""
    gop = gop_frames(fps, GOP_S)
    chain = f"[0:v]split={len(HEIGHTS)}" + "".join(f"[s{i}]" for i in range(len(HEIGHTS)))
    for i, h in enumerate(HEIGHTS):
        chain += f";[s{i}]scale=-2:{h}:flags=bicubic,setsar=1[o{i}]"
    argv = ["ffmpeg", "-v", "error", "-nostdin", "-y", "-i", str(source),
            "-filter_complex", chain]  # fmt: skip
    for i, h in enumerate(HEIGHTS):
        cap = default_cap(h, "h264")
        argv += ["-map", f"[o{i}]", f"-c:v:{i}", "libx264", f"-preset:v:{i}", PRESET,
                 f"-crf:v:{i}", str(CRF), f"-maxrate:v:{i}", f"{cap}k",
                 f"-bufsize:v:{i}", f"{2 * cap}k"]  # fmt: skip
    argv += ["-pix_fmt", "yuv420p", "-g", str(gop), "-keyint_min", str(gop),
             "-sc_threshold", "0", "-force_key_frames", f"expr:eq(mod(n,{gop}),0)",
             "-map", "0:a:0", "-c:a", "aac", "-b:a", "128k", "-ac", "2",
             "-f", "hls", "-hls_time", f"{segment_s:g}", "-hls_playlist_type", "vod",
             "-hls_segment_type", "fmp4", "-hls_flags", "independent_segments",
             "-master_pl_name", "master.m3u8",
             "-var_stream_map", " ".join([f"v:{i},agroup:aud" for i in range(len(HEIGHTS))]
                                         + ["a:0,agroup:aud"]),
             str(out / "%v" / "index.m3u8")]  # fmt: skip
    out.mkdir()
    started = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - started


def joined(folder: Path, name: str) -> Path:
    """A rendition's init segment and media segments as one file (what a player reads)."""
    playlist = (folder / "index.m3u8").read_text().splitlines()
    init = re.search(r'URI="([^"]+)"', next(x for x in playlist if x.startswith("#EXT-X-MAP")))
    assert init is not None
    parts = [folder / init.group(1)] + [folder / x for x in playlist if x and x[0] != "#"]
    path = folder.parent.parent / f"{folder.parent.name}-{name}.mp4"
    with path.open("wb") as out:
        for part in parts:
            out.write(part.read_bytes())
    return path


def rung_stats(rung: Path, source: Path) -> tuple[int, float, int]:
    """(height, mean SSIM against the source scaled to the rung, bytes of its segments)."""
    info = probe(str(rung))
    video = info.require_video()
    graph = (f"[1:v]scale={video.width}:{video.height}:flags=bicubic,setsar=1[ref];"
             "[0:v][ref]ssim")  # fmt: skip
    done = subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-i", str(rung), "-i",
                           str(source), "-lavfi", graph, "-f", "null", "-"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    found = re.search(r"All:([0-9.]+)", done.stderr)
    return video.height, float(found.group(1)) if found else float("nan"), rung.stat().st_size


def run(work: Path, workers: int, seconds: float, size: tuple[int, int]) -> list[Row]:
    media = work / "media"
    media.mkdir()
    source = make_sample(media / "master.mp4", seconds=seconds, width=size[0], height=size[1])
    info = probe(str(source))
    fps = info.require_video().fps or 30.0
    segment_s = 6.0
    t_base = baseline(source, work / "baseline", fps, segment_s)
    with one_core_workers(work, media, workers) as fleet:
        ladder = ",".join(str(h) for h in HEIGHTS if h <= size[1])
        options = PackageOptions.parse({"ladder": ladder, "segment_s": segment_s})
        spec = JobSpec(kind=JobKind.PACKAGE, input=str(source), output=str(media / "pkg"),
                       speed=Speed.FAST, package=options)  # fmt: skip
        started = time.perf_counter()
        job = fleet.wait(fleet.submit(spec).id, timeout=3600)
        t_ours = time.perf_counter() - started
        if job.status != "succeeded":
            raise SystemExit(f"bench: the package {job.status}: {job.reason}")
        tasks = [fleet.get(f"{job.id}-{t.key}") for t in (job.package.tasks if job.package else [])]

    base = job.created_at
    for task in sorted(tasks, key=lambda t: t.started_at or 0.0):
        node = task.placement.node_id[:8] if task.placement else "?"
        print(f"  task {task.task.key if task.task else task.id}: node {node}, started "
              f"{(task.started_at or base) - base:6.2f} s after submit, ran "
              f"{(task.finished_at or 0.0) - (task.started_at or 0.0):6.2f} s")  # fmt: skip
    print(f"  job ended {(job.finished_at or base) - base:.2f} s after submit")
    result: dict[str, Any] = job.result or {}
    ours = {r["height"]: r for r in result["renditions"] if r["kind"] == "video"}
    print(f"{seconds:g} s at {size[0]}x{size[1]}, {fps:g} fps; {workers} workers of one core")
    print(f"framefleet {t_ours:.2f} s ({job.reason}); one ffmpeg {t_base:.2f} s")
    print(f"plan: {job.package.why if job.package else '?'}")
    rows_print = []
    for key in sorted(
        {p.name for p in (media / "pkg").iterdir() if p.is_dir() and p.name[0] == "v"}
    ):
        ours_file = joined(media / "pkg" / key, "ours")
        h, ssim, size_b = rung_stats(ours_file, source)
        index = HEIGHTS.index(h)
        base_file = joined(work / "baseline" / str(index), "base")
        _, base_ssim, base_size = rung_stats(base_file, source)
        rows_print.append((h, size_b, base_size, ssim, base_ssim))
        print(f"  {h}p: framefleet {size_b / 1e6:.2f} MB SSIM {ssim:.5f} (peak "
              f"{ours[h]['peak_bps'] / 1e3:.0f} kb/s); one ffmpeg {base_size / 1e6:.2f} MB "
              f"SSIM {base_ssim:.5f}")  # fmt: skip
    ratio = t_ours / t_base
    what = (f"{len(rows_print)}-rung H.264 ladder of {seconds:g} s at {size[1]}p: framefleet "
            f"on {workers} one-core workers vs one ffmpeg on the same cores")  # fmt: skip
    rows = [Row(what, f"{t_ours:.2f} s", f"{t_base:.2f} s", ratio, "<= 1.00", at_most(ratio, 1.0))]
    for h, size_b, base_size, ssim, base_ssim in rows_print:
        rows.append(Row(f"{h}p rung: bytes and SSIM (framefleet / one ffmpeg)",
                        f"{size_b} B, SSIM {ssim:.5f}", f"{base_size} B, SSIM {base_ssim:.5f}",
                        size_b / base_size, "for the record", None))  # fmt: skip
    return rows + farm_model(tasks, result, seconds, fps)


def farm_model(tasks: list[Any], result: dict[str, Any], seconds: float, fps: float) -> list[Row]:
    """The same ladder of a 2-hour master on 10 one-core nodes: a model from this run."""
    encode = [t for t in tasks if t.task is not None and not t.task.finishing]
    busy = sum((t.finished_at or 0.0) - (t.started_at or 0.0) for t in encode)
    packaging = (result.get("package") or {}).get("packaging_s", 0.0)
    scale = FARM_SECONDS / seconds
    one_node = busy * scale
    farm = one_node / FARM_NODES * 1.05 + packaging * scale  # 5 %: the last chunks' tail
    print(f"MODEL, not a measurement: this ladder of a {FARM_SECONDS / 3600:.0f} h master: "
          f"{one_node / 3600:.2f} h of encoding on one one-core node; on {FARM_NODES} nodes "
          f"{farm / 3600:.2f} h (chunks of about 20 s of 1080p work; packaging "
          f"{packaging * scale:.0f} s)")  # fmt: skip
    return [Row(f"MODEL: a 2 h master's ladder on {FARM_NODES} nodes vs one",
                f"{farm / 3600:.2f} h", f"{one_node / 3600:.2f} h", one_node / farm,
                "for the record (a model)", None)]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=max(2, min(8, os.cpu_count() or 2)))
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    add_arguments(parser)
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.width, args.height = 20.0, 1280, 720
    work = Path(tempfile.mkdtemp(prefix="ff-ladder-"))
    try:
        emit(run(work, args.workers, args.seconds, (args.width, args.height)), args.report)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
