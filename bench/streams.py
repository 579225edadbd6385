"""The gateway's memory and open files while clients hold streams, and once they let go.

Starts ``framefleet serve`` (its own local Ray) in a process of its own, drains its node so
one job stays queued (its event stream stays open), then, from one asyncio loop:

1. ``--streams`` SSE streams to that job, from ``--tokens`` tokens (round robin); past
   ``--cap`` streams a token (FRAMEFLEET_MAX_STREAMS_PER_TOKEN) the gateway answers 429;
2. as many WebSockets on /v1/ws (past the cap: closed with 1013);
3. ``--slow`` connections that announce a 1 MB body and send a byte every 2 s: the
   gateway answers 408 after FRAMEFLEET_BODY_TIMEOUT_S (``--body-timeout``) and closes.

It prints the gateway process's RSS and open files before, at the peak and after each
(its own process only: the embedded Ray's processes are not counted).

    .venv/bin/python bench/streams.py [--streams 1000] [--cap 32] [--tokens 1] [--slow 500]
    .venv/bin/python bench/streams.py --cap 1000   # every stream accepted: the worst case
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import Row, add_arguments, emit  # noqa: E402
from tests.helpers import fresh_home_env, make_clip  # noqa: E402

FRAMEFLEET = str(Path(sys.executable).with_name("framefleet"))
SETTLE_S = 3.0
Sample = tuple[float, int]
Result = tuple[str, int, int, Sample, Sample, Sample]
"""What, how many held, how many refused; the gateway before, at the peak, after."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sample(proc: psutil.Process) -> Sample:
    """The process's RSS (MB) and open files."""
    return proc.memory_info().rss / 1e6, proc.num_fds()


async def sse(port: int, path: str, token: str) -> asyncio.StreamWriter | None:
    """An SSE request on a connection of its own, held open if the gateway took it; a
    refused one (429) is closed at once."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        "Accept: text/event-stream\r\n\r\n"
    )
    writer.write(request.encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    if head.split(b" ", 2)[1] == b"200":
        return writer
    writer.close()
    return None


async def websocket(url: str, token: str) -> ClientConnection | None:
    """A WebSocket that got ``ready``, or ``None`` if it was turned away (1013)."""
    try:
        ws = await connect(url, additional_headers={"Authorization": f"Bearer {token}"})
    except InvalidStatus:
        return None
    try:
        await asyncio.wait_for(ws.recv(), 30)
    except ConnectionClosed:
        return None
    return ws


async def slow_body(port: int, token: str, every_s: float, limit_s: float) -> float:
    """Announce 1 MB and send a byte every ``every_s``: seconds until the gateway closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                 f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                 "Content-Length: 1000000\r\n\r\n".encode())  # fmt: skip
    try:
        while time.monotonic() - started < limit_s:
            writer.write(b" ")
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every_s):
                    while await reader.read(65536):
                        pass
                    return time.monotonic() - started  # EOF: the gateway closed it
        return float("inf")
    except OSError:
        return time.monotonic() - started
    finally:
        writer.close()


