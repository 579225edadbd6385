"""The framefleet command as a user runs it: real processes, an embedded Ray each time."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.helpers import (
    alive,
    env_without_ray,
    ffmpeg_processes,
    free_port,
    fresh_home_env,
    leftovers,
    make_clip,
    process_tree,
    streams,
    wait_until,
)

FRAMEFLEET = [str(Path(sys.executable).with_name("framefleet"))]


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FRAMEFLEET, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env_without_ray(),
        check=False,
    )


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_probe_prints_a_summary_and_json(media: Path) -> None:
    proc = cli("probe", str(media / "clip.mp4"))
    assert proc.returncode == 0
    assert "video #0: h264 320x240 yuv420p 8-bit, 25.000 fps, 50 frames" in proc.stdout
    data = json.loads(cli("probe", str(media / "clip.mp4"), "--json").stdout)
    assert data["video"]["width"] == 320 and data["audio"][0]["codec"] == "aac"


def test_errors_are_one_line_without_traceback_unless_debug(tmp_path: Path) -> None:
    proc = cli("probe", str(tmp_path / "missing.mp4"))
    assert proc.returncode == 2
    assert (
        one_line_error(proc) == f"framefleet: {tmp_path}/missing.mp4: no such file; check the path"
    )
    debug = cli("--debug", "probe", str(tmp_path / "missing.mp4"))
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_usage_errors_say_what_is_missing() -> None:
    proc = cli("encode")
    assert proc.returncode == 2
    assert "Missing argument 'input'" in proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr


def test_bad_request_is_refused_before_any_cluster_starts(media: Path, tmp_path: Path) -> None:
    proc = cli("encode", str(media / "clip.mp4"), "-o", str(tmp_path / "o.avi"))
    assert proc.returncode == 2
    assert "unsupported extension .avi; use one of .mp4, .mov, .mkv, .webm" in one_line_error(proc)
    assert not (tmp_path / "o.avi").exists()


def test_a_bad_split_is_refused_in_one_line(media: Path, tmp_path: Path) -> None:
    proc = cli("encode", str(media / "clip.mp4"), "-o", str(tmp_path / "o.mp4"), "--split", "0")
    assert proc.returncode == 2
    assert one_line_error(proc) == (
        "framefleet: split '0' is not auto, off or a chunk length in seconds (1 to 86400); "
        "for example --split 60"
    )


def test_encode_succeeds_and_reports_the_output(media: Path, tmp_path: Path) -> None:
    dst = tmp_path / "o.mkv"
    proc = cli(
        "encode",
        str(media / "clip.mp4"),
        "-o",
        str(dst),
        "--codec",
        "hevc",
        "--data-dir",
        str(tmp_path / "data"),
    )
    assert proc.returncode == 0, proc.stderr
    assert f"✓ {dst}: hevc 320x240" in proc.stdout
    assert streams(dst, "video")[0]["codec_name"] == "hevc"


def test_a_bad_ladder_is_refused_in_one_line_naming_the_rung(media: Path, tmp_path: Path) -> None:
    proc = cli("package", str(media / "clip.mp4"), "-o", str(tmp_path / "p"), "--ladder",
               "240,240:vp9")  # fmt: skip
    assert proc.returncode == 2
    assert one_line_error(proc) == (
        "framefleet: ladder rung 2 (240p vp9): unknown codec 'vp9'; choose h264, hevc, av1"
    )
    assert not (tmp_path / "p").exists()


def test_package_writes_hls_and_dash_and_reports_each_rendition(
    media: Path, tmp_path: Path
) -> None:
    out = tmp_path / "show"
    proc = cli("package", str(media / "clip.mp4"), "-o", str(out), "--ladder", "240,144",
               "--segment", "2", "--data-dir", str(tmp_path / "data"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"✓ {out}: master.m3u8, manifest.mpd;" in proc.stdout
    assert "v240h264: 320x240 avc1.64" in proc.stdout and "v144h264: 192x144" in proc.stdout
    assert (out / "master.m3u8").is_file() and (out / "manifest.mpd").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_failed_job_exits_1_with_its_reason(tmp_path: Path) -> None:
    (tmp_path / "notes.mp4").write_text("hello " * 50)
    proc = cli(
        "encode",
        str(tmp_path / "notes.mp4"),
        "-o",
        str(tmp_path / "o.mp4"),
        "--data-dir",
        str(tmp_path / "data"),
    )
    assert proc.returncode == 1
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "failed: notes.mp4: not a media file (no MP4/MOV structure found); check the file"
        )
    )


@pytest.mark.timeout(180)
def test_ctrl_c_cancels_and_leaves_no_ffmpeg_and_no_file(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "long.mp4", seconds=30, size="640x360")
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen(
        [
            *FRAMEFLEET,
            "encode",
            str(src),
            "-o",
            str(out / "o.mkv"),
            "--codec",
            "hevc",
            "--speed",
            "slow",
            "--data-dir",
            str(tmp_path / "data"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_without_ray(),
    )
    try:
        wait_until(lambda: ffmpeg_processes(str(out)), timeout=90)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "cancelled; nothing was written" in stderr
    assert ffmpeg_processes(str(out)) == []
    assert list(out.iterdir()) == []


def test_node_start_runs_ray_start_with_the_detected_gpu_resources(tmp_path: Path) -> None:
    inventory = tmp_path / "gpus.json"
    inventory.write_text(
        json.dumps(
            [
                {
                    "uuid": "GPU-1",
                    "name": "NVIDIA L4",
                    "memory_total_mb": 23034,
                    "nvenc_codecs": ["h264", "hevc"],
                    "max_encoder_sessions": 0,
                }
            ]
        )
    )
    proc = cli(
        "node",
        "start",
        "--address",
        "10.0.0.1:6379",
        "--gpu-inventory",
        str(inventory),
        "--num-cpus",
        "8",
        "--media-map",
        "/srv/media=/mnt/nas/media",
        "--media-map",
        "/srv/raw/=/fast/raw",
        "--dry-run",
    )
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert line.startswith("FRAMEFLEET_FFMPEG=/usr/bin/ffmpeg ")  # this node's own ffmpeg
    assert f" FRAMEFLEET_GPU_INVENTORY={inventory} " in line
    assert " FRAMEFLEET_MEDIA_MAP=/srv/media=/mnt/nas/media,/srv/raw=/fast/raw " in line
    assert " start --address=10.0.0.1:6379 --num-gpus=1 --num-cpus=8 " in line
    assert '{"ff_gpu_mem_GPU-1": 23034.0, "ff_nvenc_GPU-1": 256.0}' in line
    assert "framefleet.io/gpu-model=NVIDIA-L4" in line and "nvenc-hevc=true" in line
    assert "declared" in proc.stderr  # the table of what was detected


def test_node_start_refuses_unclear_requests_in_one_line(tmp_path: Path) -> None:
    proc = cli("node", "start", "--dry-run")
    assert proc.returncode == 2 and "give exactly one of --head or --address" in proc.stderr
    mapped = cli("node", "start", "--head", "--media-map", "/srv/media=mnt", "--dry-run")
    assert mapped.returncode == 2
    assert one_line_error(mapped) == (
        "framefleet: media map (--media-map, FRAMEFLEET_MEDIA_MAP): '/srv/media=mnt' is not "
        "ROOT=PATH with two absolute paths (for example /srv/media=/mnt/nas/media)"
    )
    bad = cli("node", "detect", "--gpu-inventory", str(tmp_path / "nope.json"))
    assert bad.returncode == 2
    assert one_line_error(bad) == (
        f"framefleet: GPU inventory {tmp_path / 'nope.json'}: no such file; check --gpu-inventory"
    )


def test_every_refusal_exits_2_and_an_unreachable_cluster_3(media: Path, tmp_path: Path) -> None:
    """The exit-code table (api/exits.py), row by row; 0, 1 and 130 have tests above."""
    clip, out = str(media / "clip.mp4"), str(tmp_path / "o.mp4")
    (tmp_path / "costs.json").write_text('{"gpu_memory": {}}')
    (tmp_path / "gpus.json").write_text("[{")
    home = tmp_path / "home"
    refused = {
        "usage": ([*FRAMEFLEET, "encode", clip], {}),
        "input": ([*FRAMEFLEET, "probe", str(tmp_path / "missing.mp4")], {}),
        "extension": ([*FRAMEFLEET, "encode", clip, "-o", str(tmp_path / "o.avi")], {}),
        "gpu inventory": (
            [*FRAMEFLEET, "node", "detect", "--gpu-inventory", str(tmp_path / "gpus.json")],
            {},
        ),
        "cost model": (
            [*FRAMEFLEET, "encode", clip, "-o", out],
            {"FRAMEFLEET_COST_MODEL": str(tmp_path / "costs.json")},
        ),
        "watch folder": (
            [*FRAMEFLEET, "watch-folder", str(tmp_path / "nope"), "--output-dir", str(tmp_path)],
            {},
        ),
        "setting": ([*FRAMEFLEET, "serve"], {"FRAMEFLEET_PORT": "0"}),
        "ray token": ([*FRAMEFLEET, "node", "start", "--address", "127.0.0.1:6379"], {}),
        "ray token to print": ([*FRAMEFLEET, "node", "token"], {}),
    }
    for row, (argv, extra) in refused.items():
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False,
                              env=fresh_home_env(home, **extra))  # fmt: skip
        assert proc.returncode == 2, (row, proc.stderr)
        assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, row
    token = fresh_home_env(home, RAY_AUTH_TOKEN="a-token")  # noqa: S106
    unreachable = subprocess.run(
        [*FRAMEFLEET, "encode", clip, "-o", out, "--address", f"127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=60, check=False, env=token,
    )  # fmt: skip
    assert unreachable.returncode == 3
    assert "cannot reach the Ray cluster at 127.0.0.1:" in one_line_error(unreachable)
    assert not (tmp_path / "o.mp4").exists() and not (home / ".ray").exists()


def test_a_worker_without_the_farms_token_is_told_how_to_get_it(tmp_path: Path) -> None:
    env = fresh_home_env(tmp_path / "home")
    proc = subprocess.run(
        [*FRAMEFLEET, "node", "start", "--address", "127.0.0.1:6379"],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert one_line_error(proc) == (
        "framefleet: no Ray token to join the farm at 127.0.0.1:6379: on the head run "
        "`framefleet node token`, then here either set RAY_AUTH_TOKEN=<token> or save it "
        "to ~/.ray/auth_token (mode 600)"
    )


L4_INVENTORY = [
    {"uuid": "GPU-serve-l4", "name": "NVIDIA L4", "memory_total_mb": 23034,
     "nvenc_codecs": ["h264", "hevc"]}
]  # fmt: skip


def burst(url: str, token: str, seconds: float, clients: int = 60) -> int:
    """``clients`` concurrent ``GET /v1/jobs`` for ``seconds``; the number answered 200."""
    stop = time.monotonic() + seconds
    ok = 0

    def one() -> int:
        answered = 0
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            while time.monotonic() < stop:
                answered += http.get(f"{url}/v1/jobs").status_code == 200
        return answered

    with ThreadPoolExecutor(clients) as pool:
        ok = sum(pool.map(lambda _: one(), range(clients)))
    return ok


@pytest.mark.timeout(240)
def test_serve_on_a_fresh_machine_as_make_run_starts_it(tmp_path: Path) -> None:
    """`make run`, then the README's client commands in a second terminal: no token typed,
    nothing in the home directory beforehand; the gateway outlives bursts of requests."""
    home = tmp_path / "home"
    inventory = tmp_path / "gpus.json"
    inventory.write_text(json.dumps(L4_INVENTORY))
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    env = fresh_home_env(home, FRAMEFLEET_API=api)
    # Its output goes to a file: a pipe read only at the end fills up (64 KiB of access
    # log lines, a burst's worth) and blocks the server mid-request.
    output = tmp_path / "serve.log"
    with output.open("w") as sink:
        server = subprocess.Popen(
            [*FRAMEFLEET, "serve", "--port", str(port), "--gpu-inventory", str(inventory)],
            env=env, stdout=sink, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip

    def client(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*FRAMEFLEET, *args], capture_output=True, text=True, env=env, timeout=120, check=False
        )

    data = home / ".local" / "share" / "framefleet"
    try:
        # Ready means usable: the node view is complete the moment /readyz says 200.
        def ready() -> bool:
            try:
                return httpx.get(f"{api}/readyz", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, timeout=90, step=0.2)
        token = (data / "api-token").read_text().strip()
        auth = {"Authorization": f"Bearer {token}"}
        [node] = httpx.get(f"{api}/v1/nodes", headers=auth).json()
        assert [g["name"] for g in node["gpus"]] == ["NVIDIA L4"]
        assert (
            node["ready"] and node["ffmpeg"]["version"] and "libx264" in node["ffmpeg"]["encoders"]
        )
        presets = {
            e["name"]: e for e in httpx.get(f"{api}/v1/presets", headers=auth).json()["encoders"]
        }
        assert presets["libx264"]["available"] and presets["hevc_nvenc"]["nodes"]
        assert not presets["av1_nvenc"]["available"]  # Debian's ffmpeg has no av1_nvenc

        media = data / "media"  # the default media root
        make_clip(media / "clip.mp4", seconds=2)
        done = client("submit", str(media / "clip.mp4"), "-o", str(media / "o.mkv"),
                      "--codec", "hevc", "--hardware", "cpu", "--wait", "--json")  # fmt: skip
        assert done.returncode == 0, done.stderr
        job = json.loads(done.stdout)
        assert job["status"] == "succeeded" and job["placement"]["encoder"] == "libx265"
        assert [s["codec_name"] for s in streams(media / "o.mkv", "video")] == ["hevc"]
        again = client("submit", str(media / "clip.mp4"), "-o", str(media / "o.mkv"))
        assert again.returncode == 2 and "--overwrite" in one_line_error(again)
        replaced = client("submit", str(media / "clip.mp4"), "-o", str(media / "o.mkv"),
                          "--hardware", "cpu", "--overwrite", "--wait")  # fmt: skip
        assert replaced.returncode == 0, replaced.stderr
        assert [s["codec_name"] for s in streams(media / "o.mkv", "video")] == ["h264"]

        listed = client("status")
        assert listed.returncode == 0 and job["id"] in listed.stdout
        outside = client("submit", "/etc/hosts", "-o", str(media / "x.mp4"))
        assert outside.returncode == 2
        assert "resolves outside the media roots" in one_line_error(outside)
        missing = client("cancel", "0000000000000000")
        assert missing.returncode == 2 and "(HTTP 404)" in one_line_error(missing)
        bad_token = client("nodes", "--token", "wrong")
        assert "pass --token or set FRAMEFLEET_TOKEN (HTTP 401)" in one_line_error(bad_token)

        # The trigger that once killed an embedded Ray: a burst, then the pool's threads
        # sit idle past anyio's 10 s and are retired on the next request.
        assert burst(api, token, seconds=3) > 0
        time.sleep(12)
        assert httpx.get(f"{api}/v1/jobs", headers=auth, timeout=30).status_code == 200
        time.sleep(2)
        ray_processes = process_tree(server.pid)
        tree = " ".join(ray_processes.values())
        assert "gcs_server" in tree and "raylet" in tree
        after = client("submit", str(media / "clip.mp4"), "-o", str(media / "p.mp4"),
                       "--hardware", "cpu", "--wait")  # fmt: skip
        assert after.returncode == 0, after.stderr

        # A one-shot command finds the running gateway: no second Ray, the job is the farm's.
        assert (data / "gateway.json").is_file()
        quick = client("encode", str(media / "clip.mp4"), "-o", str(media / "q.mp4"),
                       "--hardware", "cpu")  # fmt: skip
        assert quick.returncode == 0, quick.stderr
        assert f"using the gateway running at {api}" in quick.stderr
        assert "starting a local Ray" not in quick.stderr
        assert "q.mp4: h264 " in quick.stdout
        assert [s["codec_name"] for s in streams(media / "q.mp4", "video")] == ["h264"]
        listed_jobs = httpx.get(f"{api}/v1/jobs", headers=auth, timeout=30).json()["jobs"]
        assert str(media / "q.mp4") in [j["output"] for j in listed_jobs]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=90)
        log = output.read_text()
    assert server.returncode == 0, log
    assert f"API docs at {api}/docs" in log and "Traceback" not in log
    assert "SIGTERM handler is not set" not in log and "SIGTERM received" not in log
    wait_until(lambda: alive(ray_processes) == [], timeout=30)  # no Ray process left
    assert sorted(p.name for p in home.iterdir()) == [".local"]  # no ~/.ray: nothing needed
    assert not (data / "gateway.json").exists()  # a stopped gateway is not looked for
    down = client("nodes")
    assert down.returncode == 3 and "is `framefleet serve` running?" in one_line_error(down)


def test_serve_stopped_with_its_whole_process_group_exits_in_seconds_leaving_nothing(
    tmp_path: Path,
) -> None:
    """`kill -- -PGID` (supervisord's stopasgroup, systemd's control-group stop): the
    gateway, its Ray and a running encode all get SIGTERM at once; the gateway must not
    wait on a coordinator that cannot answer."""
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    media = data / "media"
    media.mkdir(parents=True)
    make_clip(media / "long.mp4", seconds=30, size="640x360")
    env = fresh_home_env(tmp_path / "home", FRAMEFLEET_API_TOKENS="group-stop-token-0123",
                         FRAMEFLEET_DATA_DIR=str(data))  # fmt: skip
    output = tmp_path / "serve.log"
    with output.open("w") as sink:
        server = subprocess.Popen([*FRAMEFLEET, "serve", "--port", str(port)], env=env,
                                  stdout=sink, stderr=subprocess.STDOUT, text=True,
                                  start_new_session=True)  # fmt: skip
    group = server.pid
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"{api}/readyz", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, timeout=90, step=0.2)
        auth = {"Authorization": "Bearer group-stop-token-0123"}
        body = {"input": str(media / "long.mp4"), "output": str(media / "out.mp4"),
                "hardware": "cpu", "speed": "slow", "split": "off"}  # fmt: skip
        job = httpx.post(f"{api}/v1/jobs", json=body, headers=auth).json()
        wait_until(lambda: httpx.get(f"{api}/v1/jobs/{job['id']}", headers=auth).json()
                   ["progress"], timeout=60)  # fmt: skip
        assert [p for p, name in process_tree(group).items() if "ffmpeg" in name]
        # The embedded Ray's folder (in the data dir, or the temp folder when the data
        # dir's path is too long for Ray's sockets), as its processes name it.
        named = " ".join(process_tree(group).values())
        ray_dirs = {Path(m) for m in re.findall(r"(/[^\s=]*/ray-[^/\s]+)/session_", named)}
        assert ray_dirs and all(d.is_dir() for d in ray_dirs), named
        signal_sent = time.monotonic()
        os.killpg(group, signal.SIGTERM)
        server.wait(timeout=45)
        took = time.monotonic() - signal_sent
    finally:
        if server.poll() is None:
            os.killpg(group, signal.SIGKILL)
            server.wait()
    log = output.read_text()
    assert server.returncode == 0, log
    assert "Traceback" not in log, log
    wait_until(lambda: group_members(group) == [], timeout=5)
    left = [d for d in ray_dirs if d.exists()]
    assert not left, f"the embedded Ray's folder is left: {[p.name for p in left[0].iterdir()]}"
    assert leftovers(media) == []  # no partial file
    print(f"serve exited {took:.1f} s after its group's SIGTERM")


def group_members(group: int) -> list[int]:
    """Live processes of process group ``group``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[2]) == group and stat[0] != "Z":
                found.append(int(entry.name))
    return found
