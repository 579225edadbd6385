"""Probing queued jobs' inputs on the head, a few at a time, before they are placed.

A job is placed only once its input's :class:`~cluster.media.probe.MediaInfo` is known
(its size decides its cost). A probe that fails because of the file ends the job; one
interrupted from outside (ffprobe killed) is tried again, up to the job's attempts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from cluster.errors import FramefleetError, InputError, JobFailure
from cluster.media.argv import thumbnail_times
from cluster.media.probe import probe_async
from cluster.model.jobs import Job, JobKind, JobStatus
from cluster.model.media import MediaInfo

log = logging.getLogger("framefleet.coordinator")
PROBE_CONCURRENCY = 4
MAX_PROBE_BACKOFF_S = 60.0
ProbeFn = Callable[[str, tuple[Path, ...]], Awaitable[MediaInfo]]


class Prober:
    def __init__(
        self,
        roots: tuple[Path, ...],
        *,
        on_probed: Callable[[Job, MediaInfo], None],
        on_failed: Callable[[Job, FramefleetError], None],
        on_done: Callable[[], None],
        backoff_s: float,
        probe: ProbeFn = probe_async,
    ) -> None:
        self._roots = roots
        self._on_probed = on_probed
        self._on_failed = on_failed
        self._on_done = on_done
        self._backoff_s = backoff_s
        self._probe = probe
        self.media: dict[str, MediaInfo] = {}
        """Queued jobs' probed inputs, by job id (forgotten when they leave the queue)."""
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._tries: dict[str, int] = {}
        self._slots = asyncio.Semaphore(PROBE_CONCURRENCY)

    def ensure(self, job: Job) -> MediaInfo | None:
        """The job's input, or ``None`` while it is being probed (started if need be)."""
        media = self.media.get(job.id)
        if media is None and job.id not in self._tasks:
            self._tasks[job.id] = asyncio.create_task(self._run(job))
        return media

    def forget(self, job_id: str) -> None:
        self.media.pop(job_id, None)

    async def _run(self, job: Job) -> None:
        try:
            async with self._slots:
                media = await self._probe(job.spec.input, self._roots)
            if job.spec.kind is not JobKind.PROBE:
                media.require_video()
            if job.spec.kind is JobKind.THUMBNAIL:
                thumbnail_times(job.spec, media)
        except FramefleetError as exc:
            tries = self._tries[job.id] = self._tries.get(job.id, 0) + 1
            if isinstance(exc, JobFailure) and exc.retryable and tries < job.max_attempts:
                # ffprobe killed from outside says nothing sure about the file: probe again.
                log.warning("probe of job %s interrupted (%s); probing again", job.id, exc)
                await asyncio.sleep(min(self._backoff_s * tries, MAX_PROBE_BACKOFF_S))
            else:
                self._tries.pop(job.id, None)
                if job.status is JobStatus.QUEUED:
                    self._on_failed(job, exc)
            return
        except Exception as exc:  # a bug or an OS error: end the job, never probe in a loop
            log.exception("probe of job %s failed", job.id)
            self._tries.pop(job.id, None)
            if job.status is JobStatus.QUEUED:
                self._on_failed(job, InputError(f"the input could not be probed ({exc})"))
            return
        finally:
            self._tasks.pop(job.id, None)
            self._on_done()
        self._tries.pop(job.id, None)
        if job.status is JobStatus.QUEUED:
            if job.spec.kind is not JobKind.PROBE:
                self.media[job.id] = media
            self._on_probed(job, media)
