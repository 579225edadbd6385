"""Split-and-stitch as a job graph: a long transcode's video encoded as chunks across the
farm, then joined without re-encoding, shown to the user as one job. Pure: the graph
engine runs it like any other kind.

- **Plan.** ``split=off``, media in object storage, a short input, or (for ``auto``) a
  farm with room for one encoder only keep a transcode whole, with that reason on the
  job. Otherwise its frames are read where the input is seen (one read, no decode).
- **Expand.** :func:`~cluster.media.split.plan_segments` cuts the frames; an input it
  cannot cut safely (variable frame rate, missing timestamps) is encoded whole, with the
  reason. The graph: one task per chunk (``c001``...; queued longest first, all on the
  one hardware the job was given: one encoder, identical settings), weighted by its
  frames, and a finishing task, the stitch (:func:`~cluster.media.argv.stitch_command`):
  the chunk files joined, the source's audio, subtitles and chapters added once, the
  result checked frame by frame before it is renamed into place.
- **Finish.** The reason says how many chunks ran on how many nodes and how long the
  join took; the result is the stitch's, with a ``split`` summary.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, replace
from typing import Any

from cluster.control.rules.dispatch import demand_for
from cluster.control.rules.graph import (
    Expansion,
    Facts,
    Farm,
    Finished,
    Keep,
    Need,
    Plan,
    Read,
    TaskPlan,
    Tasks,
    checked,
    ran_s,
)
from cluster.media.split import frame_duration, plan_segments
from cluster.model.graph import Graph, Phase, TaskRef
from cluster.model.jobs import Hardware, Job, JobKind, JobSpec, JobStatus
from cluster.model.media import MediaInfo, ScanType
from cluster.model.spec import Deinterlace
from cluster.model.split import (
    AUTO,
    OFF,
    ChunkState,
    FrameIndex,
    Segment,
    Split,
    SplitMode,
    Stitch,
    chunk_name,
)
from cluster.storage.urls import is_object_url

AUTO_MIN_S = 60.0
"""``split=auto`` splits inputs at least this long."""
AUTO_CHUNK_S = 20.0
"""``split=auto``'s shortest chunk target: each chunk costs an encoder start and a seek."""
CHUNKS_PER_ENCODER = 2
"""``split=auto`` cuts about this many chunks per idle encoder (longest first evens out
chunks of unequal length and nodes of unequal speed)."""
MAX_CHUNKS = 512
STITCH = "stitch"


@dataclass(frozen=True, slots=True)
class _Target:
    """What a split was planning while its frames were read."""

    target_s: float
    floor_s: float
    hardware: Hardware
    asked: str


