"""A streaming package published to object storage: a real S3 API on 127.0.0.1 (moto's
server mode), real Ray, real ffmpeg. The renditions go up as hidden objects beside the
package, the package is made in a node's scratch, checked, and uploaded under its prefix
(playlists and the MPD last); the hidden objects are removed; the package downloaded
again passes every check of the package tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from cluster import Fleet, JobKind, JobSpec, OutputError, PackageOptions, Speed
from tests.helpers import ObjectServer, ffmpeg_processes, make_clip, wait_until
from tests.integration.cluster.test_package import check_package
from tests.integration.conftest import start_fleet

ROOT = "s3://media/farm"


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("local")
    make_clip(folder / "master.mp4", seconds=4, subtitles=True, language="eng")
    return folder


@pytest.fixture(scope="module")
def stored(
    ray_runtime: object, tmp_path_factory: pytest.TempPathFactory, s3: ObjectServer, local: Path
) -> Iterator[Fleet]:
    """A coordinator whose media roots are a local folder and ``s3://media/farm``."""
    s3.bucket("media")
    data = tmp_path_factory.mktemp("coordinator")
    fleet = start_fleet(data, "coordinator-package-objects", media_roots=(local.resolve(),),
                        object_roots=(ROOT,), s3_endpoint=s3.endpoint)  # fmt: skip
    yield fleet
    fleet.shutdown_coordinator()


def package(src: str, out: str, **fields: object) -> JobSpec:
    options = PackageOptions.parse({"ladder": "240,180", "segment_s": 2})
    return JobSpec(kind=JobKind.PACKAGE, input=src, output=out, speed=Speed.FAST,
                   package=options, **fields)  # type: ignore[arg-type]  # fmt: skip


def test_a_package_is_published_to_object_storage_whole(
    stored: Fleet, s3: ObjectServer, local: Path, tmp_path: Path
) -> None:
    out = f"{ROOT}/pkg/show"
    job = stored.wait(stored.submit(package(str(local / "master.mp4"), out)).id, timeout=240)
    assert job.status == "succeeded", job.reason
    result = job.result or {}
    assert result["output"] == out
    keys = s3.keys(f"{ROOT}/pkg/")
    assert f"{out}/master.m3u8" in keys and f"{out}/manifest.mpd" in keys
    assert f"{out}/v240h264/init.mp4" in keys and f"{out}/s1/subtitles.vtt" in keys
    assert [k for k in keys if "/." in k] == [], "the renditions' hidden objects are removed"
    assert s3.uploads("media") == []
    assert result["objects"] == len(keys)
    folder = tmp_path / "show"
    for key in keys:
        path = folder / key.removeprefix(f"{out}/")
        path.parent.mkdir(parents=True, exist_ok=True)
        s3.fetch(key, path)
    check_package(folder, local / "master.mp4", segment_s=2)

    with pytest.raises(OutputError, match=f"{out}/master.m3u8 already exists"):
        stored.submit(package(str(local / "master.mp4"), out))


def test_cancel_removes_every_object_the_package_uploaded(
    stored: Fleet, s3: ObjectServer, local: Path
) -> None:
    long = make_clip(local / "long.mp4", seconds=30, size="640x360")
    out = f"{ROOT}/cancelled/show"
    spec = replace(package(str(long), out), speed=Speed.SLOW,
                   package=PackageOptions.parse({"ladder": "360,240,180"}))  # fmt: skip
    job = stored.submit(spec)

    def one_rendition_up() -> bool:
        seen = stored.get(job.id).package
        return seen is not None and any(t.status == "succeeded" for t in seen.tasks)

    wait_until(one_rendition_up, timeout=180)
    assert [k for k in s3.keys(f"{ROOT}/cancelled/") if "/.show." in k], "a rendition is up"
    assert stored.cancel(job.id).status == "cancelled"
    assert s3.keys(f"{ROOT}/cancelled/") == []
    assert s3.uploads("media") == []
    assert ffmpeg_processes(job.id) == []
