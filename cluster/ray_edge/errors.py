"""The one place Ray's exceptions become framefleet's (see :mod:`cluster.errors`).

Two callers, two meanings of the same Ray error: a call to an encoder actor that dies
means the job's worker was lost (retried elsewhere); a call to the coordinator that
fails means the cluster cannot be reached now (the caller may try again).
"""

from __future__ import annotations

import logging
import re

import ray

from cluster.errors import (
    CallTimeout,
    ClusterUnavailable,
    EncodeError,
    ErrorCode,
    FramefleetError,
    JobFailure,
    TransferError,
    WorkerLost,
)

log = logging.getLogger("framefleet.ray")
_RAY_IDS = re.compile(r"\b[0-9a-f]{16,}\b")
MAX_WHY_CHARS = 120


def lost_why(exc: BaseException) -> str:
    """Ray's reason an actor was lost, short: its first "because..." clause, no ids."""
    text = " ".join(str(exc).split())
    _, found, after = text.partition("because ")
    why = after if found else "the process or its node died"
    why = _RAY_IDS.sub("…", why.split(". ")[0]).rstrip(".")
    return why if len(why) <= MAX_WHY_CHARS else why[: MAX_WHY_CHARS - 1] + "…"


def encoder_error(exc: ray.exceptions.RayError, where: str) -> JobFailure:
    """A failed call to an encoder actor on ``where``: its own error, or the worker lost."""
    if isinstance(exc, ray.exceptions.RayTaskError):
        return EncodeError(f"encoder on {where} failed: {exc.cause!r}")
    return WorkerLost(f"the encoder on {where} was lost ({type(exc).__name__}: {lost_why(exc)})")


def peer_error(exc: ray.exceptions.RayError, node_id: str) -> JobFailure:
    """A failed call to the agent serving a job's media on ``node_id``: the framefleet
    error it raised (a file missing, an output that exists), or the node unreachable
    (retried: perhaps another node serves it next time)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, JobFailure):
        return cause
    what = f"{type(cause).__name__}: {cause}" if cause is not None else lost_why(exc)
    return TransferError(f"the node serving the media ({node_id[:12]}) failed ({what})")


def call_timeout(timeout: float | None) -> CallTimeout:
    return CallTimeout(
        f"the coordinator did not answer within {timeout or 0:g} s; is the cluster busy?"
    )


def coordinator_error(exc: ray.exceptions.RayError, timeout: float | None = None) -> Exception:
    """A failed call to the coordinator: the framefleet error it raised, a timeout, or
    the coordinator unreachable (restarting, or its node gone)."""
    if isinstance(exc, ray.exceptions.GetTimeoutError):
        return call_timeout(timeout)
    cause = getattr(exc, "cause", None)
    if isinstance(cause, FramefleetError):
        return cause
    if isinstance(exc, ray.exceptions.RayTaskError):  # a bug in the coordinator
        log.error("coordinator call failed: %s", exc)
        return FramefleetError(
            f"the coordinator failed ({type(cause).__name__}); see the head's log",
            code=ErrorCode.INTERNAL,
        )
    log.warning("coordinator call failed: %s", exc)  # Ray's full text, ids and all
    return ClusterUnavailable(
        f"the coordinator is not reachable ({type(exc).__name__}); it may be restarting: "
        "try again shortly"
    )
