"""Cancel, worker loss, priorities, user retry and restarts, on a real local Ray."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
from pathlib import Path

import pytest
import ray
from ray.experimental.internal_kv import _internal_kv_get

from api.settings import Settings
from cluster import ClusterUnavailable, ConfigError, Fleet, JobKind, JobSpec, RuntimeConfig
from cluster.ray_edge.errors import coordinator_error
from tests.helpers import (
    count_frames,
    ffmpeg_processes,
    leftovers,
    make_clip,
    transcode,
    wait_until,
)
from tests.integration.conftest import start_fleet


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Long enough that a slow x265 encode of it runs for many seconds."""
    return make_clip(tmp_path_factory.mktemp("long") / "long.mp4", seconds=30, size="640x360")


def running_with_progress(fleet: Fleet, job_id: str) -> bool:
    job = fleet.get(job_id)
    return job.status == "running" and bool(job.progress and job.progress.percent)


def test_cancel_mid_encode_kills_ffmpeg_and_leaves_nothing(
    fleet: Fleet, long_clip: Path, out_dir: Path
) -> None:
    job = fleet.submit(transcode(long_clip, out_dir / "o.mkv", codec="hevc", speed="slow"))
    wait_until(lambda: running_with_progress(fleet, job.id), timeout=60)
    assert ffmpeg_processes(str(out_dir))
    cancelled = fleet.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.reason == "cancelled by user"
    assert ffmpeg_processes(str(out_dir)) == []
    assert list(out_dir.iterdir()) == []
    assert fleet.cancel(job.id).status == "cancelled"  # idempotent


def test_cancel_queued_job(fleet: Fleet, media: Path, out_dir: Path) -> None:
    node = wait_until(fleet.nodes, timeout=30)[0].node_id
    fleet.set_node_cap(node, 0)
    try:
        job = fleet.submit(transcode(media / "clip.mp4", out_dir / "o.mp4"))
        assert fleet.cancel(job.id).status == "cancelled"
    finally:
        fleet.set_node_cap(node, None)
    assert list(out_dir.iterdir()) == []


def test_worker_killed_mid_encode_is_retried_and_no_ffmpeg_is_orphaned(
    fleet: Fleet, long_clip: Path, out_dir: Path
) -> None:
    job = fleet.submit(transcode(long_clip, out_dir / "o.mp4", speed="fast", quality=35))
    wait_until(lambda: running_with_progress(fleet, job.id), timeout=60)
    (pid,) = wait_until(lambda: ffmpeg_processes(str(out_dir)), timeout=10)
    worker = int(Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[1])
    before = fleet.event_cursor()
    os.kill(worker, signal.SIGKILL)  # the encoder actor's process dies, as on a node crash
    # Its ffmpeg dies with it, at once (it would otherwise encode on beside the retry).
    wait_until(lambda: pid not in ffmpeg_processes(""), timeout=3, step=0.05)
    done = fleet.wait(job.id, timeout=120)
    assert done.status == "succeeded", done.reason
    assert done.attempts == 2
    events = fleet.events(before, [job.id], timeout=1).events
    # The status event that said so (an eta event while the job waits carries the same
    # reason: the job's).
    [lost] = [str(e.reason) for e in events
              if e.type == "status" and "was lost" in str(e.reason or "")]  # fmt: skip
    assert len(lost) < 300, lost  # one short line, without Ray's ids and paragraphs
    assert count_frames(out_dir / "o.mp4") == 750
    assert leftovers(out_dir) == []


def autoscaler_request() -> list[dict[str, float]]:
    """What was last asked of the autoscaler (v1 keeps it in Ray's internal KV)."""
    raw = _internal_kv_get(b"autoscaler_resource_request")
    return json.loads(raw) if raw else []


