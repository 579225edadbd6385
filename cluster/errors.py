"""framefleet's one error tree.

Every error a user can see is one of these, with a one-line message that says
what went wrong and what to do. Lower-level errors (ffmpeg exit codes, Ray
exceptions, OS errors) are converted at the boundary where they happen with
``raise Mapped(msg) from exc``; the gateway maps this tree to HTTP statuses in
one table.

    FramefleetError
     ├── JobFailure               a job cannot (or can no longer) succeed
     │    ├── InputError          input missing, not media, no video, truncated   (not retried)
     │    ├── OutputError         destination unusable                           (not retried)
     │    ├── SpecError           the request itself is invalid or unsupported   (not retried)
     │    ├── EncodeError         ffmpeg failed for another reason               (retried)
     │    ├── EncoderUnavailable  an encoder could not be opened (e.g. NVENC)    (retried elsewhere)
     │    └── WorkerLost          the encoder actor or its node died             (retried)
     ├── JobNotFound
     ├── InvalidTransition        a job state change the state machine forbids
     ├── IdempotencyConflict      an idempotency key reused for a different request
     ├── ConfigError              a setting or configuration file cannot be used
     │                            (GPU inventory, cost model, watch folder, Ray token)
     ├── ClusterUnavailable       Ray or the coordinator cannot be reached
     │    └── CallTimeout         it did not answer within the call's time limit
     └── ToolMissing              ffmpeg/ffprobe not installed
"""

from __future__ import annotations


class FramefleetError(Exception):
    """Base of every framefleet error; ``str(exc)`` is the one-line message."""

    code = "error"


class JobFailure(FramefleetError):
    """A job cannot succeed; ``retryable`` says whether another attempt may help."""

    code = "failed"
    retryable = False

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class InputError(JobFailure):
    code = "bad_input"


class OutputError(JobFailure):
    code = "bad_output"


class SpecError(JobFailure):
    code = "invalid_spec"


class EncodeError(JobFailure):
    code = "encode_failed"
    retryable = True


class EncoderUnavailable(JobFailure):
    code = "encoder_unavailable"
    retryable = True


class WorkerLost(JobFailure):
    code = "worker_lost"
    retryable = True


class JobNotFound(FramefleetError):
    code = "not_found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}; list jobs to find its id")
        self.job_id = job_id

    def __reduce__(self) -> tuple[type[JobNotFound], tuple[str]]:
        # Pickled across Ray by its id, not its message (which would be wrapped again).
        return (type(self), (self.job_id,))


class InvalidTransition(FramefleetError):
    code = "invalid_transition"


class IdempotencyConflict(FramefleetError):
    """An idempotency key used again for a different request."""

    code = "idempotency_conflict"


class ConfigError(FramefleetError):
    """A setting or a configuration file that cannot be used; the message names it."""

    code = "bad_config"


class ClusterUnavailable(FramefleetError):
    code = "cluster_unavailable"


class CallTimeout(ClusterUnavailable):
    """The coordinator did not answer a call within its time limit."""

    code = "timeout"


class ToolMissing(FramefleetError):
    code = "tool_missing"

    @classmethod
    def for_tool(cls, tool: str) -> ToolMissing:
        return cls(f"{tool} is not installed; run `make setup` or `apt-get install ffmpeg`")
