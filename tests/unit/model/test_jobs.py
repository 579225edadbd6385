"""The job state machine and request validation."""

from __future__ import annotations

import json

import pytest

from cluster import ErrorCode, InvalidTransition, JobKind, JobSpec, JobStatus, SpecError, job_view
from cluster.model.jobs import TRANSITIONS, Job, transition
from cluster.model.media import Colour, MediaInfo, Scan, ScanType, VideoStream


def new_job() -> Job:
    return Job(id="j1", spec=JobSpec(kind=JobKind.PROBE, input="/media/a.mp4"))


def test_happy_path_records_timestamps_attempts_and_ending() -> None:
    job = new_job()
    transition(job, JobStatus.RUNNING, now=10.0)
    assert job.attempts == 1 and job.started_at == 10.0
    transition(job, JobStatus.SUCCEEDED, reason="done", now=12.0)
    assert job.finished_at == 12.0 and job.reason == "done" and job.status.terminal


@pytest.mark.parametrize(
    ("start", "target"),
    [
        (JobStatus.QUEUED, JobStatus.SUCCEEDED),
        (JobStatus.QUEUED, JobStatus.QUEUED),
        (JobStatus.SUCCEEDED, JobStatus.RUNNING),
        (JobStatus.SUCCEEDED, JobStatus.QUEUED),
        (JobStatus.FAILED, JobStatus.RUNNING),
        (JobStatus.CANCELLED, JobStatus.SUCCEEDED),
        (JobStatus.RUNNING, JobStatus.RUNNING),
    ],
)
def test_illegal_transitions_raise_and_change_nothing(start: JobStatus, target: JobStatus) -> None:
    job = new_job()
    job.status = start
    with pytest.raises(InvalidTransition, match=f"is {start}; it cannot become {target}"):
        transition(job, target)
    assert job.status is start


def test_every_state_is_in_the_table_and_succeeded_is_final() -> None:
    assert set(TRANSITIONS) == set(JobStatus)
    assert TRANSITIONS[JobStatus.SUCCEEDED] == frozenset()


def test_user_retry_starts_afresh() -> None:
    job = new_job()
    transition(job, JobStatus.RUNNING)
    transition(job, JobStatus.FAILED, reason="boom", error_code=ErrorCode.ENCODE_FAILED)
    assert job.error_code == "encode_failed"
    job.input_media = MediaInfo("/media/a.mp4", "mov", 2.0, 1000, None, None)
    transition(job, JobStatus.QUEUED, reason="retry")
    assert job.attempts == 0 and job.error_code is None and job.finished_at is None
    assert job.input_media is None  # probed again: the file may have been fixed


def test_the_view_shows_the_probed_input_with_its_scan_and_colour() -> None:
    job = new_job()
    assert job_view(job)["input_media"] is None  # not probed yet
    video = VideoStream(0, "mpeg2video", 720, 576, "yuv420p", 8, (25, 1),
                        scan=Scan(ScanType.INTERLACED, tagged="tt"),
                        colour=Colour("bt709", "bt709", "bt709", "tv"))  # fmt: skip
    job.input_media = MediaInfo("/media/a.ts", "mpegts", 2.0, 1000, None, video)
    shown = json.loads(json.dumps(job_view(job)))["input_media"]["video"]
    assert shown["scan"] == {"type": "interlaced", "top_first": True, "tagged": "tt",
                             "idet": None}  # fmt: skip
    assert shown["colour"]["primaries"] == "bt709" and shown["colour"]["dynamic"] == []


def test_record_round_trips_through_a_dict() -> None:
    job = new_job()
    transition(job, JobStatus.RUNNING)
    assert Job.from_dict(job.to_dict()) == job


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "transcode", "input": "/a.mp4"}, "needs an output file"),
        ({"kind": "encode", "input": "/a.mp4"}, "is not a valid JobKind"),
        ({"kind": "probe", "input": "http://x/a.mp4"}, "looks like a URL"),
        ({"kind": "probe", "input": "concat:/a.mp4|/b.mp4"}, "looks like a URL"),
        ({"kind": "probe", "input": "subfile,,start,0,end,10,,:/a.mp4"}, "looks like a URL"),
        ({"kind": "probe", "input": ""}, "input is empty"),
        ({"kind": "transcode", "input": "/a", "output": "/b.mp4", "codec": "vp9"}, "unknown codec"),
        ({"kind": "transcode", "input": "/a", "output": "/b.mp4", "quality": 60}, "out of range"),
        ({"kind": "transcode", "input": "/a", "output": "/b.mp4", "keep_10bit": True}, "10-bit"),
        ({"kind": "thumbnail", "input": "/a", "output": "/t", "thumbnail_count": 0}, "count"),
        ({"kind": "probe", "input": "/a", "ffmpeg_args": "-f lavfi"}, "unknown job field"),
    ],
)
def test_bad_requests_are_refused_with_a_clear_message(fields: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        JobSpec.from_dict(fields)
