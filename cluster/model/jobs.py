"""The record the coordinator keeps of a job (:class:`Job`), and its state machine.

A job's state changes only through :func:`transition`, which consults the one
transition table and raises :class:`InvalidTransition` on an illegal move. Why a
job ended (``reason``, ``error_code``) is kept beside its state. What a user asks for
is :class:`~cluster.model.spec.JobSpec` (re-exported here).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from cluster.errors import ErrorCode, InvalidTransition
from cluster.model.graph import Graph, TaskOf
from cluster.model.media import MediaInfo
from cluster.model.package import PackageView
from cluster.model.plain import field_names, plain
from cluster.model.progress import ProgressSnapshot
from cluster.model.spec import CODECS as CODECS
from cluster.model.spec import MAX_THUMBNAILS as MAX_THUMBNAILS
from cluster.model.spec import Codec as Codec
from cluster.model.spec import Hardware as Hardware
from cluster.model.spec import JobKind as JobKind
from cluster.model.spec import JobSpec as JobSpec
from cluster.model.spec import Speed as Speed
from cluster.model.split import Split


class JobStatus(StrEnum):
    WAITING = "waiting"
    """A task whose graph has not yet finished what it needs (jobs users submit never
    wait)."""
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})

TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    # waiting → queued: what the task needs succeeded; → cancelled: its job ended.
    JobStatus.WAITING: frozenset({JobStatus.QUEUED, JobStatus.CANCELLED}),
    # queued → failed: the input is rejected before any encoder runs (probe failed).
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELLED}),
    # running → queued: a retryable failure, a lost worker or a coordinator restart.
    JobStatus.RUNNING: frozenset(
        {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.QUEUED}
    ),
    JobStatus.SUCCEEDED: frozenset(),
    # failed/cancelled → queued: a user asked to retry.
    JobStatus.FAILED: frozenset({JobStatus.QUEUED}),
    JobStatus.CANCELLED: frozenset({JobStatus.QUEUED}),
}


class Fault(StrEnum):
    """Whose fault a failed attempt was, for quarantine and poison (see
    :func:`cluster.control.rules.policy.fault_of`)."""

    NONE = "none"
    """Succeeded, cancelled, or its node left the cluster."""
    INPUT = "input"
    """The input, the output, the request or the object store: says nothing about the
    machine."""
    NODE = "node"
    """The machine: it stalled, ran past its ceiling, NVENC would not open, no encoder,
    its scratch space could not hold the job."""
    CRASH = "crash"
    """The encoder crashed (ffmpeg failed or was killed, the encoder process died): the
    machine's fault, or the input's if it crashes encoders on several machines."""


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed attempt that was not the input's fault: a retry is placed elsewhere, and
    crashes on several nodes make the job poison."""

    attempt: int
    node_id: str
    address: str
    where: str
    fault: Fault
    code: str
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        return {**plain(self), "fault": str(self.fault)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Failure:
        return cls(**{**data, "fault": Fault(data["fault"])})


@dataclass(frozen=True, slots=True)
class WebhookAttempt:
    """One POST of a job's ending: when, the HTTP status or the error, how long."""

    at: float
    status: int | None = None
    error: str | None = None
    ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"at": self.at}
        if self.status is not None:
            data["status"] = self.status
        if self.error is not None:
            data["error"] = self.error
        return data | {"ms": self.ms}


class WebhookState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Webhook:
    """The delivery of a job's last ending to its ``callback_url``."""

    id: str
    url: str
    state: WebhookState = WebhookState.PENDING
    attempts: tuple[WebhookAttempt, ...] = ()
    next_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "state": str(self.state),
            "attempts": [a.to_dict() for a in self.attempts],
            "next_at": self.next_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Webhook:
        return cls(
            id=data["id"],
            url=data["url"],
            state=WebhookState(data.get("state", "pending")),
            attempts=tuple(WebhookAttempt(**a) for a in data.get("attempts", ())),
            next_at=data.get("next_at"),
        )


