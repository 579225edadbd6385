"""What a media file holds, typed: :class:`MediaInfo` and its streams (pure vocabulary;
:func:`cluster.media.info.parse_probe` builds one from ffprobe's JSON)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cluster.errors import ErrorCode, InputError

TEXT_SUBTITLE_CODECS = frozenset({"subrip", "srt", "ass", "ssa", "mov_text", "webvtt", "text"})


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
    version: str | None = None
    """What changes when the file does (its inode and modification time, or its ETag in
    object storage): results kept for it are not reused for another file at its path."""

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
