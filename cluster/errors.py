"""framefleet's one error tree, and the codes that are part of its API.

Every error a user can see is one of these, with a one-line message that says
what went wrong and what to do, and an :class:`ErrorCode` (every failed job
carries one). Lower-level errors (ffmpeg exit codes, NVML, OS errors) are
converted where they happen with ``raise Mapped(msg) from exc``; Ray's errors
are converted in one place, :mod:`cluster.ray_edge.errors`. Each code has a
:class:`Kind`, and the gateway's HTTP statuses and the CLI's exit codes are two
small tables keyed by it.

    FramefleetError
     ├── JobFailure               a job cannot (or can no longer) succeed
     │    ├── InputError          input missing, not media, no video, truncated   (not retried)
     │    ├── OutputError         destination unusable                           (not retried)
     │    ├── SpecError           the request itself is invalid or unsupported   (not retried)
     │    ├── CapacityError       no node in the cluster could ever run it        (not retried)
     │    ├── EncodeError         ffmpeg failed for another reason               (retried)
     │    ├── EncoderUnavailable  an encoder could not be opened (e.g. NVENC)    (retried elsewhere)
     │    ├── WorkerLost          the encoder actor or its node died             (retried)
     │    ├── TransferError       media could not be moved to or from object
     │    │                       storage, or scratch space is short             (retried)
     │    └── Stalled             no progress for too long, or past the job's
     │                            ceiling: ffmpeg killed                         (retried elsewhere)
     ├── JobNotFound
     ├── NodeNotFound             no node or GPU by that name
     ├── InvalidTransition        a job state change the state machine forbids
     ├── IdempotencyConflict      an idempotency key reused for a different request
     ├── QueueFull                a submitter has as many jobs queued as it may: wait
     ├── ConfigError              a setting or configuration file cannot be used
     │    ├── InventoryError      a static GPU inventory file
     │    └── CostModelError      a cost model file
     ├── ClusterUnavailable       Ray or the coordinator cannot be reached
     │    └── CallTimeout         it did not answer within the call's time limit
     ├── ToolMissing              ffmpeg/ffprobe not installed
     └── RemoteError              an error another framefleet process answered with
                                  (the gateway, to its CLI client): its code as sent
"""

from __future__ import annotations

from enum import StrEnum


class Kind(StrEnum):
    """What sort of "no" an error is; the gateway and the CLI each map kinds once."""

    REFUSED = "refused"
    """The request, an input, a path or a configuration file is wrong: fix it and resend."""
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    """The request clashes with the job's state or an earlier request."""
    UNAUTHORIZED = "unauthorized"
    UNAVAILABLE = "unavailable"
    """The cluster (or a part of it) cannot be reached now: try again."""
    BUSY = "busy"
    """A bound was reached (queued jobs, open streams): the same request may succeed later."""
    SETUP = "setup"
    """This machine lacks something it needs (a tool)."""
    FAILED = "failed"
    """The work itself failed (a job's ending), or an internal error."""


