"""The unit handed to an encoder actor (`WorkOrder`) and what comes back (`WorkOutcome`).

:func:`plan_work` is pure: the coordinator calls it with a job's spec, the
input's probe and the placement, and ships the result to the chosen actor.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field, replace
from typing import Any

from cluster.errors import ErrorCode, JobFailure, SpecError
from cluster.media.argv import (
    CHUNK_CONTAINER,
    Command,
    chunk_command,
    picture_for,
    stitch_command,
    thumbnail_command,
    transcode_command,
    validate_command,
)
from cluster.media.encoders import CONTAINERS, Encoder, container_for, cpu_encoder
from cluster.media.packaging import package_command, rendition_command
from cluster.media.quality import output_media, score_command, scored_output
from cluster.model.graph import Step
from cluster.model.jobs import JobKind, JobSpec
from cluster.model.media import MediaInfo
from cluster.model.package import PackageStep, RenditionStep
from cluster.model.progress import ProgressSnapshot
from cluster.model.quality import ScoreStep
from cluster.model.search import ProbeStep
from cluster.model.split import Segment, Stitch
from cluster.storage.stage import StagePlan


@dataclass(frozen=True, slots=True)
class WorkOrder:
    job_id: str
    attempt: int
    spec: JobSpec
    media: MediaInfo
    command: Command
    encoder: str | None = None
    roots: tuple[str, ...] = ()
    """The media roots the node checks the files against right before ffmpeg starts."""
    stage: StagePlan | None = None
    """What the node fetches before ffmpeg and uploads after (object storage, or media
    another node serves)."""
    media_map: tuple[tuple[str, str], ...] = ()
    """``(root, path on this node)`` for roots the node mounts elsewhere: the spec's
    paths are already the node's; results are told in the roots' terms."""
    segment: Segment | None = None
    """A chunk of a split transcode: its frames (the output is its chunk file)."""
    stitch: Stitch | None = None
    """The last step of a split transcode: the chunks joined into the output."""
    rendition: RenditionStep | None = None
    """A rendition of a package (its output is the rendition's hidden file)."""
    package: PackageStep | None = None
    """The last step of a package: the renditions cut, described, checked, published."""
    score: ScoreStep | None = None
    """What is scored: a quality job's pass (its command), or a transcode's output
    against its input (``scoring``, run once the encode passed, before the commit)."""
    scoring: Command | None = None
    logs: str | None = None
    """The folder the scores' per-frame logs are written to (made, then removed, by the
    node)."""
    probe: ProbeStep | None = None
    """A search's probe: a sample encoded (``command``, into the log folder) then scored
    (``scoring``); nothing is written outside scratch."""


def _with_scratch(roots: tuple[str, ...], logs: str | None) -> tuple[str, ...]:
    """``roots`` and the attempt's scratch folder, where a probe writes its sample (no
    roots: anywhere is allowed already)."""
    return (*roots, posixpath.dirname(logs or "")) if roots else roots


def _score_pass(
    spec: JobSpec, media: MediaInfo, step: Step | None, logs: str | None, threads: int | None
) -> tuple[ScoreStep, Command]:
    """A quality job's pass over its step's frames."""
    if not isinstance(step, ScoreStep) or spec.reference is None or logs is None:
        raise SpecError("a quality job's pass needs its step, a reference and a log folder")
    score = replace(step, reference=replace(step.reference, path=spec.reference))
    return score, score_command(score, spec.input, media, logs=logs, threads=threads or 1)


def check_scorable(spec: JobSpec, media: MediaInfo, encoder: Encoder | None) -> None:
    """A score compares the output frame by frame with its input: refused (one line, not
    retried) where the picture changes the frame rate (inverse telecine, a field-rate
    deinterlace) or the colour (HDR tone-mapped to SDR)."""
    if encoder is None or media.video is None:
        return
    picture = picture_for(spec, media.video, encoder)
    if picture.rate != 1:
        raise SpecError(
            f"cannot score this output against its input: it has {picture.rate} of its "
            "frames (inverse telecine or a field-rate deinterlace); drop the score or "
            "target, or use --deinterlace frame"
        )
    if media.video.hdr and not picture.hdr:
        raise SpecError(
            f"cannot score an SDR tone-map against its HDR {media.video.hdr} input; drop "
            "the score or target, or encode HEVC/AV1 (kept HDR)"
        )


def _probe_commands(
    spec: JobSpec,
    media: MediaInfo,
    encoder: Encoder | None,
    probe: ProbeStep,
    tag: str,
    logs: str | None,
    cuda_device: str | None,
    threads: int | None,
) -> tuple[Command, ScoreStep, Command]:
    """A probe's sample encode (into the log folder) and its score against the input."""
    if encoder is None or logs is None or spec.reference is None:
        raise SpecError("a probe needs an encoder, a log folder and its input")
    sample = posixpath.join(logs, f"sample-{probe.crf:02d}.{CHUNK_CONTAINER}")
    encode = replace(spec, kind=JobKind.TRANSCODE, output=sample, quality=probe.crf,
                     reference=None, score=None)  # fmt: skip
    kept = probe.rendition is None or probe.rendition.hdr is not None  # a rung: SDR or HDR
    check_scorable(encode if kept else replace(encode, sdr=True), media, encoder)
    rung = replace(probe.rendition, quality=probe.crf) if probe.rendition else None
    if rung is not None:  # a package's rung: scaled, under its cap, its GOP fixed
        command = rendition_command(encode, media, encoder, RenditionStep(rung, probe.gop,
                                    probe.sample), job_id=tag, cuda_device=cuda_device,
                                    threads=threads)  # fmt: skip
    else:
        command = chunk_command(encode, media, encoder, CONTAINERS[CHUNK_CONTAINER],
                                probe.sample, job_id=tag, cuda_device=cuda_device,
                                threads=threads)  # fmt: skip
    partial = command.outputs[0][0]
    made = output_media(encode, media, partial)
    if rung is not None and made.video is not None:  # scored at the display size
        made = replace(made, video=replace(made.video, width=rung.width, height=rung.height))
    step = replace(probe.score, reference=replace(probe.score.reference, path=spec.reference))
    scoring = score_command(step, partial, made, logs=logs, threads=threads or 1)
    return command, step, scoring


def _scoring(
    spec: JobSpec,
    media: MediaInfo,
    command: Command,
    logs: str | None,
    threads: int | None,
    ffmpeg: str,
) -> tuple[ScoreStep, Command]:
    """A transcode's output scored against its input once encoded (its partial file)."""
    if logs is None or not command.outputs:
        raise SpecError("a scored transcode needs a log folder")
    step, scoring = scored_output(spec, media, command.outputs[0][0], logs=logs,
                                  threads=threads or 1)  # fmt: skip
    return step, replace(scoring, argv=[ffmpeg, *scoring.argv[1:]])


@dataclass(frozen=True, slots=True)
class WorkOutcome:
    job_id: str
    attempt: int
    status: str
    """``succeeded``, ``failed`` or ``cancelled``."""
    result: dict[str, Any] | None = None
    error_code: ErrorCode | None = None
    error: str | None = None
    retryable: bool = False
    progress: ProgressSnapshot | None = None
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    """Where the encoder's time went (:func:`cluster.nodes.encoder.run_timings`)."""

    @classmethod
    def failure(
        cls, order: WorkOrder, exc: JobFailure, progress: ProgressSnapshot | None = None
    ) -> WorkOutcome:
        return cls(
            order.job_id,
            order.attempt,
            "failed",
            error_code=exc.code,
            error=str(exc),
            retryable=exc.retryable,
            progress=progress,
        )


def plan_work(
    job_id: str,
    attempt: int,
    spec: JobSpec,
    media: MediaInfo,
    encoder: Encoder | None,
    *,
    cuda_device: str | None = None,
    threads: int | None = None,
    ffmpeg: str = "ffmpeg",
    roots: tuple[str, ...] = (),
    stage: StagePlan | None = None,
    media_map: tuple[tuple[str, str], ...] = (),
    step: Step | None = None,
    quality_ffmpeg: str | None = None,
    logs: str | None = None,
) -> WorkOrder:
    """The :class:`WorkOrder` for a transcode, validate or thumbnail job, run by the
    ``ffmpeg`` of the node it was placed on.

    A task of a job graph has a ``step``: some frames to encode (a :class:`Segment`, into
    its chunk file), or the chunks to join (a :class:`Stitch`, into the output).
    Partial files are named per attempt: after a lost worker, its ffmpeg may live on
    for a moment (until Ray reaps it) and must not write into the retry's file.
    """
    segment = step if isinstance(step, Segment) else None
    stitch = step if isinstance(step, Stitch) else None
    tag = f"{job_id}.{attempt}"
    rendition = step if isinstance(step, RenditionStep) else None
    package = step if isinstance(step, PackageStep) else None
    score: ScoreStep | None = None
    probe = step if isinstance(step, ProbeStep) else None
    scoring: Command | None = None
    if probe is not None:
        command, score, scoring = _probe_commands(spec, media, encoder, probe, tag, logs,
                                                  cuda_device, threads)  # fmt: skip
        scoring = replace(scoring, argv=[quality_ffmpeg or ffmpeg, *scoring.argv[1:]])
        roots = _with_scratch(roots, logs)
    elif spec.kind is JobKind.QUALITY:
        score, command = _score_pass(spec, media, step, logs, threads)
        ffmpeg = quality_ffmpeg or ffmpeg
    elif package is not None:
        command = package_command(spec, media, package, job_id=tag)
    elif rendition is not None:
        command = rendition_command(spec, media, encoder, rendition, job_id=tag,
                                    cuda_device=cuda_device, threads=threads)  # fmt: skip
        if rendition.segment is not None:  # a chunk of it: its frames, its duration
            chunk = rendition.segment
            media = replace(media, duration_s=chunk.duration_s, frame_count=chunk.frames)
    elif stitch is not None:
        command = stitch_command(spec, media, container_for(spec.output or ""), job_id=tag,
                                 codec=spec.codec)  # fmt: skip
    elif segment is not None:
        if encoder is None:
            raise SpecError("a chunk needs an encoder")
        command = chunk_command(spec, media, encoder, CONTAINERS[CHUNK_CONTAINER], segment,
                                job_id=tag, cuda_device=cuda_device, threads=threads)  # fmt: skip
        media = replace(media, duration_s=segment.duration_s, frame_count=segment.frames)
    elif spec.kind is JobKind.TRANSCODE:
        if encoder is None or spec.output is None:
            raise SpecError("a transcode needs an encoder and an output")
        command = transcode_command(
            spec,
            media,
            encoder,
            container_for(spec.output),
            job_id=tag,
            cuda_device=cuda_device,
            threads=threads,
        )
    elif spec.kind is JobKind.VALIDATE:
        command = validate_command(spec, media)
    elif spec.kind is JobKind.THUMBNAIL:
        command = thumbnail_command(spec, media, job_id=tag)
    else:
        raise ValueError(f"{spec.kind} jobs need no encoder")
    command = replace(command, argv=[ffmpeg, *command.argv[1:]])
    if spec.kind is JobKind.TRANSCODE and spec.score is not None and segment is None:
        check_scorable(spec, media, encoder or cpu_encoder(spec.codec))
        score, scoring = _scoring(spec, media, command, logs, threads, quality_ffmpeg or ffmpeg)
    if stage is not None:
        roots = (*roots, stage.folder)
    return WorkOrder(
        job_id, attempt, spec, media, command, encoder.name if encoder else None, roots, stage,
        media_map, segment, stitch, rendition, package, score, scoring,
        logs if score is not None else None, probe,
    )  # fmt: skip
