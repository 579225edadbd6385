"""The gateway's JSON shapes, named by role: ``*Request`` comes in, ``*View`` goes out."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cluster import Codec, Hardware, Job, JobKind, JobSpec, JobStatus, Speed

Path_ = Field(min_length=1, max_length=4096)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SpecFields(Strict):
    """What a job does, apart from its input; shared by single and batch submits."""

    kind: JobKind = JobKind.TRANSCODE
    codec: Codec = Codec.H264
    quality: int | None = Field(default=None, ge=0, le=51)
    speed: Speed = Speed.MEDIUM
    hardware: Hardware = Hardware.AUTO
    priority: int = Field(default=0, ge=-1000, le=1000)
    keep_10bit: bool = False
    overwrite: bool = False
    thumbnail_at: float | None = Field(default=None, ge=0, le=1e7, allow_inf_nan=False)
    thumbnail_count: int | None = Field(default=None, ge=1, le=100)
    thumbnail_width: int | None = Field(default=None, ge=16, le=7680)
    labels: dict[str, str] = Field(default_factory=dict, max_length=50)


class JobRequest(SpecFields):
    input: str = Path_
    output: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="An output file (transcode) or folder (thumbnail).",
    )

    def to_spec(self) -> JobSpec:
        return JobSpec(**self.model_dump())


class BatchRequest(Strict):
    """One spec, many inputs: outputs given one per input, or an output folder."""

    spec: SpecFields = Field(default_factory=SpecFields)
    inputs: list[str] = Field(min_length=1)
    outputs: list[str] | None = None
    output_dir: str | None = Field(default=None, min_length=1, max_length=4096)
    output_ext: str = Field(default="mp4", pattern=r"^(mp4|mov|mkv|webm)$")


class ProgressView(BaseModel):
    percent: float | None = None
    frame: int | None = None
    fps: float | None = None
    speed: float | None = None
    eta_s: float | None = None
    out_time_s: float | None = None
    done: bool = False
    at: float | None = Field(default=None, description="When ffmpeg reported it (Unix time).")


class ErrorView(BaseModel):
    code: str | None
    message: str | None


class JobView(BaseModel):
    id: str
    kind: JobKind
    status: str
    input: str
    output: str | None
    spec: dict[str, Any]
    progress: ProgressView | None
    placement: dict[str, Any] | None
    attempts: int
    reason: str | None
    error: ErrorView | None
    result: dict[str, Any] | None
    notes: list[str]
    limits: dict[str, float] | None = Field(
        default=None, description="The running attempt's watchdog limits (stall_s, max_runtime_s)."
    )
    failures: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Failed attempts that were not the input's fault: where, why (a retry "
        "goes elsewhere).",
    )
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None

    @classmethod
    def of(cls, job: Job) -> JobView:
        spec, ended = job.spec, job.status in (JobStatus.FAILED, JobStatus.CANCELLED)
        return cls(
            id=job.id,
            kind=spec.kind,
            status=str(job.status),
            input=spec.input,
            output=spec.output,
            spec=spec.to_dict(),
            progress=ProgressView(**job.progress.to_dict()) if job.progress else None,
            placement=job.placement.to_dict() if job.placement else None,
            attempts=job.attempts,
            reason=job.reason,
            error=ErrorView(code=job.error_code, message=job.reason) if ended else None,
            result=job.result,
            notes=job.notes,
            limits=job.limits,
            failures=job.failures,
            created_at=job.created_at,
            updated_at=job.updated_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
        )


class JobPage(BaseModel):
    jobs: list[JobView]
    next_cursor: int | None = Field(description="Pass as ?cursor= for the next page.")


class BatchView(BaseModel):
    ids: list[str]
    jobs: list[JobView]


class PresetsView(BaseModel):
    codecs: list[str]
    encoders: list[dict[str, Any]]
    speeds: list[str]
    hardware: list[str]
    quality: dict[str, Any]
    containers: list[str]
