"""What the farm learned about its speeds, applied to jobs: a sample from each finished
run, a predicted speed for a job on a node, and how long it should take there.

One part of the coordinator (:class:`Pace`), on the pure model of
:mod:`cluster.scheduling.speeds` and its file (:mod:`~cluster.control.records.speedbook`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from cluster.control.records.speedbook import SpeedBook
from cluster.media.encoders import CATALOG, choose_encoder
from cluster.media.work import WorkOutcome
from cluster.model.jobs import Hardware, Job, JobKind, JobPlacement
from cluster.model.media import MediaInfo
from cluster.model.quality import ScoreStep
from cluster.model.search import ProbeStep
from cluster.model.split import Segment
from cluster.nodes.agent import NodeInfo
from cluster.scheduling.costs import CostModel, expected_speed
from cluster.scheduling.planner import Placement
from cluster.scheduling.speeds import Device, Estimate, SpeedSample, Work, cores_bucket

log = logging.getLogger("framefleet.coordinator")
NO_MEDIA = MediaInfo(path="", format_name="", duration_s=None, size_bytes=None, bit_rate=None,
                     video=None)  # fmt: skip


def media_seconds(job: Job) -> float:
    """Seconds of media one run of ``job`` goes through: its chunk, its sample, its
    scored range, or its whole input."""
    media = job.input_media
    step = job.task.step if job.task is not None else None
    if isinstance(step, Segment):
        return step.duration_s
    if isinstance(step, ProbeStep):
        return step.sample.duration_s
    fps = media.video.fps if media and media.video else None
    if isinstance(step, ScoreStep) and step.frames and fps:
        return step.frames / fps
    return (media.duration_s or 0.0) if media else 0.0


def what(job: Job) -> str:
    step = job.task.step if job.task is not None else None
    if isinstance(step, Segment):
        return "chunk"
    if isinstance(step, ProbeStep):
        return "sample"
    if isinstance(step, ScoreStep) or job.spec.kind is JobKind.QUALITY:
        return "score"
    return "rendition" if job.spec.kind is JobKind.PACKAGE else str(job.spec.kind)


def work_of(job: Job, encoder: str | None) -> Work:
    media = job.input_media
    video = media.video if media else None
    name = encoder or ("score" if job.spec.kind is JobKind.QUALITY else "decode")
    return Work.of(name, str(job.spec.speed), video.height if video else 0,
                   video.fps if video else None, video.codec if video else "",
                   bool(video and video.bit_depth > 8))  # fmt: skip


def encoder_for(job: Job, hardware: Hardware) -> str | None:
    """The encoder a transcode placed on ``hardware`` runs (others run none)."""
    if job.spec.kind is not JobKind.TRANSCODE:
        return None
    try:
        return choose_encoder(job.spec.codec, hardware, CATALOG).name
    except Exception:  # no such encoder: judged as a decode
        return None


def device_of(node: NodeInfo | None, gpu_name: str | None, cores: float) -> Device:
    if gpu_name:
        return Device("gpu", gpu_name)
    model = node.cpu_model if node is not None and node.cpu_model else "unknown CPU"
    return Device("cpu", model, cores_bucket(cores))


class Pace:
    """The learned speeds of the farm, kept in ``path``."""

    def __init__(self, path: Path, costs: CostModel) -> None:
        self.book = SpeedBook(path)
        self._costs = costs

    def prior(self, job: Job, hardware: Hardware) -> float:
        media = job.input_media or NO_MEDIA
        return expected_speed(job.spec, hardware, media, self._costs)

    def learn(self, job: Job, outcome: WorkOutcome, node: NodeInfo | None, at: float) -> None:
        """A sample from a successful run of ``job`` (how long its ffmpeg ran for how
        much media); nothing when it did not say."""
        placed: JobPlacement | None = job.placement
        ran = outcome.timings.get("ffmpeg_s")
        if placed is None or not ran or outcome.status != "succeeded":
            return
        if placed.encoder is None and job.spec.kind is not JobKind.QUALITY:
            return  # thumbnails (seeks), validations, joins (copies): not an encode's pace
        result = outcome.result or {}
        covered = result.get("duration_s")
        media_s = float(covered) if isinstance(covered, int | float) and covered else 0.0
        media_s = media_s or media_seconds(job)
        frames = result.get("frames")
        sample = SpeedSample(
            at=at,
            node_id=placed.node_id,
            device=device_of(node, placed.gpu.name if placed.gpu else None, placed.cpus),
            work=work_of(job, placed.encoder),
            media_s=media_s,
            seconds=float(ran),
            frames=frames if isinstance(frames, int) else 0,
            prior=self.prior(job, placed.hardware),
            what=what(job),
        )
        try:
            self.book.add(sample)
        except Exception as exc:  # a full disk must not fail the job
            log.warning("could not keep a speed sample: %s", exc)

    def estimate(
        self, job: Job, node: NodeInfo | None, node_id: str, hardware: Hardware,
        gpu_name: str | None, cores: float,
    ) -> Estimate:  # fmt: skip
        """The predicted speed of ``job`` on ``node_id`` with what it would be given."""
        device = device_of(node, gpu_name, cores)
        work = work_of(job, encoder_for(job, hardware))
        return self.book.model.predict(node_id, device, work, self.prior(job, hardware))

    def seconds(self, job: Job, placement: Placement, node: NodeInfo | None) -> float:
        """How long ``job`` should run where ``placement`` puts it."""
        est = self.estimate(job, node, placement.node_id, placement.hardware,
                            placement.gpu_name, placement.cores)  # fmt: skip
        return est.seconds(media_seconds(job))
