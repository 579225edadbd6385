"""The encoder: runs one work order's ffmpeg at a time and reports its progress.

A plain class, so it runs and is tested without Ray; :mod:`cluster.ray_edge.actors`
makes it a Ray actor with the placement's resources. Outputs go to partial files
that are renamed into place only after the result checks out; on failure and on
cancel they are removed, and ffmpeg's process group is killed on cancel, on
shutdown and when the process exits.

A work order with a :class:`~cluster.storage.stage.StagePlan` (its input or outputs in
object storage, or under a media root this node cannot see) also has a
:class:`~cluster.nodes.stager.Stager`: the input is fetched
into the attempt's scratch folder before ffmpeg starts, the outputs are uploaded after
they passed, and the folder is removed at the end, whatever the end. A cancel stops a
transfer under way as it stops ffmpeg.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import shlex
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cluster.errors import (
    BelowQuality,
    EncodeError,
    EncoderUnavailable,
    ErrorCode,
    FramefleetError,
    InputError,
    JobFailure,
    OutputError,
    ToolMissing,
)
from cluster.media.manifests import MASTER, MPD
from cluster.media.paths import OVERWRITE_HINT
from cluster.media.pinned import Pinned
from cluster.media.quality import read_logs
from cluster.media.runner import FfmpegRun, RunResult, failure_for
from cluster.media.work import WorkOrder, WorkOutcome
from cluster.model.jobs import JobKind
from cluster.model.package import RenditionStep
from cluster.model.progress import ProgressSnapshot, ProgressThrottle
from cluster.model.quality import MODEL_VERSIONS, Metric, Model, merged, pooled
from cluster.nodes.packager import PackageFiles
from cluster.nodes.stager import Peer, StageCancelled, Stager
from cluster.nodes.stitch import ChunkFiles
from cluster.storage import objects
from cluster.storage.roots import to_root
from cluster.storage.scratch import Claim, Scratch
from cluster.storage.stage import beside_urls
from cluster.storage.urls import parse_object_url

log = logging.getLogger("framefleet.encoder")
ProgressSink = Callable[[str, int, ProgressSnapshot], None]
MAX_VALIDATION_ERRORS = 50
LOG_BYTES_PER_FRAME = 2048
"""Scratch a score's per-frame logs take (libvmaf's JSON is the largest)."""
MAX_LISTED = 1_000_000
"""Objects listed under a package's prefix before it is uploaded (what was there)."""


def truncation_gap(expected_s: float | None, got_s: float | None) -> float | None:
    """Seconds missing when ``got_s`` falls short of ``expected_s`` by more than jitter."""
    if not expected_s or got_s is None:
        return None
    gap = expected_s - got_s
    return gap if gap > max(1.0, 0.05 * expected_s) else None


def run_timings(received_at: float, done_at: float, result: RunResult | None) -> dict[str, float]:
    """Where one work order's time went on its node, in seconds: opening and checking
    the files before ffmpeg started, ffmpeg's own run, and checking and committing the
    output after it exited; ``ffmpeg_started_at`` is the wall-clock start."""
    if result is None or not result.started_at:
        return {"node_s": round(done_at - received_at, 4)}
    before = result.started_at - received_at
    return {
        "ffmpeg_started_at": result.started_at,
        "before_ffmpeg_s": round(before, 4),
        "ffmpeg_s": round(result.ran_s, 4),
        "after_ffmpeg_s": round(done_at - received_at - before - result.ran_s, 4),
    }


@dataclass(slots=True)
class Current:
    """The work order running now, and what of it can be stopped."""

    order: WorkOrder
    stager: Stager | None = None
    run: FfmpegRun | None = None
    pinned: Pinned | None = None
    chunks: ChunkFiles | None = None
    """A stitch's chunk files, open."""
    package: PackageFiles | None = None
    """A package being made in its staging folder."""
    logs: Claim | None = None
    """The scores' log folder's scratch claim (when no stager claimed the folder)."""

    def release(self, *, succeeded: bool) -> None:
        """Close what the order held; its partial files are removed unless it succeeded,
        its scratch folder whatever the end."""
        if self.pinned is not None:
            if not succeeded:
                self.pinned.remove_partials()
            self.pinned.close()
        if self.chunks is not None:
            self.chunks.close()
        if self.package is not None:
            self.package.close()
        if self.stager is not None:
            self.stager.remove()
        if self.logs is not None:
            self.logs.remove()
        elif self.order.logs is not None:  # in the stager's folder: removed with it
            shutil.rmtree(self.order.logs, ignore_errors=True)


