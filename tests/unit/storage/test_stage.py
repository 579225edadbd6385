"""Planning what a node moves for a job with s3:// media (pure)."""

from __future__ import annotations

from cluster.model.jobs import JobKind, JobSpec
from cluster.storage.objects import ObjectStore
from cluster.storage.stage import MIN_OUTPUT_ESTIMATE, localize, pushed_target

STORE = ObjectStore("http://127.0.0.1:9000")
FOLDER = "/scratch/j1.2"


def test_local_jobs_move_nothing() -> None:
    spec = JobSpec(JobKind.TRANSCODE, "/srv/a.mp4", "/srv/b.mp4")
    assert localize(spec, FOLDER, STORE, 10) == (spec, None)


def test_object_to_object() -> None:
    spec = JobSpec(JobKind.TRANSCODE, "s3://med/in/a.mov", "s3://med/out/b.mkv", overwrite=True)
    local, plan = localize(spec, FOLDER, STORE, 500 * 2**20)
    assert plan is not None
    assert (local.input, local.output) == ("/scratch/j1.2/in/a.mov", "/scratch/j1.2/out/b.mkv")
    assert local.codec == spec.codec and local.overwrite
    assert plan.fetch == (("s3://med/in/a.mov", "/scratch/j1.2/in/a.mov"),)
    assert plan.push == (("s3://med/out/b.mkv", "/scratch/j1.2/out/b.mkv"),)
    assert plan.need_bytes == 2 * 500 * 2**20  # the input, and an output as large
    assert plan.store == STORE and plan.overwrite
    assert pushed_target(plan, "/scratch/j1.2/out/b.mkv") == "s3://med/out/b.mkv"
    assert pushed_target(plan, "/elsewhere/b.mkv") is None


def test_local_input_to_object_reserves_only_the_output() -> None:
    spec = JobSpec(JobKind.TRANSCODE, "/srv/a.mp4", "s3://med/out/b.mp4")
    local, plan = localize(spec, FOLDER, STORE, 1000)
    assert plan is not None and plan.fetch == ()
    assert local.input == "/srv/a.mp4"
    assert plan.need_bytes == MIN_OUTPUT_ESTIMATE


def test_object_input_to_local_output() -> None:
    spec = JobSpec(JobKind.TRANSCODE, "s3://med/in/a.mp4", "/srv/b.mp4")
    local, plan = localize(spec, FOLDER, STORE, 1000)
    assert plan is not None and plan.push == ()
    assert (local.input, local.output) == ("/scratch/j1.2/in/a.mp4", "/srv/b.mp4")
    assert plan.need_bytes == 1000


def test_thumbnails_into_a_prefix() -> None:
    spec = JobSpec(JobKind.THUMBNAIL, "s3://med/in/a.mp4", "s3://med/thumbs/", thumbnail_count=3)
    local, plan = localize(spec, FOLDER, STORE, 1000)
    assert plan is not None and local.output == "/scratch/j1.2/out"
    assert pushed_target(plan, "/scratch/j1.2/out/a_002.jpg") == "s3://med/thumbs/a_002.jpg"
