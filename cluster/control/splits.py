"""Split-and-stitch: a long transcode's video encoded as chunks across the farm, then
joined without re-encoding, shown to the user as one job.

- **Deciding.** When a transcode is first ready to place, :meth:`Splits.ready` decides
  whether to split it: ``split=off``, media in object storage, a short input, or (for
  ``auto``) a farm with room for one encoder only keep it whole, with that reason on the
  job. Otherwise the input's frames are indexed where it is seen (one read, no decode)
  and :func:`~cluster.media.split.plan_segments` cuts them; an input it cannot cut safely
  (variable frame rate, missing timestamps) is encoded whole, with the reason.
- **Chunks** are hidden sub-jobs (``job.chunk``; ids ``<job>-c001``...), queued longest
  first at the job's place in the queue, placed by the same scheduler on nodes that see
  the media, all on the one hardware the job was given (one encoder, identical
  settings). Each is retried alone by the job's retry policy, elsewhere after a node
  fault. Their progress is summed into the job's (percent by frames, fps summed).
- **Stitching.** Once every chunk is done, the job itself runs a stitch
  (:func:`~cluster.media.argv.stitch_command`) on a node that sees the output: the chunk
  files joined, the source's audio, subtitles and chapters added once, the result
  checked frame by frame before it is renamed into place.
- **Ending.** Whatever the end, running chunks are stopped and every chunk file removed.
  A coordinator restart keeps the finished chunks (their records and files) and runs the
  rest: the job says how many were reused.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from cluster.control.farm.reach import MediaReach
from cluster.control.records.jobtable import JobTable
from cluster.control.rules.dispatch import demand_for
from cluster.errors import ErrorCode, FramefleetError
from cluster.media.split import FrameIndex, frame_duration, plan_segments
from cluster.media.work import Stitch
from cluster.model.events import EventType
from cluster.model.jobs import Hardware, Job, JobKind, JobStatus
from cluster.model.media import MediaInfo
from cluster.model.progress import ProgressSnapshot
from cluster.model.split import (
    AUTO,
    OFF,
    ChunkOf,
    ChunkState,
    Split,
    SplitMode,
    chunk_id,
    chunk_name,
)
from cluster.scheduling.planner import Demand, Placement, Planner
from cluster.storage.urls import is_object_url

log = logging.getLogger("framefleet.coordinator")

AUTO_MIN_S = 60.0
"""``split=auto`` splits inputs at least this long."""
AUTO_CHUNK_S = 20.0
"""``split=auto``'s shortest chunk target: each chunk costs an encoder start and a seek."""
CHUNKS_PER_ENCODER = 2
"""``split=auto`` cuts about this many chunks per idle encoder (longest first evens out
chunks of unequal length and nodes of unequal speed)."""
MAX_CHUNKS = 512

Move = Callable[[Job, JobStatus, str, ErrorCode | None], None]
Stop = Callable[[str], Awaitable[None]]


