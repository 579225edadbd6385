"""Jobs whose media are in object storage: a real S3 API on 127.0.0.1 (moto's server
mode), real Ray, real ffmpeg. The coordinator reaches the store through an
:class:`~tests.helpers.Uplink`, a TCP proxy that counts bytes and can slow uploads."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cluster import ErrorCode, Fleet, JobKind, JobSpec, OutputError, SpecError, Speed
from cluster.media.scan import IDET_FRAMES
from tests.helpers import (
    ObjectServer,
    Uplink,
    count_frames,
    ffmpeg_processes,
    make_clip,
    streams,
    wait_until,
)
from tests.integration.conftest import start_fleet

ROOT = "s3://media/farm"
"""The session Ray's node keeps scratch here (the embedded runtime's <data dir>/scratch)."""


@pytest.fixture(scope="module")
def uplink(s3: ObjectServer) -> Iterator[Uplink]:
    link = Uplink(s3.endpoint).start()
    yield link
    link.stop()


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("local")
    make_clip(folder / "clip.mp4", seconds=2, subtitles=True)
    return folder


@pytest.fixture(scope="module")
def stored(
    ray_runtime: object, tmp_path_factory: pytest.TempPathFactory, uplink: Uplink, local: Path
) -> Iterator[Fleet]:
    """A coordinator whose media roots are a local folder and ``s3://media/farm``."""
    data = tmp_path_factory.mktemp("coordinator")
    fleet = start_fleet(data, "coordinator-objects", media_roots=(local.resolve(),),
                        object_roots=(ROOT,), s3_endpoint=uplink.endpoint)  # fmt: skip
    yield fleet
    fleet.shutdown_coordinator()


@pytest.fixture(scope="module")
def clip_url(s3: ObjectServer, local: Path) -> str:
    return s3.put(local / "clip.mp4", f"{ROOT}/in/clip.mp4")


Scratch = Callable[[str], list[str]]


@pytest.fixture
def scratch_of(session_data: Path) -> Scratch:
    """What a job left in the session node's scratch (its attempts' folders)."""
    scratch = session_data / "scratch"
    return lambda job_id: sorted(p.name for p in scratch.glob(f"{job_id}.*"))


def test_s3_to_s3_transcode(
    scratch_of: Callable[[str], list[str]],
    stored: Fleet,
    s3: ObjectServer,
    clip_url: str,
    tmp_path: Path,
) -> None:
    dest = f"{ROOT}/out/clip.mkv"
    job = stored.submit(JobSpec(JobKind.TRANSCODE, clip_url, dest, codec="hevc"))
    done = stored.wait(job.id, timeout=120)
    assert done.status == "succeeded", done.reason
    head = s3.head(dest)
    assert head is not None
    assert done.result is not None
    assert done.result["output"] == dest
    assert done.result["size_bytes"] == head["ContentLength"]
    assert done.result["etag"] == head["ETag"].strip('"')
    assert done.result["fetched_bytes"] == s3.head(clip_url)["ContentLength"]  # type: ignore[index]
    assert done.result["timings"]["fetch_s"] >= 0 and done.result["timings"]["upload_s"] >= 0
    got = s3.fetch(dest, tmp_path / "clip.mkv")
    assert count_frames(got) == 50
    assert streams(got, "video")[0]["codec_name"] == "hevc"
    assert streams(got, "audio") and streams(got, "subtitle")
    assert scratch_of(job.id) == []
    assert ffmpeg_processes(job.id) == []


def test_local_to_s3_and_back(
    scratch_of: Callable[[str], list[str]],
    stored: Fleet,
    s3: ObjectServer,
    local: Path,
    tmp_path: Path,
) -> None:
    up = stored.submit(JobSpec(JobKind.TRANSCODE, str(local / "clip.mp4"), f"{ROOT}/out/up.mp4"))
    assert stored.wait(up.id, timeout=120).status == "succeeded"
    down = stored.submit(JobSpec(JobKind.TRANSCODE, f"{ROOT}/out/up.mp4", str(local / "down.mov"),
                                 speed=Speed.FAST))  # fmt: skip
    done = stored.wait(down.id, timeout=120)
    assert done.status == "succeeded", done.reason
    assert done.result is not None and done.result["output"] == str(local / "down.mov")
    assert count_frames(local / "down.mov") == 50
    assert [p.name for p in local.iterdir() if p.name.startswith(".")] == []  # no partial file
    assert scratch_of(up.id) == scratch_of(down.id) == []


