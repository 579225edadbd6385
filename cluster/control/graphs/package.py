"""A streaming package as a job graph: one master in, an ABR ladder out as HLS and DASH on
shared CMAF segments, encoded across the farm and shown to the user as one job. Pure: the
graph engine runs it like any other kind.

- **Plan.** A ``package`` job's renditions are resolved against its source
  (:func:`~cluster.media.ladder.resolve`: the ladder given or derived, never upscaled,
  every audio track, every text subtitle track), with one GOP and segment length for all.
- **Tasks.** One task per video rung and per audio track, each placed by the scheduler
  like any encode (a rung on a GPU or on cores, whichever is free; audio on cores), all
  with keyframes forced at the same frames, each writing a hidden MP4 beside the package.
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
from dataclasses import replace
from typing import Any

from cluster.control.rules.graph import (
    Expansion,
    Facts,
    Farm,
    Finished,
    Keep,
    Plan,
    TaskPlan,
    Tasks,
    checked,
    ran_s,
)
from cluster.media.ladder import resolve
from cluster.model.graph import Graph, Phase, TaskRef, task_id
from cluster.model.jobs import Hardware, Job, JobKind, JobStatus
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
from cluster.model.split import OFF, Segment

PACKAGE = "package"
REFERENCE_PIXELS = 1920 * 1080


class PackageKind:
    """A streaming package (see the module docstring)."""

    name = "package"

    def plan(self, job: Job, media: MediaInfo, farm: Farm) -> Plan | None:
        spec = job.spec
        if spec.kind is not JobKind.PACKAGE or job.task is not None:
            return None
        return checked(_graph(job, media, spec.package or PackageOptions()))

    def expand(self, job: Job, media: MediaInfo, note: Any, facts: Facts) -> Keep | Expansion:
        raise TypeError("a package reads nothing before its tasks are known")

    def finish(self, parent: Job, tasks: Tasks, now: float) -> Finished:
        graph, package = parent.graph, tasks[PACKAGE]
        started = graph.started_at if graph and graph.started_at else parent.created_at
        took = now - started
        encodes = [t for key, t in tasks.items() if key != PACKAGE]
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
        videos = sum(1 for r in result.get("renditions", ()) if r.get("kind") == "video")
        reason = (
            f"completed in {took:.1f} s: {videos} video renditions and "
            f"{len(encodes) - videos} audio encoded on {nodes} node{'s' if nodes != 1 else ''}, "
            f"{result.get('segments', 0)} segments packaged and checked in {packaged_s:.1f} s"
        )
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


def _graph(job: Job, media: MediaInfo, options: PackageOptions) -> Expansion:
    """A task per video rung and audio track, then the package that needs them all."""
    renditions, notes = resolve(options, media)
    video = media.require_video()
    fps = video.fps or 25.0
    gop = gop_frames(fps, options.gop_s)
    segment_frames = gop * max(1, round(options.segment_s / options.gop_s))
    rate = video.frame_rate or (round(fps * 1000), 1000)
    frame_rate = f"{rate[0]}/{rate[1]}"
    frames = media.frame_count or round((media.duration_s or 0.0) * fps)
    output = job.spec.output or ""
    folder, name = posixpath.dirname(output), posixpath.basename(output.rstrip("/"))
    whole = Segment(0, 0, frames, 0.0, media.duration_s or 0.0, True)
    base = replace(
        job.spec,
        kind=JobKind.TRANSCODE,
        split=OFF,
        callback_url=None,
        labels={},
        package=None,
        overwrite=True,
    )
    tasks: list[TaskPlan] = []
    files: dict[str, tuple[str, ...]] = {}
    for rendition in renditions:
        if rendition.kind == "text":
            continue
        path = rendition_file(name, task_id(job.id, rendition.key))
        files[rendition.key] = (path,)
        spec = replace(base, output=posixpath.join(folder, path), codec=_codec(rendition))
        if rendition.kind == "audio":
            spec = replace(spec, hardware=Hardware.CPU)
        ref = TaskRef(
            rendition.key,
            weight=_weight(rendition, frames),
            label=rendition.label(),
            doing=f"encoding {rendition.label()}",
        )
        tasks.append(TaskPlan(ref, spec, RenditionStep(rendition, gop)))
    step = PackageStep(
        renditions=tuple(renditions),
        files=files,
        chunks=(whole,),
        gop_frames=gop,
        segment_frames=segment_frames,
        segment_s=segment_frames / fps,
        frame_rate=frame_rate,
        duration_s=media.duration_s or 0.0,
        frames=frames,
        formats=options.formats,
    )
    needs = tuple(t.ref.key for t in tasks)
    count = sum(1 for r in renditions if r.kind == "video")
    doing = f"packaging {count} renditions"
    finishing = replace(job.spec, hardware=Hardware.CPU, callback_url=None, labels={})
    tasks.append(
        TaskPlan(TaskRef(PACKAGE, needs=needs, finishing=True, doing=doing), finishing, step)
    )
    rungs = ", ".join(f"{r.name} {r.codec}" for r in renditions if r.kind == "video")
    others = len(renditions) - count
    why = (
        f"packaged as {count} renditions ({rungs})"
        + (f" and {others} audio/text tracks" if others else "")
        + f" in {step.segment_s:.2f} s segments (keyframes every {gop} frames) for "
        + " and ".join(f.upper() for f in options.formats)
    )
    graph = Graph(
        kind=PackageKind.name,
        phase=Phase.RUNNING,
        why=why,
        tasks=tuple(t.ref for t in tasks),
        unit="rendition",
        frame_s=1.0 / fps,
    )
    view = PackageView(why, list(renditions), segment_s=step.segment_s, notes=notes)
    return Expansion(graph, tuple(tasks), view)


def _codec(rendition: Rendition) -> str:
    return rendition.codec if rendition.kind == "video" else "h264"


def _weight(rendition: Rendition, frames: int) -> float:
    """A rendition's share of the work: its pixels against 1080p's (audio: a little)."""
    if rendition.kind != "video":
        return max(1.0, frames * 0.02)
    return max(1.0, frames * rendition.width * rendition.height / REFERENCE_PIXELS)
