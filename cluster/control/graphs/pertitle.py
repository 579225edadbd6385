"""Per-title ladders: a package with ``target_vmaf`` (or ``target_xpsnr``) searches each
rung's CRF before it is encoded, then keeps the rungs worth their bits. Pure; the
package kind (:mod:`cluster.control.graphs.package`) runs it as the first rounds of
its graph.

- **Probes.** Every video rung is searched as a transcode's CRF is
  (:mod:`cluster.control.graphs.search`: the same samples, rounds and tolerance), each
  probe the rung's own encode of a sample (scaled, under its bitrate cap, its GOP
  fixed), scored at the display size: scaled back to the source's size, bicubic, so
  rungs compare on the screen they are watched on. All rungs' probes of a round run
  across the farm at once.
- **Each rung's CRF** (:func:`decisions`), per codec from the top down. The top rung:
  the largest CRF whose score reaches the target (out of its reach, the largest
  within :data:`KNEE` of the best it reached: more bits would not show). Each rung
  below: the best quality (the smallest CRF) whose bitrate is ``min_step`` times below
  the rung above's, so the ladder's bitrates are a step apart; a rung too dear even at
  its largest CRF is dropped.
- **The ladder** (:func:`choose`): from the smallest rung up, a rung that adds less
  than ``min_gain`` over the last rung kept is dropped. The kept rungs are encoded at
  their CRFs under their caps; the manifests' bandwidths are measured from what was
  encoded, as for any package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from cluster.control.graphs.search import (
    MAX_ROUNDS,
    around,
    decide,
    probe_memo,
    probe_spec_of,
    probes_of,
    reference_of,
    samples,
    spread,
)
from cluster.control.rules.graph import TaskPlan, Tasks
from cluster.model.graph import TaskRef
from cluster.model.jobs import Hardware, JobSpec
from cluster.model.media import MediaInfo
from cluster.model.package import PackageOptions, Rendition
from cluster.model.quality import Model, ScoreOptions, ScoreStep, model_for
from cluster.model.search import CRF_RANGES, Decision, Probe, ProbeStep, Target
from cluster.model.split import Segment

KNEE = 1.0
"""A rung that cannot reach the target takes the largest CRF this close to its best."""


@dataclass(frozen=True, slots=True)
class RungChoice:
    """What the search found for one rung, and whether the ladder keeps it."""

    rendition: Rendition
    crf: int
    score: float
    kbps: float
    kept: bool = True
    why: str = ""

    def to_dict(self) -> dict[str, Any]:
        r = self.rendition
        return {"rung": r.key, "name": f"{r.name} {r.codec}", "width": r.width,
                "height": r.height, "max_kbps": r.max_kbps, "crf": self.crf,
                "score": round(self.score, 3), "predicted_kbps": round(self.kbps),
                "kept": self.kept, "why": self.why}  # fmt: skip


def probes(
    spec: JobSpec,
    media: MediaInfo,
    rungs: dict[Rendition, tuple[int, ...]],
    target: Target,
    hardware: Hardware,
    gop: int,
    round_: int,
    width: int,
) -> list[TaskPlan]:
    """A task per rung, CRF and sample: the rung's encode of the sample, scored at the
    display size."""
    reference = reference_of(spec, media)
    options = ScoreOptions((target.metric.value,), Model.AUTO.value)
    model = str(model_for(Model.AUTO, reference.height))
    cuts = samples(reference)
    plans = []
    for rung, crfs in rungs.items():
        for crf in crfs:
            probe_spec = probe_spec_of(spec, rung.codec, hardware, crf, options)
            for sample in cuts:
                plans.append(_probe(probe_spec, media, rung, crf, sample, options, model, gop,
                                    round_, width, whole=len(cuts) == 1))  # fmt: skip
    return plans


def _probe(
    spec: JobSpec,
    media: MediaInfo,
    rung: Rendition,
    crf: int,
    sample: Segment,
    options: ScoreOptions,
    model: str,
    gop: int,
    round_: int,
    width: int,
    *,
    whole: bool,
) -> TaskPlan:
    reference = reference_of(spec, media)
    score = ScoreStep(reference, options, model, start=sample.start_frame, frames=sample.frames,
                      index=sample.index, open_end=whole and sample.start_frame == 0,
                      offset=sample.start_frame)  # fmt: skip
    step = ProbeStep(sample, crf, score, round_, rung, gop, width)
    label = f"probe {rung.name} {rung.codec} at CRF {crf}, sample {sample.index + 1}"
    memo = f"{probe_memo(spec, media, step)}:{rung.key}:{rung.max_kbps}:{gop}"
    ref = TaskRef(f"p{round_}{rung.key}c{crf:02d}s{sample.index + 1:02d}",
                  weight=float(sample.frames) * rung.width * rung.height / (1920 * 1080),
                  label=label, doing=f"probing {rung.name} {rung.codec} at CRF {crf}",
                  memo=memo)  # fmt: skip
    return TaskPlan(ref, spec, step)


def first_round(rungs: list[Rendition], width: int) -> dict[Rendition, tuple[int, ...]]:
    return {r: spread(*CRF_RANGES[r.codec], width) for r in rungs}


def decisions(
    target: Target,
    rungs: list[Rendition],
    tasks: Tasks,
    media: MediaInfo,
    min_step: float,
    width: int,
) -> dict[Rendition, Decision]:
    """Each rung's search after the rounds it ran (so a decision, once made, stays made
    while other rungs search on), per codec from the top rung down: the
    top for the target (or, out of its reach, for the knee of what it reached: within
    :data:`KNEE` of its best); each rung below for the best quality whose bitrate is
    ``min_step`` times below the rung above's (sizes do not end a search: the caps bound
    them). A rung whose rung above is still searched waits (no CRFs, none chosen)."""
    loose = replace(target, max_encoded_percent=float("inf"))
    seconds = media.duration_s or 0.0
    found: dict[Rendition, Decision] = {}
    for codec in dict.fromkeys(r.codec for r in rungs):
        above: Probe | None = None
        for i, rung in enumerate(sorted((r for r in rungs if r.codec == codec),
                                        key=lambda r: -r.height)):  # fmt: skip
            probed = probes_of(tasks, media, rung.key)
            rounds = len({p.round for p in probed})  # the rounds it was probed in
            if i == 0:
                decision = _top(loose, rung, probed, rounds, width)
            elif above is None:
                decision = Decision(f"{rung.name} {rung.codec} waits for the rung above")
            else:
                budget = _kbps(above, seconds) / min_step
                decision = within(budget, rung, probed, rounds, seconds, width)
            found[rung] = decision
            above = _picked(decision) or above  # a rung dropped: the next one's budget stays
    return found


def _top(target: Target, rung: Rendition, probed: list[Probe], rounds: int, width: int) -> Decision:
    decision = decide(target, probed, rung.codec, rounds, width)
    if not decision.failed or not probed:
        return decision
    best = max(p.score for p in probed)  # out of its reach: the knee of what it reached
    knee = decide(replace(target, value=round(best - KNEE, 3)), probed, rung.codec, rounds,
                  width)  # fmt: skip
    reach = (f"{rung.name} {rung.codec} cannot reach {target.words} at the display size "
             f"(at best {best:.2f}); ")  # fmt: skip
    return replace(knee, why=reach + knee.why, failed=False)


def within(
    budget: float,
    rung: Rendition,
    probed: list[Probe],
    rounds: int,
    seconds: float,
    width: int,
) -> Decision:
    """The smallest CRF (the best quality) whose bitrate is at most ``budget`` kb/s, as
    :func:`~cluster.control.graphs.search.decide` brackets a score: CRFs to try next, the
    one chosen, or ``failed`` when even the largest CRF costs more."""
    lo, hi = CRF_RANGES[rung.codec]
    name = f"{rung.name} {rung.codec}"
    if not probed:  # none scored yet (or its round's probes found nothing)
        crfs = spread(lo, hi, width)
        if rounds >= MAX_ROUNDS:
            return Decision(f"{name}: no probe was scored", failed=True)
        return Decision(f"{name}: trying CRF {', '.join(map(str, crfs))}", crfs)
    fits = sorted((p for p in probed if _kbps(p, seconds) <= budget), key=lambda p: p.crf)
    over = sorted((p for p in probed if _kbps(p, seconds) > budget), key=lambda p: p.crf)
    if not fits:
        top = over[-1]
        if top.crf >= hi or rounds >= MAX_ROUNDS:
            return Decision(f"even CRF {top.crf} needs {_kbps(top, seconds):.0f} kb/s, more than "
                            f"its {budget:.0f} kb/s below the rung above", failed=True,
                            probes=tuple(probed))  # fmt: skip
        crfs = spread(top.crf + 1, hi, width)
        return Decision(f"{name}: every CRF tried costs over {budget:.0f} kb/s; trying "
                        f"{', '.join(map(str, crfs))}", crfs, probes=tuple(probed))  # fmt: skip
    best = fits[0]
    below = [p for p in over if p.crf < best.crf]
    why = f"CRF {best.crf} chosen for {name}: {_kbps(best, seconds):.0f} kb/s, within " \
          f"{budget:.0f} kb/s (a step below the rung above)"  # fmt: skip
    if not below:
        if best.crf <= lo or rounds >= MAX_ROUNDS:
            return Decision(why, chosen=best.crf, probes=tuple(probed))
        crfs = spread(lo, best.crf - 1, width)
        return Decision(f"{name}: every CRF tried fits {budget:.0f} kb/s; trying "
                        f"{', '.join(map(str, crfs))}", crfs, probes=tuple(probed))  # fmt: skip
    fail = below[-1]
    if best.crf - fail.crf <= 1 or rounds >= MAX_ROUNDS:
        return Decision(why, chosen=best.crf, probes=tuple(probed))
    # Bitrate falls about exponentially with the CRF: interpolate its logarithm.
    a, b = math.log(_kbps(fail, seconds)), math.log(max(_kbps(best, seconds), 1e-9))
    guess = fail.crf + (a - math.log(budget)) / (a - b) * (best.crf - fail.crf) if a > b \
        else (fail.crf + best.crf) / 2  # fmt: skip
    crfs = around(guess, fail.crf, best.crf, width)
    return Decision(f"{name}: {budget:.0f} kb/s lies between CRF {fail.crf} and {best.crf}; "
                    f"trying {', '.join(map(str, crfs))}", crfs, probes=tuple(probed))  # fmt: skip


def _kbps(probe: Probe, seconds: float) -> float:
    return probe.predicted_bytes * 8 / 1000 / seconds if seconds else float(probe.predicted_bytes)


def choose(
    options: PackageOptions, found: dict[Rendition, Decision], duration_s: float
) -> list[RungChoice]:
    """The ladder: each rung at its CRF, kept or dropped (see the module docstring)."""
    choices: list[RungChoice] = []
    for codec in dict.fromkeys(r.codec for r in found):
        below: RungChoice | None = None
        for rung in sorted((r for r in found if r.codec == codec), key=lambda r: r.height):
            decision = found[rung]
            picked = _picked(decision)
            if picked is None:  # too dear even at its largest CRF
                choices.append(RungChoice(rung, 0, 0.0, 0.0, kept=False, why=decision.why))
                continue
            choice = RungChoice(rung, picked.crf, picked.score, _kbps(picked, duration_s),
                                why=decision.why)  # fmt: skip
            if below is not None and picked.score - below.score < options.min_gain:
                choice = replace(choice, kept=False, why=(
                    f"adds {picked.score - below.score:.2f} over {below.rendition.name} "
                    f"(less than min_gain {options.min_gain:g})"))  # fmt: skip
            else:
                below = choice
            choices.append(choice)
    return choices


def _picked(decision: Decision) -> Probe | None:
    return next((p for p in decision.probes if p.crf == decision.chosen), None)