def test_thumbnails_to_a_prefix(stored: Fleet, s3: ObjectServer, clip_url: str) -> None:
    spec = JobSpec(JobKind.THUMBNAIL, clip_url, f"{ROOT}/thumbs/", thumbnail_count=3)
    done = stored.wait(stored.submit(spec).id, timeout=120)
    assert done.status == "succeeded", done.reason
    assert done.result is not None
    images = done.result["images"]
    assert len(images) == 3 and all(i.startswith(f"{ROOT}/thumbs/clip_") for i in images)
    assert s3.keys(f"{ROOT}/thumbs/") == sorted(images)


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("s3://other/in/clip.mp4", "outside the media roots"),
        ("s3://media/elsewhere/clip.mp4", "outside the media roots"),
        ("s3://media/farmhouse/clip.mp4", "outside the media roots"),
        ("s3://media/farm/../secret/clip.mp4", "may not hold '.', '..' or empty segments"),
        ("s3://media/farm//clip.mp4", "may not hold '.', '..' or empty segments"),
        ("http://169.254.169.254/latest/meta-data", "give a file path (prefix ./"),
        ("gs://media/farm/clip.mp4", "or an s3:// URL"),
        ("s3://key:secret@media/farm/clip.mp4", "names a bucket, not a user"),
        ("s3://media/farm/clip.mp4?versionId=1", "takes no ?query"),
        ("s3://media", "names a bucket, not an object"),
    ],
)
def test_hostile_urls_are_refused(stored: Fleet, url: str, rule: str, tmp_path: Path) -> None:
    with pytest.raises(SpecError) as refused:
        stored.submit(JobSpec(JobKind.TRANSCODE, url, f"{ROOT}/out/x.mp4"))
    assert rule in str(refused.value)
    assert refused.value.code in (ErrorCode.OUTSIDE_ROOTS, ErrorCode.INVALID_SPEC)
    with pytest.raises(SpecError):  # the same rules for outputs
        stored.submit(JobSpec(JobKind.TRANSCODE, f"{ROOT}/in/clip.mp4", url + ".mp4"))


def test_an_existing_object_is_not_replaced(stored: Fleet, s3: ObjectServer, clip_url: str) -> None:
    taken = s3.put(Path(os.devnull), f"{ROOT}/out/taken.mp4")
    with pytest.raises(OutputError, match="already exists; allow overwriting"):
        stored.submit(JobSpec(JobKind.TRANSCODE, clip_url, taken))
    done = stored.wait(stored.submit(JobSpec(JobKind.TRANSCODE, clip_url, taken,
                                              overwrite=True)).id, timeout=120)  # fmt: skip
    assert done.status == "succeeded", done.reason
    assert s3.head(taken)["ContentLength"] > 0  # type: ignore[index]


def test_a_missing_object_fails_the_job_clearly(stored: Fleet) -> None:
    job = stored.submit(JobSpec(JobKind.TRANSCODE, f"{ROOT}/in/nope.mp4", f"{ROOT}/out/nope.mp4"))
    done = stored.wait(job.id, timeout=60)
    assert done.status == "failed"
    assert done.error_code == ErrorCode.INPUT_MISSING
    assert done.reason == f"{ROOT}/in/nope.mp4: no such object; check the key"


def test_probing_reads_a_little_not_the_whole_object(
    stored: Fleet, s3: ObjectServer, uplink: Uplink, tmp_path: Path
) -> None:
    big = make_clip(tmp_path / "big.mp4", seconds=20, size="640x360")
    url = s3.put(big, f"{ROOT}/in/big.mp4")
    before = uplink.received
    done = stored.wait(stored.submit(JobSpec(JobKind.PROBE, url)).id, timeout=60)
    assert done.status == "succeeded", done.reason
    assert done.result is not None and done.result["media"]["duration_s"] == pytest.approx(20, 0.05)
    read = uplink.received - before
    # ffprobe's header and index reads, and, this being 25 fps with no field order in its
    # tag, idet's first IDET_FRAMES frames of 500: a part of the object, never all of it.
    share = 0.25 + IDET_FRAMES / 500
    assert read < big.stat().st_size * share, f"probing read {read} of {big.stat().st_size} bytes"


def test_cancel_mid_upload_leaves_no_object_and_no_scratch(
    scratch_of: Callable[[str], list[str]],
    stored: Fleet,
    s3: ObjectServer,
    uplink: Uplink,
    tmp_path: Path,
) -> None:
    # Noise encoded losslessly: an output of ~20 MB, so it goes up in parts, slowly.
    noise = tmp_path / "noise.mp4"
    noisy = "nullsrc=s=854x480:r=25:d=1.5,geq=lum='random(1)*255':cb=128:cr=128"
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i", noisy,
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(noise)],
                   check=True)  # fmt: skip
    src = s3.put(noise, f"{ROOT}/in/noise.mp4")
    dest = f"{ROOT}/out/noise.mp4"
    uplink.rate = 1_000_000
    try:
        job = stored.submit(JobSpec(JobKind.TRANSCODE, src, dest, quality=0, speed=Speed.FAST))
        wait_until(lambda: dest.split("/", 3)[3] in s3.uploads("media"), timeout=120, step=0.2)
        assert stored.get(job.id).status == "running"

        def uploading() -> bool:  # the job's progress counts the bytes going up
            progress = stored.get(job.id).progress
            moved = progress.moved_bytes if progress else None
            return moved is not None and moved > noise.stat().st_size

        wait_until(uploading, timeout=30, step=0.2)
        cancelled = stored.cancel(job.id)
    finally:
        uplink.rate = None
    assert cancelled.status == "cancelled"
    assert s3.head(dest) is None
    wait_until(lambda: s3.uploads("media") == [], timeout=30)  # the multipart upload aborted
    assert scratch_of(job.id) == []
    assert ffmpeg_processes(job.id) == []
