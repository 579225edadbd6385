"""Probing queued jobs' inputs on the head, a few at a time, before they are placed.

A job is placed only once its input's :class:`~cluster.media.probe.MediaInfo` is known
(its size decides its cost). A probe that fails because of the file ends the job; one
interrupted from outside (ffprobe killed) is tried again, up to the job's attempts.

ffprobe costs ~0.1 s of process start-up a file, most of a warm cluster's submit-to-start
latency; a file probed before and unchanged since (same device, inode, size and
modification time) is not probed again: several renditions of one master, a retry.
An object in storage is known by its URL, ETag and size (one HEAD), and probed through
ranged reads where it is, not downloaded.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path

from cluster.errors import FramefleetError, InputError, JobFailure
from cluster.media import ladder
from cluster.media.argv import thumbnail_times
from cluster.media.probe import probe_async, probe_object_async
from cluster.model.jobs import Job, JobKind
from cluster.model.media import MediaInfo
from cluster.storage import objects
from cluster.storage.objects import ObjectStore
from cluster.storage.urls import is_object_url, parse_object_url

log = logging.getLogger("framefleet.coordinator.farm")
PROBE_CONCURRENCY = 4
PROBE_CACHE_SIZE = 1024
MAX_PROBE_BACKOFF_S = 60.0
ProbeFn = Callable[[str, tuple[Path, ...]], Awaitable[MediaInfo]]


class Prober:
    def __init__(
        self,
        roots: tuple[Path, ...],
        store: ObjectStore,
        *,
        wake: Callable[[], None],
        backoff_s: float,
        probe: ProbeFn = probe_async,
    ) -> None:
        self._roots = roots
        self._store = store
        self._wake = wake
        self._backoff_s = backoff_s
        self._probe = probe
        self._done: list[tuple[str, MediaInfo | FramefleetError]] = []
        """Probes that ended (a job id and its input, or why it cannot be used), not
        yet taken."""
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._tries: dict[str, int] = {}
        self._slots = asyncio.Semaphore(PROBE_CONCURRENCY)
        self._known: OrderedDict[tuple[object, ...], MediaInfo] = OrderedDict()
        """Recent probes by file identity (:func:`_identity`), least recent first."""

    def ensure(self, job: Job) -> None:
        """Probe the job's input, unless a probe of it runs already; what it finds is
        :meth:`take` n by the coordinator (which records it on the job)."""
        if job.id not in self._tasks:
            self._tasks[job.id] = asyncio.create_task(self._run(job))

    def take(self) -> list[tuple[str, MediaInfo | FramefleetError]]:
        """The probes that ended since the last call: a job id and its input, or why
        the job cannot run (an interrupted probe is tried again, not reported)."""
        done, self._done = self._done, []
        return done

    async def probed(self, path: str) -> MediaInfo:
        """``path``'s probe: remembered if the file has not changed, else ffprobe's (also
        what a job graph reads besides the input: a quality job's reference)."""
        if is_object_url(path):
            return await self._probed_object(path)
        before = _identity(path)
        if before is not None and (media := self._known.get(before)) is not None:
            self._known.move_to_end(before)
            return media
        async with self._slots:
            media = await self._probe(path, self._roots)
        if before is not None and _identity(path) == before:  # not changed while probed
            self._remember(before, media)
        return media

    async def _probed_object(self, raw: str) -> MediaInfo:
        url = parse_object_url(raw, what="input")
        head = await asyncio.to_thread(objects.head, self._store, url)
        known = (raw, head.etag, head.size) if head else None
        if known is not None and (media := self._known.get(known)) is not None:
            self._known.move_to_end(known)
            return media
        async with self._slots:
            media = await probe_object_async(url, self._store, head)
        if known is not None:
            self._remember(known, media)
        return media

    def seed(self, path: str, media: MediaInfo) -> bool:
        """A probe of ``path`` made before this coordinator started (a one-shot command
        probes its input while the engine starts), remembered if the file is still the
        one probed (``media.version``); whether it was."""
        identity = _identity(path)
        if identity is None or media.version != ":".join(map(str, (identity[1], identity[2],
                                                                    identity[4]))):  # fmt: skip
            return False
        self._remember(identity, media)
        return True

    def _remember(self, identity: tuple[object, ...], media: MediaInfo) -> None:
        self._known[identity] = media
        if len(self._known) > PROBE_CACHE_SIZE:
            self._known.popitem(last=False)

    async def _run(self, job: Job) -> None:
        try:
            found: MediaInfo | FramefleetError = await self._checked(job)
        except FramefleetError as exc:
            tries = self._tries[job.id] = self._tries.get(job.id, 0) + 1
            if isinstance(exc, JobFailure) and exc.retryable and tries < job.max_attempts:
                # ffprobe killed from outside says nothing sure about the file: probe again.
                log.warning("probe of job %s interrupted (%s); probing again", job.id, exc)
                await asyncio.sleep(min(self._backoff_s * tries, MAX_PROBE_BACKOFF_S))
                return
            found = exc
        except Exception as exc:  # a bug or an OS error: end the job, never probe in a loop
            log.exception("probe of job %s failed", job.id)
            found = InputError(f"the input could not be probed ({exc})")
        finally:
            self._tasks.pop(job.id, None)
            self._wake()
        self._tries.pop(job.id, None)
        self._done.append((job.id, found))

    async def _checked(self, job: Job) -> MediaInfo:
        """The job's input, probed, checked for what its kind needs."""
        media = await self.probed(job.spec.input)
        if job.spec.kind is not JobKind.PROBE:
            media.require_video()
        if job.spec.kind is JobKind.THUMBNAIL:
            thumbnail_times(job.spec, media)
        if job.spec.kind is JobKind.PACKAGE and job.spec.package is not None:
            ladder.resolve(job.spec.package, media)  # a source it cannot package fails here
        return media


def _identity(path: str) -> tuple[object, ...] | None:
    """What changes when the file at ``path`` does (``None``: it cannot be read)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