class EncoderWorker:
    def __init__(
        self,
        *,
        progress_sink: ProgressSink | None = None,
        scratch_budget: int | None = None,
        peers: Callable[[str], Peer] | None = None,
    ) -> None:
        """``peers(node_id)``: the agent of that node, which serves media this node
        cannot see."""
        self._sink = progress_sink
        self._scratch_budget = scratch_budget
        self._peers = peers
        self._current: Current | None = None
        self._cancelled: set[str] = set()
        atexit.register(self.kill_now)

    async def run(self, order: WorkOrder) -> WorkOutcome:
        received_at = time.time()
        self._cancelled.discard(order.job_id)

        def report(snapshot: ProgressSnapshot) -> None:
            if self._sink is not None:
                self._sink(order.job_id, order.attempt, snapshot)

        current = self._current = Current(order)
        if order.stage is not None:

            def moved(n: int) -> None:  # the watchdog counts bytes moved as progress
                latest = _latest(current)
                report(
                    replace(latest, moved_bytes=n) if latest else ProgressSnapshot(moved_bytes=n)
                )

            peer = order.stage.peer
            link = self._peers(peer) if peer is not None and self._peers is not None else None
            current.stager = Stager(order.stage, self._scratch_budget, on_moved=moved, peer=link)
        outcome: WorkOutcome | None = None
        try:
            if current.stager is not None:
                await current.stager.fetch()
            await self._prepared(order, current)  # no await from here to ffmpeg's start
            # Opened and checked here, right before ffmpeg starts (see cluster.media.pinned).
            pinned = current.pinned = Pinned.open(
                order.command,
                input_path=order.spec.input,
                roots=tuple(Path(r) for r in order.roots),
                create_folders=order.spec.kind is JobKind.THUMBNAIL,
                reference=order.spec.reference,
            )
            if order.stitch is not None:
                current.chunks, pinned = ChunkFiles.open(order.stitch, pinned)
            if order.package is not None:
                media = order.media
                frames = None if media.frame_count_estimated else media.frame_count
                current.package, pinned = PackageFiles.open(order.package, pinned, frames)
            run = current.run = FfmpegRun(pinned.command, on_progress=report,
                                          throttle=ProgressThrottle(),
                                          pass_fds=pinned.pass_fds)  # fmt: skip
            log.info("job %s attempt %d: %s (files passed as open descriptors)",
                     order.job_id, order.attempt, shlex.join(order.command.argv))  # fmt: skip
            outcome = await self._execute(order, run, pinned, current)
        except StageCancelled:
            outcome = WorkOutcome(
                order.job_id, order.attempt, "cancelled", progress=_latest(current)
            )
        except JobFailure as exc:
            outcome = WorkOutcome.failure(order, exc, _latest(current))
        except ToolMissing as exc:  # this node lacks ffmpeg; another node may have it
            failure = EncoderUnavailable(f"{socket.gethostname()}: {exc}")
            outcome = WorkOutcome.failure(order, failure, _latest(current))
        except OSError as exc:
            outcome = WorkOutcome.failure(order, EncodeError(str(exc)), _latest(current))
        finally:
            self._current = None
            current.release(succeeded=outcome is not None and outcome.status == "succeeded")
        done_at = time.time()
        timings = run_timings(received_at, done_at, current.run.result if current.run else None)
        if current.stager is not None:
            timings.update(current.stager.timings)
        return replace(outcome, elapsed_s=round(done_at - received_at, 3), timings=timings)

    async def _prepared(self, order: WorkOrder, current: Current) -> None:
        """The attempt's log folder made; :class:`StageCancelled` if it was cancelled
        meanwhile (or while its media were fetched), so its ffmpeg never starts."""
        if order.job_id in self._cancelled:
            raise StageCancelled
        if order.logs is not None:
            current.logs = await asyncio.to_thread(self._log_folder, order, current.stager)
            if order.job_id in self._cancelled:
                raise StageCancelled

    async def _execute(
        self, order: WorkOrder, run: FfmpegRun, pinned: Pinned, current: Current
    ) -> WorkOutcome:
        spec, stager, chunks = order.spec, current.stager, current.chunks
        result = await run.run()
        if order.job_id in self._cancelled:
            return WorkOutcome(order.job_id, order.attempt, "cancelled", progress=result.progress)
        if spec.kind is JobKind.VALIDATE:
            return self._validated(order, result)
        if result.returncode != 0:
            raise failure_for(result, input_name=Path(spec.input).name, encoder=order.encoder)
        if spec.kind is JobKind.QUALITY:
            return await self._quality(order, result, pinned, current)
        if current.package is not None:
            return await self._packaged(order, result, pinned, current.package, stager)
        payload: dict[str, Any]
        if order.rendition is not None:
            sizes = [pinned.size(i) for i in range(len(pinned.outputs))]
            payload = self._rendered(order, order.rendition, result, sizes)
        elif spec.kind is JobKind.TRANSCODE:
            payload = self._transcoded(order, result, pinned.size())
        else:
            payload = {"images": [final for _, final in order.command.outputs]}
        if chunks is not None:  # nothing reaches the output before the join checks out
            payload["stitched"] = await chunks.check(pinned.outputs[0].partial,
                                                     bool(order.media.audio))  # fmt: skip
            if order.job_id in self._cancelled:
                return WorkOutcome(order.job_id, order.attempt, "cancelled",
                                   progress=result.progress)  # fmt: skip
        if order.scoring is not None:  # scored before anything reaches the destination
            payload["quality"] = await self._scored(order, pinned, current, result)
            if order.job_id in self._cancelled:
                return WorkOutcome(order.job_id, order.attempt, "cancelled",
                                   progress=result.progress)  # fmt: skip
        pinned.commit(overwrite=spec.overwrite)
        if chunks is not None:
            chunks.remove()
        if stager is not None:
            payload = await self._pushed(stager, payload, order)
        elif order.media_map:  # the node's own paths, told in the roots' terms
            payload = _unmapped(payload, order)
        return WorkOutcome(
            order.job_id,
            order.attempt,
            "succeeded",
            result=payload,
            progress=result.progress,
            notes=list(order.command.notes),
        )

    async def _packaged(
        self,
        order: WorkOrder,
        result: RunResult,
        pinned: Pinned,
        package: PackageFiles,
        stager: Stager | None,
    ) -> WorkOutcome:
        """The package cut, described and checked in its staging folder, then published
        (one rename); the renditions' files removed once it is."""
        payload = await package.build()
        if order.job_id in self._cancelled:
            return WorkOutcome(order.job_id, order.attempt, "cancelled", progress=result.progress)
        pinned.check_folders()
        # Off the event loop: an old package replaced is removed file by file.
        await asyncio.to_thread(package.publish, overwrite=order.spec.overwrite)
        package.remove_sources()
        if stager is not None:  # its destination is in object storage: upload it
            payload = await _uploaded(stager, package, order, payload)
        return WorkOutcome(order.job_id, order.attempt, "succeeded", result=payload,
                           progress=result.progress, notes=list(order.command.notes))  # fmt: skip

    async def _quality(
        self, order: WorkOrder, result: RunResult, pinned: Pinned, current: Current
    ) -> WorkOutcome:
        """A quality job's pass: its tallies; or a search's probe: the sample it encoded
        in scratch (never committed), scored, with the sample's size."""
        payload: dict[str, Any]
        if order.probe is not None:
            probed = await self._scored(order, pinned, current, result)
            if order.job_id in self._cancelled or "tallies" not in probed:  # stopped
                return WorkOutcome(order.job_id, order.attempt, "cancelled",
                                   progress=result.progress)  # fmt: skip
            payload = {**probed, "crf": order.probe.crf, "size_bytes": pinned.size(),
                       "frames": result.progress.frame if result.progress else None,
                       "encoder": order.encoder}  # fmt: skip
        elif order.score is not None and order.logs is not None:
            if order.job_id in self._cancelled:
                return WorkOutcome(order.job_id, order.attempt, "cancelled",
                                   progress=result.progress)  # fmt: skip
            tallies = await asyncio.to_thread(read_logs, order.score, order.logs)
            payload = {"tallies": [t.to_dict() for t in tallies], "scored": order.score.label,
                       "frames": max(t.count for t in tallies)}  # fmt: skip
        else:
            raise ValueError("a quality order needs its step and log folder")
        return WorkOutcome(order.job_id, order.attempt, "succeeded", result=payload,
                           progress=result.progress)  # fmt: skip

    def _log_folder(self, order: WorkOrder, stager: Stager | None) -> Claim | None:
        """The scores' log folder, made in the attempt's scratch folder (claimed here
        unless its stager claimed it)."""
        logs = Path(order.logs or "")
        claim = None
        if stager is None:
            frames = order.media.frame_count or 0
            if order.score is not None and order.score.frames:
                frames = order.score.frames  # a range, or a probe's sample
            need = LOG_BYTES_PER_FRAME * frames + 2**20
            if order.probe is not None:  # and its sample's encode
                need += int((order.media.size_bytes or 0) * frames / max(1, frames_of(order)))
            scratch = Scratch(logs.parent.parent, self._scratch_budget)
            claim = scratch.claim(logs.parent.name, need)
        logs.mkdir(parents=True, exist_ok=True)
        return claim

    async def _scored(
        self, order: WorkOrder, pinned: Pinned, current: Current, encoded: RunResult
    ) -> dict[str, Any]:
        """The encoded partial file scored against the input (the quality ffmpeg, the same
        pinned files); a :class:`BelowQuality` when its VMAF is under ``min_vmaf``."""
        step, scoring = order.score, order.scoring
        if step is None or scoring is None or order.logs is None:
            raise ValueError("a scored transcode needs its step, command and log folder")
        done = encoded.progress

        def report(snapshot: ProgressSnapshot) -> None:  # the encode's, and frames scored
            if self._sink is not None and done is not None:
                self._sink(order.job_id, order.attempt,
                           replace(done, at=snapshot.at, scored_frames=snapshot.frame))  # fmt: skip

        run = current.run = FfmpegRun(pinned.pin(scoring), on_progress=report,
                                      throttle=ProgressThrottle(),
                                      pass_fds=pinned.pass_fds)  # fmt: skip
        log.info("job %s attempt %d: scoring: %s", order.job_id, order.attempt,
                 shlex.join(scoring.argv))  # fmt: skip
        result = await run.run()
        if order.job_id in self._cancelled:
            return {}
        if result.returncode != 0:
            tail = "; ".join(result.stderr_tail[-3:]) or f"ffmpeg exited {result.returncode}"
            raise EncodeError(f"the output could not be scored: {tail}")
        tallies = merged(await asyncio.to_thread(read_logs, step, order.logs))
        figures = {str(m): pooled(t, step.reference.frame_s) for m, t in tallies.items()}
        quality: dict[str, Any] = {
            "metrics": figures,
            "model": MODEL_VERSIONS[Model(step.model)] if Metric.VMAF in tallies else None,
            "scored_s": round(result.ran_s, 3),
        }
        if order.probe is not None:  # its samples are pooled on the head
            quality["tallies"] = [t.to_dict() for t in tallies.values()]
        floor, vmaf = step.options.min_vmaf, figures.get(Metric.VMAF.value, {})
        if floor is not None and vmaf.get("mean") is not None and vmaf["mean"] < floor:
            raise BelowQuality(
                f"output VMAF {vmaf['mean']:.2f} is below min_vmaf {floor:g} (p1 "
                f"{vmaf['p1']:.2f}, min {vmaf['min']:.2f}); nothing was written: lower the "
                "quality number (a lower CRF) or the floor"
            )
        return quality

    @staticmethod
    def _rendered(
        order: WorkOrder, step: RenditionStep, result: RunResult, sizes: list[int]
    ) -> dict[str, Any]:
        """A rendition's file (or a rung group's files), checked: all its frames (or its
        chunk's) were encoded."""
        rendition, frames = step.rendition, result.progress.frame if result.progress else None
        written = result.progress.out_time_s if result.progress else None
        media, chunk = order.media, step.segment
        # Streams may last differently (audio past the video): frames, not the container's
        # duration, say whether a video rendition is whole; the package checks the audio.
        known = media.frame_count if not media.frame_count_estimated else None
        if rendition.kind == "video" and chunk is None and known and (frames or 0) < known:
            raise InputError(
                f"{Path(order.spec.input).name}: only {frames or 0} of {known} frames could be "
                f"decoded for {rendition.label()}; the input is truncated or corrupt",
                code=ErrorCode.TRUNCATED,
            )
        if rendition.kind == "video" and chunk is not None and frames != chunk.frames:
            raise EncodeError(f"{rendition.label()}, {chunk.label}: FRAME MISMATCH: encoded "
                              f"{frames} frames, expected {chunk.frames}")  # fmt: skip
        finals = [final for _, final in order.command.outputs]
        each = zip(step.renditions, finals, sizes, strict=True)
        return {"output": finals[0], "rendition": rendition.key, "encoder": order.encoder,
                "codec": rendition.codec, "width": rendition.width, "height": rendition.height,
                "duration_s": written, "frames": frames, "size_bytes": sum(sizes),
                "renditions": [{"key": r.key, "output": f, "size_bytes": n}
                               for r, f, n in each]}  # fmt: skip

    @staticmethod
    async def _pushed(stager: Stager, payload: dict[str, Any], order: WorkOrder) -> dict[str, Any]:
        """Upload the committed outputs; the result names their URLs, sizes and ETags."""
        finals = [final for _, final in order.command.outputs]
        uploaded = await stager.push(finals)
        if "output" in payload and payload["output"] in uploaded:
            up = uploaded[payload["output"]]
            payload = {**payload, "output": up["url"], "size_bytes": up["size_bytes"],
                       "etag": up["etag"], "checksum": up["checksum"]}  # fmt: skip
        if "images" in payload:
            payload = {**payload, "images": [uploaded.get(i, {}).get("url", i)
                                             for i in payload["images"]]}  # fmt: skip
        return {**payload, **stager.moved}

    @staticmethod
    def _transcoded(order: WorkOrder, result: RunResult, size: int) -> dict[str, Any]:
        """Check and describe the output from ffmpeg's own account of what it wrote.

        ffmpeg's last progress block gives the time and frames it muxed; a second
        ffprobe would cost ~130 ms of CPU per job (process start-up) for no more truth.
        """
        _, final = order.command.outputs[0]
        written = _decoded(order, result)
        frames = result.progress.frame if result.progress else None
        segment = order.segment
        if segment is not None and frames != segment.frames:
            raise EncodeError(
                f"{segment.label}: FRAME MISMATCH: encoded {frames} frames, expected "
                f"{segment.frames}"
            )
        video = order.media.require_video()
        width, height = video.width, video.height
        if video.rotation in (90, 270):  # ffmpeg applies the rotation
            width, height = height, width
        return {
            "output": final,
            "encoder": order.encoder,
            "codec": order.spec.codec,
            "width": width - width % 2,
            "height": height - height % 2,
            "duration_s": written,
            "frames": frames,
            "size_bytes": size,
        }

    @staticmethod
    def _validated(order: WorkOrder, result: RunResult) -> WorkOutcome:
        errors = list(result.stderr_tail[:MAX_VALIDATION_ERRORS])
        decoded = result.progress.out_time_s if result.progress else None
        gap = truncation_gap(order.media.duration_s, decoded)
        if gap is not None:
            errors.append(
                f"decoded {decoded or 0:.2f} s of {order.media.duration_s:.2f} s: "
                f"{gap:.2f} s missing (truncated?)"
            )
        if result.returncode != 0 and not errors:
            errors.append(f"ffmpeg exited with status {result.returncode}")
        return WorkOutcome(
            order.job_id,
            order.attempt,
            "succeeded",
            result={"valid": not errors, "errors": errors, "decoded_s": decoded},
            progress=result.progress,
        )

    async def cancel(self, job_id: str) -> bool:
        """Kill the job's ffmpeg (process group), or stop its transfer, and drop its
        partial files."""
        current = self._current
        if current is None or current.order.job_id != job_id:
            return False
        self._cancelled.add(job_id)
        if current.stager is not None:
            current.stager.cancel()
        if current.run is not None:
            await current.run.kill()
        return True

    async def shutdown(self) -> None:
        current = self._current
        if current is not None:
            self._cancelled.add(current.order.job_id)
            if current.stager is not None:
                current.stager.cancel()
            if current.run is not None:
                await current.run.kill(grace_s=1.0)
            if current.pinned is not None:
                current.pinned.remove_partials()

    def kill_now(self) -> None:
        """Kill the running ffmpeg at once and drop what it was writing (at exit, or when
        the encoder in the coordinator's own process is killed)."""
        current = self._current
        if current is not None:
            if current.run is not None:
                current.run.kill_now()
            if current.pinned is not None:
                current.pinned.remove_partials()
            if current.stager is not None:
                current.stager.cancel()
                current.stager.remove()


