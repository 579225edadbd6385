"""A quality job as a job graph: a distorted video scored against its reference, long
files in time ranges on several nodes at once, pooled frame by frame. Pure: the graph
engine runs it like any other kind.

- **Plan.** The reference is probed (:data:`~cluster.control.rules.graph.Need.REFERENCE`)
  and checked against the distorted (the same length within 5 %, a known frame rate);
  a pair that does not fit fails with the reason. The VMAF model ``auto`` resolves by the
  reference's height.
- **Tasks.** A reference shorter than :data:`PARALLEL_FROM_S`, a farm with room for one
  scorer only, or a distorted at another frame rate (brought to the reference's from
  its first frame) is scored in one pass; a distorted a little shorter than its
  reference is cut by its own frames. Otherwise its frames are cut into even ranges
  (about two per free scorer, none shorter than :data:`MIN_RANGE_S`, boundaries on the
  subsample's grid), each read with :data:`LEAD_FRAMES` frames before and after it, so
  the motion features of its first and last frames are those of a single pass. Each
  task goes to a node whose quality ffmpeg computes every metric asked.
- **Finish.** The tallies of every range are merged exactly (counts, sums, histograms,
  worst frames: :mod:`cluster.model.quality`), so the pooled mean, harmonic mean, min
  and percentiles are those of one pass over the whole file. Below ``min_vmaf``, the
  job fails with its score and the result.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from typing import Any

from cluster.control.rules.dispatch import demand_for
from cluster.control.rules.graph import (
    Expansion,
    Facts,
    Farm,
    Finished,
    Need,
    Plan,
    Read,
    Refuse,
    TaskPlan,
    Tasks,
    checked,
)
from cluster.errors import ErrorCode, FramefleetError, InputError
from cluster.media.quality import comparable, describe_alignment
from cluster.model.graph import Graph, Phase, TaskRef
from cluster.model.jobs import Job, JobKind
from cluster.model.media import MediaInfo
from cluster.model.quality import (
    MODEL_VERSIONS,
    Metric,
    Model,
    Reference,
    ScoreOptions,
    ScoreStep,
    Tally,
    merged,
    model_for,
    pooled,
)

PARALLEL_FROM_S = 30.0
"""A reference at least this long is scored in ranges when scorers are free."""
MIN_RANGE_S = 10.0
RANGES_PER_SCORER = 2
MAX_RANGES = 256
LEAD_FRAMES = 4
"""Frames read before and after each range (VMAF's motion looks one frame each way)."""
WHOLE = "score"


class QualityKind:
    """A quality job (see the module docstring)."""

    name = "quality"

    def plan(self, job: Job, media: MediaInfo, farm: Farm) -> Plan | None:
        if job.spec.kind is not JobKind.QUALITY or job.task is not None:
            return None
        return Read(Need.REFERENCE, _room(job, media, farm))

    def expand(self, job: Job, media: MediaInfo, note: Any, facts: Facts) -> Expansion | Refuse:
        if isinstance(facts, FramefleetError):
            return Refuse(f"reference: {facts}", facts.code)
        if not isinstance(facts, MediaInfo) or job.spec.reference is None:
            raise TypeError(f"a quality job reads its reference's probe, not {facts!r}")
        try:
            reference = comparable(media, replace(facts, path=job.spec.reference))
        except InputError as exc:
            return Refuse(str(exc), exc.code)
        options = job.spec.score or ScoreOptions()
        slots = note if isinstance(note, int) else 1
        return checked(_graph(job, media, reference, options, slots))

    def grow(self, parent: Job, tasks: Tasks) -> None:
        return None

    def finish(self, parent: Job, tasks: Tasks, now: float) -> Finished:
        graph = parent.graph
        steps = [t.task.step for t in tasks.values() if t.task is not None]
        scored = [s for s in steps if isinstance(s, ScoreStep)]
        if not scored:
            raise ValueError("a quality job finished without a scoring task")
        step = scored[0]
        tallies = merged(Tally.from_dict(d) for t in tasks.values()
                         for d in (t.result or {}).get("tallies", []))  # fmt: skip
        frame_s = step.reference.frame_s
        metrics = {str(m): pooled(tallies[m], frame_s) for m in step.options.metric_set
                   if m in tallies}  # fmt: skip
        started = graph.started_at if graph and graph.started_at else parent.created_at
        nodes = len({t.placement.node_id for t in tasks.values() if t.placement})
        media = parent.input_media
        result: dict[str, Any] = {
            "distorted": parent.spec.input,
            "reference": parent.spec.reference,
            "metrics": metrics,
            "model": MODEL_VERSIONS[Model(step.model)] if Metric.VMAF in tallies else None,
            "alignment": describe_alignment(step, media) if media else None,
            "subsample": step.options.subsample,
            "ranges": len(scored),
            "nodes": nodes,
            "wall_s": round(now - started, 3),
        }
        took = f"{len(scored)} range{'s' if len(scored) != 1 else ''} on {nodes} " \
               f"node{'s' if nodes != 1 else ''} in {now - started:.1f} s"  # fmt: skip
        words = summary(metrics)
        floor = step.options.min_vmaf
        vmaf = metrics.get(Metric.VMAF.value, {})
        if floor is not None and vmaf.get("mean") is not None and vmaf["mean"] < floor:
            worst = vmaf["worst"][0] if vmaf.get("worst") else None
            where = f"; worst frame {worst['frame']} at {worst['time_s']:.2f} s: " \
                    f"{worst['value']:.2f}" if worst else ""  # fmt: skip
            why = f"VMAF {vmaf['mean']:.2f} is below min_vmaf {floor:g} " \
                  f"(p1 {vmaf['p1']:.2f}{where})"  # fmt: skip
            return Finished(why, result, failed=ErrorCode.BELOW_QUALITY)
        return Finished(f"{words}: {took}", result)

    def view(self, parent: Job, tasks: Tasks) -> None:
        return None

    def adopt(self, job: Job) -> Expansion | None:
        return None


def summary(metrics: dict[str, dict[str, Any]]) -> str:
    """The scores in words: ``VMAF 94.31 (p1 90.02, min 88.70), PSNR 41.20 dB``."""
    words = []
    for name, figures in metrics.items():
        if figures.get("mean") is None:
            continue
        unit = " dB" if name in (Metric.PSNR.value, Metric.XPSNR.value) else ""
        digits = 4 if name == Metric.SSIM.value else 2
        words.append(f"{name.upper()} {figures['mean']:.{digits}f}{unit} (p1 "
                     f"{figures['p1']:.{digits}f}, min {figures['min']:.{digits}f})")  # fmt: skip
    return ", ".join(words) or "no frame scored"


def _room(job: Job, media: MediaInfo, farm: Farm) -> int:
    """How many scorers could start now."""
    planner, demand = farm.planner, demand_for(job, media)
    avoid = planner.node_ids - farm.seen if farm.seen is not None else frozenset()
    slots = 0
    while slots < MAX_RANGES and planner.place(demand, avoid) is not None:
        slots += 1
    return slots


def ranges(
    reference: Reference, options: ScoreOptions, model: str, slots: int
) -> tuple[ScoreStep, ...]:
    """The passes that score ``reference`` (one, or even ranges: see the module
    docstring)."""
    frames, frame_s = reference.frames, reference.frame_s
    whole = ScoreStep(reference, options, model)
    if slots < 2 or not frames or frames * frame_s < PARALLEL_FROM_S:
        return (whole,)
    count = min(MAX_RANGES, slots * RANGES_PER_SCORER, int(frames * frame_s // MIN_RANGE_S))
    grid = options.subsample
    units = math.ceil(frames / grid)
    count = min(count, units)
    if count < 2:
        return (whole,)
    lead = math.ceil(LEAD_FRAMES / grid) * grid
    cuts = [min(frames, round(i * units / count) * grid) for i in range(count + 1)]
    cuts[-1] = frames
    steps = [
        ScoreStep(reference, options, model, start=a, frames=b - a, lead=lead, tail=lead,
                  index=i, open_end=i == count - 1)
        for i, (a, b) in enumerate(itertools.pairwise(cuts))
        if b > a
    ]  # fmt: skip
    return tuple(steps)


def _graph(
    job: Job, media: MediaInfo, reference: Reference, options: ScoreOptions, slots: int
) -> Expansion:
    model = str(model_for(Model(options.model), reference.height))
    video = media.require_video()
    if video.frame_rate is not None and tuple(video.frame_rate) != reference.frame_rate:
        slots = 1  # brought to the reference's rate from its first frame: one pass
    made = media.frame_count or round((media.duration_s or 0.0) / reference.frame_s)
    if made and reference.frames:  # a distorted a little shorter: its frames are scored
        reference = replace(reference, frames=min(reference.frames, made))
    steps = ranges(reference, options, model, slots)
    base = replace(job.spec, callback_url=None, labels={})
    tasks = []
    for step in steps:
        if step.whole:
            ref = TaskRef(WHOLE, weight=float(reference.frames or 1), frames=reference.frames,
                          doing="scoring the whole file")  # fmt: skip
        else:
            ref = TaskRef(f"s{step.index + 1:03d}", weight=float(step.frames), frames=step.frames,
                          label=step.label, doing=f"scoring {step.label}")  # fmt: skip
        tasks.append(TaskPlan(ref, base, step))
    names = ", ".join(options.metrics)
    why = (f"scoring {names} in one pass" if len(steps) == 1 else
           f"scoring {names} in {len(steps)} ranges of about "
           f"{steps[0].frames * reference.frame_s:.1f} s ({slots} scorers free)")  # fmt: skip
    graph = Graph(kind=QualityKind.name, phase=Phase.RUNNING, why=why,
                  tasks=tuple(t.ref for t in tasks), unit="range",
                  frame_s=reference.frame_s)  # fmt: skip
    return Expansion(graph, tuple(tasks), None)
