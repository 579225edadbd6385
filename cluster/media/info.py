"""ffprobe's JSON parsed into a :class:`~cluster.model.media.MediaInfo` by
:func:`parse_probe` (pure; :mod:`cluster.media.probe` runs ffprobe)."""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

from cluster.model.media import AudioStream, MediaInfo, SubtitleStream, VideoStream

_DEPTH = re.compile(r"(?:p|le|be)?(\d{2})(?:le|be)$")


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
