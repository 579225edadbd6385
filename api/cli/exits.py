"""The one exit-code table every ``framefleet`` command uses.

| code | meaning |
|---|---|
| 0 | done |
| 1 | the job failed (its reason is printed), or an internal error |
| 2 | refused: a bad option, input, path, or configuration file (GPU inventory, cost model, watch folder, Ray token), or a missing tool |
| 3 | the cluster (Ray, the coordinator, or the gateway) cannot be reached |
| 130 | interrupted (Ctrl-C) |
"""  # noqa: E501

from __future__ import annotations

from enum import IntEnum

from cluster import (
    ClusterUnavailable,
    ConfigError,
    FramefleetError,
    IdempotencyConflict,
    InvalidTransition,
    JobFailure,
    JobNotFound,
    ToolMissing,
)


class ExitCode(IntEnum):
    DONE = 0
    JOB_FAILED = 1
    REFUSED = 2
    UNREACHABLE = 3
    INTERRUPTED = 130


REFUSALS: tuple[type[FramefleetError], ...] = (
    JobFailure,  # raised before a job exists: the request itself
    ConfigError,
    JobNotFound,
    InvalidTransition,
    IdempotencyConflict,
    ToolMissing,
)


def exit_code_for(exc: BaseException) -> ExitCode:
    """The exit code for an error that ended a command."""
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    if isinstance(exc, ClusterUnavailable):
        return ExitCode.UNREACHABLE
    status = getattr(exc, "status", None)  # the gateway's refusal (client commands)
    if isinstance(status, int):
        if status == 503:
            return ExitCode.UNREACHABLE
        return ExitCode.REFUSED if status < 500 else ExitCode.JOB_FAILED
    if isinstance(exc, REFUSALS):
        return ExitCode.REFUSED
    return ExitCode.JOB_FAILED