@dataclass(frozen=True, slots=True)
class GpuRef:
    """The GPU a job was placed on (keyed by UUID: NVML ignores ``CUDA_VISIBLE_DEVICES``)."""

    uuid: str
    index: int | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class JobPlacement:
    """Where a job's current attempt runs, with what the scheduler accounted to it."""

    node_id: str
    address: str
    hardware: Hardware
    encoder: str | None
    """The ffmpeg encoder a transcode runs (``None`` for probe, validate, thumbnail)."""
    reason: str
    cpus: float
    gpu: GpuRef | None = None
    gpu_memory_mb: int = 0
    memory_mb: int = 0

    @property
    def where(self) -> str:
        """In words: ``GPU 0 (L4) on 10.0.0.5``, or the node's address."""
        gpu = self.gpu
        return f"GPU {gpu.index} ({gpu.name}) on {self.address}" if gpu else self.address

    def to_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "address": self.address,
            "hardware": str(self.hardware),
            "encoder": self.encoder,
            "gpu": plain(self.gpu) if self.gpu else None,
            "estimate": {
                "cpus": self.cpus,
                "gpu_memory_mb": self.gpu_memory_mb,
                "memory_mb": self.memory_mb,
            },
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobPlacement:
        estimate = data.get("estimate") or {}
        gpu = data.get("gpu")
        return cls(
            node_id=data["node_id"],
            address=data["address"],
            hardware=Hardware(data["hardware"]),
            encoder=data.get("encoder"),
            reason=data.get("reason") or "",
            cpus=float(estimate.get("cpus", 0.0)),
            gpu=GpuRef(**gpu) if gpu else None,
            gpu_memory_mb=int(estimate.get("gpu_memory_mb", 0)),
            memory_mb=int(estimate.get("memory_mb", 0)),
        )