def test_priority_order_then_fifo(fleet: Fleet, media: Path) -> None:
    node = wait_until(fleet.nodes, timeout=30)[0].node_id
    fleet.set_node_cap(node, 0)
    clip = str(media / "clip.mp4")
    try:
        order = [("low", 0), ("high-1", 10), ("mid", 5), ("high-2", 10)]
        ids = {
            name: fleet.submit(JobSpec(kind=JobKind.VALIDATE, input=clip, priority=p)).id
            for name, p in order
        }
        # Each is queued and its input probed (a job is placed only once probed).
        wait_until(lambda: all(fleet.get(i).input_media for i in ids.values()))
        assert {fleet.get(i).status for i in ids.values()} == {"queued"}
        # Waiting work is told to Ray's autoscaler (a no-op here; KubeRay adds workers).
        wait_until(lambda: autoscaler_request().count({"CPU": 1.0}) >= 4, timeout=10)
        fleet.set_node_cap(node, 1)
        done = {name: fleet.wait(job_id, timeout=60) for name, job_id in ids.items()}
    finally:
        fleet.set_node_cap(node, None)
    started = sorted(done, key=lambda name: done[name].started_at or 0.0)
    assert started == ["high-1", "high-2", "mid", "low"]


def test_user_retry_after_the_input_is_fixed(fleet: Fleet, media: Path, out_dir: Path) -> None:
    src = out_dir / "late.mp4"
    job = fleet.wait(fleet.submit(transcode(src, out_dir / "o.mp4")).id, timeout=30)
    assert job.status == "failed" and job.error_code == "input_missing"
    src.write_bytes((media / "clip.mp4").read_bytes())
    retried = fleet.retry(job.id)
    assert retried.status == "queued" and retried.attempts == 0
    assert fleet.wait(job.id, timeout=60).status == "succeeded"


def test_restart_keeps_every_job_and_requeues_the_running_one(
    ray_runtime: object, tmp_path: Path, media: Path, long_clip: Path
) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    out.mkdir()
    name = "coordinator-restart"
    fleet = start_fleet(data, name)
    try:
        done = fleet.wait(fleet.submit(transcode(media / "clip.mp4", out / "a.mp4")).id)
        running = fleet.submit(transcode(long_clip, out / "b.mkv", codec="hevc", speed="fast"))
        wait_until(lambda: running_with_progress(fleet, running.id), timeout=60)
        node = wait_until(fleet.nodes, timeout=30)[0].node_id
        fleet.set_node_cap(node, 0)
        queued = fleet.submit(transcode(media / "clip.mp4", out / "c.mp4"))

        # The coordinator process dies; Ray restarts it and it reloads SQLite. ray.kill
        # returns at once, so wait until a new life of the coordinator answers.
        first_life = fleet.ping()["pid"]
        ray.kill(ray.get_actor(name, namespace="framefleet"), no_restart=False)
        wait_until(lambda: fleet.ping()["pid"] != first_life, timeout=60)
        by_id = {j.id: j for j in fleet.list_jobs()}
        assert by_id[done.id].status == "succeeded"
        assert by_id[running.id].status in ("queued", "running")
        assert by_id[queued.id].status in ("queued", "running", "succeeded"), by_id[queued.id]
        assert fleet.wait(running.id, timeout=180).status == "succeeded"
        assert fleet.wait(queued.id, timeout=60).status == "succeeded"
        assert count_frames(out / "b.mkv") == 750
        assert leftovers(out) == []
    finally:
        fleet.shutdown_coordinator()

    # A fresh coordinator on the same data dir sees the whole history.
    again = start_fleet(data, name)
    try:
        statuses = {j.id: j.status for j in again.list_jobs()}
        assert statuses == {
            done.id: "succeeded",
            running.id: "succeeded",
            queued.id: "succeeded",
        }
        requeued = again.get(running.id)
        assert requeued.attempts == 2
    finally:
        again.shutdown_coordinator()


def test_finished_jobs_leave_memory_but_stay_readable(
    ray_runtime: object, media: Path, tmp_path: Path
) -> None:
    fleet = start_fleet(tmp_path / "data", "coordinator-retention", finished_retention_s=0.0,
                        node_refresh_s=0.5)  # fmt: skip
    try:
        specs = [JobSpec(kind=JobKind.PROBE, input=str(media / "clip.mp4")) for _ in range(5)]
        jobs = fleet.submit_many(specs)
        for job in jobs:
            assert fleet.wait(job.id, timeout=60).status == "succeeded"
        wait_until(lambda: fleet.ping()["jobs"] == 0, timeout=10)  # none kept in memory
        again = fleet.get(jobs[0].id)  # read back from SQLite
        assert again.status == "succeeded" and (again.result or {})["media"]["video"]
        listed = fleet.list_jobs(status="succeeded")
        assert [j.id for j in listed] == [j.id for j in jobs]
        assert fleet.ping()["memory_mb"] > 0
    finally:
        fleet.shutdown_coordinator()