async def _uploaded(
    stager: Stager, package: PackageFiles, order: WorkOrder, payload: dict[str, Any]
) -> dict[str, Any]:
    """A package published in scratch, uploaded under its prefix: segments and init
    segments first, media playlists next, the multivariant playlist and the MPD last, so
    a player never reads a manifest that names a missing object. An upload that fails
    or is cancelled removes what it had uploaded; the renditions' objects go once the
    package is up."""
    finals = package.published_files()
    target = parse_object_url(stager.plan.push[0][0], what="output", prefix=True)
    there = {str(u) for u in await asyncio.to_thread(
        objects.list_objects, stager.plan.store, target, ("",), MAX_LISTED)}  # fmt: skip
    for manifest in (MASTER, MPD):  # another job may have published here since submit
        if not order.spec.overwrite and str(target.child(manifest)) in there:
            raise OutputError(f"{target.child(manifest)} already exists; {OVERWRITE_HINT}")
    try:
        uploaded = await stager.push(finals)
    except BaseException:  # only what this attempt added goes; nothing that was there
        added = [u for u in stager.pushed if u not in there]
        await asyncio.shield(asyncio.to_thread(_delete, stager, added))
        raise
    prefix = stager.plan.push[0][0]  # where the package goes (the spec is local now)
    sources = beside_urls(prefix, tuple(order.package.files_list())) if order.package else []
    await asyncio.to_thread(_delete, stager, [str(u) for u in sources])
    return {**payload, "output": prefix, "objects": len(uploaded), **stager.moved}