class ErrorCode(StrEnum):
    """Every code an error answer or a failed job carries; clients may branch on them."""

    # The request or its files (refused).
    INVALID_SPEC = "invalid_spec"
    INVALID_REQUEST = "invalid_request"
    ENCODER_MISSING = "encoder_missing"
    TOO_LARGE = "too_large"
    TOO_MANY = "too_many"
    DUPLICATE_OUTPUT = "duplicate_output"
    NO_CAPACITY = "no_capacity"
    BAD_INPUT = "bad_input"
    INPUT_MISSING = "input_missing"
    NOT_MEDIA = "not_media"
    NO_VIDEO_STREAM = "no_video_stream"
    FORMAT_REFUSED = "format_refused"
    UNREADABLE = "unreadable"
    TRUNCATED = "truncated"
    OUTSIDE_ROOTS = "outside_roots"
    CALLBACK_REFUSED = "callback_refused"
    NAME_TOO_LONG = "name_too_long"
    BAD_OUTPUT = "bad_output"
    BAD_CONFIG = "bad_config"
    BAD_INVENTORY = "bad_inventory"
    BAD_COST_MODEL = "bad_cost_model"
    STORAGE_DENIED = "storage_denied"
    METRIC_MISSING = "metric_missing"
    # State and identity.
    NOT_FOUND = "not_found"
    INVALID_TRANSITION = "invalid_transition"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    QUEUE_FULL = "queue_full"
    TOO_BUSY = "too_busy"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    HTTP_ERROR = "http_error"
    # Reach.
    CLUSTER_UNAVAILABLE = "cluster_unavailable"
    TIMEOUT = "timeout"
    TOOL_MISSING = "tool_missing"
    # How work ends.
    FAILED = "failed"
    ENCODE_FAILED = "encode_failed"
    PROBE_INTERRUPTED = "probe_interrupted"
    ENCODER_UNAVAILABLE = "encoder_unavailable"
    NVENC_UNAVAILABLE = "nvenc_unavailable"
    WORKER_LOST = "worker_lost"
    TRANSFER_FAILED = "transfer_failed"
    SCRATCH_FULL = "scratch_full"
    STALLED = "stalled"
    TIMED_OUT = "timed_out"
    BELOW_QUALITY = "below_quality"
    TARGET_UNMET = "target_unmet"
    POISON = "poison"
    CANCELLED = "cancelled"
    INTERNAL = "internal"

    @property
    def kind(self) -> Kind:
        return _KIND.get(self, Kind.REFUSED)

    @classmethod
    def parse(cls, value: str | None) -> ErrorCode | None:
        """A code read back from storage or the wire (an unknown one reads as ``failed``)."""
        if value is None:
            return None
        return cls._value2member_map_.get(value, cls.FAILED)  # type: ignore[return-value]


_KIND: dict[ErrorCode, Kind] = {
    ErrorCode.NOT_FOUND: Kind.NOT_FOUND,
    ErrorCode.INVALID_TRANSITION: Kind.CONFLICT,
    ErrorCode.IDEMPOTENCY_CONFLICT: Kind.CONFLICT,
    ErrorCode.QUEUE_FULL: Kind.BUSY,
    ErrorCode.TOO_BUSY: Kind.BUSY,
    ErrorCode.UNAUTHORIZED: Kind.UNAUTHORIZED,
    ErrorCode.FORBIDDEN: Kind.UNAUTHORIZED,
    ErrorCode.CLUSTER_UNAVAILABLE: Kind.UNAVAILABLE,
    ErrorCode.TIMEOUT: Kind.UNAVAILABLE,
    ErrorCode.TOOL_MISSING: Kind.SETUP,
    **{
        code: Kind.FAILED
        for code in (
            ErrorCode.FAILED,
            ErrorCode.ENCODE_FAILED,
            ErrorCode.PROBE_INTERRUPTED,
            ErrorCode.ENCODER_UNAVAILABLE,
            ErrorCode.NVENC_UNAVAILABLE,
            ErrorCode.WORKER_LOST,
            ErrorCode.TRANSFER_FAILED,
            ErrorCode.SCRATCH_FULL,
            ErrorCode.STALLED,
            ErrorCode.TIMED_OUT,
            ErrorCode.BELOW_QUALITY,
            ErrorCode.TARGET_UNMET,
            ErrorCode.POISON,
            ErrorCode.CANCELLED,
            ErrorCode.INTERNAL,
        )
    },
}
"""Every code not listed is :attr:`Kind.REFUSED`."""


