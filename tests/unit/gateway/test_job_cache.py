"""The gateway's job cache against its event stream (no Ray, no server)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

from api.gateway.events import JobCache
from api.gateway.schemas import JobView
from cluster import EventType, Job, JobEvent, JobKind, JobSpec, JobStatus, ProgressSnapshot


def render(job: Job) -> bytes:
    return JobView.of(job).model_dump_json().encode()


def new_job(status: JobStatus = JobStatus.RUNNING) -> Job:
    spec = JobSpec(kind=JobKind.PROBE, input="/media/in.mp4")
    return Job(id="j1", spec=spec, status=status)


def event(job: Job, kind: EventType = EventType.STATUS) -> JobEvent:
    return JobEvent.of(job, kind)


def test_a_terminal_event_during_a_read_is_not_lost() -> None:
    """The read fetches "running"; the job's terminal event is applied while the read is
    in flight; the stale copy must not be kept, so the next read sees "succeeded"."""
    cache = JobCache(render)
    coordinator = new_job()

    async def fetch(job_id: str) -> Job:
        nonlocal coordinator
        copy = coordinator.snapshot()
        coordinator = replace(coordinator, status=JobStatus.SUCCEEDED)  # it finishes meanwhile
        cache.apply(event(coordinator))
        return copy

    async def main() -> None:
        first = json.loads(await cache.read("j1", fetch))
        assert first["status"] == "running"  # what the coordinator said then
        second = json.loads(await cache.read("j1", fetch))
        assert second["status"] == "succeeded"

    asyncio.run(main())


def test_reads_are_served_from_the_cache_and_progress_applied_in_place() -> None:
    cache = JobCache(render)
    fetched: list[str] = []

    async def fetch(job_id: str) -> Job:
        fetched.append(job_id)
        return new_job()

    async def main() -> None:
        await cache.read("j1", fetch)
        progressed = replace(new_job(), progress=ProgressSnapshot(percent=50.0))
        cache.apply(event(progressed, EventType.PROGRESS))
        job = json.loads(await cache.read("j1", fetch))
        assert job["progress"]["percent"] == 50.0
        cache.apply(event(new_job(JobStatus.SUCCEEDED)))  # any other change: read again
        await cache.read("j1", fetch)

    asyncio.run(main())
    assert fetched == ["j1", "j1"]


def test_a_gap_during_a_read_keeps_nothing() -> None:
    cache = JobCache(render)

    async def fetch(job_id: str) -> Job:
        cache.clear()  # the stream fell behind: every cached job may be stale
        return new_job()

    async def main() -> None:
        await cache.read("j1", fetch)
        assert cache.get("j1") is None

    asyncio.run(main())
