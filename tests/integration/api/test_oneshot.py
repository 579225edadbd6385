"""One-shot commands on a machine with no cluster named and no gateway running: the
coordinator and its encoder run in the ``framefleet`` process itself, without Ray. Real
processes of the console script, real ffmpeg on small generated clips."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import (
    alive,
    ffmpeg_processes,
    free_port,
    fresh_home_env,
    leftovers,
    make_clip,
    missing_tool,
    process_tree,
    streams,
    wait_until,
)

FRAMEFLEET = [str(Path(sys.executable).with_name("framefleet"))]
MAIN = "import sys; from api.cli import main; sys.argv[0] = 'framefleet'; main()"
"""The console script's entry point, run by ``python -c`` (``sys.argv[1:]`` are the
command's arguments), so the interpreter's own options can be given (``-X importtime``)."""
LIST_MODULES = ("import atexit, json, sys; atexit.register(lambda: open({path!r}, 'w')"
                ".write(json.dumps(sorted(sys.modules)))); ")  # fmt: skip
"""Prepended to :data:`MAIN`: at exit, every module the process holds is written to
``path`` (``-X importtime`` misses those loaded by ``importlib.import_module``, as the
lazy names of ``cluster`` are)."""


def cli(
    home: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``framefleet ARGS`` as a user on a fresh machine runs it (an empty home, no Ray
    address, no framefleet settings but ``env``)."""
    return subprocess.run([*FRAMEFLEET, *args], capture_output=True, text=True, check=False,
                          timeout=timeout, env=fresh_home_env(home, **(env or {})))  # fmt: skip


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def duration(path: Path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration",
                          "-of", "csv=p=0", str(path)], capture_output=True, text=True,
                         check=True)  # fmt: skip
    return float(out.stdout)


def imported_modules(importtime: str) -> set[str]:
    """The modules ``python -X importtime`` says the process imported."""
    return {line.rsplit("|", 1)[1].strip() for line in importtime.splitlines()
            if line.startswith("import time:") and "imported package" not in line}  # fmt: skip


@pytest.fixture
def short_data_dir() -> Iterator[Path]:
    """A data dir whose path is short enough that a local Ray would make its session
    folder in it (cluster.ray_edge.runtime.MAX_TEMP_DIR_CHARS), removed after."""
    data = Path(tempfile.mkdtemp(prefix="ff-1s-", dir="/tmp"))
    yield data
    shutil.rmtree(data, ignore_errors=True)


