"""Quality scores end to end on the session's real Ray with real ffmpeg: a quality job's
VMAF and PSNR against the pinned static ffmpeg's own libvmaf and psnr on the same pair, a
long reference scored in ranges pooling to one pass, a floor that fails the job with its
score, a pair of different lengths refused, a scored transcode that writes nothing below
its floor, and the same through the CLI and the HTTP API.

The independent figures come from the pinned static ffmpeg (``imageio-ffmpeg``: the
system's Debian ffmpeg has no libvmaf), run here with the alignment a user would choose:
the distorted scaled to the reference's size (bicubic), both timestamps from zero.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import imageio_ffmpeg
import pytest

from api.gateway.app import create_app
from api.settings import Settings
from cluster import Fleet, Job, JobKind, JobSpec
from tests.helpers import (
    count_frames,
    env_without_ray,
    ffmpeg_processes,
    leftovers,
    make_clip,
    serving,
    streams,
    transcode,
    wait_until,
)

STATIC_FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
FRAMEFLEET = str(Path(sys.executable).with_name("framefleet"))
TOKEN = "quality-test-token-0123456789"  # noqa: S105


@dataclass(frozen=True)
class Scores:
    """The static ffmpeg's own figures for a pair."""

    vmaf: float
    """libvmaf's "VMAF score" (its pooled mean)."""
    vmaf_frames: dict[int, float]
    """Per-frame VMAF by frame number (every ``subsample``-th frame)."""
    psnr_y: list[float]
    """Per-frame luma PSNR (inf counted as 100 dB, as framefleet does)."""

    @property
    def psnr(self) -> float:
        return sum(self.psnr_y) / len(self.psnr_y)


