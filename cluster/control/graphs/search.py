"""A transcode to a target quality as a job graph: a CRF search whose sample encodes and
scores run across the farm in parallel, then the encode at the CRF found, then a score
of the whole output beside what the search predicted. Pure: the graph engine runs it
like any other kind; the graph grows a round at a time (:meth:`SearchKind.grow`).

- **Samples** (:func:`samples`, as ab-av1 takes them): 20 s each, one per 12 minutes of
  input (at least one), spread evenly; the whole input as one sample when the samples
  would cover 85 % of it.
- **Rounds** (:func:`decide`). Each round probes :data:`WIDTH` CRFs at once (up to
  :data:`MAX_WIDTH` on a farm with more encoders free when the search begins), every
  sample of each a task (placed like any encode, on the hardware the final encode will
  use: a search on x264 does not choose a CRF for NVENC). A probe encodes its sample and
  scores it against the same frames of the input on the node that encoded it. The
  first round spreads its CRFs over the codec's range; later ones interpolate between
  the largest CRF that passed and the smallest that failed. A probe that lands within
  the tolerance above the target (0.1, doubling each round) is taken; else the search
  ends when two neighbouring CRFs bracket the target (the passing one is taken), or
  after :data:`MAX_ROUNDS` rounds.
- **Ends.** A target not met even at the smallest CRF, or met only by an output larger
  than ``max_encoded_percent`` of the input (predicted from the samples' sizes), ends
  the job with that reason, before anything is encoded in full.
- **Then** the encode at the chosen CRF (the job's own output, written and checked as
  any transcode's), then its score in ranges across the farm; the result holds the
  encode's, every probe (CRF, score, predicted size, round), why the search stopped, and
  the measured score beside the predicted one.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any

from cluster.control.graphs.quality import ranges, summary
from cluster.control.graphs.split import (
    STITCH,
    SplitKind,
    chunk_target,
    chunked_graph,
    planned,
    room,
    whole_why,
)
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
from cluster.errors import ErrorCode
from cluster.media.quality import output_media
from cluster.model.graph import Graph, Phase, TaskRef
from cluster.model.jobs import Hardware, Job, JobKind, JobSpec, JobStatus
from cluster.model.media import MediaInfo
from cluster.model.quality import (
    Model,
    Reference,
    ScoreOptions,
    ScoreStep,
    Tally,
    merged,
    model_for,
    pooled,
)
from cluster.model.search import CRF_RANGES, Decision, Probe, ProbeStep, Target
from cluster.model.split import AUTO, OFF, FrameIndex, Segment, Split

SAMPLE_S = 20.0
SAMPLE_EVERY_S = 720.0
WHOLE_FROM = 0.85
"""Samples that would cover this share of the input: the whole input is one sample."""
WIDTH = 4
"""CRFs probed at once in a round (at least)."""
MAX_WIDTH = 8
MAX_ROUNDS = 5
TOLERANCE = 0.1
"""A probe this close above the target (doubling each round) is taken."""
SCORE_SLOTS = 4
"""The final score is cut in ranges as if this many scorers were free."""
ENCODE = "encode"


class SearchKind:
    """A transcode with ``target_vmaf`` or ``target_xpsnr`` (see the module docstring)."""

    name = "search"

    def plan(self, job: Job, media: MediaInfo, farm: Farm) -> Plan | None:
        spec, target = job.spec, job.spec.target
        if spec.kind is not JobKind.TRANSCODE or job.task is not None or target is None:
            return None
        slots, hardware = room(job, media, farm)
        if spec.hardware is not Hardware.AUTO:
            hardware = spec.hardware
        width = width_for(slots, len(samples(reference_of(spec, media))))
        whole = whole_why(spec, media)
        if whole is None and spec.split == AUTO and slots < 2:
            whole = "not split: one encoder or none free (split=auto)"
        if whole is not None:
            return checked(_first_round(job, media, hardware, width, Split.whole(whole)))
        # Long enough to encode in chunks once the CRF is found: its frames read first.
        cut = chunk_target(spec.split, media, slots, hardware)
        return Read(Need.FRAMES, _Start(hardware, width, cut))

    def expand(self, job: Job, media: MediaInfo, note: Any, facts: Facts) -> Expansion:
        if not isinstance(note, _Start):
            raise TypeError(f"a search reads its frames for its start, not {note!r}")
        if isinstance(facts, FrameIndex):
            split = planned(facts, note.cut)
        else:
            split = Split.whole(f"not split: its frames could not be read ({facts})")
        return checked(_first_round(job, media, note.hardware, note.width, split))

    def grow(self, parent: Job, tasks: Tasks) -> Expansion | Refuse | None:
        spec, target, media = parent.spec, parent.spec.target, parent.input_media
        if target is None or media is None:
            raise ValueError("a search needs its target and its input's probe")
        encoded = _encoded(tasks)
        if encoded is not None:
            if any(k.startswith("q") for k in tasks):
                return None  # encoded and scored: finish
            return _final_score(parent, encoded, target)
        width = width_of(tasks)
        decision = decide(target, probes_of(tasks, media), spec.codec, round_of(tasks), width)
        hardware = hardware_of(tasks)
        if decision.failed:
            return Refuse(decision.why, ErrorCode.TARGET_UNMET)
        if decision.crfs:
            reference = reference_of(spec, media)
            plans = _probes(spec, media, reference, target, hardware, decision.crfs,
                            round_of(tasks) + 1, width)  # fmt: skip
            graph = Graph(kind=self.name, phase=Phase.RUNNING, why=decision.why,
                          tasks=tuple(t.ref for t in plans))  # fmt: skip
            return Expansion(graph, tuple(plans), None)
        chosen = decision.chosen
        if chosen is None:
            raise ValueError("a search decision must try CRFs, choose one, or fail")
        final = replace(spec, quality=chosen, hardware=hardware, target_vmaf=None,
                        target_xpsnr=None, max_encoded_percent=None, split=OFF, score=None,
                        callback_url=None, labels={})  # fmt: skip
        split = parent.split
        if split is not None and split.chunked:  # in chunks across the farm, then joined
            chunks = chunked_graph(replace(parent, spec=final), media, split)
            why = f"{decision.why}; encoding in {len(split.segments)} chunks"
            graph = Graph(kind=self.name, phase=Phase.RUNNING, why=why,
                          tasks=chunks.graph.tasks)  # fmt: skip
            return Expansion(graph, chunks.tasks, split)
        frames = media.frame_count or 0
        ref = TaskRef(ENCODE, weight=float(frames or 1), frames=frames,
                      doing=f"encoding at CRF {chosen}")  # fmt: skip
        graph = Graph(kind=self.name, phase=Phase.RUNNING, why=decision.why, tasks=(ref,))
        return Expansion(graph, (TaskPlan(ref, final, None),), None)

    def finish(self, parent: Job, tasks: Tasks, now: float) -> Finished:
        target, media = parent.spec.target, parent.input_media
        encode = _encoded(tasks)
        if target is None or media is None or encode is None or encode.task is None:
            raise ValueError("a search finished without its target, probe or encode")
        probes = probes_of(tasks, media)
        decision = decide(target, probes, parent.spec.codec, round_of(tasks), width_of(tasks))
        chosen = encode.spec.quality
        predicted = next((p for p in probes if p.crf == chosen), None)
        tallies = merged(Tally.from_dict(d) for k, t in tasks.items() if k.startswith("q")
                         for d in (t.result or {}).get("tallies", []))  # fmt: skip
        frame_s = 1.0 / (media.video.fps or 25.0) if media.video else 0.04
        metrics = {str(m): pooled(t, frame_s) for m, t in tallies.items()}
        measured = metrics.get(target.metric.value, {}).get("mean")
        result = dict(encode.result or {})
        result["search"] = {
            "target": target.to_dict(),
            "crf": chosen,
            "why": decision.why,
            "probes": [p.to_dict() for p in sorted(probes, key=lambda p: (p.round, p.crf))],
            "predicted": round(predicted.score, 3) if predicted else None,
            "measured": measured,
            "rounds": round_of(tasks),
            "nodes": len({t.placement.node_id for t in tasks.values() if t.placement}),
        }
        result["quality"] = {"metrics": metrics}
        if STITCH in tasks:
            result["split"] = {"chunks": sum(1 for k in tasks if k.startswith("c"))}
        size = result.get("size_bytes")
        share = f", {100 * size / media.size_bytes:.0f} % of the input's size" \
            if size and media.size_bytes else ""  # fmt: skip
        guess = f", predicted {predicted.score:.2f}" if predicted else ""
        reason = (f"{summary({target.metric.value: metrics.get(target.metric.value, {})})} "
                  f"for target {target.value:g}{guess}: CRF {chosen} found in {round_of(tasks)} "
                  f"round(s) of {len(probes)} CRF(s){share}")  # fmt: skip
        return Finished(reason, result, tuple(encode.notes))

    def view(self, parent: Job, tasks: Tasks) -> Split | None:
        """Its split (how the final encode is cut), with each chunk's state."""
        return SplitKind().view(parent, tasks)

    def adopt(self, job: Job) -> Expansion | None:
        return None


