"""ffmpeg command lines, built by pure functions from a spec and a probe.

Nothing a user types becomes an ffmpeg argument: paths are made absolute and
passed through the ``file:`` protocol (so ``concat:``, ``-x`` or ``http:`` in a
name stay a file name), every other value comes from the catalog in
:mod:`cluster.media.encoders`. Every command has ``-nostdin -hide_banner -progress
pipe:1 -nostats``, and its inputs ``-protocol_whitelist file,pipe`` and a
``-format_whitelist`` of container demuxers (see :data:`cluster.media.probe.INPUT_FORMATS`), so
an input opens only the file it names.
Outputs are written to a hidden partial file beside the destination; the runner
renames them into place only on success.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from cluster.errors import ErrorCode, SpecError
from cluster.media.encoders import Container, Encoder, cpu_encoder
from cluster.media.picture import Picture, plan_picture
from cluster.media.probe import INPUT_OPTIONS
from cluster.model.jobs import JobSpec
from cluster.model.media import MediaInfo, VideoStream
from cluster.model.split import Segment

COMMON = ("-nostdin", "-hide_banner", "-progress", "pipe:1", "-nostats")
INPUT_OPTS = INPUT_OPTIONS

SEEK_INPUTS_MAX = 8
"""Up to this many thumbnails, each is a fast seek (an input of its own, all open at once);
more are taken from one decode of the input, so memory does not grow with the count."""


@dataclass(frozen=True, slots=True)
class Command:
    """One ffmpeg run: its argv, and the files it writes as (partial, final) pairs."""

    argv: list[str]
    outputs: list[tuple[str, str]] = field(default_factory=list)
    duration_s: float | None = None
    total_frames: int | None = None
    notes: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def partial_path(final: str | os.PathLike[str], job_id: str) -> str:
    """The hidden file beside ``final`` that a job writes before the atomic rename."""
    p = Path(final)
    return str(p.with_name(f".{p.name}.{job_id}.partial"))


def _input(path: str, seek: float | None = None) -> list[str]:
    args = ["-ss", f"{seek:.3f}"] if seek is not None else []
    return [*args, *INPUT_OPTS, "-i", f"file:{os.path.abspath(path)}"]


def _video_pix_fmt(spec: JobSpec, media: MediaInfo, encoder: Encoder) -> str:
    video = media.require_video()
    if spec.keep_10bit and video.bit_depth > 8:
        if encoder.ten_bit_pix_fmt is None:
            raise SpecError(f"{encoder.name} cannot write 10-bit video; use hevc or av1")
        return encoder.ten_bit_pix_fmt
    return "nv12" if encoder.is_nvenc else "yuv420p"


def _audio_args(
    media: MediaInfo, container: Container, source: int = 0
) -> tuple[list[str], list[str]]:
    args: list[str] = []
    notes: list[str] = []
    for i, stream in enumerate(media.audio):
        args += ["-map", f"{source}:{stream.index}"]
        if container.audio_copy is None or stream.codec in container.audio_copy:
            args += [f"-c:a:{i}", "copy"]
        else:
            encoder, bitrate = container.audio_fallback
            args += [f"-c:a:{i}", encoder, f"-b:a:{i}", bitrate]
            notes.append(f"audio stream {stream.index} ({stream.codec}) re-encoded to {encoder}")
    return args, notes


def _subtitle_args(
    media: MediaInfo, container: Container, source: int = 0
) -> tuple[list[str], list[str]]:
    args: list[str] = []
    notes: list[str] = []
    kept = 0
    for stream in media.subtitles:
        if stream.codec in container.subtitle_copy:
            codec = "copy"
        elif stream.is_text and container.text_subtitle_encoder:
            codec = container.text_subtitle_encoder
        else:
            notes.append(
                f"subtitle stream {stream.index} ({stream.codec}) dropped: "
                f".{container.ext} cannot hold it; use .mkv to keep it"
            )
            continue
        args += ["-map", f"{source}:{stream.index}", f"-c:s:{kept}", codec]
        kept += 1
    return args, notes


def transcode_command(
    spec: JobSpec,
    media: MediaInfo,
    encoder: Encoder,
    container: Container,
    *,
    job_id: str,
    cuda_device: str | None = None,
    threads: int | None = None,
) -> Command:
    """The command that transcodes ``spec.input`` to ``spec.output`` with ``encoder``;
    ``threads``, the cores it was placed on, bounds the decoder, filters and encoder."""
    if spec.output is None:
        raise SpecError(f"a {spec.kind} job needs an output")
    final = os.path.abspath(spec.output)
    partial = partial_path(final, job_id)
    argv, env = _encode_head(encoder, threads, _input(spec.input))
    argv += ["-map_metadata", "0", "-map_chapters", "0"]
    video, picture = _video_args(spec, media, encoder, container, cuda_device, threads, env)
    command = _with_streams(argv + video, media, container, (partial, final), source=0, env=env)
    return replace(command, total_frames=picture.frames(command.total_frames),
                   notes=[*picture.notes, *command.notes])  # fmt: skip


def _with_streams(
    argv: list[str],
    media: MediaInfo,
    container: Container,
    output: tuple[str, str],
    *,
    source: int,
    env: dict[str, str] | None = None,
) -> Command:
    """``argv`` with input ``source``'s audio and subtitles by the container's rules, and
    the output (``(partial, final)``): the command that writes the whole file."""
    audio, audio_notes = _audio_args(media, container, source)
    subtitles, subtitle_notes = _subtitle_args(media, container, source)
    argv = argv + audio + subtitles
    if container.faststart:
        argv += ["-movflags", "+faststart"]
    argv += ["-f", container.muxer, f"file:{output[0]}"]
    return Command(
        argv=argv,
        outputs=[output],
        duration_s=media.duration_s,
        total_frames=media.frame_count,
        notes=audio_notes + subtitle_notes,
        env=env or {},
    )


def _encode_head(
    encoder: Encoder, threads: int | None, source: list[str]
) -> tuple[list[str], dict[str, str]]:
    bound = ["-threads", str(threads)] if threads and not encoder.is_nvenc else []
    argv = ["ffmpeg", *COMMON, "-loglevel", "warning", "-y", *bound, *source]
    if bound:
        argv += ["-filter_threads", str(threads)]
    return argv, {}


def picture_for(spec: JobSpec, video: VideoStream, encoder: Encoder) -> Picture:
    """What ``spec`` asks done to ``video``'s picture on its way into ``encoder``."""
    return plan_picture(video, encoder, deinterlace=spec.deinterlace, sdr=spec.sdr,
                        tonemap=spec.tonemap, keep_10bit=spec.keep_10bit)  # fmt: skip