def test_an_idempotency_key_expires(ray_runtime: object, media: Path, tmp_path: Path) -> None:
    fleet = start_fleet(tmp_path / "data", "coordinator-keys", idempotency_ttl_s=0.0)
    try:
        spec = JobSpec(kind=JobKind.PROBE, input=str(media / "clip.mp4"))
        first = fleet.submit(spec, idempotency_key="k1")
        again = fleet.submit(spec, idempotency_key="k1")
        assert again.id != first.id  # past its lifetime, the key makes a new job
    finally:
        fleet.shutdown_coordinator()


def test_a_job_that_keeps_failing_says_it_gave_up(
    fleet: Fleet, long_clip: Path, out_dir: Path
) -> None:
    # ffmpeg killed by a signal on every attempt: retried (max_attempts=2 here), then failed.
    job = fleet.submit(transcode(long_clip, out_dir / "o.mkv", codec="hevc", speed="slow"))

    def kill_its_ffmpeg() -> bool:
        for pid in ffmpeg_processes(str(out_dir)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return fleet.get(job.id).status == "failed"

    wait_until(kill_its_ffmpeg, timeout=90, step=0.2)
    done = fleet.get(job.id)
    assert done.attempts == 2 and done.error_code == "encode_failed"
    assert done.reason == "ffmpeg was killed by signal 9; gave up after 2 attempts"
    assert list(out_dir.iterdir()) == []


def test_a_lost_coordinator_is_said_without_rays_text() -> None:
    text = (
        "The actor 9f3c2a1b0d4e5f60718293a4b5c6d7e8f9012345 died because its worker "
        "process exited unexpectedly. Worker ID: abcdef0123456789abcdef0123456789. "
        "The task may or may not have been executed on the actor."
    )
    error = coordinator_error(ray.exceptions.RaySystemError(text))
    assert isinstance(error, ClusterUnavailable)
    assert str(error) == (
        "the coordinator is not reachable (RaySystemError); it may be restarting: try again shortly"
    )


def test_joining_a_running_coordinator_with_another_config_is_said(
    fleet: Fleet, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """On a farm the first client fixes the coordinator's config; a later client that asks
    for other media roots is told, not silently ignored."""
    name = "coordinator-" + __name__.rsplit(".", 1)[-1]  # the module's running coordinator
    with caplog.at_level(logging.WARNING, logger="framefleet.client"):
        joined = start_fleet(tmp_path, name, media_roots=(tmp_path,))
    assert any(m.startswith("media_roots is (), not (") for m in joined.config_mismatch)
    assert "joined a running coordinator whose config differs" in caplog.text
    again = start_fleet(tmp_path, name)  # the same config: nothing to say
    assert again.config_mismatch == []


def test_a_gateway_refuses_a_coordinator_confined_to_other_roots(tmp_path: Path) -> None:
    """The coordinator resolves every path; a gateway that joined one confined elsewhere
    would serve other folders than its operator set: it refuses, in one line."""
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    mine.mkdir()
    theirs.mkdir()
    running = start_fleet(tmp_path, RuntimeConfig(data_dir=tmp_path).coordinator_name,
                          media_roots=(theirs.resolve(),))  # fmt: skip
    try:
        settings = Settings(data_dir=tmp_path, media_roots=[str(mine)])
        with pytest.raises(ConfigError) as refused:
            settings.connect(serving=True)
        assert str(refused.value) == (
            f"the running coordinator confines jobs to {theirs.resolve()}, not to "
            f"{mine.resolve()}; set FRAMEFLEET_MEDIA_ROOTS to match, or restart the "
            "cluster's coordinator with these roots"
        )
        joined = Settings(data_dir=tmp_path, media_roots=[str(theirs)]).connect(serving=True)
        assert joined.coordinator_config.media_roots == (theirs.resolve(),)
        assert not [m for m in joined.config_mismatch if m.startswith("media_roots")]
    finally:
        running.shutdown_coordinator()