@dataclass(slots=True)
class Job:
    """The coordinator's record of one job. Changed only by the coordinator's job table
    (:class:`~cluster.control.records.jobtable.JobTable`)."""

    id: str
    spec: JobSpec
    status: JobStatus = JobStatus.QUEUED
    seq: int = 0
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    """Attempts started (each time the job began running)."""
    requeues: int = 0
    """Of those, attempts ended by no fault of the job's or a machine's (its node left,
    the coordinator restarted or shut down): they do not count against ``max_attempts``."""
    max_attempts: int = 3
    not_before: float = 0.0
    reason: str | None = None
    error_code: ErrorCode | None = None
    progress: ProgressSnapshot | None = None
    input_media: MediaInfo | None = None
    """The input's probe, once the coordinator has read it."""
    placement: JobPlacement | None = None
    result: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    idempotency_key: str | None = None
    """A client's key for this submission: the same key returns this job again."""
    owner: str | None = None
    """Who submitted it, as the gateway names callers (a digest of the token): bounds
    such as ``max_queued_jobs`` count per owner. ``None``: a local client."""
    tenant: str | None = None
    """The tenant it belongs to (its tasks too); ``None``: the default tenant (every job
    stored before tenants existed, and a local client's)."""
    forecast: dict[str, Any] | None = None
    """When it is predicted to start (while queued) and finish, from the learned speeds:
    ``start_at``, ``finish_at``, ``node``, ``speed`` (times real time), ``basis`` (what
    the speed rests on), ``finish_at_submit`` (its first predicted finish, kept to
    measure the error)."""
    limits: dict[str, float] | None = None
    """The current attempt's watchdog limits (``stall_s``, ``max_runtime_s``)."""
    failures: tuple[Failure, ...] = ()
    """Failed attempts that were not the input's fault (the newest few)."""
    webhook: Webhook | None = None
    """The delivery of the last ending to ``spec.callback_url``."""
    split: Split | None = None
    """A transcode: whether its video was split into chunks, how and why, and what it
    shows of its chunks."""
    package: PackageView | None = None
    """A package: how it was planned, and its renditions' state."""
    graph: Graph | None = None
    """A job a kind of graph looked at: its phase and its tasks (:mod:`cluster.model.graph`)."""
    task: TaskOf | None = None
    """A task of another job's graph (hidden from job lists): whose, and which."""

    def show(self, view: Split | PackageView | None) -> None:
        """What the job shows of its graph (a split's chunks, a package's renditions)."""
        if isinstance(view, PackageView):
            self.package = view
        else:
            self.split = view

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex[:16]

    def snapshot(self) -> Job:
        """A copy that later changes to this job do not touch (what the API hands out)."""
        return replace(
            self,
            result=dict(self.result) if self.result else self.result,
            notes=list(self.notes),
            split=Split.from_dict(self.split.to_dict()) if self.split else None,
            package=PackageView.from_dict(self.package.to_dict()) if self.package else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """The job as JSON-ready data (what the store keeps)."""
        data = {name: getattr(self, name) for name in field_names(self)}
        data["spec"] = self.spec.to_dict()
        data["status"] = str(self.status)
        data["error_code"] = str(self.error_code) if self.error_code else None
        data["progress"] = self.progress.to_dict() if self.progress else None
        data["input_media"] = self.input_media.to_dict() if self.input_media else None
        data["placement"] = self.placement.to_dict() if self.placement else None
        data["notes"] = list(self.notes)
        data["failures"] = [f.to_dict() for f in self.failures]
        data["webhook"] = self.webhook.to_dict() if self.webhook else None
        data["split"] = self.split.to_dict() if self.split else None
        data["package"] = self.package.to_dict() if self.package else None
        data["graph"] = self.graph.to_dict() if self.graph else None
        data["task"] = self.task.to_dict() if self.task else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        data = dict(data)
        chunk = data.pop("chunk", None)  # what an older framefleet stored for a chunk
        data["spec"] = JobSpec.from_dict(data["spec"])
        data["status"] = JobStatus(data["status"])
        data["error_code"] = ErrorCode.parse(data.get("error_code"))
        if data.get("progress"):
            data["progress"] = ProgressSnapshot(**data["progress"])
        if data.get("input_media"):
            data["input_media"] = MediaInfo.from_dict(data["input_media"])
        if data.get("placement"):
            data["placement"] = JobPlacement.from_dict(data["placement"])
        data["failures"] = tuple(Failure.from_dict(f) for f in data.get("failures") or ())
        if data.get("webhook"):
            data["webhook"] = Webhook.from_dict(data["webhook"])
        if data.get("split"):
            data["split"] = Split.from_dict(data["split"])
        if data.get("package"):
            data["package"] = PackageView.from_dict(data["package"])
        if data.get("graph"):
            data["graph"] = Graph.from_dict(data["graph"])
        if data.get("task"):
            data["task"] = TaskOf.from_dict(data["task"])
        elif chunk:
            data["task"] = TaskOf.from_chunk(chunk)
        return cls(**data)


def transition(
    job: Job,
    new: JobStatus,
    *,
    reason: str | None = None,
    error_code: ErrorCode | None = None,
    now: float | None = None,
) -> Job:
    """Move ``job`` to ``new`` in place, or raise :class:`InvalidTransition`.

    Keeps the timestamps and the ending (``reason``, ``error_code``) consistent
    with the state: a terminal state records why; leaving one clears it.
    """
    if new not in TRANSITIONS[job.status]:
        raise InvalidTransition(
            f"job {job.id} is {job.status}; it cannot become {new} "
            f"(allowed: {', '.join(sorted(TRANSITIONS[job.status])) or 'nothing, it is final'})"
        )
    now = time.time() if now is None else now
    previous = job.status
    job.status = new
    job.updated_at = now
    if new is JobStatus.RUNNING:
        job.started_at = now
        job.attempts += 1
        job.progress = None
    elif new is JobStatus.QUEUED:
        if previous.terminal:  # a user's retry starts afresh (the file may have been fixed)
            job.attempts = job.requeues = 0
            job.input_media = None
            job.result = None
            job.notes = []
            job.failures = ()
            job.webhook = None
            job.split = None  # its tasks' files were removed when it ended
            job.package = None
            job.graph = None
            job.forecast = None
        job.finished_at = None
        job.progress = None
    elif new.terminal:
        job.finished_at = now
    job.reason = reason
    job.error_code = error_code if new in (JobStatus.FAILED, JobStatus.CANCELLED) else None
    return job
