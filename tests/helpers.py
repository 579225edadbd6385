"""Clip generators, ffprobe readers and process checks shared by the tests."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from cluster import JobKind, JobSpec


def make_clip(
    path: Path,
    *,
    seconds: float = 1.0,
    size: str = "320x240",
    rate: int = 25,
    audio: bool = True,
    video: bool = True,
    pix_fmt: str = "yuv420p",
    vcodec: str = "libx264",
    subtitles: bool = False,
) -> Path:
    """A lavfi testsrc2 (+ sine) clip written by real ffmpeg."""
    args = ["ffmpeg", "-v", "error", "-nostdin", "-y"]
    if video:
        args += ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"]
    if subtitles:
        srt = path.with_suffix(".srt")
        srt.write_text("1\n00:00:00,000 --> 00:00:00,900\nhello\n\n")
        args += ["-i", str(srt)]
    if video:
        args += ["-c:v", vcodec, "-pix_fmt", pix_fmt]
        if vcodec in ("libx264", "libx265"):
            args += ["-preset", "ultrafast"]
    if audio:
        args += ["-c:a", "aac"]
    if subtitles:
        args += ["-c:s", "srt" if path.suffix == ".mkv" else "mov_text"]
    subprocess.run([*args, str(path)], check=True)
    return path


def ffprobe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", path],
        capture_output=True,
        check=True,
    ).stdout
    data: dict[str, Any] = json.loads(out)
    return data


def streams(path: Path, kind: str) -> list[dict[str, Any]]:
    return [s for s in ffprobe(path)["streams"] if s["codec_type"] == kind]


def count_frames(path: Path) -> int:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
            path,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(out.strip())


def ffmpeg_processes(fragment: str) -> list[int]:
    """PIDs of live ffmpeg processes whose command line, or a file they have open,
    contains ``fragment`` (framefleet passes files as open descriptors, /proc/self/fd/N)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().split(") ")[-1][:1]
        except OSError:
            continue
        if not (cmdline and cmdline[0].endswith(b"ffmpeg") and state != "Z"):
            continue
        if fragment.encode() in b" ".join(cmdline) or any(
            fragment in f for f in _open_files(entry)
        ):
            pids.append(int(entry.name))
    return pids


def _open_files(proc: Path) -> list[str]:
    found = []
    with contextlib.suppress(OSError):
        for fd in (proc / "fd").iterdir():
            with contextlib.suppress(OSError):
                found.append(os.readlink(fd))
    return found


def leftovers(folder: Path) -> list[str]:
    """Partial files a job left behind."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".partial"))


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, step: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout} s")


def transcode(src: Path, dst: Path, **kw: Any) -> JobSpec:
    return JobSpec(kind=JobKind.TRANSCODE, input=str(src), output=str(dst), **kw)


def env_without_ray() -> dict[str, str]:
    """Environment for a CLI subprocess: no inherited Ray address."""
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(app: Any, port: int | None = None) -> Iterator[str]:
    """Run an ASGI app with a real uvicorn on 127.0.0.1 (``port``, else a free one) in a
    thread; yields its URL."""
    import uvicorn

    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            timeout_graceful_shutdown=3)  # as `framefleet serve`  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=30)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def fresh_home_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a user on a fresh machine: an empty home, no Ray token, no
    framefleet settings, no inherited Ray address."""
    home.mkdir(parents=True, exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FRAMEFLEET_", "XDG_", "RAY_AUTH_TOKEN")) and k != "RAY_ADDRESS"
    }
    return env | {"HOME": str(home)} | extra


def process_tree(pid: int) -> dict[int, str]:
    """Every live process below ``pid`` (children, grandchildren...): pid -> command line."""
    children: dict[int, list[int]] = {}
    cmdlines: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(") ", 1)[-1].split()
        if fields[0] == "Z":
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        cmdlines[int(entry.name)] = raw.replace(b"\0", b" ").decode(errors="replace")
    found: dict[int, str] = {}
    todo = list(children.get(pid, []))
    while todo:
        p = todo.pop()
        found[p] = cmdlines.get(p, "")
        todo += children.get(p, [])
    return found


def alive(pids: Iterable[int]) -> list[int]:
    """Those of ``pids`` that still run (zombies count as gone)."""
    left = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[-1][:1]
        except OSError:
            continue
        if state != "Z":
            left.append(pid)
    return left


def processes_matching(fragment: str) -> list[str]:
    """Command lines of live processes that contain ``fragment``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            raw = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            state = (entry / "stat").read_text().rsplit(") ", 1)[-1][:1]
        except OSError:
            continue
        if state != "Z" and fragment.encode() in raw:
            found.append(raw.decode(errors="replace"))
    return found


def nvidia_driver_present() -> bool:
    """Whether NVML finds a driver on this machine (tests that need none skip there)."""
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


NO_DRIVER_REASON = "needs a machine without an NVIDIA driver (this one has one)"


class Receiver:
    """A webhook receiver: a real HTTP server on 127.0.0.1 that records each POST and
    answers with ``answers`` in turn (then 200). :meth:`stop` and :meth:`start` again on
    the same port play a receiver that is down for a while."""

    def __init__(self, answers: Iterable[int] = (), port: int | None = None) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.answers = list(answers)
        self.received: list[tuple[dict[str, str], bytes]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.received.append((dict(self.headers), body))
                    status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._make = lambda: ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server: Any = None

    def start(self) -> Receiver:
        self._server = self._make()
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(body) for _, body in self.received]

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