class Splits:
    def __init__(
        self,
        table: JobTable,
        reach: MediaReach,
        *,
        planner: Callable[[], Planner],
        move: Move,
        stop: Stop,
        running: Callable[[str], bool],
        wake: Callable[[], None],
        media: dict[str, MediaInfo],
    ) -> None:
        """``planner()``: a planner over the nodes that may take work now; ``move``: the
        coordinator's state change; ``stop(job_id)``: stop an encode (a user's cancel);
        ``running(job_id)``: whether an encode runs for it; ``media``: probed inputs by
        job id (a chunk's is its job's)."""
        self._table = table
        self._reach = reach
        self._planner = planner
        self._move = move
        self._stop = stop
        self._running = running
        self._wake = wake
        self._media = media
        self._indexing: dict[str, asyncio.Task[None]] = {}
        self._ending: dict[str, asyncio.Task[None]] = {}

    # ---- deciding --------------------------------------------------------------------

    def ready(self, job: Job, media: MediaInfo) -> bool:
        """Whether ``job`` (queued, probed) is placed as it is now: a whole transcode, a
        chunk, any other job. A job being split is held back, and a split job runs its
        chunks instead (see the module docstring)."""
        if job.chunk is not None or job.spec.kind is not JobKind.TRANSCODE:
            return True
        split = job.split
        if split is None:
            if job.id not in self._indexing:
                self._decide(job, media)
            return job.split is not None and not job.split.chunked
        if not split.chunked:
            return True
        self._run_chunks(job, split)
        return False

    def _decide(self, job: Job, media: MediaInfo) -> None:
        spec, duration = job.spec, media.duration_s or 0.0
        why = _whole_why(spec.split, spec.input, spec.output or "", media)
        slots, hardware = (0, None) if why else self._room(job, media)
        if why is None and spec.split == AUTO and slots < 2:
            free = "no encoder" if slots == 0 else "one encoder only"
            why = f"not split: {free} free now where the media are seen (split=auto)"
        if why is not None:
            self._decided(job, Split.whole(why))
            return
        if spec.split == AUTO:
            target = max(AUTO_CHUNK_S, duration / (slots * CHUNKS_PER_ENCODER))
            floor, asked = AUTO_CHUNK_S / 2, f"{slots} encoders free (split=auto)"
        else:
            target = float(spec.split)
            floor, asked = min(target / 2, AUTO_CHUNK_S / 2), f"split={spec.split} s asked"
        task = asyncio.create_task(self._index(job, media, target, floor, hardware, asked))
        self._indexing[job.id] = task
        task.add_done_callback(lambda _: self._indexing.pop(job.id, None))

    def _room(self, job: Job, media: MediaInfo) -> tuple[int, Hardware]:
        """How many chunk encoders could start now where the media are seen, and on
        which hardware (``auto``: what the scheduler picks for the first)."""
        planner = self._planner()
        seen = self._reach.seen_by(job.spec)
        avoid = planner.node_ids - seen if seen is not None else frozenset()
        first = planner.place(demand_for(job, media), avoid)
        if first is None:  # a busy farm: the hardware the chunks will wait for
            if job.spec.hardware is not Hardware.AUTO:
                return 0, job.spec.hardware
            gpu = replace(demand_for(job, media), hardware=Hardware.GPU)
            return 0, Hardware.GPU if planner.never(gpu) is None else Hardware.CPU
        demand = replace(demand_for(job, media), hardware=first.hardware)
        slots = 1
        while slots < MAX_CHUNKS and planner.place(demand, avoid) is not None:
            slots += 1
        return slots, first.hardware

    async def _index(
        self,
        job: Job,
        media: MediaInfo,
        target: float,
        floor: float,
        hardware: Hardware | None,
        asked: str,
    ) -> None:
        try:
            index = await self._reach.index(job.spec.input, media)
        except FramefleetError as exc:
            split = Split.whole(f"not split: its frames could not be read ({exc})")
        else:
            split = _planned(index, target, floor, hardware or job.spec.hardware, asked)
        if job.status is JobStatus.QUEUED and job.split is None:
            self._decided(job, split)
            self._wake()

    def _decided(self, job: Job, split: Split) -> None:
        job.split = split
        log.info("job %s: %s", job.id, split.why)
        self._table.save(job)
        self._table.publish(job)

    # ---- chunks ----------------------------------------------------------------------

    def _run_chunks(self, job: Job, split: Split) -> None:
        """Queue the chunks not done (all of them the first time) and mark the job
        running; after a restart, finished chunks are reused."""
        media = self._media[job.id]
        fresh = not split.chunks
        if fresh:
            split.started_at = time.time()
            split.chunks = [ChunkState(s.index, chunk_id(job.id, s.index)) for s in split.segments]
        reused, new = 0, []
        for segment in sorted(split.segments, key=lambda s: (-s.frames, s.index)):
            state = split.chunks[segment.index]
            chunk = None if fresh else self._chunk(state.job_id)
            if chunk is not None and chunk.status is JobStatus.SUCCEEDED:
                reused += not state.reused
                state.reused = True
                _sync(state, chunk)
                continue
            if chunk is not None and chunk.status in (JobStatus.QUEUED, JobStatus.RUNNING):
                _sync(state, chunk)  # queued again by the restart
                continue
            output = job.spec.output or ""
            path = os.path.join(
                os.path.dirname(output), chunk_name(os.path.basename(output), job.id, segment.index)
            )
            spec = replace(job.spec, output=path, hardware=Hardware(split.hardware or "cpu"),
                           split=OFF, overwrite=True, callback_url=None, labels={})  # fmt: skip
            chunk = Job(id=state.job_id, spec=spec, seq=job.seq, max_attempts=job.max_attempts,
                        input_media=media, chunk=ChunkOf(job.id, segment))  # fmt: skip
            state.status, state.attempts, state.where, state.frames_done = "queued", 0, None, 0
            new.append(chunk)
            self._media[chunk.id] = media
        self._table.add_chunks(new)
        split.reused += reused
        done = sum(s.status == JobStatus.SUCCEEDED for s in split.chunks)
        why = split.why if fresh else f"{split.why}; resumed with {done} of " \
                                      f"{len(split.chunks)} chunks done"  # fmt: skip
        self._move(job, JobStatus.RUNNING, why, None)
        self._update(job)

    def _chunk(self, job_id: str) -> Job | None:
        try:
            return self._table.get(job_id)
        except FramefleetError:
            return None

    def parent_of(self, chunk: Job) -> Job | None:
        parent = self._table.jobs.get(chunk.chunk.parent) if chunk.chunk else None
        return parent if parent is not None and parent.split is not None else None

    def chunk_moved(self, chunk: Job) -> None:
        """A chunk changed state: show it on its job; a chunk that failed for good fails
        the job (naming it); the last one done lets the job stitch."""
        parent = self.parent_of(chunk)
        if parent is None or parent.split is None or chunk.chunk is None:
            return
        index = chunk.chunk.segment.index
        state = parent.split.chunks[index]
        if state.job_id != chunk.id:
            return
        _sync(state, chunk)
        if parent.status.terminal:  # its chunks wind down
            self._table.save(parent)
            return
        if chunk.status in (JobStatus.FAILED, JobStatus.CANCELLED):
            code = chunk.error_code or ErrorCode.FAILED
            where = f" on {state.where}" if state.where else ""
            why = f"{chunk.chunk.segment.label} {chunk.status}{where}: {chunk.reason}"
            status = JobStatus.CANCELLED if code is ErrorCode.CANCELLED else JobStatus.FAILED
            self._move(parent, status, why, code)
            return
        self._update(parent)
        if all(s.status == JobStatus.SUCCEEDED for s in parent.split.chunks):
            self._wake()

    def progressed(self, chunk: Job) -> None:
        """A chunk reported progress: the job's is the sum of its chunks'."""
        parent = self.parent_of(chunk)
        if parent is not None and parent.status is JobStatus.RUNNING:
            self._update(parent)

    def _update(self, parent: Job, stitch: ProgressSnapshot | None = None) -> None:
        split = parent.split
        if split is None or not split.frames:
            return
        done, fps = 0, 0.0
        for state in split.chunks:
            if state.status == JobStatus.SUCCEEDED:
                done += state.frames_done
                continue
            chunk = self._table.jobs.get(state.job_id)
            if chunk is not None and chunk.status is JobStatus.RUNNING and chunk.progress:
                state.frames_done = chunk.progress.frame or 0
                fps += chunk.progress.fps or 0.0
            done += state.frames_done if state.status == JobStatus.RUNNING else 0
        done = min(done, split.frames)
        left = split.frames - done
        eta = left / fps if fps > 0 else (stitch.eta_s if stitch else None)
        parent.progress = ProgressSnapshot(
            frame=done,
            fps=round(fps, 2) if fps else (stitch.fps if stitch else None),
            out_time_s=round(done * split.frame_s, 3),
            percent=round(100.0 * done / split.frames, 2),
            eta_s=round(eta, 1) if eta is not None else None,
            at=time.time(),
        )
        self._table.publish(parent, EventType.PROGRESS)

    # ---- stitching -------------------------------------------------------------------

    def stitch_progress(self, parent: Job, snapshot: ProgressSnapshot) -> None:
        self._update(parent, snapshot)

    def stitchable(self) -> list[Job]:
        """Running split jobs whose chunks are all done and whose stitch has not started."""
        return [
            job
            for job in self._table.jobs.values()
            if job.status is JobStatus.RUNNING
            and job.split is not None
            and job.split.chunked
            and job.split.chunks
            and all(s.status == JobStatus.SUCCEEDED for s in job.split.chunks)
            and not self._running(job.id)
        ]

    def place_stitch(self, job: Job, planner: Planner) -> Placement | None:
        """One core on a node that sees the output (the stitch copies; it encodes no
        video, and audio at most)."""
        media = self._media.get(job.id) or job.input_media
        video = media.video if media else None
        demand = Demand(JobKind.VALIDATE, Hardware.CPU, job.spec.codec,
                        video.width if video else 0, video.height if video else 0)  # fmt: skip
        seen = self._reach.seen_by(job.spec)
        avoid = planner.node_ids - seen if seen is not None else frozenset()
        placement = planner.place(demand, avoid)
        if placement is None:
            return None
        count = len(job.split.chunks) if job.split else 0
        return replace(placement, reason=f"stitching {count} chunks: {placement.reason}")

    @staticmethod
    def stitch_of(job: Job) -> Stitch:
        """What the stitch of ``job`` joins and checks."""
        split = job.split or Split.whole("")
        name = os.path.basename(job.spec.output or "")
        return Stitch(
            chunks=tuple(chunk_name(name, job.id, s.index) for s in split.segments),
            segments=tuple(split.segments),
            frame_s=split.frame_s,
            audio_end_s=split.audio_end_s,
        )

    @staticmethod
    def finished(job: Job, stitch_s: float, reason: str) -> str:
        """The reason a split job succeeded with (its result gains a ``split`` summary)."""
        split = job.split
        if split is None or not split.chunked or job.result is None:
            return reason
        took = time.time() - (split.started_at or job.created_at)
        nodes = len({s.node_id for s in split.chunks})
        job.result["split"] = {"chunks": len(split.chunks), "nodes": nodes,
                               "reused": split.reused, "wall_s": round(took, 3),
                               "stitch_s": round(stitch_s, 3)}  # fmt: skip
        return (
            f"completed in {took:.1f} s: {len(split.chunks)} chunks on {nodes} "
            f"node{'s' if nodes != 1 else ''}, joined and checked in {stitch_s:.1f} s"
        )

    # ---- ending ----------------------------------------------------------------------

    async def settled(self, job: Job) -> None:
        """Wait until ``job``, which ended, has stopped its encodes and removed its files."""
        task = self._ending.get(job.id)
        if task is not None:
            await asyncio.shield(task)

    def ended(self, job: Job) -> None:
        """``job`` ended: its chunks still queued are cancelled, those running stopped;
        then every chunk file is removed."""
        if job.split is None or not job.split.chunked or not job.split.chunks:
            return
        stops = [self._stop(job.id)] if self._running(job.id) else []  # its stitch
        for state in job.split.chunks:
            chunk = self._table.jobs.get(state.job_id)
            if chunk is None or chunk.status.terminal:
                continue
            if self._running(chunk.id):
                stops.append(self._stop(chunk.id))
            else:
                self._move(chunk, JobStatus.CANCELLED, f"its job {job.status}", ErrorCode.CANCELLED)
        task = asyncio.create_task(self._wind_down(job, stops))
        self._ending[job.id] = task
        task.add_done_callback(lambda _: self._ending.pop(job.id, None))

    async def _wind_down(self, job: Job, stops: list[Awaitable[None]]) -> None:
        await asyncio.gather(*stops, return_exceptions=True)
        self._reach.clear_partials(job, chunks=True)