def _video_args(
    spec: JobSpec,
    media: MediaInfo,
    encoder: Encoder,
    container: Container,
    cuda_device: str | None,
    threads: int | None,
    env: dict[str, str],
) -> tuple[list[str], Picture]:
    """The first input's video, encoded (the same for a whole file and for a chunk), and
    what was done to its picture (deinterlaced, tone-mapped, HDR kept)."""
    video = media.require_video()
    if encoder.codec not in container.video_codecs:
        raise SpecError(
            f".{container.ext} cannot hold {encoder.codec} video; "
            f"use {', '.join(sorted(container.video_codecs))} or another extension"
        )
    picture = picture_for(spec, video, encoder)
    argv = ["-map", f"0:{video.index}"]
    pix_fmt = picture.pix_fmt or _video_pix_fmt(spec, media, encoder)
    filters = list(picture.filters)
    if picture.deinterlaced:  # 4:2:0 before the deinterlacer, at the depth it keeps
        deep = video.bit_depth > 8 or pix_fmt in ("yuv420p10le", "p010le")
        filters.insert(0, f"format={'yuv420p10le' if deep else 'yuv420p'}")
    if video.width % 2 or video.height % 2:
        filters.append("scale=trunc(iw/2)*2:trunc(ih/2)*2")
    if filters:
        argv += ["-vf", ",".join(filters)]
    # Frames as the source has them: the mp4 muxer's default (constant rate) repeats a
    # frame where the source's timestamps leave a gap (an mkv source's last frame).
    argv += ["-fps_mode:v", "vfr"]
    argv += ["-c:v", encoder.name, "-preset", encoder.presets[spec.speed]]
    argv += encoder.rate_control(spec.quality)
    argv += ["-pix_fmt", pix_fmt, *encoder.extra_args]
    argv += encoder.thread_args(threads) if threads else []
    argv = picture.with_params([*argv, *picture.args, *picture.tags], encoder)
    if tag := container.video_tags.get(encoder.codec):
        argv += ["-tag:v", tag]
    if encoder.is_nvenc and cuda_device is not None:
        # The placed GPU (by UUID, as NVML keys it) is the only one the process sees,
        # so ffmpeg's -gpu 0 and CUDA_VISIBLE_DEVICES name the same device.
        argv += ["-gpu", "0"]
        env["CUDA_VISIBLE_DEVICES"] = cuda_device
    return argv, picture


