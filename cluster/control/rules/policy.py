"""What happens to a job when its encode ends: one pure function, :func:`decide`.

The coordinator gathers the facts (:class:`Facts`: is it shutting down, was the job
being cancelled, is the job's node still in the cluster, could another GPU take it)
and applies the :class:`Decision`; the branches live here, testable without a loop.

    succeeded                                  -> SUCCEED
    framefleet is shutting down                -> REQUEUE (not counted as an attempt)
    the user cancelled                         -> CANCEL
    NVENC did not open on the placed GPU       -> REQUEUE elsewhere, or FAIL if none can
    the job's node left the cluster            -> REQUEUE at once (not counted either)
    encoders crashed on ``poison_after`` nodes -> FAIL as poison
    a retryable failure with attempts left     -> REQUEUE after a backoff
    anything else                              -> FAIL (said "gave up after N" if retried)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cluster.control.rules.health import gpu_target, node_target
from cluster.errors import ErrorCode
from cluster.media.work import WorkOutcome
from cluster.model.counters import JobCounter
from cluster.model.jobs import Failure, Fault, Hardware, Job, JobPlacement, JobStatus

MAX_BACKOFF_S = 60.0


_NODE_FAULTS = frozenset({
    ErrorCode.STALLED, ErrorCode.TIMED_OUT, ErrorCode.ENCODER_UNAVAILABLE,
    ErrorCode.NVENC_UNAVAILABLE, ErrorCode.SCRATCH_FULL,
})  # fmt: skip
_CRASHES = frozenset({ErrorCode.ENCODE_FAILED, ErrorCode.WORKER_LOST})


def fault_of(outcome: WorkOutcome, *, node_present: bool = True) -> Fault:
    if outcome.status != "failed":
        return Fault.NONE
    code = outcome.error_code
    if code is ErrorCode.WORKER_LOST and not node_present:
        return Fault.NONE
    if code in _NODE_FAULTS:
        return Fault.NODE
    return Fault.CRASH if code in _CRASHES else Fault.INPUT


class Action(StrEnum):
    IGNORE = "ignore"
    """A stale outcome (an earlier attempt, or a job no longer running)."""
    SUCCEED = "succeed"
    REQUEUE = "requeue"
    CANCEL = "cancel"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Facts:
    """What the coordinator knows around an outcome, gathered before :func:`decide`."""

    stopping: bool = False
    cancelling: bool = False
    node_present: bool = True
    """The node the job ran on is still in the cluster."""
    nvenc_elsewhere: bool | None = None
    """For an NVENC failure on a GPU: whether the job can still be placed somewhere
    (the failed GPU's codec marked failed); ``None`` when not an NVENC failure on a GPU."""
    where: str = "?"
    """The placement, in words (``GPU 0 (L4) on 10.0.0.5``, or the node's address)."""
    backoff_s: float = 5.0
    now: float = 0.0
    crashed_on: tuple[str, ...] = ()
    """The nodes (in words) where this job's encoders crashed, this outcome's included."""
    poison_after: int = 3
    """Crashes on this many different nodes make a job poison (0: never)."""


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str = ""
    code: ErrorCode | None = None
    not_before: float = 0.0
    """For a requeue: the earliest time it may be placed again."""
    counter: JobCounter | None = None
    """A job counter to add one to."""
    charged: bool = True
    """For a requeue: whether the attempt counts against ``max_attempts`` (not when the
    job's node left or framefleet shut down: no fault of the job's or a machine's)."""

    @property
    def status(self) -> JobStatus:
        """The job's state once the decision is applied (not for ``IGNORE``)."""
        return _STATUS[self.action]


_STATUS = {
    Action.SUCCEED: JobStatus.SUCCEEDED,
    Action.REQUEUE: JobStatus.QUEUED,
    Action.CANCEL: JobStatus.CANCELLED,
    Action.FAIL: JobStatus.FAILED,
}


def timed_result(job: Job, outcome: WorkOutcome, now: float) -> dict[str, Any] | None:
    """A successful outcome's result, with where the job's time went under ``timings``:
    ``queued_s`` (submit to this attempt's start, the probe included), ``dispatch_s`` (the
    encoder call's round trip, and creating the encoder when no warm one was free) and
    the node's own split (:func:`cluster.nodes.encoder.run_timings`)."""
    if outcome.result is None:
        return None
    timings = dict(outcome.timings)
    if job.started_at:
        timings["queued_s"] = round(job.started_at - job.created_at, 4)
        timings["dispatch_s"] = round(max(0.0, now - job.started_at - outcome.elapsed_s), 4)
    return {**outcome.result, "timings": timings}


def nvenc_why(outcome: WorkOutcome) -> str:
    return (outcome.error or "NVENC did not open").split(": ", 1)[-1]


def decide(job: Job, outcome: WorkOutcome, facts: Facts) -> Decision:
    """The job's next state after ``outcome`` (see the module's table)."""
    if job.status is not JobStatus.RUNNING or outcome.attempt != job.attempts:
        return Decision(Action.IGNORE)
    if outcome.status == "succeeded":
        return Decision(Action.SUCCEED, f"completed in {outcome.elapsed_s:.1f} s")
    if facts.stopping:
        return Decision(Action.REQUEUE, "re-queued: framefleet was shut down", charged=False)
    if facts.cancelling or outcome.status == "cancelled":
        return Decision(Action.CANCEL, "cancelled by user", ErrorCode.CANCELLED)
    code = outcome.error_code
    if code is ErrorCode.NVENC_UNAVAILABLE and facts.nvenc_elsewhere is not None:
        why, codec = nvenc_why(outcome), job.spec.codec
        if job.spec.hardware is Hardware.GPU and not facts.nvenc_elsewhere:
            reason = (
                f"NVENC could not encode {codec} on {facts.where}: {why}; no other GPU in "
                "the cluster can; use --hardware auto or cpu"
            )
            return Decision(Action.FAIL, reason, code, counter=JobCounter.NVENC_FAILURES)
        reason = f"NVENC could not encode {codec} on {facts.where} ({why}); placing it again"
        return Decision(Action.REQUEUE, reason, counter=JobCounter.NVENC_FAILURES)
    if code is ErrorCode.WORKER_LOST and not facts.node_present:
        # Not the job's fault: place it again at once, whatever its attempts.
        reason = f"node {facts.where} left the cluster mid-job; placing again"
        return Decision(Action.REQUEUE, reason, counter=JobCounter.NODE_LOSSES, charged=False)
    if 0 < facts.poison_after <= len(facts.crashed_on) and fault_of(outcome) is Fault.CRASH:
        reason = (
            f"poison: crashed encoders on nodes {', '.join(facts.crashed_on)} "
            f"(the last: {outcome.error}); not retried; check the input"
        )
        return Decision(Action.FAIL, reason, ErrorCode.POISON, counter=JobCounter.POISON_JOBS)
    charged = job.attempts - job.requeues  # attempts that were the job's or a machine's
    if outcome.retryable and charged < job.max_attempts:
        delay = min(facts.backoff_s * 2 ** (charged - 1), MAX_BACKOFF_S)
        reason = f"attempt {job.attempts} failed: {outcome.error}; retrying in {delay:g} s"
        return Decision(
            Action.REQUEUE, reason, not_before=facts.now + delay, counter=JobCounter.RETRIES
        )
    reason = outcome.error or "failed"
    if outcome.retryable:  # it was retried as long as the policy allows
        reason = f"{reason}; gave up after {job.attempts} attempts"
    return Decision(Action.FAIL, reason, code or ErrorCode.FAILED)


def targets(placement: JobPlacement) -> tuple[str, ...]:
    """What a failure on ``placement`` is struck against: its GPU, else its node."""
    if placement.gpu is not None:
        return (gpu_target(placement.gpu.uuid),)
    return (node_target(placement.node_id),)


def failure_of(job: Job, outcome: WorkOutcome, fault: Fault) -> Failure | None:
    """The record of an attempt that failed not by the input's fault (a retry is placed
    elsewhere; crashes on several nodes make the job poison); ``None`` otherwise."""
    placed = job.placement
    if placed is None or fault not in (Fault.NODE, Fault.CRASH):
        return None
    return Failure(outcome.attempt, placed.node_id, placed.address, placed.where, fault,
                   str(outcome.error_code), outcome.error)  # fmt: skip


def avoided(job: Job) -> frozenset[str]:
    """Nodes where the job failed for reasons not its input's (its retry goes elsewhere)."""
    return frozenset(f.node_id for f in job.failures if f.fault in (Fault.NODE, Fault.CRASH))


def crash_sites(failures: Iterable[Failure]) -> tuple[str, ...]:
    """The distinct nodes (in words) where these failures were encoder crashes."""
    seen: dict[str, str] = {}
    for f in failures:
        if f.fault is Fault.CRASH:
            seen.setdefault(f.node_id, f.address)
    return tuple(seen.values())
