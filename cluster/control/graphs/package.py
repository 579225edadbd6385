"""A streaming package as a job graph: one master in, an ABR ladder out as HLS and DASH on
shared CMAF segments, encoded across the farm and shown to the user as one job. Pure: the
graph engine runs it like any other kind.

- **Plan.** A ``package`` job's renditions are resolved against its source
  (:func:`~cluster.media.ladder.resolve`: the ladder given or derived, never upscaled,
  every audio track, every text subtitle track), with one GOP and segment length for all.
- **Tasks.** One task per video rung and per audio track, each placed by the scheduler
  like any encode (a rung on a GPU or on cores, whichever is free; audio on cores), all
  with keyframes forced at the same frames, each writing a hidden MP4 beside the package.
  A long master on a farm with encoders free has its heavier rungs cut into chunks at
  segment boundaries (its frames read first, as split does; about two chunks' worth of
  work per free encoder), so a 4-rung ladder of a 2-hour master fills a farm; the
  package joins a rung's chunks without re-encoding.
  Then the finishing task, the package (:class:`~cluster.model.package.PackageStep`):
  the renditions copied into CMAF fragments, cut into segments at the same frames,
  described by playlists and an MPD written from what was measured, checked, and renamed
  onto the destination in one step.
- **Finish.** The reason says how many renditions ran on how many nodes and how long
  packaging took; the result is the package task's (every rendition's measured
  bandwidth, CODECS and segment count).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field, replace
from typing import Any

from cluster.control.graphs import pertitle
from cluster.control.graphs.search import (
    hardware_of,
    reference_of,
    round_of,
    samples,
    width_for,
    width_of,
)
from cluster.control.graphs.split import (
    AUTO_CHUNK_S,
    CHUNKS_PER_ENCODER,
    MAX_CHUNKS,
    room,
    whole_why,
)
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
from cluster.media.ladder import resolve
from cluster.media.split import even_frames, segments_at
from cluster.model.graph import Graph, Phase, TaskRef, task_id
from cluster.model.jobs import Hardware, Job, JobKind, JobSpec, JobStatus
from cluster.model.media import MediaInfo
from cluster.model.package import (
    PackageOptions,
    PackageStep,
    PackageView,
    Rendition,
    RenditionState,
    RenditionStep,
    gop_frames,
    rendition_file,
)
from cluster.model.search import ProbeStep, Target
from cluster.model.split import AUTO, OFF, FrameIndex, Segment
from cluster.storage.urls import is_object_url

PACKAGE = "package"
REFERENCE_PIXELS = 1920 * 1080
MIN_CHUNK_S = AUTO_CHUNK_S
"""No chunk holds less work than this many seconds of 1080p frames (an encoder start and
a seek cost more than they save below it)."""


@dataclass(frozen=True, slots=True)
class _Plan:
    """A package's renditions and their cadence, decided before its frames are read."""

    options: PackageOptions
    renditions: tuple[Rendition, ...]
    notes: tuple[str, ...]
    gop: int
    segment_frames: int
    frames: int
    chunks: dict[str, int]
    """How many chunks each video rendition (or rung group) is cut into (1: whole)."""
    why_chunks: str
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Rung groups (by key: ``gh264``): the rungs of one codec encoded from one decode of
    each chunk, on cores. Empty: a task per rung."""


class PackageKind:
    """A streaming package (see the module docstring)."""

    name = "package"

    def plan(self, job: Job, media: MediaInfo, farm: Farm) -> Plan | None:
        spec = job.spec
        if spec.kind is not JobKind.PACKAGE or job.task is not None:
            return None
        if spec.target is not None:  # a per-title ladder: each rung's CRF searched first
            return checked(_title_search(job, media, farm, spec.target))
        planned = _planned(job, media, farm)
        if any(n > 1 for n in planned.chunks.values()):
            return Read(Need.FRAMES, planned)
        return checked(_graph(job, media, planned, None))

    def expand(self, job: Job, media: MediaInfo, note: Any, facts: Facts) -> Keep | Expansion:
        if not isinstance(note, _Plan):
            raise TypeError(f"a package reads its frames for a plan, not {note!r}")
        if not isinstance(facts, FrameIndex):
            whole = replace(note, chunks=dict.fromkeys(note.chunks, 1),
                            why_chunks=f"renditions encoded whole: its frames could not be "
                            f"read ({facts})")  # fmt: skip
            return checked(_graph(job, media, whole, None))
        return checked(_graph(job, media, note, facts))

    def grow(self, parent: Job, tasks: Tasks) -> Expansion | None:
        target, media = parent.spec.target, parent.input_media
        if target is None or media is None or PACKAGE in tasks:
            return None  # packaged: finish
        plan = _whole_plan(parent, media)
        videos = [r for r in plan.renditions if r.kind == "video"]
        rounds = round_of(tasks)
        found = pertitle.decisions(target, videos, tasks, media, plan.options.min_step,
                                   width_of(tasks))  # fmt: skip
        pending = {r: d.crfs for r, d in found.items() if d.crfs}
        waiting = [r for r, d in found.items() if not d.crfs and d.chosen is None
                   and not d.failed]  # fmt: skip
        if waiting and not pending:
            raise ValueError("a per-title search left rungs waiting with nothing to probe")
        hardware = hardware_of(tasks)
        if pending:
            more = pertitle.probes(parent.spec, media, pending, target, hardware, plan.gop,
                                   rounds + 1, width_of(tasks))  # fmt: skip
            words = "; ".join(found[r].why for r in pending)
            graph = Graph(kind=self.name, phase=Phase.RUNNING,
                          why=f"per-title ladder, round {rounds + 1}: {words}",
                          tasks=tuple(t.ref for t in more))  # fmt: skip
            return Expansion(graph, tuple(more), parent.package)
        choices = pertitle.choose(plan.options, found, media.duration_s or 0.0)
        crfs = {c.rendition.key: c.crf for c in choices if c.kept}
        kept = [r for r in plan.renditions if r.kind != "video" or r.key in crfs]
        renditions = tuple(r if r.kind != "video" else replace(r, quality=crfs[r.key])
                           for r in kept)  # fmt: skip
        dropped = [f"{c.rendition.name} {c.rendition.codec} dropped: {c.why}" for c in choices
                   if not c.kept]  # fmt: skip
        chosen = ", ".join(f"{c.rendition.name} {c.rendition.codec} at CRF {c.crf}"
                           for c in choices if c.kept)  # fmt: skip
        ladder = replace(plan, renditions=renditions, notes=(*plan.notes, *dropped),
                         why_chunks=f"per-title ladder for {target.words}: {chosen}")  # fmt: skip
        built = _graph(replace(parent, spec=replace(parent.spec, hardware=hardware)), media,
                       ladder, None)  # fmt: skip
        return Expansion(replace(built.graph, why=built.graph.why), built.tasks, built.view)

    def finish(self, parent: Job, tasks: Tasks, now: float) -> Finished:
        graph, package = parent.graph, tasks[PACKAGE]
        started = graph.started_at if graph and graph.started_at else parent.created_at
        took = now - started
        encodes = [t for key, t in tasks.items() if key != PACKAGE and not _probe(t)]
        nodes = len({t.placement.node_id for t in encodes if t.placement})
        result = dict(package.result) if package.result is not None else {}
        timings = dict(result.get("timings") or {})
        if parent.started_at:
            timings["queued_s"] = round(parent.started_at - parent.created_at, 4)
        packaged_s = ran_s(package)
        result["timings"] = timings
        result["package"] = {
            "tasks": len(encodes),
            "nodes": nodes,
            "wall_s": round(took, 3),
            "packaging_s": round(packaged_s, 3),
        }
        kinds = [r.get("kind") for r in result.get("renditions", ())]
        chunks = sum(1 for t in encodes if t.task and isinstance(t.task.step, RenditionStep)
                     and t.task.step.segment is not None)  # fmt: skip
        cut = f" (in {chunks} chunks)" if chunks else ""
        reason = (
            f"completed in {took:.1f} s: {kinds.count('video')} video renditions{cut} and "
            f"{kinds.count('audio')} audio encoded on {nodes} node{'s' if nodes != 1 else ''}, "
            f"{result.get('segments', 0)} segments packaged and checked in {packaged_s:.1f} s"
        )
        target, media = parent.spec.target, parent.input_media
        if target is not None and media is not None:  # a per-title ladder: how it was chosen
            plan = _whole_plan(parent, media)
            videos = [r for r in plan.renditions if r.kind == "video"]
            found = pertitle.decisions(target, videos, tasks, media, plan.options.min_step,
                                   width_of(tasks))  # fmt: skip
            choices = pertitle.choose(plan.options, found, media.duration_s or 0.0)
            result["ladder"] = {"target": target.to_dict(),
                                "rungs": [c.to_dict() for c in choices]}  # fmt: skip
            reason += f"; a per-title ladder for {target.words} of " \
                      f"{sum(c.kept for c in choices)} rungs"  # fmt: skip
        planned = parent.package.notes if parent.package else []
        return Finished(reason, result, (*planned, *package.notes))

    def view(self, parent: Job, tasks: Tasks) -> PackageView | None:
        view, graph = parent.package, parent.graph
        if view is None or graph is None:
            return view
        states = []
        for ref in graph.tasks:
            state = RenditionState(ref.key, ref.label or ref.doing)
            task = tasks.get(ref.key)
            if task is not None:
                state.status, state.attempts = str(task.status), task.attempts
                if task.placement is not None:
                    placed = task.placement
                    state.node_id, state.where = placed.node_id, placed.where
                    state.encoder = placed.encoder
                if task.status is JobStatus.SUCCEEDED:
                    state.percent = 100.0
                elif task.status is JobStatus.RUNNING and task.progress is not None:
                    state.percent = task.progress.percent or 0.0
            states.append(state)
        return replace(view, tasks=states)

    def adopt(self, job: Job) -> Expansion | None:
        return None


def _planned(job: Job, media: MediaInfo, farm: Farm) -> _Plan:
    """The renditions, one GOP and segment length for all, and how many chunks each video
    rendition is cut into: none for a short master, for ``split=off`` or with one encoder
    free; else about two chunks' worth of work per free encoder, no chunk under
    :data:`MIN_CHUNK_S` of 1080p work (``split=SECONDS``: chunks about that long). On
    cores, the rungs of one codec become a group whose chunks decode once for all."""
    spec = job.spec
    options = spec.package or PackageOptions()
    renditions, notes = resolve(options, media)
    fps = media.require_video().fps or 25.0
    gop = gop_frames(fps, options.gop_s)
    segment_frames = gop * max(1, round(options.segment_s / options.gop_s))
    frames = media.frame_count or round((media.duration_s or 0.0) * fps)
    videos = [r for r in renditions if r.kind == "video"]
    chunks = {r.key: 1 for r in videos}
    why = whole_why(spec, media)
    if why is None and frames > 2 * segment_frames:
        top = max(videos, key=lambda r: r.width * r.height)
        encode = replace(spec, kind=JobKind.TRANSCODE, codec=top.codec, package=None)
        scaled = replace(media, video=replace(media.require_video(), width=top.width,
                                              height=top.height))  # fmt: skip
        slots, hardware = room(replace(job, spec=encode), scaled, farm)  # its top rung's
        work = {r.key: _weight(r, frames) / fps for r in videos}  # seconds of 1080p frames
        if spec.split == AUTO:
            if slots < 2:
                why = "renditions encoded whole: one encoder or none free (split=auto)"
            target = max(MIN_CHUNK_S, sum(work.values()) / max(1, slots * CHUNKS_PER_ENCODER))
        else:  # chunks about that long: each unit's work in that many seconds
            target = 0.0
        groups: dict[str, tuple[str, ...]] = {}
        if why is None and hardware is Hardware.CPU and not is_object_url(spec.output or ""):
            # On cores, a rung group's chunk decodes once for all its rungs (as one ffmpeg
            # with a split filter would); chunks keep every encoder busy.
            for codec in dict.fromkeys(r.codec for r in videos):
                keys = tuple(r.key for r in videos if r.codec == codec)
                if len(keys) > 1:
                    groups[f"g{codec}"] = keys
                    work[f"g{codec}"] = sum(work.pop(k) for k in keys)
        if why is None:
            most = max(1, min(MAX_CHUNKS, frames // segment_frames))
            if target > 0:
                chunks = {k: max(1, min(most, round(w / target))) for k, w in work.items()}
            else:
                count = max(1, min(most, round(frames / fps / float(spec.split))))
                chunks = dict.fromkeys(work, count)
            formed = set(groups)
            groups = {g: keys for g, keys in groups.items() if chunks[g] > 1}
            for g in [g for g in chunks if g in formed and g not in groups]:
                chunks.pop(g)  # a group too short to cut: its rungs run side by side
                chunks.update(dict.fromkeys(_group_keys(videos, g), 1))
            cut = sum(n for n in chunks.values() if n > 1)
            plural = "s" if len(groups) != 1 else ""
            grouped = f", {len(groups)} rung group{plural} decoded once per chunk" if groups else ""
            why = f"{cut} chunks at segment boundaries{grouped} ({slots} encoders free)" \
                if cut else "renditions encoded whole: none is long enough to cut"  # fmt: skip
            return _Plan(options, tuple(renditions), tuple(notes), gop, segment_frames, frames,
                         chunks, why, groups)  # fmt: skip
    why = (why or "renditions encoded whole").removeprefix("not split: ")
    return _Plan(options, tuple(renditions), tuple(notes), gop, segment_frames, frames,
                 chunks, why)  # fmt: skip


def _probe(task: Job) -> bool:
    """A per-title ladder's probe (not a rendition)."""
    return task.task is not None and isinstance(task.task.step, ProbeStep)