@dataclass(frozen=True, slots=True)
class _Start:
    """What a search was starting while the input's frames were read."""

    hardware: Hardware
    width: int
    cut: Any
    """How long the final encode's chunks should be (split's target)."""


def _first_round(
    job: Job, media: MediaInfo, hardware: Hardware, width: int, split: Split
) -> Expansion:
    spec, target = job.spec, job.spec.target
    if target is None:
        raise ValueError("a search needs its target")
    reference = reference_of(spec, media)
    lo, hi = CRF_RANGES[spec.codec]
    crfs = spread(lo, hi, width)
    why = f"searching the CRF for {target.words} on {hardware}: round 1, CRFs " \
          f"{', '.join(map(str, crfs))} on {len(samples(reference))} sample(s)"  # fmt: skip
    tasks = _probes(spec, media, reference, target, hardware, crfs, 1, width)
    graph = Graph(kind=SearchKind.name, phase=Phase.RUNNING, why=why,
                  tasks=tuple(t.ref for t in tasks), unit="probe",
                  frame_s=reference.frame_s)  # fmt: skip
    return Expansion(graph, tuple(tasks), split)


def _encoded(tasks: Tasks) -> Job | None:
    """The task that wrote the output (the whole encode, or the stitch of its chunks)."""
    return tasks.get(ENCODE) or tasks.get(STITCH)