class SplitKind:
    """Split-and-stitch (see the module docstring)."""

    name = "split"

    def plan(self, job: Job, media: MediaInfo, farm: Farm) -> Plan | None:
        spec = job.spec
        if spec.kind is not JobKind.TRANSCODE or job.task is not None:
            return None
        why = whole_why(spec, media)
        slots, hardware = (0, spec.hardware) if why else room(job, media, farm)
        if why is None and spec.split == AUTO and slots < 2:
            free = "no encoder" if slots == 0 else "one encoder only"
            why = f"not split: {free} free now where the media are seen (split=auto)"
        if why is not None:
            return Keep(Split.whole(why))
        return Read(Need.FRAMES, chunk_target(spec.split, media, slots, hardware))

    def expand(self, job: Job, media: MediaInfo, note: Any, facts: Facts) -> Keep | Expansion:
        if not isinstance(facts, FrameIndex):
            return Keep(Split.whole(f"not split: its frames could not be read ({facts})"))
        if not isinstance(note, _Target):
            raise TypeError(f"a split reads its frames for a target, not {note!r}")
        split = planned(facts, note)
        if not split.chunked:
            return Keep(split)
        return checked(_graph(job, media, split))

    def grow(self, parent: Job, tasks: Tasks) -> None:
        return None

    def finish(self, parent: Job, tasks: Tasks, now: float) -> Finished:
        graph, stitch = parent.graph, tasks[STITCH]
        started = graph.started_at if graph and graph.started_at else parent.created_at
        took = now - started
        chunks = [t for key, t in tasks.items() if key != STITCH]
        nodes = len({t.placement.node_id for t in chunks if t.placement})
        stitch_s = ran_s(stitch)
        result = dict(stitch.result) if stitch.result is not None else None
        reused = len(graph.reused) if graph else 0
        if result is not None and parent.started_at:  # the job waited until its chunks began
            timings = dict(result.get("timings") or {})
            timings["queued_s"] = round(parent.started_at - parent.created_at, 4)
            result["timings"] = timings
        if result is not None:
            result["split"] = {
                "chunks": len(chunks),
                "nodes": nodes,
                "reused": reused,
                "wall_s": round(took, 3),
                "stitch_s": round(stitch_s, 3),
            }
        reason = (
            f"completed in {took:.1f} s: {len(chunks)} chunks on {nodes} "
            f"node{'s' if nodes != 1 else ''}, joined and checked in {stitch_s:.1f} s"
        )
        return Finished(reason, result, tuple(stitch.notes))

    def adopt(self, job: Job) -> Expansion | None:
        """A job split by a framefleet before job graphs (its chunks stored as ``chunk``
        sub-jobs with these keys, its stitch run by the job itself): the same graph."""
        split, media = job.split, job.input_media
        if job.graph is not None or split is None or not split.chunks or media is None:
            return None
        return checked(_graph(job, media, split)) if split.chunked else None

    def view(self, parent: Job, tasks: Tasks) -> Split | None:
        """The job's ``split`` with each chunk's state, from its task."""
        split, graph = parent.split, parent.graph
        if split is None or graph is None:
            return split
        chunks = [_chunk(i, parent.id, s, tasks.get(_key(s)), graph.reused)
                  for i, s in enumerate(split.segments)]  # fmt: skip
        return replace(split, chunks=chunks, reused=len(graph.reused), started_at=graph.started_at)


def whole_why(spec: JobSpec, media: MediaInfo) -> str | None:
    """Why a transcode is encoded whole before its frames are read; ``None``: it may be
    split."""
    split, source, output = spec.split, spec.input, spec.output or ""
    duration = media.duration_s or 0.0
    if split == OFF:
        return "not split: split=off"
    if is_object_url(source) or is_object_url(output):
        return "not split: media in object storage are encoded whole (each chunk would " \
               "download the whole input)"  # fmt: skip
    if media.video is None or not media.video.fps:
        return "not split: the input has no video at a known frame rate"
    if spec.kind is JobKind.TRANSCODE and (why := _rate_changes(spec, media)) is not None:
        return f"not split: {why} changes the frame count; encoded whole"
    if split == AUTO and duration < AUTO_MIN_S:
        return f"not split: {duration:.1f} s is shorter than {AUTO_MIN_S:.0f} s (split=auto)"
    return None


def _rate_changes(spec: JobSpec, media: MediaInfo) -> str | None:
    """What in the job's picture makes other frames than the source's (chunks are cut and
    checked in the source's frames)."""
    scan = media.video.scan if media.video else None
    if spec.deinterlace is Deinterlace.FIELD:
        return "deinterlacing at the field rate"
    if spec.deinterlace is Deinterlace.AUTO and scan and scan.type is ScanType.TELECINED:
        return "inverse telecine"
    return None


def chunk_target(split: str, media: MediaInfo, slots: int, hardware: Hardware) -> _Target:
    """How long the chunks of a transcode that is split should be (``slots``: encoders
    free now, for ``split=auto``)."""
    if split == AUTO:
        target = max(AUTO_CHUNK_S, (media.duration_s or 0.0) / (slots * CHUNKS_PER_ENCODER))
        return _Target(target, AUTO_CHUNK_S / 2, hardware, f"{slots} encoders free (split=auto)")
    target = float(split)
    return _Target(target, min(target / 2, AUTO_CHUNK_S / 2), hardware, f"split={split} s asked")


