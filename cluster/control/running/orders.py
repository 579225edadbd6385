"""Work orders: the ffmpeg work of a job's next attempt where it was placed, in the paths
the chosen node sees its media at."""

from __future__ import annotations

import posixpath
from dataclasses import replace

from cluster.control.farm.reach import MediaReach
from cluster.media.encoders import CATALOG, choose_encoder
from cluster.media.work import WorkOrder, plan_work
from cluster.model.jobs import Hardware, Job, JobKind
from cluster.model.media import MediaInfo
from cluster.model.package import PackageStep
from cluster.model.search import ProbeStep
from cluster.nodes.agent import NodeInfo
from cluster.scheduling.planner import Placement
from cluster.storage.objects import ObjectStore
from cluster.storage.roots import Pairs, to_node
from cluster.storage.scratch import DEFAULT_SCRATCH
from cluster.storage.stage import localize


def work_order(
    job: Job,
    placement: Placement,
    media: MediaInfo,
    ffmpeg: str,
    roots: tuple[str, ...],
    *,
    scratch: str,
    store: ObjectStore,
    media_map: Pairs = (),
    quality_ffmpeg: str | None = None,
) -> WorkOrder:
    """The ffmpeg work for the job's next attempt where it was placed (the planner chose a
    node whose own ffmpeg, ``ffmpeg``, has the encoder). A job with ``s3://`` media, or
    placed on a node that cannot see its media (``placement.media_from``), gets local
    paths in the attempt's folder under the node's ``scratch``, and the plan that moves
    them (:func:`~cluster.storage.stage.localize`); on a node that mounts a root
    elsewhere (``media_map``), the node's paths."""
    attempt = job.attempts + 1
    folder = posixpath.join(scratch, f"{job.id}.{attempt}")
    step = job.task.step if job.task else None
    beside = tuple(n for names in step.files.values() for n in names) \
        if isinstance(step, PackageStep) else ()  # fmt: skip
    reads = not isinstance(step, PackageStep) or bool(step.texts)
    spec, stage = localize(job.spec, folder, store, media.size_bytes, peer=placement.media_from,
                           beside=beside, needs_input=reads)  # fmt: skip
    if media_map and placement.media_from is None:
        output = to_node(spec.output, media_map) if spec.output is not None else None
        reference = to_node(spec.reference, media_map) if spec.reference is not None else None
        spec = replace(spec, input=to_node(spec.input, media_map), output=output,
                       reference=reference)  # fmt: skip
        roots = tuple(to_node(r, media_map) for r in roots)
    transcode = spec.kind is JobKind.TRANSCODE
    hardware = placement.hardware
    finishing = job.task is not None and job.task.finishing
    if finishing and spec.hardware is not Hardware.AUTO:
        hardware = spec.hardware  # it encodes no video: named for its job's encoder
    probe = isinstance(step, ProbeStep)  # a search's sample, encoded then scored
    encoder = choose_encoder(spec.codec, hardware, CATALOG) if transcode or probe else None
    return plan_work(
        job.id,
        attempt,
        spec,
        media,
        encoder,
        cuda_device=placement.gpu_uuid,
        threads=placement.thread_count,  # the cores it was placed on (and spare ones)
        ffmpeg=ffmpeg,
        roots=roots,
        stage=stage,
        media_map=media_map if placement.media_from is None else (),
        step=step,
        quality_ffmpeg=quality_ffmpeg,
        logs=posixpath.join(folder, "scores"),
    )


def order_for(
    reach: MediaReach,
    job: Job,
    placement: Placement,
    media: MediaInfo,
    node: NodeInfo | None,
) -> tuple[WorkOrder, Placement]:
    """The work order for the job where it was placed (:func:`work_order`), and the
    placement, its reason saying where a node that mounts the roots elsewhere finds
    the media."""
    ffmpeg = node.ffmpeg.path if node and node.ffmpeg else "ffmpeg"
    quality = node.quality.path if node and node.quality else None
    mapped = () if placement.media_from else reach.mapped(node, job.spec)
    scratch = node.scratch_path if node else DEFAULT_SCRATCH
    order = work_order(job, placement, media, ffmpeg, reach.roots, scratch=scratch,
                       store=reach.store, media_map=mapped, quality_ffmpeg=quality)  # fmt: skip
    if mapped:
        moved = ", ".join(f"{root} at {path}" for root, path in mapped)
        placement = replace(placement, reason=f"{placement.reason}; media through this "
                            f"node's own mount ({moved})")  # fmt: skip
    return order, placement
