"""Every branch of the outcome policy, as a table: a job, an outcome, the facts -> a decision."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cluster import ErrorCode, Hardware, JobKind, JobSpec, JobStatus
from cluster.control.rules.policy import Action, Facts, decide, fault_of, timed_result
from cluster.media.work import WorkOutcome
from cluster.model.jobs import Fault, Job


def running(attempts: int = 1, hardware: Hardware = Hardware.AUTO) -> Job:
    spec = JobSpec(kind=JobKind.TRANSCODE, input="/m/in.mp4", output="/m/out.mp4",
                   hardware=hardware)  # fmt: skip
    return Job(id="j1", spec=spec, status=JobStatus.RUNNING, attempts=attempts, max_attempts=3)


def failed(code: ErrorCode, error: str = "boom", *, retryable: bool = True) -> WorkOutcome:
    return WorkOutcome("j1", 1, "failed", error_code=code, error=error, retryable=retryable)


NVENC = failed(ErrorCode.NVENC_UNAVAILABLE, "NVENC could not be opened: no device")
LOST = failed(ErrorCode.WORKER_LOST, "the encoder was lost")
CRASH = failed(ErrorCode.ENCODE_FAILED, "ffmpeg was killed by signal 11")


@pytest.mark.parametrize(
    ("job", "outcome", "facts", "action", "reason", "code"),
    [
        (running(), WorkOutcome("j1", 1, "succeeded", elapsed_s=1.25), Facts(),
         Action.SUCCEED, "completed in 1.2 s", None),
        (running(), WorkOutcome("j1", 0, "succeeded"), Facts(), Action.IGNORE, "", None),
        (running(), failed(ErrorCode.ENCODE_FAILED), Facts(stopping=True),
         Action.REQUEUE, "re-queued: framefleet was shut down", None),
        (running(), failed(ErrorCode.ENCODE_FAILED), Facts(cancelling=True),
         Action.CANCEL, "cancelled by user", ErrorCode.CANCELLED),
        (running(), WorkOutcome("j1", 1, "cancelled"), Facts(),
         Action.CANCEL, "cancelled by user", ErrorCode.CANCELLED),
        (running(), NVENC, Facts(nvenc_elsewhere=True, where="GPU 0 (L4) on n1"), Action.REQUEUE,
         "NVENC could not encode h264 on GPU 0 (L4) on n1 (no device); placing it again", None),
        (running(hardware=Hardware.GPU), NVENC, Facts(nvenc_elsewhere=False, where="GPU 0"),
         Action.FAIL, "NVENC could not encode h264 on GPU 0: no device; no other GPU in the "
         "cluster can; use --hardware auto or cpu", ErrorCode.NVENC_UNAVAILABLE),
        (running(3), LOST, Facts(node_present=False, where="10.0.0.5"), Action.REQUEUE,
         "node 10.0.0.5 left the cluster mid-job; placing again", None),
        (running(1), LOST, Facts(now=100.0, backoff_s=2.0), Action.REQUEUE,
         "attempt 1 failed: the encoder was lost; retrying in 2 s", None),
        (running(3), failed(ErrorCode.ENCODE_FAILED), Facts(),
         Action.FAIL, "boom; gave up after 3 attempts", ErrorCode.ENCODE_FAILED),
        (running(1), failed(ErrorCode.TRUNCATED, "cut short", retryable=False), Facts(),
         Action.FAIL, "cut short", ErrorCode.TRUNCATED),
        (running(3), CRASH, Facts(crashed_on=("a", "b", "c")), Action.FAIL,
         "poison: crashed encoders on nodes a, b, c (the last: ffmpeg was killed by signal 11); "
         "not retried; check the input", ErrorCode.POISON),
        (running(2), CRASH, Facts(crashed_on=("a", "b"), now=10.0, backoff_s=1.0),
         Action.REQUEUE, "attempt 2 failed: ffmpeg was killed by signal 11; retrying in 2 s",
         None),
        (running(2), failed(ErrorCode.STALLED, "stalled: no progress for 61 s on n1"),
         Facts(crashed_on=("a", "b", "c")), Action.REQUEUE,
         "attempt 2 failed: stalled: no progress for 61 s on n1; retrying in 10 s", None),
        (running(3), CRASH, Facts(crashed_on=("a", "b", "c"), poison_after=0), Action.FAIL,
         "ffmpeg was killed by signal 11; gave up after 3 attempts", ErrorCode.ENCODE_FAILED),
    ],
)  # fmt: skip
def test_decide(
    job: Job,
    outcome: WorkOutcome,
    facts: Facts,
    action: Action,
    reason: str,
    code: ErrorCode | None,
) -> None:
    if outcome.attempt:  # an outcome of the job's current attempt (0: a stale one)
        outcome = replace(outcome, attempt=job.attempts)
    decision = decide(job, outcome, facts)
    assert (decision.action, decision.reason, decision.code) == (action, reason, code)


def test_retries_back_off_exponentially_up_to_a_minute() -> None:
    delays = [
        decide(running(n), replace(failed(ErrorCode.ENCODE_FAILED), attempt=n), Facts(backoff_s=20))
        for n in (1, 2)
    ]
    assert [d.not_before for d in delays] == [20.0, 40.0]
    job = running(2)
    job.max_attempts = 9
    outcome = replace(failed(ErrorCode.ENCODE_FAILED), attempt=2)
    assert decide(job, outcome, Facts(backoff_s=50.0)).not_before == 60.0


def test_attempts_ended_by_a_lost_node_or_a_restart_are_not_counted_against_retries() -> None:
    job = running(3)
    job.requeues = 2  # two attempts ended by node losses or restarts: one of its own
    outcome = replace(failed(ErrorCode.ENCODE_FAILED), attempt=3)
    decision = decide(job, outcome, Facts(backoff_s=2.0, now=10.0))
    assert (decision.action, decision.not_before) == (Action.REQUEUE, 12.0)
    assert decision.reason == "attempt 3 failed: boom; retrying in 2 s"
    lost = decide(job, replace(LOST, attempt=3), Facts(node_present=False))
    assert (lost.action, lost.charged) == (Action.REQUEUE, False)
    assert decide(running(1), replace(LOST, attempt=1), Facts()).charged  # its node is there


def test_a_result_says_where_the_jobs_time_went() -> None:
    job = replace(running(), created_at=100.0, started_at=100.5)
    node = {"ffmpeg_started_at": 100.6, "before_ffmpeg_s": 0.05, "ffmpeg_s": 3.0}
    outcome = WorkOutcome("j1", 1, "succeeded", result={"output": "/m/out.mp4"},
                          elapsed_s=3.1, timings=node)  # fmt: skip
    result = timed_result(job, outcome, now=103.7) or {}
    assert result["output"] == "/m/out.mp4"
    assert result["timings"] == {**node, "queued_s": 0.5, "dispatch_s": pytest.approx(0.1)}
    assert timed_result(job, WorkOutcome("j1", 1, "succeeded"), now=104.0) is None


@pytest.mark.parametrize(
    ("outcome", "present", "fault"),
    [
        (WorkOutcome("j1", 1, "succeeded"), True, Fault.NONE),
        (WorkOutcome("j1", 1, "cancelled"), True, Fault.NONE),
        (failed(ErrorCode.STALLED), True, Fault.NODE),
        (failed(ErrorCode.TIMED_OUT), True, Fault.NODE),
        (NVENC, True, Fault.NODE),
        (CRASH, True, Fault.CRASH),
        (LOST, True, Fault.CRASH),
        (LOST, False, Fault.NONE),
        (failed(ErrorCode.TRUNCATED, retryable=False), True, Fault.INPUT),
        (failed(ErrorCode.BAD_OUTPUT, retryable=False), True, Fault.INPUT),
    ],
)
def test_whose_fault_a_failed_attempt_was(
    outcome: WorkOutcome, present: bool, fault: Fault
) -> None:
    assert fault_of(outcome, node_present=present) is fault
