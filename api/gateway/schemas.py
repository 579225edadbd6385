"""The gateway's JSON shapes, named by role: ``*Request`` comes in, ``*View`` goes out."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cluster import (
    Codec,
    Deinterlace,
    Hardware,
    Job,
    JobKind,
    JobSpec,
    Metric,
    Model,
    Speed,
    Tonemap,
    job_view,
)

Path_ = Field(min_length=1, max_length=4096)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RungRequest(Strict):
    """One rung of a package's ladder."""

    height: int = Field(
        ge=144,
        le=4320,
        description="Pixels high (even); the width keeps "
        "the source's aspect ratio. A rung above the source is dropped.",
    )
    codec: Codec = Codec.H264
    max_kbps: int | None = Field(
        default=None,
        ge=50,
        le=200_000,
        description="The bitrate cap (default: the codec's for the height).",
    )
    quality: int | None = Field(default=None, ge=0, le=51)


class PackageRequest(Strict):
    """A package job's ladder, segments and formats."""

    ladder: list[RungRequest] = Field(
        default_factory=list,
        max_length=12,
        description="The rungs; empty: derived from the source (1080p to 360p, never above it).",
    )
    codecs: list[Codec] = Field(
        default_factory=lambda: [Codec.H264],
        min_length=1,
        max_length=3,
        description="The codecs of a derived ladder.",
    )
    segment_s: float = Field(default=6.0, ge=2.0, le=20.0, allow_inf_nan=False)
    min_gain: float = Field(
        default=1.0,
        ge=0,
        le=50,
        allow_inf_nan=False,
        description="With target_vmaf (a per-title ladder): drop a rung that adds less VMAF "
        "than this over the rung below, at the display size.",
    )
    min_step: float = Field(
        default=1.2,
        ge=1,
        le=4,
        allow_inf_nan=False,
        description="With target_vmaf: each rung below the top is searched for the best "
        "quality at a bitrate this many times below the rung above's.",
    )
    hdr: bool = Field(
        default=False,
        description="From an HDR master: its HEVC and AV1 rungs stay HDR (10-bit, HDR10 "
        "metadata, VIDEO-RANGE in the playlist); H.264 rungs are tone-mapped SDR.",
    )
    formats: list[str] = Field(
        default_factory=lambda: ["hls", "dash"],
        min_length=1,
        max_length=2,
        description="hls, dash or both.",
    )


class ScoreRequest(Strict):
    """How a quality job scores its input, or a transcode its output."""

    metrics: list[Metric] = Field(
        default_factory=lambda: [Metric.VMAF],
        min_length=1,
        max_length=4,
        description="vmaf, psnr (luma, dB), ssim (luma) and xpsnr (luma, dB).",
    )
    model: Model = Field(
        default=Model.AUTO,
        description="VMAF model: auto (4k above 1440 lines, else 1080p), 1080p, 4k or neg "
        "(no enhancement gain).",
    )
    subsample: int = Field(default=1, ge=1, le=1000, description="VMAF on every Nth frame.")
    min_vmaf: float | None = Field(
        default=None,
        ge=0,
        le=100,
        allow_inf_nan=False,
        description="The job fails, with its score, when the mean VMAF is lower (a "
        "transcode's output is then not written).",
    )


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
    deinterlace: Deinterlace = Field(
        default=Deinterlace.AUTO,
        description="auto: an interlaced source deinterlaced at its frame rate (25i to 25p), "
        "telecined film back to 24 frames/s; frame or field: always, at the frame or the "
        "field rate (25i to 50p); off: fields kept, flagged interlaced.",
    )
    sdr: bool = Field(
        default=False,
        description="Tone-map an HDR source to BT.709 SDR even where the output could stay "
        "HDR (hevc, av1).",
    )
    tonemap: Tonemap = Field(default=Tonemap.HABLE, description="How HDR becomes SDR.")
    thumbnail_at: float | None = Field(default=None, ge=0, le=1e7, allow_inf_nan=False)
    thumbnail_count: int | None = Field(default=None, ge=1, le=100)
    thumbnail_width: int | None = Field(default=None, ge=16, le=7680)
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Tags for the people and tools that follow the job: at most 32, keys up "
        "to 64 and values up to 256 characters, 4,096 in all.",
    )
    callback_url: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        description="POSTed the job's view, signed, when the job ends; its host must be "
        "listed in FRAMEFLEET_WEBHOOK_HOSTS. On a batch: each job's.",
    )
    package: PackageRequest | None = Field(
        default=None, description="A package job's ladder, segment length and formats."
    )
    reference: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="A quality job's reference: the input is scored against it.",
    )
    score: ScoreRequest | None = Field(
        default=None,
        description="A quality job's metrics and model; on a transcode, its output is "
        "scored against its input before it is written.",
    )
    target_vmaf: float | None = Field(
        default=None,
        gt=0,
        le=100,
        allow_inf_nan=False,
        description="A transcode as small as this VMAF allows: the farm searches the CRF "
        "on samples first (instead of quality).",
    )
    target_xpsnr: float | None = Field(
        default=None, gt=0, le=100, allow_inf_nan=False, description="The same, in XPSNR dB."
    )
    max_encoded_percent: float | None = Field(
        default=None,
        ge=1,
        le=100,
        allow_inf_nan=False,
        description="With a target: end the job when the output would be larger than this "
        "share of the input (default 80).",
    )
    split: str | float = Field(
        default="auto",
        description="A transcode's video in chunks across the farm, joined frame-exact: "
        "'auto' (when the input is over a minute and encoders are free), 'off', or about "
        "how many seconds a chunk lasts.",
    )


