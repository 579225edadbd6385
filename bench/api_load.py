"""The gateway under load while encodes run: request rate, latency, progress latency.

Starts ``framefleet serve`` (its own local Ray) in a separate process, submits
``--encodes`` long CPU encodes, follows each with ``--subscribers`` SSE clients, and
for ``--seconds`` runs ``--pollers`` concurrent clients that GET /v1/jobs/{id} as fast
as they can. Prints requests per second, p50/p99 request latency, and progress
latency: from ffmpeg emitting a progress block (the ``at`` time the encoder stamps on
it) to an SSE client receiving it.

    .venv/bin/python bench/api_load.py [--pollers 8] [--subscribers 10] [--seconds 15]

Targets on a 2-core machine: >= 1,000 req/s at p99 <= 50 ms; progress p99 <= 100 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers import make_clip  # noqa: E402

TOKEN = "bench-token"  # noqa: S105
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def poll(url: str, ids: list[str], stop: float, lat: list[float], errors: list[int]) -> None:
    with httpx.Client(base_url=url, headers=HEADERS, timeout=30) as client:
        i = 0
        while time.monotonic() < stop:
            start = time.perf_counter()
            r = client.get(f"/v1/jobs/{ids[i % len(ids)]}")
            lat.append(time.perf_counter() - start)
            if r.status_code != 200:
                errors.append(r.status_code)
            i += 1


def subscribe(url: str, job_id: str, stop: float, lat: list[float]) -> None:
    try:
        with (
            httpx.Client(base_url=url, headers=HEADERS, timeout=httpx.Timeout(60.0)) as client,
            client.stream("GET", f"/v1/jobs/{job_id}/events") as r,
        ):
            first = True  # the state as of subscribing, not a delivery: not counted
            for line in r.iter_lines():
                if line.startswith("data:"):
                    progress = json.loads(line[5:]).get("progress") or {}
                    if progress.get("at") and not first:
                        lat.append(time.time() - progress["at"])
                    first = False
                if time.monotonic() >= stop:
                    return
    except httpx.HTTPError as exc:
        print(f"subscriber: {type(exc).__name__}: {exc}", file=sys.stderr)


def load(url: str, ids: list[str], args: argparse.Namespace) -> None:
    """Pollers and subscribers as threads with their own keep-alive connections."""
    stop = time.monotonic() + args.seconds
    req_lat: list[float] = []
    prog_lat: list[float] = []
    errors: list[int] = []
    subs = [
        threading.Thread(
            target=subscribe, args=(url, ids[i % len(ids)], stop, prog_lat), daemon=True
        )
        for i in range(args.subscribers)
    ]
    pollers = [
        threading.Thread(target=poll, args=(url, ids, stop, req_lat, errors))
        for _ in range(args.pollers)
    ]
    started = time.monotonic()
    for t in subs + pollers:
        t.start()
    for t in pollers:
        t.join()
    elapsed = time.monotonic() - started
    for t in subs:
        t.join(timeout=5)
    print(
        f"{len(req_lat)} requests in {elapsed:.1f} s by {args.pollers} pollers "
        f"({len(errors)} errors), {args.subscribers} SSE subscribers, {len(ids)} encodes running"
    )
    print(
        f"{len(req_lat) / elapsed:,.0f} req/s; latency p50 {pct(req_lat, 0.5) * 1e3:.1f} ms, "
        f"p99 {pct(req_lat, 0.99) * 1e3:.1f} ms"
    )
    print(
        f"progress latency (ffmpeg block -> SSE client), {len(prog_lat)} events: "
        f"p50 {pct(prog_lat, 0.5) * 1e3:.1f} ms, p99 {pct(prog_lat, 0.99) * 1e3:.1f} ms"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pollers", type=int, default=8)
    ap.add_argument("--subscribers", type=int, default=10)
    ap.add_argument("--encodes", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=15.0)
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with tempfile.TemporaryDirectory(prefix="ffapi-") as tmp:
        media = Path(tmp) / "media"
        media.mkdir()
        clip = make_clip(media / "long.mp4", seconds=120, size="640x360")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        env = os.environ | {"FRAMEFLEET_API_TOKENS": TOKEN, "FRAMEFLEET_MEDIA_ROOTS": str(media)}
        env.pop("RAY_ADDRESS", None)
        framefleet = str(Path(sys.executable).with_name("framefleet"))
        server = subprocess.Popen(
            [framefleet, "serve", "--port", str(port), "--data-dir", f"{tmp}/data"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    sys.exit("api_load: the gateway did not become ready in 90 s")
                time.sleep(0.5)
            ids = []
            for i in range(args.encodes):
                r = httpx.post(f"{url}/v1/jobs", headers=HEADERS, timeout=30, json={
                    "input": str(clip), "output": str(media / f"out{i}.mkv"), "codec": "hevc",
                    "speed": "slow", "hardware": "cpu"})  # fmt: skip
                r.raise_for_status()
                ids.append(r.json()["id"])
            time.sleep(3)  # let the encodes start
            load(url, ids, args)
            for job_id in ids:
                httpx.delete(f"{url}/v1/jobs/{job_id}", headers=HEADERS, timeout=30)
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    main()