class FramefleetError(Exception):
    """Base of every framefleet error; ``str(exc)`` is the one-line message."""

    code: ErrorCode = ErrorCode.FAILED

    def __init__(self, message: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def kind(self) -> Kind:
        return self.code.kind

    def __reduce__(self) -> tuple[object, ...]:
        # Pickled across Ray with its code (the default pickling would drop it).
        return (_rebuild, (type(self), str(self), self.code))


def _rebuild(cls: type[FramefleetError], message: str, code: ErrorCode) -> FramefleetError:
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    exc.code = code
    return exc


class JobFailure(FramefleetError):
    """A job cannot succeed; ``retryable`` says whether another attempt may help."""

    retryable = False


class InputError(JobFailure):
    code = ErrorCode.BAD_INPUT


class OutputError(JobFailure):
    code = ErrorCode.BAD_OUTPUT


class SpecError(JobFailure):
    code = ErrorCode.INVALID_SPEC


class BelowQuality(JobFailure):
    """An output scored below the ``min_vmaf`` asked for."""

    code = ErrorCode.BELOW_QUALITY


class CapacityError(JobFailure):
    """No node in the cluster could ever run the job (too few cores, no such GPU)."""

    code = ErrorCode.NO_CAPACITY


class EncodeError(JobFailure):
    code = ErrorCode.ENCODE_FAILED
    retryable = True


class EncoderUnavailable(JobFailure):
    code = ErrorCode.ENCODER_UNAVAILABLE
    retryable = True


class WorkerLost(JobFailure):
    code = ErrorCode.WORKER_LOST
    retryable = True


class TransferError(JobFailure):
    """Media could not be fetched or uploaded (the store unreachable, throttling, a lost
    connection), or the node's scratch space cannot hold the job: another try, perhaps
    on another node, may work."""

    code = ErrorCode.TRANSFER_FAILED
    retryable = True


class Stalled(JobFailure):
    """The watchdog killed an encode: no progress for ``stall_s``, or past ``max_runtime``."""

    code = ErrorCode.STALLED
    retryable = True


class JobNotFound(FramefleetError):
    code = ErrorCode.NOT_FOUND

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}; list jobs to find its id")
        self.job_id = job_id

    def __reduce__(self) -> tuple[object, ...]:
        # Pickled across Ray by its id, not its message (which would be wrapped again).
        return (type(self), (self.job_id,))


class NodeNotFound(FramefleetError):
    code = ErrorCode.NOT_FOUND


class InvalidTransition(FramefleetError):
    code = ErrorCode.INVALID_TRANSITION


class IdempotencyConflict(FramefleetError):
    """An idempotency key used again for a different request."""

    code = ErrorCode.IDEMPOTENCY_CONFLICT


class QueueFull(FramefleetError):
    """A submitter has as many jobs queued as it may (``max_queued_jobs``): it may submit
    again once some have started."""

    code = ErrorCode.QUEUE_FULL


class ConfigError(FramefleetError):
    """A setting or a configuration file that cannot be used; the message names it."""

    code = ErrorCode.BAD_CONFIG


class InventoryError(ConfigError):
    """A static GPU inventory (``--gpu-inventory``) that cannot be used."""

    code = ErrorCode.BAD_INVENTORY


class CostModelError(ConfigError):
    """A cost model file (``FRAMEFLEET_COST_MODEL``) that cannot be used."""

    code = ErrorCode.BAD_COST_MODEL


class ClusterUnavailable(FramefleetError):
    code = ErrorCode.CLUSTER_UNAVAILABLE


class CallTimeout(ClusterUnavailable):
    """The coordinator did not answer a call within its time limit."""

    code = ErrorCode.TIMEOUT


class ToolMissing(FramefleetError):
    code = ErrorCode.TOOL_MISSING

    @classmethod
    def for_tool(cls, tool: str) -> ToolMissing:
        return cls(f"{tool} is not installed; run `make setup` or `apt-get install ffmpeg`")


class RemoteError(FramefleetError):
    """An error another framefleet process answered with, e.g. the gateway to the CLI.

    Its code is the one sent (an unknown code reads as ``failed``); ``status`` is the
    HTTP status when it came over HTTP.
    """

    def __init__(self, message: str, *, code: ErrorCode, status: int | None = None) -> None:
        super().__init__(message, code=code)
        self.status = status
