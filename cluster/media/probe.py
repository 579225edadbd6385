"""What a media file holds: ffprobe's JSON turned into a typed :class:`MediaInfo`.

The argv and the parsing are pure; :func:`probe` (blocking) and
:func:`probe_async` (for the coordinator's event loop) only run ffprobe.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from cluster.errors import EncodeError, ErrorCode, InputError, ToolMissing
from cluster.media.paths import open_input

PROBE_TIMEOUT_S = 60.0
INPUT_FORMATS = (
    "mov", "mp4", "matroska", "webm", "avi", "mpegts", "mxf", "flv", "ogg", "mpeg", "asf",
    "yuv4mpegpipe", "ivf", "h264", "hevc", "gif", "wav", "mp3", "aac", "flac",
)  # fmt: skip
"""The demuxers an input may be read with (``-format_whitelist``): media containers that
read only the file they are given. Playlists and lists of files (hls, dash, concat,
image2 patterns...) would open other files, wherever they are, so they are refused."""
FORMAT_WHITELIST = ",".join(INPUT_FORMATS)
INPUT_OPTIONS = ("-protocol_whitelist", "file,pipe", "-format_whitelist", FORMAT_WHITELIST)
"""What every ffprobe and ffmpeg input gets before its ``file:`` path."""
_REFUSED_FORMAT = re.compile(r"\[(\w+) @ [^\]]*\] Format not on whitelist")
TEXT_SUBTITLE_CODECS = frozenset({"subrip", "srt", "ass", "ssa", "mov_text", "webvtt", "text"})
_ISO_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"})
_DEPTH = re.compile(r"(?:p|le|be)?(\d{2})(?:le|be)$")


@dataclass(frozen=True, slots=True)
class VideoStream:
    index: int
    codec: str
    width: int
    height: int
    pix_fmt: str | None
    bit_depth: int
    frame_rate: tuple[int, int] | None
    rotation: int = 0
    profile: str | None = None

    @property
    def fps(self) -> float | None:
        return self.frame_rate[0] / self.frame_rate[1] if self.frame_rate else None


@dataclass(frozen=True, slots=True)
class AudioStream:
    index: int
    codec: str
    channels: int | None = None
    sample_rate: int | None = None
    language: str | None = None


@dataclass(frozen=True, slots=True)
class SubtitleStream:
    index: int
    codec: str
    language: str | None = None

    @property
    def is_text(self) -> bool:
        return self.codec in TEXT_SUBTITLE_CODECS


@dataclass(frozen=True, slots=True)
class MediaInfo:
    path: str
    format_name: str
    duration_s: float | None
    size_bytes: int | None
    bit_rate: int | None
    video: VideoStream | None
    frame_count: int | None = None
    frame_count_estimated: bool = False
    audio: tuple[AudioStream, ...] = field(default_factory=tuple)
    subtitles: tuple[SubtitleStream, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MediaInfo:
        video = data.get("video")
        return cls(
            **{k: v for k, v in data.items() if k not in ("video", "audio", "subtitles")},
            video=VideoStream(**{**video, "frame_rate": _pair(video.get("frame_rate"))})
            if video
            else None,
            audio=tuple(AudioStream(**a) for a in data.get("audio", ())),
            subtitles=tuple(SubtitleStream(**s) for s in data.get("subtitles", ())),
        )

    def require_video(self) -> VideoStream:
        """The video stream, or an :class:`InputError` saying what the file holds instead."""
        if self.video is not None:
            return self.video
        found = [
            name
            for name, streams in (("audio", self.audio), ("subtitles", self.subtitles))
            if streams
        ]
        holds = f"found only {' and '.join(found)}" if found else "found no streams"
        raise InputError(
            f"{Path(self.path).name}: no video stream (ffprobe {holds})",
            code=ErrorCode.NO_VIDEO_STREAM,
        )


def _pair(value: Any) -> tuple[int, int] | None:
    return (int(value[0]), int(value[1])) if value else None


def probe_argv(path: str | os.PathLike[str]) -> list[str]:
    """ffprobe's argv for ``path``; the path always goes through the file protocol."""
    return [
        "ffprobe",
        "-v",
        "error",
        *INPUT_OPTIONS,
        "-print_format",
        "json",
        "-show_format",
        "-show_streams",
        f"file:{os.fspath(path)}",
    ]


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and number >= 0 else None


def _rate(value: Any) -> tuple[int, int] | None:
    try:
        rate = Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        return None
    return (rate.numerator, rate.denominator) if rate > 0 else None