def test_encode_runs_in_the_cli_process_and_never_imports_ray(
    media: Path, tmp_path: Path, short_data_dir: Path
) -> None:
    dst = tmp_path / "o.mkv"
    held = tmp_path / "modules.json"
    program = LIST_MODULES.format(path=str(held)) + MAIN
    argv = [sys.executable, "-X", "importtime", "-c", program, "encode", str(media / "clip.mp4"),
            "-o", str(dst), "--codec", "hevc", "--data-dir", str(short_data_dir)]  # fmt: skip
    stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"  # ~700 importtime lines
    with stdout.open("w") as out, stderr.open("w") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, text=True,
                                env=fresh_home_env(tmp_path / "home"))  # fmt: skip
    children: set[str] = set()
    made: set[str] = set()

    def watched_to_the_end() -> bool:
        """Samples what the command runs and makes in its data dir while it runs."""
        children.update(process_tree(proc.pid).values())
        with contextlib.suppress(OSError):
            made.update(os.listdir(short_data_dir))
        return proc.poll() is not None

    try:
        wait_until(watched_to_the_end, timeout=120, step=0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    printed, said = stdout.read_text(), stderr.read_text()
    assert proc.returncode == 0, said[-3000:]
    assert f"✓ {dst}: hevc 320x240, 2.0" in printed
    assert "(libx265 on 127.0.0.1; completed in" in printed
    [video] = streams(dst, "video")
    assert (video["codec_name"], video["width"], video["height"]) == ("hevc", 320, 240)
    assert [a["codec_name"] for a in streams(dst, "audio")] == ["aac"]
    assert duration(dst) == pytest.approx(2.0, abs=0.1)
    assert leftovers(tmp_path) == []

    imported = imported_modules(said)
    assert {"cluster.control.coordinator", "cluster.nodes.encoder"} <= imported  # the engine
    assert sorted(m for m in imported if m == "ray" or m.startswith("ray.")) == []
    modules = json.loads(held.read_text())
    assert "cluster.control.local" in modules  # the in-process coordinator ran
    assert [m for m in modules if m == "ray" or m.startswith("ray.")] == []
    assert "starting a local Ray" not in said
    # Its ffmpeg is the command's own child; no Ray process ever ran below it.
    assert any("ffmpeg" in c and "libx265" in c for c in children), children
    assert [c for c in children if "raylet" in c or "gcs_server" in c] == []
    assert sorted(n for n in made | set(os.listdir(short_data_dir))
                  if n.startswith(("ray", "session_"))) == []  # fmt: skip


def test_validate_lists_decode_errors_in_process(media: Path, tmp_path: Path) -> None:
    home, data = tmp_path / "home", str(tmp_path / "data")
    clean = cli(home, "validate", str(media / "clip.mp4"), "--data-dir", data)
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout.strip() == f"✓ {media / 'clip.mp4'}: no errors"
    # Bytes flipped through the media data (the index at the end is left whole).
    damaged = bytearray((media / "clip.mp4").read_bytes())
    for at in range(20_000, len(damaged) - 10_000, 997):
        damaged[at] ^= 0xFF
    (tmp_path / "damaged.mp4").write_bytes(damaged)
    bad = cli(home, "validate", str(tmp_path / "damaged.mp4"), "--data-dir", data)
    assert bad.returncode == 1, bad.stderr
    first, *errors = bad.stdout.strip().splitlines()
    assert re.fullmatch(rf"✗ {tmp_path / 'damaged.mp4'}: (\d+) error\(s\)", first), first
    assert errors and any("error while decoding" in line for line in errors), bad.stdout
    assert "Traceback" not in bad.stderr


def test_thumbnail_writes_evenly_spaced_jpegs_in_process(media: Path, tmp_path: Path) -> None:
    folder = tmp_path / "thumbs"
    proc = cli(tmp_path / "home", "thumbnail", str(media / "clip.mp4"), "-o", str(folder),
               "--count", "3", "--width", "160", "--data-dir", str(tmp_path / "data"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    names = ["clip_001.jpg", "clip_002.jpg", "clip_003.jpg"]
    assert proc.stdout.strip().splitlines() == [f"✓ {folder / n}" for n in names]
    assert sorted(p.name for p in folder.iterdir()) == names  # no partial, nothing else
    for name in names:
        [image] = streams(folder / name, "video")
        assert (image["codec_name"], image["width"], image["height"]) == ("mjpeg", 160, 120)


def test_quality_scores_vmaf_psnr_ssim_in_process(media: Path, tmp_path: Path) -> None:
    """VMAF comes from the static ffmpeg of the imageio-ffmpeg wheel, which the product
    finds by itself (Debian's ffmpeg has no libvmaf)."""
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as exc:
        missing_tool(f"needs imageio-ffmpeg's static ffmpeg for VMAF: {exc}")
    reference = media / "clip.mp4"
    distorted = make_clip(tmp_path / "x265.mkv", seconds=2, vcodec="libx265")  # same frames
    data = tmp_path / "data"
    proc = cli(tmp_path / "home", "quality", str(distorted), "-r", str(reference),
               "--metrics", "vmaf,psnr,ssim", "--data-dir", str(data))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for name in ("vmaf", "psnr", "ssim"):
        assert any(re.match(rf"  {name} +mean .*\(50 frames\)$", line) for line in lines), name
    done = lines[-1]
    assert done.startswith(f"✓ {distorted} against {reference}: VMAF "), done
    vmaf = float(re.search(r"VMAF ([\d.]+)", done)[1])  # type: ignore[index]
    assert 60 < vmaf <= 100
    assert "PSNR" in done and "dB" in done and "SSIM 0.9" in done
    assert list((data / "scratch").iterdir()) == []  # the metrics' logs are removed


def test_quality_without_any_vmaf_build_is_refused_in_one_line(media: Path, tmp_path: Path) -> None:
    """With the system's ffmpeg as the only one (no libvmaf), VMAF is refused up front,
    in one line saying what to do, and nothing runs."""
    system = shutil.which("ffmpeg") or "ffmpeg"
    filters = subprocess.run([system, "-hide_banner", "-filters"], capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
    if re.search(r"\slibvmaf\s", filters):
        pytest.skip("the system's ffmpeg has libvmaf: nothing to refuse")
    proc = cli(tmp_path / "home", "quality", str(media / "clip.mp4"), "-r",
               str(media / "clip.mp4"), "--data-dir", str(tmp_path / "data"),
               env={"IMAGEIO_FFMPEG_EXE": system})  # fmt: skip
    assert proc.returncode == 2
    assert one_line_error(proc).startswith(
        "framefleet: no node in the cluster computes vmaf (they compute: psnr, ssim"
    )
    assert proc.stdout == ""


@pytest.mark.timeout(180)
def test_sigkill_mid_encode_takes_its_ffmpeg_and_the_next_command_cleans_up(
    media: Path, tmp_path: Path
) -> None:
    """The CLI killed outright (SIGKILL: no handler runs) mid-encode: the kernel kills its
    ffmpeg (PR_SET_PDEATHSIG); its partial file stays until the next command on that data
    dir starts, which sweeps the killed run's folder: the partial removed, the job not run
    again (the user ended it)."""
    # Killed the moment its partial file appears, so 10 s is mid-encode.
    src = make_clip(tmp_path / "long.mp4", seconds=10, size="640x360")
    out = tmp_path / "out"
    out.mkdir()
    data, home = tmp_path / "data", tmp_path / "home"
    proc = subprocess.Popen(
        [*FRAMEFLEET, "encode", str(src), "-o", str(out / "o.mkv"), "--codec", "hevc",
         "--speed", "slow", "--data-dir", str(data)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=fresh_home_env(home),
    )  # fmt: skip
    try:
        wait_until(lambda: leftovers(out), timeout=60)  # its ffmpeg is writing
        encoding = ffmpeg_processes(str(out))
        assert set(encoding) <= set(process_tree(proc.pid))  # in the CLI's own process
        proc.kill()
        proc.wait(timeout=10)
        killed_at = time.monotonic()
        wait_until(lambda: ffmpeg_processes(str(out)) == [] and alive(encoding) == [],
                   timeout=5, step=0.05)  # fmt: skip
        print(f"ffmpeg gone {time.monotonic() - killed_at:.2f} s after the CLI's SIGKILL")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    [partial] = leftovers(out)  # nobody was left to remove it
    assert partial.startswith(".o.mkv.")

    began = time.monotonic()
    following = cli(home, "encode", str(media / "clip.mp4"), "-o", str(tmp_path / "next.mp4"),
                    "--data-dir", str(data))  # fmt: skip
    print(f"the next encode took {time.monotonic() - began:.1f} s")
    assert following.returncode == 0, following.stderr
    assert f"✓ {tmp_path / 'next.mp4'}: h264 320x240" in following.stdout
    assert [s["codec_name"] for s in streams(tmp_path / "next.mp4", "video")] == ["h264"]
    assert "Traceback" not in following.stderr
    assert ffmpeg_processes(str(out)) == []
    assert leftovers(out) == []
    # The killed command's job died with it: swept (its partial file removed, its run
    # folder gone), not run again by the next command, which ran only its own.
    assert sorted(p.name for p in out.iterdir()) == []
    assert sorted(p.name for p in (data / "runs").iterdir()) == []
    assert "o.mkv" not in following.stdout


def test_paths_outside_the_media_roots_are_refused_in_one_line(media: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(media / "clip.mp4", root / "in.mp4")
    (root / "link.mp4").symlink_to(media / "clip.mp4")  # inside, pointing outside
    home, data = tmp_path / "home", str(tmp_path / "data")
    confined = {"FRAMEFLEET_MEDIA_ROOTS": str(root)}
    roots = f"the media roots ({root.resolve()}); move the file under one of them"
    refused = {
        (str(media / "clip.mp4"), str(root / "o.mp4")): f"input '{media / 'clip.mp4'}'",
        (str(root / "link.mp4"), str(root / "o.mp4")): f"input '{root / 'link.mp4'}'",
        (str(root / "in.mp4"), str(tmp_path / "o.mp4")): f"output '{tmp_path / 'o.mp4'}'",
    }
    for (src, dst), named in refused.items():
        proc = cli(home, "encode", src, "-o", dst, "--data-dir", data, env=confined)
        assert proc.returncode == 2, proc.stderr
        assert one_line_error(proc) == f"framefleet: {named} resolves outside {roots}"
    assert sorted(p.name for p in root.iterdir()) == ["in.mp4", "link.mp4"]  # nothing written
    assert not (tmp_path / "o.mp4").exists()
    inside = cli(home, "encode", str(root / "in.mp4"), "-o", str(root / "o.mp4"),
                 "--data-dir", data, env=confined)  # fmt: skip
    assert inside.returncode == 0, inside.stderr
    assert [s["codec_name"] for s in streams(root / "o.mp4", "video")] == ["h264"]


@pytest.mark.timeout(120)
def test_two_encodes_at_once_on_one_data_dir_each_run_only_their_own_job(
    media: Path, tmp_path: Path
) -> None:
    """Each command has its own coordinator in its process; they share the data dir's job
    store. The second one starting must leave the first one's running job alone: not
    re-queue it, not remove its partial file, not run its encode."""
    src = make_clip(tmp_path / "mid.mp4", seconds=8, size="640x360")
    first_out, second_out = tmp_path / "first", tmp_path / "second"
    first_out.mkdir()
    second_out.mkdir()
    data, env = str(tmp_path / "data"), fresh_home_env(tmp_path / "home")

    def start(label: str, *args: str) -> subprocess.Popen[str]:
        with (
            (tmp_path / f"{label}.out").open("w") as out,
            (tmp_path / f"{label}.err").open("w") as err,
        ):
            return subprocess.Popen([*FRAMEFLEET, "encode", *args, "--data-dir", data],
                                    stdout=out, stderr=err, text=True, env=env)  # fmt: skip

    first = start("first", str(src), "-o", str(first_out / "a.mkv"), "--codec", "hevc")
    second: subprocess.Popen[str] | None = None
    foreign: dict[int, str] = {}
    """The ffmpegs the second command ran for the first one's output: pid -> command."""

    def both_done() -> bool:
        if second is not None:
            below = process_tree(second.pid)
            foreign.update({p: below[p] for p in ffmpeg_processes(str(first_out)) if p in below})
        return first.poll() is not None and (second is None or second.poll() is not None)

    try:
        wait_until(lambda: leftovers(first_out), timeout=60, step=0.05)  # it is writing
        second = start("second", str(media / "clip.mp4"), "-o", str(second_out / "b.mkv"))
        wait_until(both_done, timeout=100, step=0.05)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    said = {label: (tmp_path / f"{label}.err").read_text() for label in ("first", "second")}
    printed = {label: (tmp_path / f"{label}.out").read_text() for label in ("first", "second")}
    assert first.returncode == 0, said["first"]
    assert second is not None and second.returncode == 0, said["second"]
    assert f"✓ {first_out / 'a.mkv'}: hevc 640x360, 8.0" in printed["first"]
    assert f"✓ {second_out / 'b.mkv'}: h264 320x240" in printed["second"]
    assert duration(first_out / "a.mkv") == pytest.approx(8.0, abs=0.1)
    assert [s["codec_name"] for s in streams(second_out / "b.mkv", "video")] == ["h264"]
    assert leftovers(first_out) == [] and leftovers(second_out) == []
    assert not foreign, f"the second command encoded the first one's job: {foreign}"
    assert "re-queued" not in said["second"], said["second"]


@pytest.mark.parametrize("gateway", ["dead pid", "live pid, nothing listening"])
def test_a_stale_gateway_record_is_ignored_and_the_job_runs_in_process(
    media: Path, tmp_path: Path, gateway: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    if gateway == "dead pid":
        gone = subprocess.Popen(["true"])
        gone.wait()
        pid = gone.pid
    else:
        pid = os.getpid()  # this test: alive, and serving nothing
    record = {"url": f"http://127.0.0.1:{free_port()}", "pid": pid}
    (data / "gateway.json").write_text(json.dumps(record))
    dst = tmp_path / "o.mp4"
    proc = cli(tmp_path / "home", "encode", str(media / "clip.mp4"), "-o", str(dst),
               "--data-dir", str(data))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "using the gateway" not in proc.stderr
    assert "starting a local Ray" not in proc.stderr
    assert f"✓ {dst}: h264 320x240" in proc.stdout
    assert "(libx264 on 127.0.0.1;" in proc.stdout
    assert [s["codec_name"] for s in streams(dst, "video")] == ["h264"]