def _delete(stager: Stager, urls: list[str]) -> None:
    for url in urls:
        try:
            objects.delete(stager.plan.store, parse_object_url(url, what="output"))
        except FramefleetError as exc:
            log.warning("could not remove %s: %s", url, exc)


def frames_of(order: WorkOrder) -> int:
    """The input's frames (estimated from its length if unknown)."""
    media = order.media
    fps = media.video.fps if media.video and media.video.fps else 25.0
    return media.frame_count or round((media.duration_s or 0.0) * fps)


def _decoded(order: WorkOrder, result: RunResult) -> float | None:
    """The seconds ffmpeg wrote (its last progress block), or an :class:`InputError` when
    the input could not be decoded to its end."""
    written = result.progress.out_time_s if result.progress else None
    if truncation_gap(order.media.duration_s, written) is not None:
        raise InputError(
            f"{Path(order.spec.input).name}: only {written or 0:.2f} s of "
            f"{order.media.duration_s:.2f} s could be decoded; the input is truncated "
            "or corrupt",
            code=ErrorCode.TRUNCATED,
        )
    return written


def _unmapped(payload: dict[str, Any], order: WorkOrder) -> dict[str, Any]:
    pairs = order.media_map
    if "output" in payload:
        payload = {**payload, "output": to_root(payload["output"], pairs)}
    if "images" in payload:
        payload = {**payload, "images": [to_root(i, pairs) for i in payload["images"]]}
    return payload


def _latest(current: Current) -> ProgressSnapshot | None:
    return current.run.latest if current.run else None
