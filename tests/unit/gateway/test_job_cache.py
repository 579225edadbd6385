"""The gateway's job cache against its event stream (no Ray, no server)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from api.gateway.events import JobCache


def render(job: dict[str, Any]) -> bytes:
    return json.dumps(job).encode()


def event(status: str, kind: str = "status", **extra: Any) -> dict[str, Any]:
    return {"type": kind, "job_id": "j1", "status": status, **extra}


def test_a_terminal_event_during_a_read_is_not_lost() -> None:
    """The read fetches "running"; the job's terminal event is applied while the read is
    in flight; the stale copy must not be kept, so the next read sees "succeeded"."""
    cache = JobCache(render)
    coordinator = {"id": "j1", "status": "running"}

    async def fetch(job_id: str) -> dict[str, Any]:
        copy = dict(coordinator)
        coordinator["status"] = "succeeded"  # it finishes while the answer travels back
        cache.apply(event("succeeded"))
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

    async def fetch(job_id: str) -> dict[str, Any]:
        fetched.append(job_id)
        return {"id": job_id, "status": "running", "progress": None}

    async def main() -> None:
        await cache.read("j1", fetch)
        cache.apply(event("running", "progress", progress={"percent": 50.0}))
        job = json.loads(await cache.read("j1", fetch))
        assert job["progress"] == {"percent": 50.0}
        cache.apply(event("succeeded"))  # any other change: read again
        await cache.read("j1", fetch)

    asyncio.run(main())
    assert fetched == ["j1", "j1"]


def test_a_gap_during_a_read_keeps_nothing() -> None:
    cache = JobCache(render)

    async def fetch(job_id: str) -> dict[str, Any]:
        cache.clear()  # the stream fell behind: every cached job may be stale
        return {"id": job_id, "status": "running"}

    async def main() -> None:
        await cache.read("j1", fetch)
        assert cache.get("j1") is None

    asyncio.run(main())
