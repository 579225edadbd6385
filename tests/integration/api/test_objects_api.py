"""Object storage through the gateway and the CLI: a real S3 API on 127.0.0.1 (moto's
server mode), a real uvicorn gateway, real Ray and ffmpeg."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster import Fleet, mark_root
from cluster.ray_edge.runtime import Runtime
from tests.helpers import ObjectServer, count_frames, make_clip
from tests.integration.api.conftest import TOKEN, Gateway, finished
from tests.integration.conftest import start_fleet

FRAMEFLEET = str(Path(sys.executable).with_name("framefleet"))
ROOT = "s3://media/gw"


@pytest.fixture(scope="module")
def fleet(
    ray_runtime: Runtime,
    roots: tuple[Path, Path],
    s3: ObjectServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fleet]:
    """The gateway's folders, marked as ``serve`` marks them, and ``s3://media/gw`` as
    media roots."""
    resolved = tuple(r.resolve() for r in roots)
    data = tmp_path_factory.mktemp("coordinator")
    f = start_fleet(data, "coordinator-objects-api", media_roots=resolved,
                    root_ids=tuple((str(r), mark_root(r)) for r in resolved),
                    object_roots=(ROOT,), s3_endpoint=s3.endpoint)  # fmt: skip
    yield f
    f.shutdown_coordinator()


@pytest.fixture(scope="module")
def clips(s3: ObjectServer, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Three clips under ``s3://media/gw/batch/`` (and a file that is not a video)."""
    folder = tmp_path_factory.mktemp("clips")
    urls = []
    for i, seconds in enumerate((1, 2, 1)):
        clip = make_clip(folder / f"c{i}.mp4", seconds=seconds)
        urls.append(s3.put(clip, f"{ROOT}/batch/c{i}.mp4"))
    (folder / "notes.txt").write_text("not a video")
    s3.put(folder / "notes.txt", f"{ROOT}/batch/notes.txt")
    return urls


def test_a_job_from_s3_to_s3_over_http(
    gateway: Gateway, s3: ObjectServer, clips: list[str], tmp_path: Path
) -> None:
    answer = gateway.http.post("/v1/jobs", json={"input": clips[1], "output": f"{ROOT}/o/one.mp4"})
    assert answer.status_code == 201, answer.text
    job = finished(gateway, answer.json()["id"])
    assert job["status"] == "succeeded", job["reason"]
    assert job["result"]["output"] == f"{ROOT}/o/one.mp4"
    head = s3.head(f"{ROOT}/o/one.mp4")
    assert head is not None and job["result"]["etag"] == head["ETag"].strip('"')
    assert count_frames(s3.fetch(f"{ROOT}/o/one.mp4", tmp_path / "one.mp4")) == 50


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("s3://media/other/x.mp4", "is outside the media roots (s3://media/gw)"),
        ("s3://media/gw/../other/x.mp4", "may not hold '.', '..' or empty segments"),
        ("s3://elsewhere/gw/x.mp4", "is outside the media roots"),
    ],
)
def test_urls_outside_the_roots_get_422_naming_the_rule(
    gateway: Gateway, clips: list[str], url: str, says: str
) -> None:
    for body in ({"input": url, "output": f"{ROOT}/o/x.mp4"}, {"input": clips[0], "output": url}):
        answer = gateway.http.post("/v1/jobs", json=body)
        assert answer.status_code == 422
        error = answer.json()["error"]
        assert error["code"] == "outside_roots" and says in error["message"]


def test_a_batch_from_an_s3_prefix(gateway: Gateway, s3: ObjectServer, clips: list[str]) -> None:
    answer = gateway.http.post("/v1/jobs/batch", json={
        "input_prefix": f"{ROOT}/batch/", "output_dir": f"{ROOT}/batch-out/", "output_ext": "mkv",
        "spec": {"codec": "hevc", "speed": "fast"}})  # fmt: skip
    assert answer.status_code == 201, answer.text
    jobs = answer.json()["jobs"]
    assert [j["input"] for j in jobs] == clips  # the videos, in key order; not notes.txt
    for job in jobs:
        assert finished(gateway, job["id"])["status"] == "succeeded"
    assert s3.keys(f"{ROOT}/batch-out/") == [f"{ROOT}/batch-out/c{i}.mkv" for i in range(3)]
    empty = gateway.http.post("/v1/jobs/batch", json={"input_prefix": f"{ROOT}/nothing/",
                                                      "output_dir": f"{ROOT}/x/"})  # fmt: skip
    assert empty.status_code == 422
    assert empty.json()["error"]["message"] == f"no video objects under {ROOT}/nothing/"
    outside = gateway.http.post("/v1/jobs/batch", json={"input_prefix": "s3://media/",
                                                        "output_dir": f"{ROOT}/x/"})  # fmt: skip
    assert outside.status_code == 422 and "outside the media roots" in outside.text


def test_the_cli_submits_urls_and_prefixes(
    gateway: Gateway, s3: ObjectServer, clips: list[str]
) -> None:
    common = ["--api", gateway.url, "--token", TOKEN, "--wait", "--json"]
    one = subprocess.run([FRAMEFLEET, "submit", clips[0], "-o", f"{ROOT}/cli/one.mp4", *common],
                         capture_output=True, text=True, timeout=180, check=False)  # fmt: skip
    assert one.returncode == 0, one.stderr
    assert json.loads(one.stdout)["result"]["output"] == f"{ROOT}/cli/one.mp4"
    many = subprocess.run([FRAMEFLEET, "submit", f"{ROOT}/batch/", "--output-dir",
                           f"{ROOT}/cli/many/", "--kind", "thumbnail", *common],
                          capture_output=True, text=True, timeout=180, check=False)  # fmt: skip
    assert many.returncode == 0, many.stderr
    assert len(json.loads(many.stdout)) == 3
    assert len(s3.keys(f"{ROOT}/cli/many/")) == 3  # one image per clip
    refused = subprocess.run([FRAMEFLEET, "submit", "s3://media/x.mp4", "-o", f"{ROOT}/cli/x.mp4",
                              "--api", gateway.url, "--token", TOKEN],
                             capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert refused.returncode != 0
    assert "is outside the media roots (s3://media/gw)" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_nodes_show_their_scratch_and_the_roots_they_see(
    gateway: Gateway, roots: tuple[Path, Path], session_data: Path
) -> None:
    [node] = gateway.http.get("/v1/nodes").json()
    scratch = node["scratch"]
    assert scratch["path"] == str(session_data / "scratch")  # the session Ray's <data>/scratch
    assert scratch["free_bytes"] > 0 and scratch["budget_bytes"] is None
    media = [str(r.resolve()) for r in roots]
    assert node["media"] == [{"root": r, "path": r, "seen": True, "why": ""} for r in media]
    shown = subprocess.run([FRAMEFLEET, "nodes", "--api", gateway.url, "--token", TOKEN],
                           capture_output=True, text=True, timeout=60, check=True,
                           env={**os.environ, "COLUMNS": "400"})  # fmt: skip
    assert "media roots" in shown.stdout and f"{media[0]}, {media[1]}" in shown.stdout
