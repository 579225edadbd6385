"""ffprobe's JSON parsed into a :class:`~cluster.model.media.MediaInfo` by
:func:`parse_probe`, and a first frame's side data into its video's
:class:`~cluster.model.media.Colour` by :func:`with_frame_colour` (pure;
:mod:`cluster.media.probe` runs ffprobe)."""

from __future__ import annotations

import re
from dataclasses import replace
from fractions import Fraction
from typing import Any

from cluster.media.scan import tagged_scan
from cluster.model.media import (
    AudioStream,
    Colour,
    Mastering,
    MediaInfo,
    SubtitleStream,
    VideoStream,
)

_DEPTH = re.compile(r"(?:p|le|be)?(\d{2})(?:le|be)$")
_UNSAID = frozenset({"", "unknown", "unspecified", "reserved"})
"""Colour values that say nothing (ffprobe leaves most of them out already)."""
MASTERING_DISPLAY = "Mastering display metadata"
LIGHT_LEVEL = "Content light level metadata"
DYNAMIC_METADATA = (("Dolby Vision", "dolby_vision"), ("DOVI", "dolby_vision"),
                    ("SMPTE2094-40", "hdr10plus"), ("HDR10+", "hdr10plus"))  # fmt: skip
"""Side data (of the stream: "DOVI configuration record"; of a frame: "Dolby Vision RPU
Data", "HDR Dynamic Metadata SMPTE2094-40 (HDR10+)") that says a kind of dynamic
metadata is there, by a part of its ``side_data_type``."""


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


def _ratio(value: Any) -> float | None:
    """ffprobe's ``"num/den"`` (or plain number) as a float."""
    try:
        return float(Fraction(str(value)))
    except (ValueError, ZeroDivisionError):
        return None


def _mastering(side: dict[str, Any]) -> Mastering | None:
    """SMPTE ST 2086 from ffprobe's "Mastering display metadata" (``None`` unless both
    its primaries and its luminance are there)."""
    names = ("red_x", "red_y", "green_x", "green_y", "blue_x", "blue_y", "white_point_x",
             "white_point_y", "max_luminance", "min_luminance")  # fmt: skip
    values = [_ratio(side.get(name)) for name in names]
    if any(v is None for v in values):
        return None
    rx, ry, gx, gy, bx, by, wx, wy, top, bottom = (float(v or 0) for v in values)
    return Mastering(red=(rx, ry), green=(gx, gy), blue=(bx, by), white=(wx, wy),
                     max_luminance=top, min_luminance=bottom)  # fmt: skip


def _said(value: Any) -> str | None:
    return None if value is None or str(value) in _UNSAID else str(value)


def with_side_data(colour: Colour, side_data: list[dict[str, Any]] | None) -> Colour:
    """``colour`` completed from a stream's or a frame's ``side_data_list``: mastering
    display and content light level where ``colour`` has none, and the dynamic metadata
    it carries."""
    mastering, cll, fall = colour.mastering, colour.max_cll, colour.max_fall
    dynamic = list(colour.dynamic)
    for side in side_data or ():
        kind = str(side.get("side_data_type") or "")
        if kind == MASTERING_DISPLAY and mastering is None:
            mastering = _mastering(side)
        elif kind == LIGHT_LEVEL and cll is None:
            cll, fall = _int(side.get("max_content")), _int(side.get("max_average"))
        for part, name in DYNAMIC_METADATA:
            if part in kind and name not in dynamic:
                dynamic.append(name)
    return replace(colour, mastering=mastering, max_cll=cll, max_fall=fall,
                   dynamic=tuple(dynamic))  # fmt: skip


def parse_colour(stream: dict[str, Any]) -> Colour:
    """A video stream's colour as ffprobe's ``-show_streams`` gives it (what it does not
    say stays ``None``)."""
    said = Colour(
        primaries=_said(stream.get("color_primaries")),
        transfer=_said(stream.get("color_transfer")),
        matrix=_said(stream.get("color_space")),
        range=_said(stream.get("color_range")),
    )
    return with_side_data(said, stream.get("side_data_list"))


def with_frame_colour(video: VideoStream, data: dict[str, Any]) -> VideoStream:
    """``video`` with what its first frame's side data adds to its colour (ffprobe's
    ``-show_frames -show_entries frame=side_data_list`` JSON)."""
    colour = video.colour or Colour()
    for frame in data.get("frames") or ():
        colour = with_side_data(colour, frame.get("side_data_list"))
    return replace(video, colour=colour)


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
                scan=tagged_scan(s.get("field_order")),
                colour=parse_colour(s),
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
