"""Latency: submit -> ffmpeg started on a warm cluster, and the one-shot CLI's wall time.

1. On a warm embedded cluster (encoders created by a warm-up), ``--jobs`` short jobs are
   submitted one at a time; each job's ``timings.ffmpeg_started_at`` (stamped by the
   encoder when ffmpeg started) less the submit time is the latency.
2. ``framefleet encode`` of a 2 s clip, timed as a user sees it (the whole process),
   side by side with plain ffmpeg running the same command: cold (no cluster running:
   the CLI starts a private Ray) and with ``framefleet serve`` already running on the
   same data dir (the CLI hands the job to it).

    .venv/bin/python bench/latency.py [--jobs 40] [--quick]

   Cold, the CLI runs the coordinator and the encoder in its own process (no Ray); the
   baseline beside it is the same command made to start a local Ray (``--split 60``, an
   explicit split, still starts one), which every cold one-shot command did before.

Targets: p50 <= 50 ms, p99 <= 200 ms; the CLI <= 0.5 s over ffmpeg cold, <= 0.2 s with a
running gateway.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import Row, add_arguments, at_most, emit  # noqa: E402
from cluster import (  # noqa: E402
    CONTAINERS,
    CoordinatorConfig,
    Fleet,
    Hardware,
    JobKind,
    JobSpec,
    RuntimeConfig,
    available,
    make_sample,
    probe,
)
from cluster.media.argv import transcode_command  # noqa: E402
from cluster.media.encoders import choose_encoder  # noqa: E402

FRAMEFLEET = str(Path(sys.executable).with_name("framefleet"))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def spec(src: Path, dst: Path) -> JobSpec:
    return JobSpec(kind=JobKind.TRANSCODE, input=str(src), output=str(dst),
                   hardware=Hardware.CPU, overwrite=True)  # fmt: skip


def start_latency(work: Path, clip: Path, jobs: int) -> dict[str, list[float]]:
    """Submit -> ffmpeg started, one job at a time: each on a file not seen before (the
    coordinator probes it), and each on the same file (its probe is remembered)."""
    data = work / "data-warm"
    fleet = Fleet.connect(
        RuntimeConfig(data_dir=data, num_cpus=2), CoordinatorConfig(data_dir=data)
    )
    try:
        fleet.wait(fleet.submit(spec(clip, work / "warm.mp4")).id)  # creates an encoder
        latencies: dict[str, list[float]] = {"new": [], "same": []}
        parts = []
        for i in range(jobs * 2):
            side = "new" if i % 2 == 0 else "same"
            source = (
                Path(shutil.copy(clip, clip.with_name(f"new{i}.mp4"))) if side == "new" else clip
            )
            sent = time.time()
            job = fleet.wait(fleet.submit(spec(source, work / f"l{i % 2}.mp4")).id)
            assert job.status == "succeeded", job.reason
            timings = (job.result or {})["timings"]
            latencies[side].append(timings["ffmpeg_started_at"] - sent)
            if side == "new":
                parts.append((job.created_at - sent, timings["queued_s"],
                              timings["ffmpeg_started_at"] - job.created_at - timings["queued_s"],
                              timings["before_ffmpeg_s"]))  # fmt: skip
        means = [statistics.mean(p[k] for p in parts) * 1e3 for k in range(4)]
        print(f"a new file, where the time goes (means): submit call {means[0]:.1f} ms, "
              f"queued (probe, placement) {means[1]:.1f} ms, placement -> ffmpeg started "
              f"{means[2]:.1f} ms, of which the encoder's checks {means[3]:.1f} ms")  # fmt: skip
        return latencies
    finally:
        fleet.close()


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    run = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if run.returncode != 0:
        sys.exit(f"latency: {shlex.join(argv[:3])}… failed:\n{run.stderr[-1500:]}")
    return elapsed


def cli_times(work: Path, clip: Path, reps: int) -> dict[str, list[float]]:
    """Plain ffmpeg, the CLI cold and the CLI with a gateway running: interleaved."""
    media = clip.parent
    env = os.environ | {"FRAMEFLEET_MEDIA_ROOTS": str(media)}
    for name in ("RAY_ADDRESS", "FRAMEFLEET_API", "FRAMEFLEET_RAY_ADDRESS"):
        env.pop(name, None)
    encoder = choose_encoder("h264", Hardware.CPU, available())
    command = transcode_command(spec(clip, media / "plain.mp4"), probe(clip), encoder,
                                CONTAINERS["mp4"], job_id="plain")  # fmt: skip
    plain = [*command.argv[:1], "-y", *command.argv[1:]]
    times: dict[str, list[float]] = {"ffmpeg": [], "cold": [], "ray": [], "gateway": []}
    for i in range(reps):
        cold = [FRAMEFLEET, "encode", str(clip), "-o", str(media / "c.mp4"), "--hardware", "cpu",
                "--overwrite", "--data-dir", str(work / f"data-cold-{i}")]  # fmt: skip
        times["ffmpeg"].append(timed(plain, env))
        times["cold"].append(timed(cold, env))
        times["ray"].append(timed([*cold, "--split", "60"], env))
    data = work / "data-gateway"
    with socket_port() as port:
        server = subprocess.Popen(
            [FRAMEFLEET, "serve", "--port", str(port), "--data-dir", str(data)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not (data / "gateway.json").exists() or not ready(port):
            if time.monotonic() > deadline or server.poll() is not None:
                sys.exit("latency: the gateway did not become ready in 90 s")
            time.sleep(0.2)
        argv = [FRAMEFLEET, "encode", str(clip), "-o", str(media / "g.mp4"), "--hardware", "cpu",
                "--overwrite", "--data-dir", str(data)]  # fmt: skip
        timed(argv, env)  # the first creates the gateway's encoder
        for _ in range(reps * 2):
            times["ffmpeg"].append(timed(plain, env))
            times["gateway"].append(timed(argv, env))
    finally:
        stop_gateway(server)
    return times


def stop_gateway(server: subprocess.Popen[bytes]) -> None:
    """Stop a `framefleet serve` as Ctrl-C would; killed if it has not stopped in 60 s."""
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()


class socket_port:
    """A free port on 127.0.0.1 (closed again on entry's exit)."""

    def __enter__(self) -> int:
        import socket

        self._s = socket.socket()
        self._s.bind(("127.0.0.1", 0))
        return int(self._s.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self._s.close()


def ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=40)
    ap.add_argument("--reps", type=int, default=2, help="cold CLI runs")
    add_arguments(ap)
    args = ap.parse_args()
    if args.quick:
        args.jobs, args.reps = min(args.jobs, 12), 1
    work = Path(tempfile.mkdtemp(prefix="fflat-"))
    try:
        media = work / "media"
        media.mkdir()
        short = make_sample(media / "short.mp4", seconds=0.5, width=320, height=240)
        clip = make_sample(media / "clip.mp4", seconds=2, width=640, height=360)
        lat = start_latency(work, short, args.jobs)
        for side, what in (("new", "a new file each"), ("same", "the same file")):
            print(f"submit -> ffmpeg started, {len(lat[side])} jobs on {what}, one at a time, "
                  f"warm cluster: p50 {pct(lat[side], 0.5) * 1e3:.1f} ms, "
                  f"p99 {pct(lat[side], 0.99) * 1e3:.1f} ms")  # fmt: skip
        p50, p99 = pct(lat["new"], 0.5), pct(lat["new"], 0.99)
        s50, s99 = pct(lat["same"], 0.5), pct(lat["same"], 0.99)
        times = cli_times(work, clip, args.reps)
        ffmpeg = statistics.median(times["ffmpeg"])
        cold, warm = statistics.median(times["cold"]), statistics.median(times["gateway"])
        ray = statistics.median(times["ray"])
        print(f"2 s clip: plain ffmpeg {ffmpeg:.2f} s; framefleet encode cold {cold:.2f} s "
              f"(with a local Ray: {ray:.2f} s), with a running gateway {warm:.2f} s "
              "(medians)")  # fmt: skip
        emit(
            [
                Row("submit -> ffmpeg started, warm, new file, p50", f"{p50 * 1e3:.1f} ms", "-",
                    None, "<= 50 ms", at_most(p50, 0.05)),
                Row("submit -> ffmpeg started, warm, new file, p99", f"{p99 * 1e3:.1f} ms", "-",
                    None, "<= 200 ms", at_most(p99, 0.2)),
                Row("submit -> ffmpeg started, warm, same file, p50", f"{s50 * 1e3:.1f} ms", "-",
                    None, "<= 50 ms", at_most(s50, 0.05)),
                Row("submit -> ffmpeg started, warm, same file, p99", f"{s99 * 1e3:.1f} ms", "-",
                    None, "<= 200 ms", at_most(s99, 0.2)),
                Row("`framefleet encode` 2 s clip, cold (in-process)", f"{cold:.2f} s",
                    f"{ffmpeg:.2f} s", cold / ffmpeg, "<= 0.5 s over ffmpeg",
                    at_most(cold - ffmpeg, 0.5)),
                Row("`framefleet encode` 2 s clip, cold, with a local Ray (before)",
                    f"{ray:.2f} s", f"{cold:.2f} s", ray / cold, "(the baseline)", None),
                Row("`framefleet encode` 2 s clip, gateway running", f"{warm:.2f} s",
                    f"{ffmpeg:.2f} s", warm / ffmpeg, "<= 0.2 s over ffmpeg",
                    at_most(warm - ffmpeg, 0.2)),
            ],
            args.report,
        )  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