def _clock(value: Any) -> float | None:
    """Matroska's ``HH:MM:SS.nnnnnnnnn`` duration tag in seconds."""
    try:
        hours, minutes, seconds = str(value).split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except (TypeError, ValueError):
        return None


def _bit_depth(stream: dict[str, Any]) -> int:
    raw = _int(stream.get("bits_per_raw_sample"))
    if raw:
        return raw
    match = _DEPTH.search(stream.get("pix_fmt") or "")
    return int(match.group(1)) if match else 8


def _rotation(stream: dict[str, Any]) -> int:
    for side in stream.get("side_data_list") or ():
        if "rotation" in side:
            return int(float(side["rotation"])) % 360
    return (_int((stream.get("tags") or {}).get("rotate")) or 0) % 360


def parse_probe(path: str, data: dict[str, Any]) -> MediaInfo:
    """Turn ffprobe's ``-show_format -show_streams`` JSON into a :class:`MediaInfo`."""
    fmt = data.get("format") or {}
    streams = data.get("streams") or []
    video: VideoStream | None = None
    video_raw: dict[str, Any] = {}
    audio: list[AudioStream] = []
    subtitles: list[SubtitleStream] = []
    for s in streams:
        kind = s.get("codec_type")
        language = (s.get("tags") or {}).get("language")
        cover_art = (s.get("disposition") or {}).get("attached_pic")
        if kind == "video" and video is None and not cover_art:
            video_raw = s
            video = VideoStream(
                index=int(s["index"]),
                codec=s.get("codec_name", "unknown"),
                width=_int(s.get("width")) or 0,
                height=_int(s.get("height")) or 0,
                pix_fmt=s.get("pix_fmt"),
                bit_depth=_bit_depth(s),
                frame_rate=_rate(s.get("avg_frame_rate")) or _rate(s.get("r_frame_rate")),
                rotation=_rotation(s),
                profile=s.get("profile"),
            )
        elif kind == "audio":
            audio.append(
                AudioStream(
                    index=int(s["index"]),
                    codec=s.get("codec_name", "unknown"),
                    channels=_int(s.get("channels")),
                    sample_rate=_int(s.get("sample_rate")),
                    language=language,
                )
            )
        elif kind == "subtitle":
            subtitles.append(
                SubtitleStream(
                    index=int(s["index"]), codec=s.get("codec_name", "unknown"), language=language
                )
            )
    duration = _float(fmt.get("duration")) or _float(video_raw.get("duration"))
    frames = _int(video_raw.get("nb_frames"))
    estimated = False
    video_duration = _float(video_raw.get("duration")) or _clock(
        (video_raw.get("tags") or {}).get("DURATION")
    )
    if not frames and video and video.fps and (video_duration or duration):
        frames, estimated = int((video_duration or duration or 0) * video.fps), True
    return MediaInfo(
        path=path,
        format_name=fmt.get("format_name", "unknown"),
        duration_s=duration,
        size_bytes=_int(fmt.get("size")),
        bit_rate=_int(fmt.get("bit_rate")),
        video=video,
        frame_count=frames or None,
        frame_count_estimated=estimated,
        audio=tuple(audio),
        subtitles=tuple(subtitles),
    )


def _check_readable(path: Path) -> None:
    """Refuse what is not a readable, non-empty file, in one line (never an ``OSError``)."""
    try:
        _check_file(path)
    except OSError as exc:
        raise InputError(
            f"{path.name[:80] or path}: cannot be read ({exc.strerror or exc})",
            code=ErrorCode.UNREADABLE,
        ) from exc


def _check_file(path: Path) -> None:
    name = path.name or str(path)
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path", code=ErrorCode.INPUT_MISSING)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a media file", code=ErrorCode.NOT_MEDIA)
    if not os.access(path, os.R_OK):
        raise InputError(f"{name}: cannot be read (permission denied)", code=ErrorCode.UNREADABLE)
    if path.stat().st_size == 0:
        raise InputError(f"{name}: the file is empty (0 bytes)", code=ErrorCode.NOT_MEDIA)


