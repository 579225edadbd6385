"""Clip generators, ffprobe readers and process checks shared by the tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cluster import JobKind, JobSpec

T = TypeVar("T")


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
    language: str | None = None,
) -> Path:
    """A lavfi testsrc2 (+ sine) clip written by real ffmpeg (``language``: its audio's
    and subtitles' language tag)."""
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
    if language:
        args += ["-metadata:s:a", f"language={language}", "-metadata:s:s", f"language={language}"]
    subprocess.run([*args, str(path)], check=True)
    return path


def make_interlaced(
    path: Path,
    *,
    seconds: float = 2.0,
    size: str = "720x576",
    rate: str = "25",
    top_first: bool = True,
    tagged: bool = True,
    vcodec: str = "mpeg2video",
    audio: bool = False,
) -> Path:
    """Interlaced video: testsrc2 at twice ``rate`` (fields a second) woven into frames,
    top (or bottom) field first. ``tagged``: coded as fields, so the stream says its field
    order (mpeg2video or libx264; ffprobe reads it back from mpegts, mp4, mpeg, not from
    Matroska); else coded as progressive frames that are combed (a mistagged master).
    The container follows ``path``'s suffix."""
    order = ("top", "tff") if top_first else ("bottom", "bff")
    graph = (f"testsrc2=rate={Fraction(rate) * 2}:size={size}:duration={seconds},"
             f"tinterlace=interleave_{order[0]},fieldorder={order[1]}")  # fmt: skip
    return _encode(path, graph, _fields_codec(vcodec, tagged, top_first), seconds=seconds,
                   audio=audio)  # fmt: skip


def make_telecined(
    path: Path,
    *,
    seconds: float = 2.0,
    size: str = "720x480",
    top_first: bool = True,
    tagged: bool = False,
    vcodec: str = "mpeg2video",
    audio: bool = False,
) -> Path:
    """Film telecined: testsrc2 at 23.976 fps through 3:2 pulldown to 29.97 fps (2 frames
    in 5 combed, a field repeated in 2 in 5), top (or bottom) field first. ``tagged``:
    coded as fields, so the stream says interlaced, as broadcast does; else tagged
    progressive."""
    graph = (f"testsrc2=rate=24000/1001:size={size}:duration={seconds},"
             f"telecine=pattern=23:first_field={'top' if top_first else 'bottom'}")  # fmt: skip
    return _encode(path, graph, _fields_codec(vcodec, tagged, top_first), seconds=seconds,
                   audio=audio)  # fmt: skip


def _fields_codec(vcodec: str, tagged: bool, top_first: bool) -> list[str]:
    """Encoder options for woven fields; ``tagged``: coded as fields (interlaced DCT and
    motion estimation), saying which comes first."""
    args = ["-c:v", vcodec]
    if vcodec == "mpeg2video":
        args += ["-b:v", "4M"]
        if tagged:
            args += ["-flags", "+ilme+ildct", "-top", "1" if top_first else "0"]
    elif vcodec in ("libx264", "libx265"):
        args += ["-preset", "ultrafast", "-pix_fmt", "yuv420p"]
        if tagged and vcodec == "libx264":
            args += ["-flags", "+ilme+ildct", "-x264-params", "tff=1" if top_first else "bff=1"]
    return args


HDR10_MASTERING = "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)"
"""A P3 D65 mastering display (the usual one) in x265's ``master-display`` units (CIE xy
in 1/50000): red (0.68, 0.32), green (0.265, 0.69), blue (0.15, 0.06), white (0.3127,
0.329)."""


def make_hdr10(
    path: Path,
    *,
    seconds: float = 2.0,
    size: str = "640x360",
    rate: str = "25",
    max_luminance: int = 1000,
    min_luminance: float = 0.0001,
    max_cll: int = 1000,
    max_fall: int = 400,
    audio: bool = False,
) -> Path:
    """An HDR10 master: HEVC Main 10 (libx265), BT.2020 primaries and matrix, PQ
    transfer, with mastering display (:data:`HDR10_MASTERING`, ``max_luminance`` and
    ``min_luminance`` in cd/m²) and content light level SEI in every keyframe. ffmpeg 5
    writes them in frames only, not in the container."""
    luminance = f"L({round(max_luminance * 10000)},{round(min_luminance * 10000)})"
    params = (f"colorprim=bt2020:transfer=smpte2084:colormatrix=bt2020nc:"
              f"master-display={HDR10_MASTERING}{luminance}:max-cll={max_cll},{max_fall}:"
              "hdr10=1:repeat-headers=1")  # fmt: skip
    return _hevc10(path, "smpte2084", params, seconds=seconds, size=size, rate=rate, audio=audio)


def make_hlg(
    path: Path,
    *,
    seconds: float = 2.0,
    size: str = "640x360",
    rate: str = "25",
    audio: bool = False,
) -> Path:
    """An HLG master: HEVC Main 10 (libx265), BT.2020, ARIB STD-B67 transfer, no static
    metadata (HLG needs none)."""
    params = "colorprim=bt2020:transfer=arib-std-b67:colormatrix=bt2020nc:repeat-headers=1"
    return _hevc10(path, "arib-std-b67", params, seconds=seconds, size=size, rate=rate,
                   audio=audio)  # fmt: skip


def _hevc10(
    path: Path, transfer: str, params: str, *, seconds: float, size: str, rate: str, audio: bool
) -> Path:
    graph = f"testsrc2=rate={rate}:size={size}:duration={seconds}"
    args = ["-c:v", "libx265", "-preset", "ultrafast", "-pix_fmt", "yuv420p10le",
            "-x265-params", f"log-level=error:{params}", "-color_primaries", "bt2020",
            "-color_trc", transfer, "-colorspace", "bt2020nc"]  # fmt: skip
    return _encode(path, graph, args, seconds=seconds, audio=audio)


def _encode(path: Path, graph: str, video: list[str], *, seconds: float, audio: bool) -> Path:
    """``graph`` (a lavfi source and filters) encoded with ``video``'s options, with a
    sine tone (AAC) if ``audio``."""
    args = ["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i", graph]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:a", "aac"]
    subprocess.run([*args, *video, str(path)], check=True)
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


async def until_true(predicate: Callable[[], T | None], timeout: float = 10.0) -> T:
    """``predicate``'s first truthy answer, asked between turns of the event loop (the
    fake backend works inside it); an AssertionError after ``timeout`` s. A wait for a
    condition, never a fixed sleep: a loaded machine only makes it take longer."""
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        assert time.monotonic() < deadline, f"still not true after {timeout:g} s"
        await asyncio.sleep(0.01)
    return found


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
REQUIRE_TOOLS = "FRAMEFLEET_TEST_REQUIRE_TOOLS"
"""Set (``make test``, so CI): a test whose tool is missing fails instead of skipping."""


def missing_tool(why: str) -> None:
    """A tool a test needs is missing: skip, saying ``why``; under ``make test`` (which
    installs every tool) fail, so CI never passes without running it."""
    if os.environ.get(REQUIRE_TOOLS):
        pytest.fail(why)
    pytest.skip(why)


REQUIRE_GPU = "FRAMEFLEET_TEST_REQUIRE_GPU"
"""Set (``make test-gpu``): a test that needs a GPU fails without one instead of skipping."""
DRIVER_REASON = (
    "needs an NVIDIA GPU and driver (NVML found none here); run `make test-gpu` on a GPU machine"
)


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


def local_s3_environment() -> None:
    """Object storage is the S3 server started on 127.0.0.1 (moto): test credentials,
    nothing read from ~/.aws, and never the cloud's metadata address."""
    os.environ.update(
        AWS_ACCESS_KEY_ID="framefleet-test",
        AWS_SECRET_ACCESS_KEY="framefleet-test",  # noqa: S106 (moto accepts any)
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        NO_PROXY="127.0.0.1,localhost",
    )
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        os.environ.pop(name, None)


class ObjectServer:
    """An S3 API on 127.0.0.1: moto's server mode, a real HTTP server speaking the S3
    protocol, in this process. Its ``client`` is the test's own view of the store."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint = ""
        self.client: Any = None

    def start(self) -> ObjectServer:
        import boto3

        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")
        return self

    def stop(self) -> None:
        self._server.stop()

    def bucket(self, name: str) -> str:
        with contextlib.suppress(self.client.exceptions.BucketAlreadyOwnedByYou):
            self.client.create_bucket(Bucket=name)
        return name

    @staticmethod
    def split(url: str) -> tuple[str, str]:
        bucket, _, key = url.removeprefix("s3://").partition("/")
        return bucket, key

    def put(self, path: Path, url: str) -> str:
        self.client.upload_file(str(path), *self.split(url))
        return url

    def fetch(self, url: str, path: Path) -> Path:
        self.client.download_file(*self.split(url), str(path))
        return path

    def head(self, url: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.client.head_object(
                **dict(zip(("Bucket", "Key"), self.split(url), strict=True))
            )
        except self.client.exceptions.ClientError:
            return None
        return found

    def keys(self, prefix_url: str) -> list[str]:
        bucket, prefix = self.split(prefix_url)
        listed = self.client.list_objects_v2(Bucket=bucket, Prefix=prefix)
        return sorted(f"s3://{bucket}/{o['Key']}" for o in listed.get("Contents", []))

    def uploads(self, bucket: str) -> list[str]:
        """Keys with a multipart upload begun and neither completed nor aborted."""
        listed = self.client.list_multipart_uploads(Bucket=bucket)
        return [u["Key"] for u in listed.get("Uploads", [])]


LINK_BUFFER = 64 * 1024


class Uplink:
    """A TCP proxy on 127.0.0.1 in front of a real server that counts the bytes each way
    and, with ``rate`` set, holds what clients send to that many bytes a second: a slow
    uplink (uploads crawl; downloads do not)."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("http://").split(":")
        self._target = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.rate: float | None = None
        self.sent = 0
        """Bytes clients sent through (requests, uploads)."""
        self.received = 0
        """Bytes the server sent back (responses, downloads)."""
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._stopping = False

    def start(self) -> Uplink:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            # Small buffers, as on a real link: bytes are counted when the client can take
            # them, not when a kernel buffer on this machine could.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, LINK_BUFFER)
            server = socket.socket()
            server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, LINK_BUFFER)
            server.connect(self._target)
            with self._lock:
                self._open += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while chunk := src.recv(LINK_BUFFER):
                rate = self.rate if upstream else None
                if rate:
                    time.sleep(len(chunk) / rate)
                dst.sendall(chunk)
                with self._lock:
                    if upstream:
                        self.sent += len(chunk)
                    else:
                        self.received += len(chunk)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def stop(self) -> None:
        self._stopping = True
        self._listener.close()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.close()


def frame_times(path: Path) -> list[float]:
    """The video frames' presentation times, in display order."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
         "packet=pts_time", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return sorted(float(line.split(",")[0]) for line in out.stdout.split())


def ssim_frames(distorted: Path, reference: Path) -> list[float]:
    """Per-frame SSIM (all planes) of ``distorted`` against ``reference``, frame by frame
    in order (ffmpeg's ssim filter, timestamps ignored)."""
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-i", str(distorted), "-i", str(reference),
         "-lavfi", "[0:v]settb=1/25,setpts=N[a];[1:v]settb=1/25,setpts=N[b];"
         "[a][b]ssim=stats_file=-", "-fps_mode", "passthrough", "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [float(part[4:]) for line in out.stdout.splitlines() for part in line.split()
            if part.startswith("All:")]  # fmt: skip
