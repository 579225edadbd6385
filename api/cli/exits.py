"""The one exit-code table every ``framefleet`` command uses.

| code | meaning |
|---|---|
| 0 | done |
| 1 | the job failed (its reason is printed), or an internal error |
| 2 | refused: a bad option, input, path, or configuration file (GPU inventory, cost model, watch folder, Ray token), or a missing tool |
| 3 | the cluster (Ray, the coordinator, or the gateway) cannot be reached, or is full for now (too many jobs queued): try again later |
| 130 | interrupted (Ctrl-C) |
"""  # noqa: E501

from __future__ import annotations

from enum import IntEnum

from cluster import FramefleetError, Kind


class ExitCode(IntEnum):
    DONE = 0
    JOB_FAILED = 1
    REFUSED = 2
    UNREACHABLE = 3
    INTERRUPTED = 130


EXIT_CODE: dict[Kind, ExitCode] = {
    Kind.REFUSED: ExitCode.REFUSED,
    Kind.NOT_FOUND: ExitCode.REFUSED,
    Kind.CONFLICT: ExitCode.REFUSED,
    Kind.UNAUTHORIZED: ExitCode.REFUSED,
    Kind.SETUP: ExitCode.REFUSED,
    Kind.UNAVAILABLE: ExitCode.UNREACHABLE,
    Kind.BUSY: ExitCode.UNREACHABLE,
    Kind.FAILED: ExitCode.JOB_FAILED,
}
"""The one table from the engine's error kinds (see :mod:`cluster.errors`) to exit codes."""


def exit_code_for(exc: BaseException) -> ExitCode:
    """The exit code for an error that ended a command."""
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    if isinstance(exc, FramefleetError):
        return EXIT_CODE[exc.kind]
    return ExitCode.JOB_FAILED