class JobRequest(SpecFields):
    input: str = Path_
    output: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="An output file (transcode) or folder (thumbnail, package).",
    )

    def to_spec(self) -> JobSpec:
        return JobSpec(**self.model_dump())


class BatchRequest(Strict):
    """One spec, many inputs (listed, or every video under an ``s3://`` prefix): outputs
    given one per input, or an output folder (or ``s3://`` prefix)."""

    spec: SpecFields = Field(default_factory=SpecFields)
    inputs: list[str] = Field(default_factory=list)
    input_prefix: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="Instead of inputs: every video object under this s3:// prefix.",
    )
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
    moved_bytes: int | None = Field(
        default=None, description="Bytes fetched from and uploaded to object storage so far."
    )
    scored_frames: int | None = Field(
        default=None, description="Frames of the output scored so far (a scored transcode)."
    )
    at: float | None = Field(default=None, description="When ffmpeg reported it (Unix time).")


class ErrorView(BaseModel):
    code: str | None
    message: str | None


class JobView(BaseModel):
    id: str
    kind: JobKind
    status: str
    tenant: str = Field(default="default", description="The tenant the job belongs to.")
    forecast: dict[str, Any] | None = Field(
        default=None,
        description="When it is predicted to start (queued) and finish, from the farm's "
        "learned speeds: start_at, finish_at (epoch seconds), node, speed (times real "
        "time), basis (static, device, work or node: what the speed rests on), "
        "finish_at_submit (the first prediction, kept).",
    )
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
    split: dict[str, Any] | None = Field(
        default=None,
        description="A transcode: whether its video was split (mode: chunks or whole) and "
        "why; its chunks (frames, status, where each runs, attempts, reused after a "
        "restart).",
    )
    package: dict[str, Any] | None = Field(
        default=None,
        description="A package: how it was planned (why: its renditions, segment length, "
        "chunks), its renditions, notes on what the ladder left out, and each task's status, "
        "node, encoder and percent done.",
    )
    webhook: dict[str, Any] | None = Field(
        default=None,
        description="The delivery of the job's ending to its callback_url: state (pending, "
        "delivered, failed), each attempt (at, HTTP status or error, ms), next_at.",
    )
    input_media: dict[str, Any] | None = Field(
        default=None,
        description="The input as probed: format, duration, streams; its video's scan "
        "(progressive, interlaced or telecined: the tag and idet's counts) and colour "
        "(primaries, transfer, matrix, range, HDR mastering, MaxCLL/MaxFALL, dynamic "
        "metadata).",
    )
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None

    @classmethod
    def of(cls, job: Job) -> JobView:
        return cls.model_validate(job_view(job))


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