def _whole_plan(job: Job, media: MediaInfo) -> _Plan:
    """The renditions and their cadence, each encoded whole (a per-title ladder's)."""
    options = job.spec.package or PackageOptions()
    renditions, notes = resolve(options, media)
    fps = media.require_video().fps or 25.0
    gop = gop_frames(fps, options.gop_s)
    segment_frames = gop * max(1, round(options.segment_s / options.gop_s))
    frames = media.frame_count or round((media.duration_s or 0.0) * fps)
    chunks = {r.key: 1 for r in renditions if r.kind == "video"}
    return _Plan(options, tuple(renditions), tuple(notes), gop, segment_frames, frames,
                 chunks, "renditions encoded whole")  # fmt: skip


def _title_search(job: Job, media: MediaInfo, farm: Farm, target: Target) -> Expansion:
    """A per-title ladder's first round: every rung's CRFs probed on the hardware its top
    rung would be placed on now."""
    plan = _whole_plan(job, media)
    videos = [r for r in plan.renditions if r.kind == "video"]
    top = max(videos, key=lambda r: r.width * r.height)
    encode = replace(job.spec, kind=JobKind.TRANSCODE, codec=top.codec, package=None,
                     target_vmaf=None, target_xpsnr=None, max_encoded_percent=None)  # fmt: skip
    scaled = replace(media, video=replace(media.require_video(), width=top.width,
                                          height=top.height))  # fmt: skip
    slots, hardware = room(replace(job, spec=encode), scaled, farm)
    if job.spec.hardware is not Hardware.AUTO:
        hardware = job.spec.hardware
    cuts = len(samples(reference_of(job.spec, media)))
    width = width_for(slots // max(1, len(videos)), cuts)  # every rung's probes at once
    tasks = pertitle.probes(job.spec, media, pertitle.first_round(videos, width), target,
                            hardware, plan.gop, 1, width)  # fmt: skip
    rungs = ", ".join(f"{r.name} {r.codec}" for r in videos)
    why = (f"per-title ladder: searching each rung's CRF ({rungs}) for {target.words} at the "
           f"display size on {hardware}, round 1")  # fmt: skip
    graph = Graph(kind=PackageKind.name, phase=Phase.RUNNING, why=why,
                  tasks=tuple(t.ref for t in tasks), unit="probe",
                  frame_s=1.0 / (media.require_video().fps or 25.0))  # fmt: skip
    view = PackageView(why, list(plan.renditions), segment_s=plan.segment_frames / (
        media.require_video().fps or 25.0), notes=list(plan.notes))  # fmt: skip
    return Expansion(graph, tuple(tasks), view)


def _group_keys(videos: list[Rendition], group: str) -> list[str]:
    return [r.key for r in videos if f"g{r.codec}" == group]


def _cuts(plan: _Plan, key: str, index: FrameIndex | None) -> tuple[Segment, ...]:
    """One rendition's chunks, cut at segment boundaries (the same frames in every
    rendition cut as often); none: it is encoded whole."""
    count = plan.chunks.get(key, 1)
    if index is None or count <= 1:
        return ()
    frame_s, problem = even_frames(index)
    if problem is not None:
        return ()
    exact = index.frames / plan.segment_frames  # a short last segment is a part of one
    count = min(count, max(1, int(exact)))
    starts = sorted({round(j * exact / count) for j in range(1, count)})  # even shares
    cuts = [n * plan.segment_frames for n in starts if 0 < n * plan.segment_frames < index.frames]
    return tuple(segments_at(index, cuts, frame_s))


def _graph(job: Job, media: MediaInfo, plan: _Plan, index: FrameIndex | None) -> Expansion:
    """A task per video rung (or per chunk of one) and per audio track, then the package
    that needs them all."""
    renditions, options = plan.renditions, plan.options
    video = media.require_video()
    fps = video.fps or 25.0
    rate = video.frame_rate or (round(fps * 1000), 1000)
    frames = index.frames if index is not None else plan.frames
    output = job.spec.output or ""
    folder, name = posixpath.dirname(output), posixpath.basename(output.rstrip("/"))
    base = replace(job.spec, kind=JobKind.TRANSCODE, split=OFF, callback_url=None, labels={},
                   package=None, overwrite=True)  # fmt: skip
    tasks: list[TaskPlan] = []
    files: dict[str, tuple[str, ...]] = {}
    chunks: dict[str, tuple[Segment, ...]] = {}
    grouped = {k for keys in plan.groups.values() for k in keys}
    for group, keys in plan.groups.items():
        cut = _cuts(plan, group, index)
        if len(cut) < 2:  # its frames cannot be cut on: a task per rung after all
            grouped -= set(keys)
            continue
        members = [r for r in renditions if r.key in keys]
        tasks += _group_tasks(job, name, folder, base, plan.gop, group, members, cut, files)
        chunks.update(dict.fromkeys(keys, cut))
    for rendition in renditions:
        if rendition.kind == "text" or rendition.key in grouped:
            continue
        spec = replace(base, codec=_codec(rendition))
        if rendition.kind == "audio":
            spec = replace(spec, hardware=Hardware.CPU)
        cut = _cuts(plan, rendition.key, index) if rendition.kind == "video" else ()
        chunks[rendition.key] = cut or (Segment(0, 0, frames, 0.0, media.duration_s or 0.0, True),)
        names = []
        for segment in cut if len(cut) > 1 else (None,):
            key = rendition.key if segment is None else f"{rendition.key}c{segment.index + 1:03d}"
            path = rendition_file(name, task_id(job.id, key))
            names.append(path)
            share = segment.frames if segment is not None else frames
            label = rendition.label() + (f", {segment.label}" if segment is not None else "")
            ref = TaskRef(key, weight=_weight(rendition, share), label=label,
                          doing=f"encoding {label}")  # fmt: skip
            encode = RenditionStep(rendition, plan.gop, segment)
            tasks.append(TaskPlan(ref, replace(spec, output=posixpath.join(folder, path)), encode))
        files[rendition.key] = tuple(names)
    tasks.sort(key=lambda t: -t.ref.weight)  # the longest first: they even out
    step = PackageStep(
        renditions=tuple(renditions),
        files=files,
        chunks=chunks,
        gop_frames=plan.gop,
        segment_frames=plan.segment_frames,
        segment_s=plan.segment_frames / fps,
        frame_rate=f"{rate[0]}/{rate[1]}",
        duration_s=media.duration_s or 0.0,
        frames=frames,
        formats=options.formats,
    )
    needs = tuple(t.ref.key for t in tasks)
    count = sum(1 for r in renditions if r.kind == "video")
    doing = f"packaging {count} renditions"
    finishing = replace(job.spec, hardware=Hardware.CPU, callback_url=None, labels={})
    tasks.append(TaskPlan(TaskRef(PACKAGE, needs=needs, finishing=True, doing=doing),
                          finishing, step))  # fmt: skip
    rungs = ", ".join(f"{r.name} {r.codec}" for r in renditions if r.kind == "video")
    others = len(renditions) - count
    why = (
        f"packaged as {count} renditions ({rungs})"
        + (f" and {others} audio/text tracks" if others else "")
        + f" in {step.segment_s:.2f} s segments (keyframes every {plan.gop} frames) for "
        + " and ".join(f.upper() for f in options.formats)
        + f"; {plan.why_chunks}"
    )
    graph = Graph(kind=PackageKind.name, phase=Phase.RUNNING, why=why,
                  tasks=tuple(t.ref for t in tasks), unit="rendition",
                  frame_s=1.0 / fps)  # fmt: skip
    most = max((len(c) for c in chunks.values()), default=1)
    view = PackageView(why, list(renditions), segment_s=step.segment_s, chunks=most,
                       notes=list(plan.notes))  # fmt: skip
    return Expansion(graph, tuple(tasks), view)


def _group_tasks(
    job: Job,
    name: str,
    folder: str,
    base: JobSpec,
    gop: int,
    group: str,
    rungs: list[Rendition],
    cut: tuple[Segment, ...],
    files: dict[str, tuple[str, ...]],
) -> list[TaskPlan]:
    """A rung group's tasks: one per chunk, each encoding every rung of the group from one
    decode of its frames, into a file per rung (``.<package>.<job>-<group>c001.<rung>.mp4``)."""
    tasks = []
    spec = replace(base, codec=rungs[0].codec, hardware=Hardware.CPU)
    for segment in cut:
        key = f"{group}c{segment.index + 1:03d}"
        names = tuple(rendition_file(name, f"{task_id(job.id, key)}.{r.key}") for r in rungs)
        for rung, path in zip(rungs, names, strict=True):
            files[rung.key] = (*files.get(rung.key, ()), path)
        heights = ", ".join(r.name for r in rungs)
        label = f"{rungs[0].codec} rungs {heights}, {segment.label}"
        weight = sum(_weight(r, segment.frames) for r in rungs)
        ref = TaskRef(key, weight=weight, label=label, doing=f"encoding {label}")
        step = RenditionStep(rungs[0], gop, segment, tuple(rungs[1:]), names)
        tasks.append(TaskPlan(ref, replace(spec, output=posixpath.join(folder, names[0])), step))
    return tasks


def _codec(rendition: Rendition) -> str:
    return rendition.codec if rendition.kind == "video" else "h264"


def _weight(rendition: Rendition, frames: int) -> float:
    """A rendition's share of the work: its pixels against 1080p's (audio: a little)."""
    if rendition.kind != "video":
        return max(1.0, frames * 0.02)
    return max(1.0, frames * rendition.width * rendition.height / REFERENCE_PIXELS)
