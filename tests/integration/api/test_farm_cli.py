"""A farm started the way users start it: `framefleet node start` for the head and a
worker, `framefleet serve --address`, and the client, all as processes on this machine
(each node with its own temp dir and ports, on 127.0.0.1), each user with an empty home."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import imageio_ffmpeg
import pytest

from tests.helpers import (
    count_frames,
    free_port,
    fresh_home_env,
    make_clip,
    processes_matching,
    wait_until,
)

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(300)]
FRAMEFLEET = str(Path(sys.executable).with_name("framefleet"))
STATIC_FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


@pytest.fixture
def short_dirs() -> Iterator[tuple[Path, Path]]:
    """Ray's temp dirs for the two nodes: short (Ray's socket paths), removed after."""
    head = Path(tempfile.mkdtemp(prefix="ffh-", dir="/tmp"))
    worker = Path(tempfile.mkdtemp(prefix="ffw-", dir="/tmp"))
    yield head, worker
    shutil.rmtree(head, ignore_errors=True)
    shutil.rmtree(worker, ignore_errors=True)


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def test_a_farm_started_with_node_start_runs_jobs_on_its_worker(
    tmp_path: Path, short_dirs: tuple[Path, Path]
) -> None:
    head_dir, worker_dir = short_dirs
    gcs = free_port()
    address = f"127.0.0.1:{gcs}"
    # Ray drains a node on SIGTERM for up to 30 s by default; nothing runs here by then.
    quick = {"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "1"}
    head_env = fresh_home_env(tmp_path / "head-home", **quick)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        head = start(
            [FRAMEFLEET, "node", "start", "--head", "--port", str(gcs), "--num-cpus", "0",
             "--temp-dir", str(head_dir), "--node-ip-address", "127.0.0.1", "--block"],
            head_env, tmp_path / "head.log",
        )  # fmt: skip
        procs.append(head)
        # The head made the farm's token where Ray looks (mode 600); a user copies it.
        token_file = tmp_path / "head-home" / ".ray" / "auth_token"
        wait_until(token_file.exists, timeout=60)
        assert token_file.stat().st_mode & 0o777 == 0o600
        shown = subprocess.run([FRAMEFLEET, "node", "token"], env=head_env, capture_output=True,
                               text=True, timeout=60, check=True)  # fmt: skip
        token = shown.stdout.strip()
        assert token == token_file.read_text().strip() and len(token) == 64

        worker_env = fresh_home_env(tmp_path / "worker-home", RAY_AUTH_TOKEN=token, **quick)
        wait_until(lambda: "Ray runtime started" in (tmp_path / "head.log").read_text(), 90)
        worker = start(
            [FRAMEFLEET, "node", "start", "--address", address, "--num-cpus", "1",
             "--temp-dir", str(worker_dir), "--node-ip-address", "127.0.0.1",
             "--ffmpeg", STATIC_FFMPEG, "--block"],
            worker_env, tmp_path / "worker.log",
        )  # fmt: skip
        procs.append(worker)

        media = tmp_path / "media"
        media.mkdir()
        make_clip(media / "clip.mp4", seconds=2)
        port = free_port()
        api = f"http://127.0.0.1:{port}"
        gateway_env = fresh_home_env(
            tmp_path / "gateway-home",
            RAY_AUTH_TOKEN=token,
            FRAMEFLEET_MEDIA_ROOTS=str(media),
            FRAMEFLEET_API_TOKENS="farm-token",
        )
        gateway = start(
            [FRAMEFLEET, "serve", "--address", address, "--port", str(port),
             "--data-dir", str(tmp_path / "gateway-data")],
            gateway_env, tmp_path / "gateway.log",
        )  # fmt: skip
        procs.append(gateway)

        def two_nodes_ready() -> bool:
            try:
                ready = httpx.get(f"{api}/readyz", timeout=5)
            except httpx.TransportError:
                return False
            return ready.status_code == 200 and ready.json()["nodes"] == 2

        wait_until(two_nodes_ready, timeout=120, step=0.5)
        client_env = gateway_env | {"FRAMEFLEET_API": api, "FRAMEFLEET_TOKEN": "farm-token"}
        nodes = json.loads(
            subprocess.run(
                [FRAMEFLEET, "nodes", "--json"],
                env=client_env,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout
        )
        [worker_node] = [n for n in nodes if n["cpus"] > 0]
        assert worker_node["ffmpeg"]["version"].startswith("n9.")  # its own --ffmpeg
        done = subprocess.run(
            [FRAMEFLEET, "submit", str(media / "clip.mp4"), "-o", str(media / "o.mkv"),
             "--codec", "hevc", "--hardware", "cpu", "--wait", "--json"],
            env=client_env, capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        job = json.loads(done.stdout)
        assert job["placement"]["node_id"] == worker_node["node_id"]
        assert job["placement"]["encoder"] == "libx265"
        assert count_frames(media / "o.mkv") == 50

        assert stop(gateway) == 0
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                stop(proc)
    logs = "".join(p.read_text(errors="replace") for p in tmp_path.glob("*.log"))
    assert "Traceback" not in logs, logs[-3000:]
    # Nothing of either node is left running.
    wait_until(
        lambda: not processes_matching(str(head_dir)) and not processes_matching(str(worker_dir)),
        timeout=60,
    )
