"""The ffmpeg commands of a streaming package (pure, as :mod:`cluster.media.argv`).

- :func:`rendition_command`: one rung of the ladder (scaled with bicubic, constant
  quality under a bitrate cap, keyframes forced every ``gop_frames`` frames and no
  scene-cut keyframes between, so every rendition's segments start at the same frames),
  or one audio track as AAC-LC stereo, into the rendition's hidden MP4 beside the
  package; a chunk of it when the step has a segment.
- :func:`package_command`: every rendition's file copied, not re-encoded, into one
  fragmented MP4 per rendition (CMAF: a fragment per GOP, no edit list, negative
  composition offsets), and each text subtitle track converted to WebVTT, inside the
  package's staging folder; the node cuts the segments (:mod:`cluster.nodes.packager`).
"""

from __future__ import annotations

import os
import posixpath

from cluster.errors import SpecError
from cluster.media.argv import COMMON, INPUT_OPTS, Command, _encode_head, _input, partial_path
from cluster.media.encoders import Encoder, cpu_encoder
from cluster.media.manifests import SUBTITLES
from cluster.media.picture import plan_picture
from cluster.model.jobs import JobSpec
from cluster.model.media import MediaInfo
from cluster.model.package import PackageStep, Rendition, RenditionStep

CMAF_FLAGS = "+frag_keyframe+empty_moov+default_base_moof+cmaf"
WHOLE = ".whole.mp4"
"""Each rendition's fragmented MP4 in its folder of the staging folder, until cut."""
SCAN_NOTES = ("deinterlaced", "telecined")
"""Notes on the scan, the same for every rung (colour notes are said per codec)."""
LIST_PLACEHOLDER = "file:/dev/null/framefleet-rendition-"
"""A chunked rendition's list of chunk files: the node replaces it (see
:mod:`cluster.nodes.packager`) with a descriptor it wrote the list to."""


def gop_args(encoder: Encoder, gop: int) -> list[str]:
    """A fixed GOP of ``gop`` frames: a keyframe (IDR) forced every ``gop`` frames counted
    from the first, and no scene-cut keyframes."""
    forced = ["-force_key_frames", f"expr:eq(mod(n,{gop}),0)"]
    if encoder.is_nvenc:
        return ["-g", str(gop), "-forced-idr", "1", "-no-scenecut", "1", *forced]
    if encoder.name == "libx264":
        return ["-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0", *forced]
    if encoder.name == "libx265":
        return ["-g", str(gop), "-keyint_min", str(gop), "-forced-idr", "1", *forced]
    return ["-g", str(gop), *forced]


def rendition_command(
    spec: JobSpec,
    media: MediaInfo,
    encoder: Encoder | None,
    step: RenditionStep,
    *,
    job_id: str,
    cuda_device: str | None = None,
    threads: int | None = None,
) -> Command:
    """One rendition (or a chunk of one) into ``spec.output``, its hidden MP4."""
    if spec.output is None:
        raise SpecError("a rendition needs an output")
    rendition, segment = step.rendition, step.segment
    final = os.path.abspath(spec.output)
    partial = partial_path(final, job_id)
    video = media.require_video()
    seek = None
    if segment is not None and segment.start_frame:
        seek = segment.start_s - (0.5 / video.fps if video.fps else 0.0)
    if rendition.kind == "audio":
        argv = ["ffmpeg", *COMMON, "-loglevel", "warning", "-y", *_input(spec.input)]
        argv += ["-map_metadata", "-1", "-map_chapters", "-1", "-map", f"0:{rendition.stream}"]
        argv += ["-c:a", "aac", "-b:a", f"{rendition.max_kbps}k", "-ac", "2", "-ar", "48000"]
        argv += ["-vn", "-sn", "-dn", "-f", "mp4", f"file:{partial}"]
        return Command(argv, [(partial, final)], duration_s=media.duration_s)
    if encoder is None:
        raise SpecError(f"{rendition.label()} needs a video encoder")
    argv, env = _encode_head(encoder, threads, _input(spec.input, seek=seek))
    rungs = step.renditions
    finals = [final] + [os.path.join(os.path.dirname(final), n) for n in step.names[1:]]
    outputs = [(partial_path(f, job_id), f) for f in finals]
    # Rungs are progressive (a combed master deinterlaced at its frame rate) and SDR (an
    # HDR master tone-mapped), but for the HEVC/AV1 rungs of a package asked to keep HDR:
    # once, before the scalers (a task's rungs share one codec, so one kind of picture).
    hdr = {r.hdr for r in rungs}
    if len(hdr) > 1:
        raise SpecError(f"{rendition.label()}: SDR and HDR rungs cannot share one encode")
    picture = plan_picture(video, encoder, deinterlace=spec.deinterlace,
                           sdr=rungs[0].hdr is None, tonemap=spec.tonemap,
                           keep_rate=True)  # fmt: skip
    before = "".join(f"{f}," for f in picture.filters)
    if len(rungs) > 1:  # one decode, split into a scaler per rung
        graph = f"[0:{video.index}]{before}split={len(rungs)}" + "".join(
            f"[s{i}]" for i in range(len(rungs))
        )
        graph += "".join(f";[s{i}]{_scale(r)}[o{i}]" for i, r in enumerate(rungs))
        argv += ["-filter_complex", graph]
    frames = segment.frames if segment is not None else None
    pixels = sum(r.width * r.height for r in rungs)
    for i, (rung, (out, _)) in enumerate(zip(rungs, outputs, strict=True)):
        # The cores it was placed on, shared by the rungs by their pixels.
        share = max(1, round(threads * rung.width * rung.height / pixels)) if threads else None
        argv += ["-map_metadata", "-1", "-map_chapters", "-1"]
        if len(rungs) > 1:
            argv += ["-map", f"[o{i}]"]
        else:
            argv += ["-map", f"0:{video.index}", "-vf", before + _scale(rung)]
        rung_args = _rung_args(spec, encoder, rung, step.gop_frames, share, picture.pix_fmt)
        argv += picture.with_params([*rung_args, *picture.tags], encoder)  # colour tags
        if encoder.is_nvenc and cuda_device is not None:
            argv += ["-gpu", "0"]
            env["CUDA_VISIBLE_DEVICES"] = cuda_device
        if frames is not None:
            argv += ["-frames:v", str(frames)]
        argv += ["-an", "-sn", "-dn", "-f", "mp4", f"file:{out}"]
    duration = segment.duration_s if segment is not None else media.duration_s
    return Command(argv, outputs, duration_s=duration, total_frames=frames,
                   notes=list(picture.notes), env=env)  # fmt: skip