def independent(distorted: Path, reference: Path, folder: Path, subsample: int = 1) -> Scores:
    """libvmaf and psnr on ``distorted`` against ``reference`` by the static ffmpeg, in one
    pass over the whole files."""
    (ref_video,) = streams(reference, "video")
    width, height = ref_video["width"], ref_video["height"]
    align = (f"[0:v]scale={width}:{height}:flags=bicubic,setpts=PTS-STARTPTS[d];"
             "[1:v]setpts=PTS-STARTPTS[r];")  # fmt: skip
    log = folder / f"{distorted.stem}-vs-{reference.stem}-{subsample}.json"
    libvmaf = f"libvmaf=log_fmt=json:log_path={log}:n_threads=2:n_subsample={subsample}"
    vmaf_run = subprocess.run(
        [STATIC_FFMPEG, "-hide_banner", "-nostdin", "-i", str(distorted), "-i", str(reference),
         "-filter_complex", f"{align}[d][r]{libvmaf}", "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    found = re.search(r"VMAF score: ([0-9.]+)", vmaf_run.stderr)
    assert found, vmaf_run.stderr[-2000:]
    frames = {int(f["frameNum"]): float(f["metrics"]["vmaf"])
              for f in json.loads(log.read_text())["frames"]}  # fmt: skip
    psnr_run = subprocess.run(
        [STATIC_FFMPEG, "-v", "error", "-nostdin", "-i", str(distorted), "-i", str(reference),
         "-filter_complex", f"{align}[d][r]psnr=stats_file=-", "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    psnr = [min(100.0, float(m)) for m in re.findall(r"psnr_y:(\S+)", psnr_run.stdout)]
    assert psnr, psnr_run.stdout[-2000:]
    return Scores(float(found[1]), frames, psnr)


def encode_with(src: Path, dst: Path, *args: str) -> Path:
    """A distorted version of ``src`` made by the system's ffmpeg (no audio)."""
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-i", str(src), "-an", *args,
                    "-c:v", "libx264", "-preset", "ultrafast", str(dst)], check=True)  # fmt: skip
    return dst


@dataclass(frozen=True)
class Clips:
    folder: Path
    ref: Path
    """2 s of 640x360 at 25 fps (50 frames)."""
    small: Path
    """``ref`` at 320x180, CRF 32: scaled back to 640x360 to be scored."""
    long_ref: Path
    """40 s of 320x180 at 25 fps (1000 frames): cut into ranges."""
    long_enc: Path
    """``long_ref`` at CRF 30, the same size."""


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Clips:
    folder = tmp_path_factory.mktemp("quality")
    ref = make_clip(folder / "ref.mp4", seconds=2, size="640x360", audio=False)
    small = encode_with(ref, folder / "small.mp4", "-vf", "scale=320:180", "-crf", "32")
    long_ref = make_clip(folder / "long-ref.mp4", seconds=40, size="320x180", audio=False)
    long_enc = encode_with(long_ref, folder / "long-enc.mp4", "-crf", "30")
    return Clips(folder, ref, small, long_ref, long_enc)


@pytest.fixture(scope="module")
def small_scores(clips: Clips, tmp_path_factory: pytest.TempPathFactory) -> Scores:
    return independent(clips.small, clips.ref, tmp_path_factory.mktemp("independent"))


def run(fleet: Fleet, spec: JobSpec, timeout: float = 120) -> Job:
    return fleet.wait(fleet.submit(spec).id, timeout=timeout)


def quality(distorted: Path, reference: Path, **score: Any) -> JobSpec:
    fields: dict[str, Any] = {"reference": str(reference), "score": score}
    return JobSpec(kind=JobKind.QUALITY, input=str(distorted), **fields)


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---- a quality job ------------------------------------------------------------------------


def test_a_quality_job_agrees_with_ffmpegs_own_vmaf_and_psnr(
    fleet: Fleet, clips: Clips, small_scores: Scores
) -> None:
    before = files(clips.folder)
    job = run(fleet, quality(clips.small, clips.ref, metrics="vmaf,psnr"))
    assert job.status == "succeeded", job.reason
    result = job.result or {}
    vmaf, psnr = result["metrics"]["vmaf"], result["metrics"]["psnr"]
    assert vmaf["mean"] == pytest.approx(small_scores.vmaf, abs=0.5)
    assert psnr["mean"] == pytest.approx(small_scores.psnr, abs=0.5)
    assert vmaf["min"] == pytest.approx(min(small_scores.vmaf_frames.values()), abs=0.5)
    assert vmaf["frames"] == psnr["frames"] == count_frames(clips.ref) == 50
    assert vmaf["min"] <= vmaf["p1"] <= vmaf["p5"] <= vmaf["mean"] <= vmaf["max"]
    assert result["model"] == "vmaf_v0.6.1" and result["ranges"] == 1
    assert result["alignment"]["scaled"] == "320x180 scaled to 640x360 (bicubic)"
    assert result["alignment"]["frame_rate"] is None
    assert job.reason is not None and job.reason.startswith(f"VMAF {vmaf['mean']:.2f} (p1 ")
    assert f"PSNR {psnr['mean']:.2f} dB" in job.reason
    assert files(clips.folder) == before  # a quality job writes nothing


@pytest.mark.parametrize("subsample", [1, 3])
def test_a_long_reference_is_scored_in_ranges_that_pool_to_one_pass(
    fleet: Fleet, clips: Clips, tmp_path: Path, subsample: int
) -> None:
    """The session's Ray has two cores: two scorers, so 40 s is cut into ranges (each at
    least 10 s). Each range reads a few frames either side of its own, so the motion
    features at its edges, and so the pooled figures, are those of one pass (a range's
    first frame scored without the frame before it would score as low as frame 0 and
    show among the worst frames)."""
    whole = independent(clips.long_enc, clips.long_ref, tmp_path, subsample)
    scores = list(whole.vmaf_frames.values())
    assert list(whole.vmaf_frames) == list(range(0, 1000, subsample))
    job = run(fleet, quality(clips.long_enc, clips.long_ref, subsample=subsample), timeout=180)
    assert job.status == "succeeded", job.reason
    result = job.result or {}
    assert result["ranges"] >= 2, result
    assert job.graph is not None and len(job.graph.tasks) == result["ranges"]
    assert result["subsample"] == subsample
    vmaf = result["metrics"]["vmaf"]
    assert vmaf["frames"] == len(scores)
    # The same frames through the same libvmaf score the same: the pooled figures differ
    # from one pass only by their rounding to 3 digits. (A range read without the frames
    # before it scores its first frame ~2 points low: ~0.006 off the mean here.)
    assert vmaf["mean"] == pytest.approx(whole.vmaf, abs=0.001)
    libvmaf_harmonic = len(scores) / sum(1 / (1 + v) for v in scores) - 1
    assert vmaf["harmonic_mean"] == pytest.approx(libvmaf_harmonic, abs=0.001)
    assert vmaf["min"] == pytest.approx(min(scores), abs=0.001)
    assert vmaf["max"] == pytest.approx(max(scores), abs=0.001)
    rank = -(-5 * len(scores) // 100)  # nearest rank: the ceil(5 % of n)-th lowest
    assert vmaf["p5"] == pytest.approx(sorted(scores)[rank - 1], abs=0.01)  # to a 0.01 bin
    worst = sorted((v, n) for n, v in whole.vmaf_frames.items())[: len(vmaf["worst"])]
    assert [w["frame"] for w in vmaf["worst"]] == [n for _, n in worst]
    assert [w["value"] for w in vmaf["worst"]] == pytest.approx([v for v, _ in worst], abs=0.001)


def test_a_score_below_min_vmaf_fails_the_job_with_the_score(
    fleet: Fleet, clips: Clips, small_scores: Scores
) -> None:
    job = run(fleet, quality(clips.small, clips.ref, min_vmaf=99.9))
    assert job.status == "failed"
    assert job.error_code == "below_quality"
    assert job.reason is not None and "\n" not in job.reason
    found = re.match(r"VMAF (\d+\.\d\d) is below min_vmaf 99\.9 \(p1 ", job.reason)
    assert found, job.reason
    assert float(found[1]) == pytest.approx(small_scores.vmaf, abs=0.5)
    assert (job.result or {})["metrics"]["vmaf"]["mean"] == pytest.approx(float(found[1]),
                                                                          abs=0.006)  # fmt: skip
    passed = run(fleet, quality(clips.small, clips.ref, min_vmaf=round(small_scores.vmaf) - 5))
    assert passed.status == "succeeded", passed.reason


def test_a_pair_of_different_lengths_is_refused_naming_both(fleet: Fleet, tmp_path: Path) -> None:
    ten = make_clip(tmp_path / "ten.mp4", seconds=10, size="160x90", audio=False)
    four = make_clip(tmp_path / "four.mp4", seconds=4, size="160x90", audio=False)
    job = run(fleet, quality(four, ten))
    assert job.status == "failed"
    assert job.reason is not None and "\n" not in job.reason
    assert "four.mp4 lasts 4.00 s" in job.reason and "ten.mp4 lasts 10.00 s" in job.reason
    assert job.error_code == "bad_input"
    missing = run(fleet, quality(four, tmp_path / "nowhere.mp4"))
    assert missing.status == "failed" and missing.reason is not None
    assert missing.reason == f"reference: {tmp_path / 'nowhere.mp4'}: no such file; check the path"


# ---- a scored transcode ----------------------------------------------------------------


def test_a_transcode_below_its_floor_writes_nothing_and_says_its_score(
    fleet: Fleet, clips: Clips, out_dir: Path
) -> None:
    dst = out_dir / "o.mp4"
    spec = transcode(clips.ref, dst, quality=45, speed="fast", score={"min_vmaf": 99.5})
    job = run(fleet, spec)
    assert job.status == "failed"
    assert job.error_code == "below_quality"
    assert job.reason is not None and "\n" not in job.reason
    assert re.search(r"output VMAF \d+\.\d\d is below min_vmaf 99\.5", job.reason), job.reason
    assert "nothing was written" in job.reason
    assert job.attempts == 1  # the same encode would score the same: not retried
    assert not dst.exists()
    assert leftovers(out_dir) == [] and files(out_dir) == []
    assert ffmpeg_processes(str(out_dir)) == []


def test_a_scored_transcode_reports_its_outputs_vmaf(
    fleet: Fleet, clips: Clips, out_dir: Path, tmp_path: Path
) -> None:
    dst = out_dir / "o.mp4"
    job = run(fleet, transcode(clips.ref, dst, quality=30, speed="fast", score={}))
    assert job.status == "succeeded", job.reason
    scored = (job.result or {})["quality"]
    assert scored["model"] == "vmaf_v0.6.1"
    vmaf = scored["metrics"]["vmaf"]
    assert vmaf["frames"] == count_frames(dst) == 50
    assert vmaf["mean"] == pytest.approx(independent(dst, clips.ref, tmp_path).vmaf, abs=0.5)
    assert files(out_dir) == ["o.mp4"]


# ---- the CLI and the HTTP API --------------------------------------------------------------


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FRAMEFLEET, *args], capture_output=True, text=True, timeout=timeout,
                          env=env_without_ray(), check=False)  # fmt: skip


@pytest.mark.timeout(240)
def test_the_cli_prints_the_scores_and_exits_1_below_min_vmaf(
    clips: Clips, small_scores: Scores, tmp_path: Path
) -> None:
    data = str(tmp_path / "data")
    ok = cli("quality", str(clips.small), "--reference", str(clips.ref), "--metrics", "vmaf,psnr",
             "--data-dir", data)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    line = next((s for s in ok.stdout.splitlines() if s.split()[:2] == ["vmaf", "mean"]), None)
    assert line is not None, ok.stdout
    assert float(line.split()[2]) == pytest.approx(small_scores.vmaf, abs=0.5)
    assert "(50 frames)" in line
    assert any(s.split()[:2] == ["psnr", "mean"] for s in ok.stdout.splitlines()), ok.stdout
    assert f"✓ {clips.small} against {clips.ref}: VMAF " in ok.stdout

    low = cli("quality", str(clips.small), "-r", str(clips.ref), "--min-vmaf", "99.9",
              "--data-dir", data)  # fmt: skip
    assert low.returncode == 1, low.stderr
    assert "Traceback" not in low.stderr and "Traceback" not in low.stdout
    lines = [s for s in low.stderr.splitlines() if "below min_vmaf" in s]
    assert len(lines) == 1, low.stderr
    found = re.search(r"failed: VMAF (\d+\.\d\d) is below min_vmaf 99\.9", lines[0])
    assert found, lines[0]
    assert float(found[1]) == pytest.approx(small_scores.vmaf, abs=0.5)


@pytest.mark.timeout(240)
def test_the_cli_encode_measures_quality_and_writes_nothing_below_min_vmaf(
    clips: Clips, tmp_path: Path
) -> None:
    data, out = str(tmp_path / "data"), tmp_path / "out"
    out.mkdir()
    low = cli("encode", str(clips.ref), "-o", str(out / "low.mp4"), "--quality", "45",
              "--speed", "fast", "--min-vmaf", "99.9", "--data-dir", data)  # fmt: skip
    assert low.returncode == 1, low.stderr
    assert "Traceback" not in low.stderr
    (line,) = [s for s in low.stderr.splitlines() if "below min_vmaf" in s]
    assert re.search(r"failed: output VMAF \d+\.\d\d is below min_vmaf 99\.9", line), line
    assert files(out) == []
    ok = cli("encode", str(clips.ref), "-o", str(out / "ok.mp4"), "--quality", "30",
             "--speed", "fast", "--measure-quality", "--data-dir", data)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert f"✓ {out / 'ok.mp4'}: h264 640x360" in ok.stdout
    scores = next((s for s in ok.stdout.splitlines() if s.split()[:2] == ["vmaf", "mean"]), None)
    assert scores is not None and "(50 frames)" in scores, ok.stdout
    assert float(scores.split()[2]) == pytest.approx(
        independent(out / "ok.mp4", clips.ref, tmp_path).vmaf, abs=0.5
    )
    assert files(out) == ["ok.mp4"]


@pytest.fixture(scope="module")
def gateway(
    fleet: Fleet, clips: Clips, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    settings = Settings(api_tokens=[TOKEN], media_roots=[str(clips.folder)],
                        data_dir=tmp_path_factory.mktemp("gw-data"))  # fmt: skip
    with serving(create_app(settings, fleet)) as url:
        client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"},
                              timeout=60)  # fmt: skip
        yield client
        client.close()


def test_http_refuses_a_bad_quality_request_with_422_in_one_line(
    gateway: httpx.Client, clips: Clips
) -> None:
    body = {"kind": "quality", "input": str(clips.small), "reference": str(clips.ref)}
    cases = [
        ({**body, "score": {"metrics": ["vmaf", "bogus"]}}, "score.metrics"),
        ({**body, "score": {"min_vmaf": 101}}, "score.min_vmaf"),
        ({**body, "score": {"subsample": 0}}, "score.subsample"),
        ({"kind": "quality", "input": str(clips.small)}, "a quality job needs a reference"),
        ({**body, "output": str(clips.folder / "o.mp4")}, "a quality job writes no file"),
        ({"input": str(clips.ref), "output": str(clips.folder / "o.mp4"),
          "reference": str(clips.ref)}, "a reference is for quality jobs, not transcode"),
    ]  # fmt: skip
    for request, named in cases:
        r = gateway.post("/v1/jobs", json=request)
        assert r.status_code == 422, (request, r.text)
        message = r.json()["error"]["message"]
        assert named in message and "\n" not in message, (request, message)
    unknown = gateway.post("/v1/jobs", json=cases[0][0]).json()["error"]
    assert unknown["code"] == "invalid_request"
    assert unknown["message"] == ("score.metrics.1: Input should be 'vmaf', 'psnr', 'ssim' or "
                                  "'xpsnr'")  # fmt: skip


def test_http_runs_a_quality_job_and_shows_its_scores(
    gateway: httpx.Client, clips: Clips, small_scores: Scores
) -> None:
    r = gateway.post("/v1/jobs", json={"kind": "quality", "input": str(clips.small),
                                       "reference": str(clips.ref),
                                       "score": {"metrics": ["vmaf", "ssim"]}})  # fmt: skip
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]

    def ended() -> dict[str, Any] | None:
        view: dict[str, Any] = gateway.get(f"/v1/jobs/{job_id}").json()
        return view if view["status"] in ("succeeded", "failed", "cancelled") else None

    done = wait_until(ended, timeout=120, step=0.2)
    assert done["status"] == "succeeded", done
    assert done["spec"]["reference"] == str(clips.ref)
    metrics = done["result"]["metrics"]
    assert metrics["vmaf"]["mean"] == pytest.approx(small_scores.vmaf, abs=0.5)
    assert 0 < metrics["ssim"]["mean"] <= 1 and metrics["ssim"]["frames"] == 50