def _looks_like_iso_media(path: Path) -> bool:
    """Whether the file starts like an MP4/MOV (an ISO base media box)."""
    try:
        with path.open("rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return head[4:8] in _ISO_BOXES


def refused_format(name: str, stderr: str) -> InputError | None:
    """The error for an input whose format is not on the whitelist (a playlist...)."""
    match = _REFUSED_FORMAT.search(stderr)
    if match is None:
        return None
    return InputError(
        f"{name}: a {match.group(1)} file (a playlist or list of other files) is refused; "
        "give the media file itself",
        code=ErrorCode.FORMAT_REFUSED,
    )


def _probe_error(path: Path, stderr: str) -> InputError:
    refused = refused_format(path.name, stderr)
    if refused is not None:
        return refused
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    detail = lines[-1] if lines else "ffprobe failed"
    if "moov atom not found" in stderr and _looks_like_iso_media(path):
        return InputError(
            f"{path.name}: truncated or incomplete file (moov atom not found); "
            "copy or export it again",
            code=ErrorCode.TRUNCATED,
        )
    named_iso = path.suffix.lower() in (".mp4", ".mov", ".m4v", ".m4a", ".3gp")
    if "moov atom not found" in stderr or (
        named_iso and "Invalid data found" in stderr and not _looks_like_iso_media(path)
    ):
        return InputError(
            f"{path.name}: not a media file (no MP4/MOV structure found); check the file",
            code=ErrorCode.NOT_MEDIA,
        )
    if "Invalid data found" in stderr or "could not find codec parameters" in stderr.lower():
        return InputError(
            f"{path.name}: not a media file ffprobe can read ({detail.split(': ')[-1]})",
            code=ErrorCode.NOT_MEDIA,
        )
    return InputError(
        f"{path.name}: ffprobe could not read it ({detail})", code=ErrorCode.NOT_MEDIA
    )


def _result(path: Path, returncode: int, stdout: bytes, stderr: bytes) -> MediaInfo:
    if returncode < 0:
        # Killed from outside (its worker exiting, the OOM killer, a crash): says nothing
        # sure about the file, so it is retryable rather than an input error.
        raise EncodeError(
            f"{path.name}: ffprobe was stopped by signal {-returncode}; try again",
            code=ErrorCode.PROBE_INTERRUPTED,
        )
    if returncode != 0:
        raise _probe_error(path, stderr.decode(errors="replace"))
    try:
        data = json.loads(stdout)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path.name}: ffprobe gave unreadable output", code=ErrorCode.NOT_MEDIA
        ) from exc
    info = parse_probe(str(path), data)
    if not data.get("streams"):
        raise InputError(
            f"{path.name}: not a media file (no streams found)", code=ErrorCode.NOT_MEDIA
        )
    return info


def probe(path: str | os.PathLike[str], roots: tuple[Path, ...] = ()) -> MediaInfo:
    """Probe ``path`` with ffprobe (blocking); see :func:`probe_async` for ``roots``."""
    p = Path(path)
    _check_readable(p)
    fd = open_input(str(p), roots)
    try:
        done = subprocess.run(
            probe_argv(f"/proc/self/fd/{fd}"),
            capture_output=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
            pass_fds=(fd,),
        )
    except FileNotFoundError as exc:
        raise ToolMissing.for_tool("ffprobe") from exc
    except OSError as exc:
        raise InputError(f"{p.name[:80]}: ffprobe could not start ({exc})") from exc
    except subprocess.TimeoutExpired as exc:
        raise InputError(f"{p.name}: ffprobe took over {PROBE_TIMEOUT_S:.0f} s") from exc
    finally:
        os.close(fd)
    return _result(p, done.returncode, done.stdout, done.stderr)


async def probe_async(path: str | os.PathLike[str], roots: tuple[Path, ...] = ()) -> MediaInfo:
    """Probe ``path`` with ffprobe without blocking the event loop. The file is opened
    here (no link in its last part, and inside ``roots``) and ffprobe reads that open
    file, so a link swapped in after submit cannot show another file's metadata."""
    p = Path(path)
    _check_readable(p)
    fd = open_input(str(p), roots)
    try:
        proc = await asyncio.create_subprocess_exec(
            *probe_argv(f"/proc/self/fd/{fd}"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            pass_fds=(fd,),
        )
    except FileNotFoundError as exc:
        os.close(fd)
        raise ToolMissing.for_tool("ffprobe") from exc
    except OSError as exc:
        os.close(fd)
        raise InputError(f"{p.name[:80]}: ffprobe could not start ({exc})") from exc
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), PROBE_TIMEOUT_S)
    except TimeoutError as exc:
        proc.kill()
        await proc.wait()
        raise InputError(f"{p.name}: ffprobe took over {PROBE_TIMEOUT_S:.0f} s") from exc
    finally:
        os.close(fd)
    return _result(p, proc.returncode if proc.returncode is not None else 0, stdout, stderr)
