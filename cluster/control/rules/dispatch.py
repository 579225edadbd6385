"""One dispatch round, decided without side effects: which queued jobs start where, which
can never run on this cluster, and what to ask the autoscaler for.

The coordinator gathers the ready jobs (probed, past their backoff, in queue order) and
two planners, calls :func:`plan_round`, and applies the result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from cluster.control.rules.policy import avoided
from cluster.media.argv import thumbnail_times
from cluster.media.encoders import cpu_encoder
from cluster.model.jobs import Hardware, Job, JobKind
from cluster.model.media import MediaInfo
from cluster.model.package import RenditionStep
from cluster.model.quality import ScoreStep
from cluster.model.search import ProbeStep
from cluster.model.split import Segment
from cluster.scheduling.costs import CostModel
from cluster.scheduling.fairshare import FairShare
from cluster.scheduling.finish import FinishTime
from cluster.scheduling.planner import Demand, Placement, Planner, autoscaler_bundle
from cluster.storage.scratch import human

MAX_AUTOSCALER_BUNDLES = 256


def demand_for(job: Job, media: MediaInfo) -> Demand:
    """What ``job`` asks of a node, from its spec and its probed input. A finishing task
    of a job graph (a join, a package) copies: one core, no encoder, like a decode."""
    video = media.video
    step = job.task.step if job.task is not None else None
    score = job.spec.score
    # What scores: a quality job's passes; a transcode's whole encode or its stitch.
    metrics = frozenset(score.metrics) if score and not isinstance(step, Segment) else frozenset()
    if job.task is not None and job.task.finishing:
        return Demand(JobKind.VALIDATE, Hardware.CPU, job.spec.codec,
                      video.width if video else 0, video.height if video else 0,
                      metrics=metrics)  # fmt: skip
    width, height = (video.width, video.height) if video else (0, 0)
    if isinstance(step, ProbeStep):  # a search's sample: encoded as the final encode is
        if step.rendition is not None:  # a package's rung: its own size
            width, height = step.rendition.width, step.rendition.height
        return Demand(JobKind.TRANSCODE, job.spec.hardware, job.spec.codec, width, height,
                      encoder=cpu_encoder(job.spec.codec).name, metrics=metrics)  # fmt: skip
    if job.spec.kind is JobKind.QUALITY:
        if isinstance(step, ScoreStep):
            width, height = step.reference.width, step.reference.height
        return Demand(JobKind.QUALITY, Hardware.CPU, job.spec.codec, width, height,
                      metrics=metrics)  # fmt: skip
    if isinstance(step, RenditionStep):  # a package's rendition: its own size
        rendition = step.rendition
        if rendition.kind != "video":  # an audio track: one core, no encoder
            return Demand(JobKind.VALIDATE, Hardware.CPU, job.spec.codec, width, height)
        top = max(step.renditions, key=lambda r: r.width * r.height)  # a group: its top rung
        width, height = top.width, top.height
    transcode = job.spec.kind is JobKind.TRANSCODE
    thumbnail = job.spec.kind is JobKind.THUMBNAIL
    return Demand(
        job.spec.kind,
        job.spec.hardware,
        job.spec.codec,
        width,
        height,
        encoder=cpu_encoder(job.spec.codec).name if transcode else None,
        images=len(thumbnail_times(job.spec, media)) if thumbnail else 0,
        metrics=metrics,
    )


@dataclass(frozen=True, slots=True)
class Reach:
    """Which nodes see a job's local media (see :mod:`cluster.control.farm.reach`)."""

    seers: frozenset[str]
    source: str | None
    """The node that would serve the media to a node that cannot see them."""
    source_address: str
    input_bytes: int
    """What a node that cannot see them would fetch (0: the input is an object)."""
    sends_back: bool
    """The output goes back to a root (not to object storage)."""
    worth_moving: bool
    """Moving them is expected to take less than encoding the job: a node that cannot
    see them may take it rather than wait for one that can."""


@dataclass(slots=True)
class Round:
    start: list[tuple[Job, Placement]] = field(default_factory=list)
    never: list[tuple[Job, str]] = field(default_factory=list)
    """Jobs no node of the cluster could run even idle, and why."""
    waiting: list[dict[str, float]] = field(default_factory=list)
    """Resource shapes of the jobs left waiting (for the autoscaler)."""
    waits: dict[str, str] = field(default_factory=dict)
    """Job id -> why it waits for a faster kind of node (placement by finish time)."""