def spread(lo: int, hi: int, width: int) -> tuple[int, ...]:
    """Up to ``width`` CRFs spread evenly over ``[lo, hi]`` (all of them if that few)."""
    if hi < lo:
        return ()
    if hi - lo + 1 <= width:
        return tuple(range(lo, hi + 1))
    picks = {round(lo + (hi - lo) * (i + 1) / (width + 1)) for i in range(width)}
    return tuple(sorted(picks))


def width_for(slots: int, samples: int) -> int:
    """CRFs a round probes at once: :data:`WIDTH`, more when the farm has room for more
    probes (every sample of each) at once, at most :data:`MAX_WIDTH`."""
    return max(WIDTH, min(MAX_WIDTH, slots // max(1, samples)))


def around(guess: float, low: int, high: int, width: int) -> tuple[int, ...]:
    """Up to ``width`` CRFs strictly between ``low`` and ``high``, nearest ``guess`` first."""
    inside = range(low + 1, high)
    return tuple(sorted(sorted(inside, key=lambda c: (abs(c - guess), c))[:width]))


def decide(
    target: Target, probes: list[Probe], codec: str, rounds: int, width: int = WIDTH
) -> Decision:
    """After ``rounds`` rounds: the next CRFs to try, the CRF chosen, or why the target
    cannot be met (see the module docstring)."""
    lo, hi = CRF_RANGES[codec]
    goal, words = target.value, target.words
    if not probes:  # none scored (a round whose probes found nothing): start again
        if rounds >= MAX_ROUNDS:
            return Decision(f"{words}: no probe of this search was scored", failed=True)
        crfs = spread(lo, hi, width)
        return Decision(f"round {rounds + 1}: nothing scored yet; trying CRF "
                        f"{', '.join(map(str, crfs))}", crfs)  # fmt: skip
    passing = sorted((p for p in probes if p.score >= goal), key=lambda p: p.crf)
    failing = sorted((p for p in probes if p.score < goal), key=lambda p: p.crf)
    tolerance = TOLERANCE * 2 ** (rounds - 1)
    close = [p for p in passing if p.score - goal <= tolerance]
    best = passing[-1] if passing else None
    if close:
        pick = max(close, key=lambda p: p.crf)
        return _chosen(target, pick, f"{pick.score:.2f} at CRF {pick.crf} is within "
                                     f"{tolerance:g} of {words}", probes)  # fmt: skip
    if best is None:
        lowest = failing[0]
        if lowest.crf <= lo or rounds >= MAX_ROUNDS:
            return Decision(f"{words} cannot be met: {lowest.score:.2f} at CRF {lowest.crf}, "
                            f"the best this search tries (CRF {lo} to {hi}); lower the "
                            "target", failed=True, probes=tuple(probes))  # fmt: skip
        crfs = spread(lo, lowest.crf - 1, width)
        return Decision(f"round {rounds + 1}: every CRF tried is below {words}; trying "
                        f"CRF {', '.join(map(str, crfs))}", crfs, probes=tuple(probes))  # fmt: skip
    above = [p for p in failing if p.crf > best.crf]
    if not above:
        if best.crf >= hi or rounds >= MAX_ROUNDS:
            return _chosen(target, best, f"{best.score:.2f} at CRF {best.crf}, the largest "
                                         "this search tries, still passes", probes)  # fmt: skip
        crfs = spread(best.crf + 1, hi, width)
        return Decision(f"round {rounds + 1}: every CRF tried passes {words}; trying "
                        f"CRF {', '.join(map(str, crfs))}", crfs, probes=tuple(probes))  # fmt: skip
    fail = above[0]
    if fail.crf - best.crf <= 1 or rounds >= MAX_ROUNDS:
        return _chosen(target, best, f"CRF {best.crf} passes ({best.score:.2f}) and CRF "
                                     f"{fail.crf} does not ({fail.score:.2f})", probes)  # fmt: skip
    slope = (best.score - fail.score) / (fail.crf - best.crf)
    guess = best.crf + (best.score - goal) / slope if slope > 0 else (best.crf + fail.crf) / 2
    crfs = around(guess, best.crf, fail.crf, width)
    return Decision(f"round {rounds + 1}: {words} lies between CRF {best.crf} "
                    f"({best.score:.2f}) and {fail.crf} ({fail.score:.2f}); trying CRF "
                    f"{', '.join(map(str, crfs))}", crfs, probes=tuple(probes))  # fmt: skip


def _chosen(target: Target, pick: Probe, why: str, probes: list[Probe]) -> Decision:
    if pick.predicted_percent > target.max_encoded_percent:
        return Decision(
            f"{target.words} needs CRF {pick.crf}: an output of about "
            f"{pick.predicted_percent:.0f} % of the input's size, above max_encoded_percent "
            f"{target.max_encoded_percent:g}; nothing was encoded (lower the target or raise "
            "max_encoded_percent)",
            failed=True,
            probes=tuple(probes),
        )
    return Decision(f"CRF {pick.crf} chosen: {why}", chosen=pick.crf, probes=tuple(probes))


def samples(reference: Reference) -> tuple[Segment, ...]:
    """Where the search samples the input (see the module docstring)."""
    frames, frame_s = reference.frames, reference.frame_s
    duration = frames * frame_s
    count = max(1, math.ceil(duration / SAMPLE_EVERY_S))
    if not frames or count * SAMPLE_S >= WHOLE_FROM * duration:
        return (Segment(0, 0, frames, 0.0, duration, True),)
    length = round(SAMPLE_S / frame_s)
    found = []
    for i in range(count):
        center = (i + 0.5) * duration / count
        start = min(max(0, round((center - SAMPLE_S / 2) / frame_s)), frames - length)
        found.append(Segment(i, start, length, start * frame_s, length * frame_s, False))
    return tuple(found)


def probes_of(tasks: Tasks, media: MediaInfo, rung: str | None = None) -> list[Probe]:
    """What every probe task (of the package rung ``rung``; ``None``: of the transcode)
    found, by CRF: the samples' tallies merged, and the output size their encodes
    predict."""
    by_crf: dict[int, list[Job]] = defaultdict(list)
    for task in tasks.values():
        step = task.task.step if task.task else None
        if not isinstance(step, ProbeStep) or task.status is not JobStatus.SUCCEEDED:
            continue
        if (step.rendition.key if step.rendition else None) == rung:
            by_crf[step.crf].append(task)
    total_s = media.duration_s or 0.0
    found = []
    for crf, done in sorted(by_crf.items()):
        steps = [t.task.step for t in done if t.task and isinstance(t.task.step, ProbeStep)]
        metric = steps[0].score.options.metric_set[0]
        results = [t.result or {} for t in done]
        tallies = merged(Tally.from_dict(d) for r in results for d in r.get("tallies", []))
        tally = tallies.get(metric)
        if tally is None or not tally.count:
            continue
        size = sum(int(r.get("size_bytes") or 0) for r in results)
        seconds = sum(s.sample.duration_s for s in steps) or 1.0
        predicted = int(size / seconds * total_s) if total_s else size
        share = 100.0 * predicted / media.size_bytes if media.size_bytes else 0.0
        found.append(Probe(crf, tally.total / tally.count, predicted, share,
                           max(s.round for s in steps), len(done)))  # fmt: skip
    return found


def width_of(tasks: Tasks) -> int:
    """How many CRFs the search's rounds probe at once (its first probes say)."""
    for task in tasks.values():
        if task.task is not None and isinstance(task.task.step, ProbeStep):
            return task.task.step.width
    return WIDTH


def round_of(tasks: Tasks) -> int:
    rounds = [t.task.step.round for t in tasks.values()
              if t.task is not None and isinstance(t.task.step, ProbeStep)]  # fmt: skip
    return max(rounds, default=0)


def hardware_of(tasks: Tasks) -> Hardware:
    """The hardware the probes ran on (the final encode runs there too)."""
    for task in tasks.values():
        if task.task is not None and isinstance(task.task.step, ProbeStep):
            return task.spec.hardware
    return Hardware.CPU


def reference_of(spec: JobSpec, media: MediaInfo) -> Reference:
    """The input as the reference of its samples' scores."""
    video = media.require_video()
    width, height = video.width, video.height
    if video.rotation in (90, 270):
        width, height = height, width
    rate = video.frame_rate if video.frame_rate and all(video.frame_rate) else (25, 1)
    frames = media.frame_count or round((media.duration_s or 0.0) * rate[0] / rate[1])
    return Reference(spec.input, width, height, (rate[0], rate[1]), video.bit_depth, frames)


def _probes(
    spec: JobSpec,
    media: MediaInfo,
    reference: Reference,
    target: Target,
    hardware: Hardware,
    crfs: tuple[int, ...],
    round_: int,
    width: int,
) -> list[TaskPlan]:
    """One task per CRF and sample: a quality job's spec (the input against itself) whose
    step encodes the sample first."""
    options = ScoreOptions((target.metric.value,), Model.AUTO.value)
    model = str(model_for(Model.AUTO, reference.height))
    plans = []
    cuts = samples(reference)
    for crf in crfs:
        probe_spec = probe_spec_of(spec, spec.codec, hardware, crf, options)
        for sample in cuts:
            whole = len(cuts) == 1 and sample.start_frame == 0
            score = ScoreStep(reference, options, model, start=sample.start_frame,
                              frames=sample.frames, index=sample.index, open_end=whole,
                              offset=sample.start_frame)  # fmt: skip
            step = ProbeStep(sample, crf, score, round_, width=width)
            label = f"probe CRF {crf}, sample {sample.index + 1}"
            ref = TaskRef(f"p{round_}c{crf:02d}s{sample.index + 1:02d}",
                          weight=float(sample.frames), label=label,
                          doing=f"probing CRF {crf} on sample {sample.index + 1}",
                          memo=probe_memo(probe_spec, media, step))  # fmt: skip
            plans.append(TaskPlan(ref, probe_spec, step))
    return plans


MEMO_VERSION = 1
"""Part of every probe's memo key: raised when what a probe measures changes."""


def probe_spec_of(
    spec: JobSpec, codec: str, hardware: Hardware, crf: int, options: ScoreOptions
) -> JobSpec:
    """A probe's spec: a quality job of the input against itself, with the encode's
    settings (codec, speed, 10-bit, hardware) and its CRF (``quality``: the watchdog
    expects an encode and a score)."""
    return JobSpec(kind=JobKind.QUALITY, input=spec.input, reference=spec.input, codec=codec,
                   speed=spec.speed, hardware=hardware, priority=spec.priority, quality=crf,
                   keep_10bit=spec.keep_10bit and codec != "h264", score=options)  # fmt: skip


def probe_memo(spec: JobSpec, media: MediaInfo, step: ProbeStep) -> str:
    """What identifies a probe's result: the input (its path, identity, size, length and
    frames), the encoder's settings, the CRF, the sample and the metric."""
    sample, score = step.sample, step.score
    facts = [MEMO_VERSION, spec.input, media.version, media.size_bytes, media.duration_s,
             media.frame_count, spec.codec, str(spec.hardware), str(spec.speed),
             spec.keep_10bit, step.crf, sample.start_frame, sample.frames,
             list(score.options.metrics), score.model]  # fmt: skip
    digest = hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:32]
    return f"probe:{digest}"


def _final_score(parent: Job, encode: Job, target: Target) -> Expansion:
    """The output, scored in ranges against the input."""
    media = parent.input_media
    output = (encode.result or {}).get("output") or parent.spec.output
    if media is None or output is None:
        raise ValueError("the final score needs the input's probe and the output")
    reference = reference_of(parent.spec, media)
    options = ScoreOptions((target.metric.value,), Model.AUTO.value)
    model = str(model_for(Model.AUTO, reference.height))
    spec = JobSpec(kind=JobKind.QUALITY, input=parent.spec.output or output,
                   reference=parent.spec.input, priority=parent.spec.priority,
                   score=options)  # fmt: skip
    made = output_media(parent.spec, media, spec.input)
    plans = []
    for step in ranges(reference, options, model, SCORE_SLOTS):
        key = f"q{step.index + 1:03d}"
        ref = TaskRef(key, weight=float(step.frames or reference.frames or 1) / 2,
                      label=f"score of the output, {step.label}",
                      doing=f"scoring the output, {step.label}")  # fmt: skip
        plans.append(TaskPlan(ref, spec, step, made))
    why = f"encoded at CRF {encode.spec.quality}; scoring the output against the input"
    graph = Graph(kind=SearchKind.name, phase=Phase.RUNNING, why=why,
                  tasks=tuple(p.ref for p in plans))  # fmt: skip
    return Expansion(graph, tuple(plans), None)