def _sync(state: ChunkState, chunk: Job) -> None:
    """What the job shows of ``chunk``, from its record."""
    state.status, state.attempts = str(chunk.status), chunk.attempts
    if chunk.placement is not None:
        placed = chunk.placement
        state.node_id, state.where, state.encoder = placed.node_id, placed.where, placed.encoder
    if chunk.status is JobStatus.SUCCEEDED and chunk.chunk is not None:
        state.frames_done = chunk.chunk.segment.frames
        if chunk.started_at and chunk.finished_at:
            state.encode_s = round(chunk.finished_at - chunk.started_at, 3)


def _whole_why(split: str, source: str, output: str, media: MediaInfo) -> str | None:
    """Why a transcode is encoded whole before its frames are read; ``None``: it may be
    split."""
    duration = media.duration_s or 0.0
    if split == OFF:
        return "not split: split=off"
    if is_object_url(source) or is_object_url(output):
        return "not split: media in object storage are encoded whole (each chunk would " \
               "download the whole input)"  # fmt: skip
    if media.video is None or not media.video.fps:
        return "not split: the input has no video at a known frame rate"
    if split == AUTO and duration < AUTO_MIN_S:
        return f"not split: {duration:.1f} s is shorter than {AUTO_MIN_S:.0f} s (split=auto)"
    return None


def _planned(
    index: FrameIndex, target: float, floor: float, hardware: Hardware, asked: str
) -> Split:
    segments = plan_segments(index, target, floor_s=floor, max_chunks=MAX_CHUNKS)
    if isinstance(segments, str):
        return Split.whole(segments)
    frame_s = frame_duration(index.times)
    keyed = sum(s.keyframe for s in segments[1:])
    cuts = len(segments) - 1
    mean = sum(s.duration_s for s in segments) / len(segments)
    why = (
        f"split into {len(segments)} chunks of about {mean:.1f} s on {hardware}: {asked}; "
        f"{keyed} of {cuts} cuts at source keyframes"
    )
    if keyed < cuts:
        why += f", {cuts - keyed} decoded to the exact frame"
    return Split(SplitMode.CHUNKS, why, segments, frames=index.frames,
                 frame_s=frame_s,
                 hardware=str(hardware), audio_end_s=index.audio_end_s)  # fmt: skip