def plan_round(
    ready: Iterable[tuple[Job, Demand]],
    planner: Planner,
    whole: Planner,
    costs: CostModel,
    reach: Callable[[Job], Reach | None] = lambda job: None,
    *,
    others_waiting: bool = False,
    fair: FairShare | None = None,
    finish: FinishTime | None = None,
    tenants: set[str | None] | None = None,
    depth: int | None = None,
    bundles: int = MAX_AUTOSCALER_BUNDLES,
    interleaved: bool = False,
) -> Round:
    """Place ``ready`` in order on ``planner`` (the nodes that may take work now). Whether a
    job could ever run is judged on ``whole`` (every node, suspect ones included). A job
    goes to a node that sees its media when one has room; else, when moving them is worth
    it, to one that does not (:func:`_place_unseen`). When nothing is left waiting (and
    ``others_waiting`` says no queued job is about to be ready), cores left free go to
    the encodes started (:func:`_work_conserving`). With ``fair``, tenants take turns
    by their share (:mod:`~cluster.scheduling.fairshare`; ``interleaved``: ``ready``
    takes them already, and ``tenants`` names those with jobs ready) and a job that would
    cross its tenant's limits waits. With ``finish``, a job goes where it is predicted
    to finish first (:mod:`~cluster.scheduling.finish`), or waits for a faster node.

    ``ready`` is read only as far as needed: up to the first job that waits once no
    core is free anywhere (with up to ``bundles`` waiting shapes for the autoscaler),
    and past at most ``depth`` jobs that could not start."""
    result = Round()
    if tenants is None:
        ready = list(ready)
        tenants = {j.tenant for j, _ in ready}
    if fair is not None and not interleaved:
        ready = fair.order(list(ready))
    held: set[str | None] = set()  # tenants at a limit: their other jobs wait this round
    demands: dict[str, Demand] = {}
    passed = 0  # jobs that could not start
    for job, demand in ready:
        waits = job.tenant in held  # its tenant is at a limit: it waits (and counts as read)
        passed += waits
        stop = _stop(planner, result, held, passed, depth, bundles)
        if waits or stop is not None:
            if not waits:
                result.waiting.append(autoscaler_bundle(demand, costs))
            if stop:
                break
            continue
        never = whole.never(demand)
        if never is not None:
            result.never.append((job, never))
            continue
        # A retry goes elsewhere than where it failed, unless no other node could run it.
        avoid = avoided(job)
        if avoid and not whole.runs_elsewhere(demand, avoid):
            avoid = frozenset()
        placement = _choose(planner, finish, job, demand, avoid, reach(job))
        if placement is not None and fair is not None:
            placement = _fairly(planner, fair, finish, job, demand, placement, avoid, result,
                                tenants)  # fmt: skip
            if placement is None:
                held.add(job.tenant)
                passed += 1
                continue
        if placement is not None and avoid:
            where = sorted({f.address for f in job.failures if f.node_id in avoid})
            why = f"{placement.reason}; not on {', '.join(where)}, where it failed"
            placement = replace(placement, reason=why)
        if placement is not None:
            result.start.append((job, placement))
            demands[job.id] = demand
        else:
            result.waiting.append(autoscaler_bundle(demand, costs))
            passed += 1
    if finish is not None:
        result.waits = finish.waits
    if not result.waiting and not others_waiting and not held:
        result.start = _work_conserving(planner, result.start, demands)
    return result


def _stop(
    planner: Planner, result: Round, held: set[str | None], passed: int, depth: int | None,
    bundles: int,
) -> bool | None:  # fmt: skip
    """Whether the round reads no further (``True``), or only notes the next job's shape
    for the autoscaler (``False``: no core is free anywhere); ``None``: place it."""
    if planner.exhausted() and (result.waiting or held):
        return len(result.waiting) + 1 >= bundles
    if depth is not None and passed >= depth:
        return True
    return None


def _fairly(
    planner: Planner, fair: FairShare, finish: FinishTime | None, job: Job, demand: Demand,
    placement: Placement, avoid: frozenset[str], result: Round, tenants: set[str | None],
) -> Placement | None:  # fmt: skip
    """``placement`` within the job's tenant's limits (else another, or ``None``: the
    tenant waits), counted to its share and said in its reason."""
    if fair.over_limit(job.tenant, placement) is not None:
        within = _over_limits(planner, fair, finish, job, demand, placement, avoid, result)
        if within is None:
            return None
        placement = within
    fair.placed(job.tenant, placement)
    if len(tenants) > 1:
        why = f"{placement.reason}; {fair.reason(job.tenant, tenants)}"
        placement = replace(placement, reason=why)
    return placement


def _choose(
    planner: Planner, finish: FinishTime | None, job: Job, demand: Demand,
    avoid: frozenset[str], sight: Reach | None,
) -> Placement | None:  # fmt: skip
    """Where ``job`` starts now: by finish time on a farm of several kinds (where every
    node sees its media), else by best fit among the nodes that see them (or, when that
    is worth it, any); ``None``: it waits (every core given out: nothing can start)."""
    if planner.exhausted():
        return None
    if finish is not None and (sight is None or sight.seers >= planner.node_ids):
        return finish.place(planner, job, demand, avoid)
    if sight is None:
        return planner.place(demand, avoid)
    return _place_unseen(planner, demand, avoid, sight)