CHUNK_CONTAINER = "mp4"
"""Chunks are MP4 (it holds every codec and keeps the encoder's timestamps exactly)."""


def chunk_command(
    spec: JobSpec,
    media: MediaInfo,
    encoder: Encoder,
    container: Container,
    segment: Segment,
    *,
    job_id: str,
    cuda_device: str | None = None,
    threads: int | None = None,
) -> Command:
    """One chunk's video only, to ``spec.output`` (its hidden chunk file): the source
    sought to the chunk's first frame, exactly (``-ss`` half a frame before it: frames
    before are decoded from the keyframe before and dropped), ``frames`` frames encoded;
    the encoder's first frame is an IDR frame, so every join is a closed GOP."""
    if spec.output is None:
        raise SpecError("a chunk needs an output")
    final = os.path.abspath(spec.output)
    partial = partial_path(final, job_id)
    video = media.require_video()
    half = 0.5 / video.fps if video.fps else 0.0
    seek = segment.start_s - half if segment.start_frame else None
    argv, env = _encode_head(encoder, threads, _input(spec.input, seek=seek))
    argv += ["-map_metadata", "-1", "-map_chapters", "-1"]
    video_args, picture = _video_args(spec, media, encoder, container, cuda_device, threads, env)
    frames = picture.frames(segment.frames) or segment.frames
    argv += [*video_args, "-frames:v", str(frames), "-an", "-sn", "-dn"]
    argv += ["-f", container.muxer, f"file:{partial}"]
    return Command(
        argv=argv,
        outputs=[(partial, final)],
        duration_s=segment.duration_s,
        total_frames=frames,
        notes=list(picture.notes),
        env=env,
    )


LIST_PLACEHOLDER = "file:/dev/null/framefleet-chunk-list"
"""Where the stitch command reads its list of chunks: the node replaces it with a
descriptor it wrote the list to (each chunk opened by the node, never by name)."""


def stitch_command(
    spec: JobSpec, media: MediaInfo, container: Container, *, job_id: str, codec: str
) -> Command:
    """The chunks' video joined without re-encoding (the concat demuxer, reading the
    list at :data:`LIST_PLACEHOLDER`), with the source's audio, subtitles, chapters and
    metadata once, by the container's rules as for a whole-file encode."""
    if spec.output is None:
        raise SpecError("a stitch needs an output")
    if codec not in container.video_codecs:
        raise SpecError(f".{container.ext} cannot hold {codec} video; use another extension")
    final = os.path.abspath(spec.output)
    partial = partial_path(final, job_id)
    chunks = ["-f", "concat", "-safe", "0", "-protocol_whitelist", "file",
              "-format_whitelist", "concat,mov", "-i", LIST_PLACEHOLDER]  # fmt: skip
    argv = ["ffmpeg", *COMMON, "-loglevel", "warning", "-y", *chunks, *_input(spec.input)]
    argv += ["-map", "0:v:0", "-c:v", "copy", "-map_metadata", "1", "-map_chapters", "1"]
    if tag := container.video_tags.get(codec):
        argv += ["-tag:v", tag]
    command = _with_streams(argv, media, container, (partial, final), source=1)
    picture = picture_for(spec, media.require_video(), cpu_encoder(codec))  # what chunks did
    return replace(command, notes=[*picture.notes, *command.notes])


def validate_command(spec: JobSpec, media: MediaInfo) -> Command:
    """A full decode of every video and audio stream, reporting errors only."""
    argv = ["ffmpeg", *COMMON, "-loglevel", "error", *_input(spec.input)]
    argv += ["-map", "0:v?", "-map", "0:a?", "-f", "null", "-"]
    return Command(argv=argv, duration_s=media.duration_s, total_frames=media.frame_count)


def thumbnail_times(spec: JobSpec, media: MediaInfo) -> list[float]:
    """Where the thumbnails are taken: one time, or ``count`` evenly spaced, else 10% in."""
    duration = media.duration_s or 0.0
    if spec.thumbnail_at is not None:
        if duration and spec.thumbnail_at >= duration:
            raise SpecError(
                f"thumbnail time {spec.thumbnail_at:g} s is past the end "
                f"(the input lasts {duration:.2f} s)"
            )
        return [spec.thumbnail_at]
    count = spec.thumbnail_count
    if count is None:
        return [round(duration * 0.1, 3)]
    return [round(duration * (i + 0.5) / count, 3) for i in range(count)]