async def phases(
    args: argparse.Namespace, port: int, job: str, proc: psutil.Process
) -> list[Result]:
    tokens = [f"bench-token-{i}" for i in range(args.tokens)]
    path, url = f"/v1/jobs/{job}/events", f"ws://127.0.0.1:{port}/v1/ws"
    for _ in range(2):  # warm up: the first streams load what every stream uses
        for writer in [await sse(port, path, tokens[0]) for _ in range(5)]:
            if writer is not None:
                writer.close()
        await asyncio.sleep(1)
    results: list[Result] = []
    for n in range(1, args.rounds + 1):
        before = sample(proc)
        writers = await asyncio.gather(
            *(sse(port, path, tokens[i % len(tokens)]) for i in range(args.streams))
        )
        await asyncio.sleep(SETTLE_S)
        peak = sample(proc)
        held = [w for w in writers if w is not None]
        for writer in held:
            writer.close()
        await asyncio.sleep(SETTLE_S)
        name = f"{args.streams} SSE streams, round {n}"
        results.append((name, len(held), args.streams - len(held), before, peak, sample(proc)))
    for n in range(1, args.rounds + 1):
        before = sample(proc)
        sockets = await asyncio.gather(
            *(websocket(url, tokens[i % len(tokens)]) for i in range(args.streams))
        )
        await asyncio.sleep(SETTLE_S)
        peak = sample(proc)
        kept = [ws for ws in sockets if ws is not None]
        await asyncio.gather(*(ws.close() for ws in kept))
        await asyncio.sleep(SETTLE_S)
        name = f"{args.streams} WebSockets, round {n}"
        results.append((name, len(kept), args.streams - len(kept), before, peak, sample(proc)))
    if args.slow:
        before = sample(proc)
        limit = args.body_timeout + 30
        slow = [asyncio.create_task(slow_body(port, tokens[0], 2.0, limit))
                for _ in range(args.slow)]  # fmt: skip
        await asyncio.sleep(min(args.body_timeout / 2, 5))
        peak = sample(proc)
        closed = await asyncio.gather(*slow)
        await asyncio.sleep(SETTLE_S)
        print(f"{args.slow} slow bodies (1 MB announced, a byte every 2 s): every one closed "
              f"by the gateway within {max(closed):.1f} s (FRAMEFLEET_BODY_TIMEOUT_S="
              f"{args.body_timeout:g})", flush=True)  # fmt: skip
        results.append((f"{args.slow} slow bodies", 0, 0, before, peak, sample(proc)))
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--cap", type=int, default=32, help="FRAMEFLEET_MAX_STREAMS_PER_TOKEN")
    ap.add_argument("--tokens", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2, help="open and close each kind this often")
    ap.add_argument("--slow", type=int, default=500, help="slow-body connections (0: none)")
    ap.add_argument("--body-timeout", type=float, default=20.0, help="FRAMEFLEET_BODY_TIMEOUT_S")
    add_arguments(ap)
    args = ap.parse_args()
    if args.quick:
        args.streams, args.slow = min(args.streams, 200), min(args.slow, 100)
    with tempfile.TemporaryDirectory(prefix="ffstreams-") as tmp:
        media = Path(tmp) / "media"
        media.mkdir()
        clip = make_clip(media / "clip.mp4", seconds=1)
        port = free_port()
        tokens = ",".join(f"bench-token-{i}" for i in range(args.tokens))
        env = fresh_home_env(
            Path(tmp) / "home",
            RAY_USAGE_STATS_ENABLED="0",
            FRAMEFLEET_API_TOKENS=tokens,
            FRAMEFLEET_DATA_DIR=str(Path(tmp) / "data"),
            FRAMEFLEET_MEDIA_ROOTS=str(media),
            FRAMEFLEET_MAX_STREAMS_PER_TOKEN=str(args.cap),
            FRAMEFLEET_BODY_TIMEOUT_S=str(args.body_timeout),
            FRAMEFLEET_MAX_CONNECTIONS=str(max(1000, args.streams + args.slow + 100)),
        )
        log = (Path(tmp) / "serve.log").open("w")
        server = subprocess.Popen([FRAMEFLEET, "serve", "--port", str(port)], env=env,
                                  stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            http = httpx.Client(base_url=url, timeout=30,
                                headers={"Authorization": "Bearer bench-token-0"})  # fmt: skip
            deadline = time.monotonic() + 120
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if http.get("/readyz").status_code == 200 and http.get("/v1/nodes").json():
                        break
                if time.monotonic() > deadline or server.poll() is not None:
                    sys.exit("streams: the gateway did not start; see its log")
                time.sleep(0.5)
            node = http.get("/v1/nodes").json()[0]["address"]
            http.post(f"/v1/nodes/{node}/drain").raise_for_status()
            job = http.post("/v1/jobs", json={"input": str(clip), "hardware": "cpu",
                                              "output": str(media / "out.mp4")})  # fmt: skip
            job.raise_for_status()
            proc = psutil.Process(server.pid)
            results = asyncio.run(phases(args, port, job.json()["id"], proc))
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=90)
    rows = []
    for name, held, refused, before, peak, after in results:
        counts = f": {held} held, {refused} refused" if held or refused else ""
        print(f"{name} (cap {args.cap} per token, {args.tokens} token(s)){counts}\n"
              f"  RSS {before[0]:.0f} -> {peak[0]:.0f} (peak) -> {after[0]:.0f} MB (after); "
              f"open files {before[1]} -> {peak[1]} -> {after[1]}")  # fmt: skip
        rows.append(Row(f"gateway RSS, {name} (cap {args.cap})",
                        f"{before[0]:.0f} -> {peak[0]:.0f} -> {after[0]:.0f} MB", "-", None,
                        "-", None))  # fmt: skip
    emit(rows, args.report)


if __name__ == "__main__":
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    main()