def _over_limits(
    planner: Planner, fair: FairShare, finish: FinishTime | None, job: Job, demand: Demand,
    refused: Placement, avoid: frozenset[str], result: Round,
) -> Placement | None:  # fmt: skip
    """``refused`` takes ``job``'s tenant past a limit: given back; the CPU instead for a
    ``hardware: auto`` job past ``max_gpus``; else it waits (no core is then spare), or
    fails when it could never run within the limits."""
    planner.release(refused)
    if finish is not None:
        finish.released(refused)
    placement = _within_limits(planner, fair, job, demand, refused, avoid)
    if placement is None:
        never = _never_within(fair, job, demand, planner)
        if never is not None:
            result.never.append((job, never))
    return placement


def _within_limits(
    planner: Planner, fair: FairShare, job: Job, demand: Demand, refused: Placement,
    avoid: frozenset[str],
) -> Placement | None:  # fmt: skip
    """A ``hardware: auto`` job refused a GPU by its tenant's ``max_gpus`` may still run on
    the CPU within its limits."""
    if refused.gpu_uuid is None or demand.hardware is not Hardware.AUTO:
        return None
    on_cpu = planner.place(replace(demand, hardware=Hardware.CPU), avoid)
    if on_cpu is not None and fair.over_limit(job.tenant, on_cpu) is not None:
        planner.release(on_cpu)
        return None
    return on_cpu


def _never_within(fair: FairShare, job: Job, demand: Demand, planner: Planner) -> str | None:
    """Why ``job`` could never run within its tenant's limits, even with nothing else of
    the tenant's running (a job this big, or a limit of 0); ``None`` if it only waits."""
    trial = planner.place(demand)
    if trial is None:
        return None
    planner.release(trial)
    why = fair.over_limit(job.tenant, trial, idle=True)
    if why is None:
        return None
    if trial.gpu_uuid is not None and demand.hardware is Hardware.AUTO:
        cpu = planner.place(replace(demand, hardware=Hardware.CPU))
        if cpu is None:
            return None
        planner.release(cpu)
        why = fair.over_limit(job.tenant, cpu, idle=True)
        if why is None:
            return None
    return f"{why}: this job can never run within it; ask an admin to raise the limit"


def _work_conserving(
    planner: Planner, start: list[tuple[Job, Placement]], demands: dict[str, Demand]
) -> list[tuple[Job, Placement]]:
    """Nothing is left waiting: the CPU encodes started this round share the cores their
    nodes still have free (counted as theirs), and their threads follow their node's
    cores (a lone last job of a batch then uses the cores its neighbours free as they
    end, as a shell loop's ffmpeg would). While work waits, every job keeps its estimate."""
    sharing: dict[str, list[int]] = {}
    for i, (job, placement) in enumerate(start):
        demand = demands.get(job.id)
        if demand is not None and demand.kind is JobKind.TRANSCODE and \
                placement.hardware is Hardware.CPU:  # fmt: skip
            sharing.setdefault(placement.node_id, []).append(i)
    conserved = list(start)
    for node_id, indexes in sharing.items():
        share = int(planner.free_cpus(node_id) + 1e-6) // len(indexes)
        for i in indexes:
            job, placement = conserved[i]
            conserved[i] = (job, planner.give_spare(placement, share, len(indexes) == 1))
    return conserved


def _place_unseen(
    planner: Planner, demand: Demand, avoid: frozenset[str], sight: Reach
) -> Placement | None:
    """A node that sees the job's media if one has room; else, if moving them is worth
    it, any node, fetching them from ``sight.source``."""
    blind = planner.node_ids - sight.seers
    if not blind:
        return planner.place(demand, avoid)
    placement = planner.place(demand, avoid | blind)
    if placement is not None or not sight.worth_moving or sight.source is None:
        return placement  # placed where they are seen; or waiting for such a node
    placement = planner.place(demand, avoid)
    if placement is None or placement.node_id in sight.seers:
        return placement
    where = sight.source_address
    why = f"input read over the network from {where}: {human(sight.input_bytes)}"
    if not sight.input_bytes:
        why = f"media moved over the network to and from {where}"
    elif sight.sends_back:
        why += ", output sent back there"
    return replace(placement, reason=f"{placement.reason}; {why}", media_from=sight.source)


def capacity_request(
    running_cpus: list[float], waiting: list[dict[str, float]], asked: list[dict[str, float]]
) -> list[dict[str, float]] | None:
    """What to tell the autoscaler (running work plus the queue's shapes, capped), so an
    autoscaling cluster (KubeRay) adds workers; ``None`` when it has not changed."""
    if not waiting and not asked:
        return None
    bundles = [{"CPU": cpus} for cpus in running_cpus] + waiting if waiting else []
    bundles = bundles[:MAX_AUTOSCALER_BUNDLES]
    return None if bundles == asked else bundles
