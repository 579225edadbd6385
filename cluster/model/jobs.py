"""Jobs: what a user asks for (`JobSpec`), and the record the coordinator keeps (`Job`).

A job's state changes only through :func:`transition`, which consults the one
transition table and raises :class:`InvalidTransition` on an illegal move. Why a
job ended (``reason``, ``error_code``) is kept beside its state.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from cluster.errors import ErrorCode, InvalidTransition, SpecError
from cluster.model.media import MediaInfo
from cluster.model.progress import ProgressSnapshot
from cluster.model.split import AUTO, ChunkOf, Split, parse_split


class JobStatus(StrEnum):
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


class JobKind(StrEnum):
    TRANSCODE = "transcode"
    PROBE = "probe"
    VALIDATE = "validate"
    THUMBNAIL = "thumbnail"


class Hardware(StrEnum):
    AUTO = "auto"
    GPU = "gpu"
    CPU = "cpu"


class Speed(StrEnum):
    FAST = "fast"
    MEDIUM = "medium"
    SLOW = "slow"


class Codec(StrEnum):
    """The video codecs framefleet encodes (the one list; ``CODECS`` is its values)."""

    H264 = "h264"
    HEVC = "hevc"
    AV1 = "av1"


CODECS: tuple[str, ...] = tuple(c.value for c in Codec)
_URL_LIKE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*[:,]")
MAX_THUMBNAILS = 100
MAX_PATH_CHARS = 4096
MAX_URL_CHARS = 2048
OBJECT_URL_PREFIX = "s3://"
"""Objects in storage; checked strictly (and against the roots) at admission."""


def _check_path_text(what: str, value: str) -> None:
    if not value or not value.strip():
        raise SpecError(f"{what} is empty; give a file path")
    if len(value) > MAX_PATH_CHARS:
        raise SpecError(f"{what} is longer than {MAX_PATH_CHARS} characters")
    if "\x00" in value or "\n" in value:
        raise SpecError(f"{what} contains a control character; rename the file")
    if _URL_LIKE.match(value) and not value.startswith(OBJECT_URL_PREFIX):
        raise SpecError(
            f"{what} {value[:120]!r} looks like a URL or ffmpeg protocol; give a file path "
            "(prefix ./ for a file whose name contains ':') or an s3:// URL"
        )


def _check_callback_text(url: str) -> None:
    """The URL's form (an http(s) URL with a host, no credentials); which hosts are
    allowed is admission's rule (:func:`cluster.scheduling.admission.check_callback`)."""
    if len(url) > MAX_URL_CHARS or any(ord(c) < 33 for c in url):
        raise SpecError(
            f"callback_url must be one URL of at most {MAX_URL_CHARS} characters, no spaces"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SpecError(f"callback_url {url!r} is not an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise SpecError("callback_url must not carry credentials; receivers check the signature")


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What a user asks for. Validated on construction; never holds ffmpeg arguments."""

    kind: JobKind
    input: str
    output: str | None = None
    codec: str = "h264"
    quality: int | None = None
    speed: Speed = Speed.MEDIUM
    hardware: Hardware = Hardware.AUTO
    priority: int = 0
    keep_10bit: bool = False
    overwrite: bool = False
    thumbnail_at: float | None = None
    thumbnail_count: int | None = None
    thumbnail_width: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    callback_url: str | None = None
    """Where to POST the job's view when it ends (a host in the allowed webhook hosts)."""
    split: str = AUTO
    """A transcode's video in chunks across the farm: ``auto``, ``off`` or about how many
    seconds a chunk lasts (see :mod:`cluster.model.split`)."""

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", JobKind(self.kind))
            object.__setattr__(self, "speed", Speed(self.speed))
            object.__setattr__(self, "hardware", Hardware(self.hardware))
        except ValueError as exc:
            raise SpecError(f"{exc}; see `framefleet encode --help` for the choices") from exc
        _check_path_text("input", self.input)
        if self.kind in (JobKind.TRANSCODE, JobKind.THUMBNAIL):
            if self.output is None:
                what = "an output file" if self.kind is JobKind.TRANSCODE else "an output folder"
                raise SpecError(f"a {self.kind} job needs {what}")
            _check_path_text("output", self.output)
        if self.codec not in CODECS:
            raise SpecError(f"unknown codec {self.codec!r}; choose one of {', '.join(CODECS)}")
        if self.quality is not None and not 0 <= self.quality <= 51:
            raise SpecError(
                f"quality {self.quality} is out of range; use 0 (best) to 51 (smallest)"
            )
        if not -1000 <= self.priority <= 1000:
            raise SpecError("priority must be between -1000 and 1000")
        if self.keep_10bit and self.codec == "h264":
            raise SpecError("10-bit output needs hevc or av1; drop keep_10bit or change the codec")
        if self.thumbnail_at is not None and self.thumbnail_at < 0:
            raise SpecError("thumbnail time must be 0 or more seconds")
        if self.thumbnail_count is not None and not 1 <= self.thumbnail_count <= MAX_THUMBNAILS:
            raise SpecError(f"thumbnail count must be between 1 and {MAX_THUMBNAILS}")
        if self.thumbnail_at is not None and self.thumbnail_count is not None:
            raise SpecError("give either a thumbnail time or a thumbnail count, not both")
        if self.thumbnail_width is not None and not 16 <= self.thumbnail_width <= 7680:
            raise SpecError("thumbnail width must be between 16 and 7680 pixels")
        if len(self.labels) > 50 or any(
            len(str(k)) > 100 or len(str(v)) > 1000 for k, v in self.labels.items()
        ):
            raise SpecError("labels: at most 50, keys up to 100 and values up to 1000 characters")
        if self.callback_url is not None:
            _check_callback_text(self.callback_url)
        object.__setattr__(self, "split", parse_split(self.split))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)} | {"labels": dict(self.labels)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"unknown job field(s): {', '.join(unknown)}")
        return cls(**data)


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
            "gpu": asdict(self.gpu) if self.gpu else None,
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
    """The coordinator's record of one job. Mutated only by the coordinator."""

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
    limits: dict[str, float] | None = None
    """The current attempt's watchdog limits (``stall_s``, ``max_runtime_s``)."""
    failures: list[dict[str, Any]] = field(default_factory=list)
    """Failed attempts that were not the input's fault: ``attempt``, ``node_id``,
    ``where``, ``fault`` (``node`` or ``crash``), ``code``, ``reason``. A retry places
    the job elsewhere; crashes on several nodes make it poison."""
    webhook: dict[str, Any] | None = None
    """The delivery of the last ending to ``spec.callback_url``: ``id``, ``url``,
    ``state`` (pending, delivered, failed), ``attempts`` (each: ``at``, ``status`` or
    ``error``, ``ms``), ``next_at``."""
    split: Split | None = None
    """A transcode: whether its video was split into chunks, how and why."""
    chunk: ChunkOf | None = None
    """A chunk sub-job (hidden from job lists): its parent and its frames."""

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex[:16]

    def snapshot(self) -> Job:
        """A copy that later changes to this job do not touch (what the API hands out)."""
        return replace(
            self,
            result=dict(self.result) if self.result else self.result,
            notes=list(self.notes),
            failures=list(self.failures),
            webhook=_copied(self.webhook),
            split=Split.from_dict(self.split.to_dict()) if self.split else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """The job as JSON-ready data (what the store keeps and the API shows)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["spec"] = self.spec.to_dict()
        data["status"] = str(self.status)
        data["error_code"] = str(self.error_code) if self.error_code else None
        data["progress"] = self.progress.to_dict() if self.progress else None
        data["input_media"] = self.input_media.to_dict() if self.input_media else None
        data["placement"] = self.placement.to_dict() if self.placement else None
        data["notes"] = list(self.notes)
        data["failures"] = [dict(f) for f in self.failures]
        data["webhook"] = _copied(self.webhook)
        data["split"] = self.split.to_dict() if self.split else None
        data["chunk"] = self.chunk.to_dict() if self.chunk else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        data = dict(data)
        data["spec"] = JobSpec.from_dict(data["spec"])
        data["status"] = JobStatus(data["status"])
        data["error_code"] = ErrorCode.parse(data.get("error_code"))
        if data.get("progress"):
            data["progress"] = ProgressSnapshot(**data["progress"])
        if data.get("input_media"):
            data["input_media"] = MediaInfo.from_dict(data["input_media"])
        if data.get("placement"):
            data["placement"] = JobPlacement.from_dict(data["placement"])
        if data.get("split"):
            data["split"] = Split.from_dict(data["split"])
        if data.get("chunk"):
            data["chunk"] = ChunkOf.from_dict(data["chunk"])
        return cls(**data)


def _copied(webhook: dict[str, Any] | None) -> dict[str, Any] | None:
    if webhook is None:
        return None
    return dict(webhook, attempts=[dict(a) for a in webhook.get("attempts", ())])


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
            job.failures = []
            job.webhook = None
            job.split = None  # its chunk files were removed when it ended
        job.finished_at = None
        job.progress = None
    else:
        job.finished_at = now
    job.reason = reason
    job.error_code = error_code if new in (JobStatus.FAILED, JobStatus.CANCELLED) else None
    return job