def chunked_graph(job: Job, media: MediaInfo, split: Split) -> Expansion:
    """The chunk tasks and the stitch of ``job`` cut as ``split`` says (for a kind that
    encodes in chunks after other work: a search's final encode)."""
    return _graph(job, media, split)


def room(job: Job, media: MediaInfo, farm: Farm) -> tuple[int, Hardware]:
    """How many chunk encoders could start now where the media are seen, and on which
    hardware (``auto``: what the scheduler picks for the first)."""
    planner = farm.planner
    avoid = planner.node_ids - farm.seen if farm.seen is not None else frozenset()
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


def planned(index: FrameIndex, target: _Target) -> Split:
    """The cuts of ``index`` at about ``target``'s length, and why (or why not)."""
    segments = plan_segments(index, target.target_s, floor_s=target.floor_s,
                             max_chunks=MAX_CHUNKS)  # fmt: skip
    if isinstance(segments, str):
        return Split.whole(segments)
    frame_s = frame_duration(index.times)
    keyed = sum(s.keyframe for s in segments[1:])
    cuts = len(segments) - 1
    mean = sum(s.duration_s for s in segments) / len(segments)
    why = (
        f"split into {len(segments)} chunks of about {mean:.1f} s on {target.hardware}: "
        f"{target.asked}; {keyed} of {cuts} cuts at source keyframes"
    )
    if keyed < cuts:
        why += f", {cuts - keyed} decoded to the exact frame"
    return Split(SplitMode.CHUNKS, why, segments, frames=index.frames, frame_s=frame_s,
                 hardware=str(target.hardware), audio_end_s=index.audio_end_s)  # fmt: skip


def _key(segment: Segment) -> str:
    return f"c{segment.index + 1:03d}"


def _graph(job: Job, media: MediaInfo, split: Split) -> Expansion:
    """Every chunk (longest first: they even out), then the stitch that needs them all."""
    output = job.spec.output or ""
    folder, name = posixpath.dirname(output), posixpath.basename(output)
    hardware = Hardware(split.hardware or "cpu")
    base = replace(job.spec, hardware=hardware, split=OFF, callback_url=None, labels={})
    tasks: list[TaskPlan] = []
    for segment in sorted(split.segments, key=lambda s: (-s.frames, s.index)):
        path = posixpath.join(folder, chunk_name(name, job.id, segment.index))
        ref = TaskRef(_key(segment), weight=float(segment.frames), frames=segment.frames,
                      label=segment.label)  # fmt: skip
        tasks.append(TaskPlan(ref, replace(base, output=path, overwrite=True), segment))
    stitch = Stitch(
        chunks=tuple(chunk_name(name, job.id, s.index) for s in split.segments),
        segments=tuple(split.segments),
        frame_s=split.frame_s,
        audio_end_s=split.audio_end_s,
    )
    needs = tuple(_key(s) for s in split.segments)
    joins = f"stitching {len(split.segments)} chunks"
    tasks.append(TaskPlan(TaskRef(STITCH, needs=needs, finishing=True, doing=joins), base, stitch))
    graph = Graph(
        kind=SplitKind.name,
        phase=Phase.RUNNING,
        why=split.why,
        tasks=tuple(t.ref for t in tasks),
        unit="chunk",
        frame_s=split.frame_s,
    )
    return Expansion(graph, tuple(tasks), split)


def _chunk(
    index: int, parent: str, segment: Segment, task: Job | None, reused: frozenset[str]
) -> ChunkState:
    """What the job shows of one chunk, from its task."""
    key = _key(segment)
    state = ChunkState(index, f"{parent}-{key}", reused=key in reused)
    if task is None:
        return state
    state.status, state.attempts = str(task.status), task.attempts
    if task.placement is not None:
        placed = task.placement
        state.node_id, state.where, state.encoder = placed.node_id, placed.where, placed.encoder
    if task.status is JobStatus.SUCCEEDED:
        state.frames_done = segment.frames
        if task.started_at and task.finished_at:
            state.encode_s = round(task.finished_at - task.started_at, 3)
    elif task.status is JobStatus.RUNNING and task.progress is not None:
        state.frames_done = task.progress.frame or 0
    return state