def _scale(rung: Rendition) -> str:
    return f"scale={rung.width}:{rung.height}:flags=bicubic,setsar=1"


def _rung_args(
    spec: JobSpec,
    encoder: Encoder,
    rung: Rendition,
    gop: int,
    threads: int | None,
    pix_fmt: str | None = None,
) -> list[str]:
    """One rung's encoder: constant quality under its cap, a fixed GOP (``pix_fmt``: a
    10-bit HDR rung's)."""
    if encoder.codec != rung.codec:
        raise SpecError(f"{rung.label()}: {encoder.name} does not encode {rung.codec}")
    argv = ["-fps_mode:v", "passthrough", "-c:v", encoder.name]
    argv += ["-preset", encoder.presets[spec.speed], *encoder.rate_control(rung.quality)]
    argv += ["-maxrate", f"{rung.max_kbps}k", "-bufsize", f"{rung.bufsize_kbits}k"]
    argv += ["-pix_fmt", pix_fmt or ("nv12" if encoder.is_nvenc else "yuv420p"),
             *encoder.extra_args]  # fmt: skip
    argv += encoder.thread_args(threads) if threads else []
    argv += gop_args(encoder, gop)
    if rung.codec == "hevc":
        argv += ["-tag:v", "hvc1"]
    return argv


def package_command(spec: JobSpec, media: MediaInfo, step: PackageStep, *, job_id: str) -> Command:
    """The renditions' files into one fragmented MP4 each (stream copy), and the text
    subtitles as WebVTT, in the staging folder (``.<package>.<job>.partial``, a folder),
    which the node renames onto the package once it passed."""
    if spec.output is None:
        raise SpecError("a package needs an output folder")
    final = os.path.abspath(spec.output)
    folder = posixpath.dirname(final)
    staging = partial_path(final, job_id)
    argv = ["ffmpeg", *COMMON, "-loglevel", "warning", "-y"]
    tracks = [*step.video, *step.audio]
    for rendition in tracks:
        files = step.files[rendition.key]
        if len(files) == 1:
            argv += [*INPUT_OPTS, "-i", f"file:{posixpath.join(folder, files[0])}"]
        else:
            argv += [
                "-f",
                "concat",
                "-safe",
                "0",
                "-protocol_whitelist",
                "file",
                "-format_whitelist",
                "concat,mov",
                "-i",
                f"{LIST_PLACEHOLDER}{rendition.key}",
            ]
    if step.texts:
        argv += _input(spec.input)
    frag_us = round(1_000_000 * step.gop_frames * _frame_s(step.frame_rate))
    for number, rendition in enumerate(tracks):
        out = posixpath.join(staging, rendition.key, WHOLE)
        argv += ["-map", f"{number}:0", "-c", "copy", "-map_metadata", "-1"]
        if rendition.kind == "video" and rendition.codec == "hevc":
            argv += ["-tag:v", "hvc1"]
        if rendition.kind == "audio":
            argv += ["-frag_duration", str(frag_us)]
        argv += ["-movflags", CMAF_FLAGS, "-f", "mp4", f"file:{out}"]
    for rendition in step.texts:
        out = posixpath.join(staging, rendition.key, SUBTITLES)
        argv += [
            "-map",
            f"{len(tracks)}:{rendition.stream}",
            "-c:s",
            "webvtt",
            "-f",
            "webvtt",
            f"file:{out}",
        ]
    notes: list[str] = []  # what the rungs' encodes did to the picture, per codec
    for codec, hdr in dict.fromkeys((r.codec, r.hdr) for r in step.video):
        if media.video is None:
            break
        picture = plan_picture(media.video, cpu_encoder(codec), sdr=hdr is None,
                               deinterlace=spec.deinterlace, tonemap=spec.tonemap,
                               keep_rate=True)  # fmt: skip
        for note in picture.notes:
            said = note if note.startswith(SCAN_NOTES) else f"{codec} rungs: {note}"
            if said not in notes:
                notes.append(said)
    return Command(argv, [(staging, final)], duration_s=media.duration_s, notes=notes)


def _frame_s(frame_rate: str) -> float:
    num, _, den = frame_rate.partition("/")
    return float(den or 1) / float(num) if float(num) else 0.04
