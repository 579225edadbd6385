"""Encodes to a target quality on a real multi-node Ray cluster (a head without CPUs,
three workers of one core each): the CRF search's probes run on several workers at once,
the output's VMAF, measured here by the static ffmpeg's own libvmaf, lands within 1.0
of the target; a target no CRF can reach ends the job with the reason and no output.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import pytest

from cluster import ErrorCode, Fleet, JobKind, JobSpec, JobStatus, Speed
from tests.helpers import ffprobe, leftovers, make_clip, wait_until
from tests.integration.conftest import one_core_workers

pytestmark = pytest.mark.multinode
NAME = "search"
STATIC_FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


@dataclass
class Farm:
    fleet: Fleet
    cluster: Any
    root: Path
    master: Path
    """12 s of 640x360 testsrc2 at 25 fps, with audio."""


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    root = tmp_path_factory.mktemp("search")
    with one_core_workers("ffs-", root, NAME, max_attempts=2) as (fleet, cluster):
        master = make_clip(root / "master.mp4", seconds=12, size="640x360")
        wait_until(lambda: fleet.ping()["ready"], timeout=60)
        yield Farm(fleet, cluster, root, master)


def vmaf_of(distorted: Path, reference: Path) -> float:
    """libvmaf's own pooled mean, run here (not through framefleet)."""
    graph = ("[0:v]setpts=PTS-STARTPTS[d];[1:v]setpts=PTS-STARTPTS[r];"
             "[d][r]libvmaf=model=version=vmaf_v0.6.1")  # fmt: skip
    done = subprocess.run(
        [STATIC_FFMPEG, "-hide_banner", "-nostdin", "-i", str(distorted), "-i", str(reference),
         "-lavfi", graph, "-f", "null", "-"],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    found = re.search(r"VMAF score: ([0-9.]+)", done.stderr)
    assert found, done.stderr[-2000:]
    return float(found[1])


def test_a_target_vmaf_encode_lands_near_the_target_with_probes_on_several_workers(
    farm: Farm,
) -> None:
    out = farm.root / "target.mp4"
    spec = JobSpec(kind=JobKind.TRANSCODE, input=str(farm.master), output=str(out),
                   speed=Speed.FAST, target_vmaf=95, split="off")  # fmt: skip
    job = farm.fleet.wait(farm.fleet.submit(spec).id, timeout=600)
    assert job.status is JobStatus.SUCCEEDED, job.reason
    result = job.result or {}
    search = result["search"]
    assert search["target"]["value"] == 95.0 and 10 <= search["crf"] <= 46
    assert len(search["probes"]) >= 3 and search["nodes"] >= 2, search
    passing = [p for p in search["probes"] if p["score"] >= 95.0]
    assert search["crf"] == max(p["crf"] for p in passing)  # the smallest file that passes
    assert all(p["predicted_bytes"] > 0 for p in search["probes"])
    measured = vmaf_of(out, farm.master)
    assert abs(measured - 95.0) <= 1.0, (measured, search)
    assert abs(result["quality"]["metrics"]["vmaf"]["mean"] - measured) < 0.5
    assert "for target 95" in (job.reason or "") and f"CRF {search['crf']}" in (job.reason or "")
    video = [s for s in ffprobe(out)["streams"] if s["codec_type"] == "video"]
    assert video[0]["codec_name"] == "h264" and float(ffprobe(out)["format"]["duration"]) > 11
    assert leftovers(farm.root) == []

    # The same search again: every probe is reused, and it chooses the same CRF.
    again = farm.root / "again.mp4"
    spec2 = JobSpec(kind=JobKind.TRANSCODE, input=str(farm.master), output=str(again),
                    speed=Speed.FAST, target_vmaf=95, split="off")  # fmt: skip
    job2 = farm.fleet.wait(farm.fleet.submit(spec2).id, timeout=600)
    assert job2.status is JobStatus.SUCCEEDED, job2.reason
    assert (job2.result or {})["search"]["crf"] == search["crf"]
    assert (job2.result or {})["search"]["probes"] == search["probes"]


def test_a_target_no_crf_can_reach_ends_the_job_with_the_reason_and_no_output(
    farm: Farm,
) -> None:
    short = make_clip(farm.root / "short.mp4", seconds=3, size="320x180")
    out = farm.root / "never.mp4"
    spec = JobSpec(kind=JobKind.TRANSCODE, input=str(short), output=str(out),
                   speed=Speed.FAST, target_xpsnr=99, split="off")  # fmt: skip
    job = farm.fleet.wait(farm.fleet.submit(spec).id, timeout=600)
    assert job.status is JobStatus.FAILED
    assert job.error_code is ErrorCode.TARGET_UNMET
    reason = job.reason or ""
    assert reason.startswith("XPSNR 99 dB cannot be met:") and "at CRF 10" in reason, reason
    assert "\n" not in reason
    assert not out.exists() and leftovers(farm.root) == []


def rung_bytes(package: Path, key: str) -> int:
    return sum(p.stat().st_size for p in (package / key).iterdir() if p.suffix in (".mp4", ".m4s"))


def joined(package: Path, key: str, into: Path) -> Path:
    """A rung's init segment and media segments, joined as a player reads them."""
    parts = [package / key / "init.mp4", *sorted((package / key).glob("seg_*.m4s"))]
    into.write_bytes(b"".join(p.read_bytes() for p in parts))
    return into


def test_a_per_title_ladder_of_an_easy_clip_is_smaller_than_the_fixed_one_at_the_target(
    farm: Farm,
) -> None:
    ladder = {"ladder": [{"height": 360}, {"height": 270}, {"height": 180}]}
    fixed_out, titled_out = farm.root / "fixed", farm.root / "titled"
    fixed = JobSpec(kind=JobKind.PACKAGE, input=str(farm.master), output=str(fixed_out),
                    speed=Speed.FAST, package=ladder)  # type: ignore[arg-type]  # fmt: skip
    titled = JobSpec(kind=JobKind.PACKAGE, input=str(farm.master), output=str(titled_out),
                     speed=Speed.FAST, package=ladder, target_vmaf=93)  # type: ignore[arg-type]  # fmt: skip
    jobs = [farm.fleet.submit(fixed).id, farm.fleet.submit(titled).id]
    done_fixed, done_titled = (farm.fleet.wait(j, timeout=900) for j in jobs)
    assert done_fixed.status is JobStatus.SUCCEEDED, done_fixed.reason
    assert done_titled.status is JobStatus.SUCCEEDED, done_titled.reason

    explained = (done_titled.result or {})["ladder"]
    rungs = {r["rung"]: r for r in explained["rungs"]}
    assert set(rungs) == {"v360h264", "v270h264", "v180h264"}
    assert all(r["why"] and 10 <= r["crf"] <= 46 for r in rungs.values())
    kept = [k for k, r in rungs.items() if r["kept"]]
    assert "v360h264" in kept
    master = (titled_out / "master.m3u8").read_text()
    for key, rung in rungs.items():  # the playlist lists exactly the rungs kept
        assert (f"{key}/index.m3u8" in master) is rung["kept"]
    rates = [rungs[k]["predicted_kbps"] for k in ("v180h264", "v270h264", "v360h264") if k in kept]
    assert rates == sorted(rates)  # each kept rung dearer than the one below

    # The top rung: smaller than the fixed ladder's, and as good as asked (measured here).
    assert rung_bytes(titled_out, "v360h264") < rung_bytes(fixed_out, "v360h264")
    top = joined(titled_out, "v360h264", farm.root / "top.mp4")
    assert vmaf_of(top, farm.master) >= 93.0 - 1.0
    assert "per-title ladder for VMAF 93" in (done_titled.reason or "")


def test_the_encode_a_search_chose_is_split_across_the_farm_when_asked(farm: Farm) -> None:
    out = farm.root / "chunked.mp4"
    spec = JobSpec(kind=JobKind.TRANSCODE, input=str(farm.master), output=str(out),
                   speed=Speed.FAST, target_vmaf=95, split="4")  # fmt: skip
    job = farm.fleet.wait(farm.fleet.submit(spec).id, timeout=600)
    assert job.status is JobStatus.SUCCEEDED, job.reason
    result = job.result or {}
    assert result["split"]["chunks"] >= 2
    assert job.split is not None and job.split.chunked and len(job.split.segments) >= 2
    assert abs(vmaf_of(out, farm.master) - 95.0) <= 1.0
    assert float(ffprobe(out)["format"]["duration"]) > 11 and leftovers(farm.root) == []