THUMBNAIL_PIXELS_MAX = 100 * 1920 * 1080
"""All thumbnails of a job together: at most 100 full-HD images."""
THUMBNAIL_COLUMNS_MAX = 100 * 1920
"""``thumbnail_count x thumbnail_width``, checked at submit before the input's size is known."""


def check_thumbnail_request(count: int | None, width: int | None) -> None:
    """Refuse at submit what can only be too large, whatever the input."""
    if count and width and count * width > THUMBNAIL_COLUMNS_MAX:
        raise SpecError(
            f"{count} thumbnails {width} px wide are too many pixels; at most "
            f"{THUMBNAIL_COLUMNS_MAX} (count x width), for example 100 at 1920 or 25 at 7680",
            code=ErrorCode.TOO_LARGE,
        )


def _thumbnail_size(spec: JobSpec, media: MediaInfo) -> tuple[int, int]:
    video = media.require_video()
    width, height = video.width or 1, video.height or 1
    if video.rotation in (90, 270):
        width, height = height, width
    if spec.thumbnail_width:
        return spec.thumbnail_width, max(2, round(height * spec.thumbnail_width / width))
    return width, height


def thumbnail_command(spec: JobSpec, media: MediaInfo, *, job_id: str) -> Command:
    """JPEG thumbnails in ``spec.output`` (a folder), in one ffmpeg: a fast seek per image
    up to :data:`SEEK_INPUTS_MAX` images, else one decode that picks the frames."""
    if spec.output is None:
        raise SpecError(f"a {spec.kind} job needs an output")
    video = media.require_video()
    times = thumbnail_times(spec, media)
    width, height = _thumbnail_size(spec, media)
    if len(times) * width * height > THUMBNAIL_PIXELS_MAX:
        raise SpecError(
            f"{len(times)} thumbnails of {width}x{height} are too many pixels (at most "
            f"{THUMBNAIL_PIXELS_MAX}); ask for fewer or smaller",
            code=ErrorCode.TOO_LARGE,
        )
    folder = Path(os.path.abspath(spec.output))
    stem = Path(spec.input).stem
    names = [f"{stem}.jpg"] if len(times) == 1 else [f"{stem}_{i:03d}.jpg" for i in
                                                    range(1, len(times) + 1)]  # fmt: skip
    outputs = [(partial_path(folder / n, job_id), str(folder / n)) for n in names]
    scale = f"scale={spec.thumbnail_width}:-2" if spec.thumbnail_width else None
    argv = ["ffmpeg", *COMMON, "-loglevel", "warning", "-y"]
    if len(times) > SEEK_INPUTS_MAX:
        # One pass: the first frame at or after each time (t crosses it since the last).
        picks = "+".join(f"gte(t\\,{t:.3f})*not(gte(prev_t\\,{t:.3f}))" for t in times)
        chain = f"select='{picks}'" + (f",{scale}" if scale else "")
        pattern = partial_path(folder / f"{stem.replace('%', '%%')}_%03d.jpg", job_id)
        argv += [*_input(spec.input), "-map", f"0:{video.index}", "-vf", chain,
                 "-fps_mode", "passthrough", "-frames:v", str(len(times)), "-q:v", "3",
                 "-f", "image2", "-start_number", "1", f"file:{pattern}"]  # fmt: skip
        return Command(argv=argv, outputs=outputs, total_frames=len(times))
    for t in times:
        argv += _input(spec.input, seek=t)
    for i, (partial, _) in enumerate(outputs):
        argv += ["-map", f"{i}:{video.index}", "-frames:v", "1", "-q:v", "3"]
        if scale:
            argv += ["-vf", scale]
        argv += ["-f", "image2", "-update", "1", f"file:{partial}"]
    return Command(argv=argv, outputs=outputs, total_frames=len(times))


def sample_command(
    path: str, *, seconds: float = 20.0, width: int = 1280, height: int = 720
) -> Command:
    """A test pattern with a tone (lavfi testsrc2 + sine) as a quick H.264 file, for demos."""
    argv = ["ffmpeg", *COMMON, "-loglevel", "error", "-y", "-f", "lavfi"]
    argv += ["-i", f"testsrc2=size={width}x{height}:rate=30:duration={seconds:g}"]
    argv += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds:g}"]
    argv += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac"]
    final = os.path.abspath(path)
    partial = partial_path(final, "sample")
    argv += ["-shortest", "-f", "mp4", f"file:{partial}"]
    return Command(argv=argv, outputs=[(partial, final)], duration_s=seconds)
