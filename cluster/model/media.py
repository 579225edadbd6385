"""What a media file holds, typed: :class:`MediaInfo` and its streams (pure vocabulary;
:func:`cluster.media.info.parse_probe` builds one from ffprobe's JSON)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from cluster.errors import ErrorCode, InputError
from cluster.model.plain import as_dict

TEXT_SUBTITLE_CODECS = frozenset({"subrip", "srt", "ass", "ssa", "mov_text", "webvtt", "text"})


class ScanType(StrEnum):
    """How a video's frames hold its pictures."""

    PROGRESSIVE = "progressive"
    INTERLACED = "interlaced"
    """Each frame is two fields shot 1/50 or 1/60 s apart (25i, 30i broadcast)."""
    TELECINED = "telecined"
    """Film (24 frames/s) spread over 30i by 3:2 pulldown: 2 combed frames in 5."""
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class FieldCounts:
    """What ffmpeg's ``idet`` found in the frames it looked at (multi-frame detection,
    and how many frames repeat a field: a pulldown's sign)."""

    tff: int
    bff: int
    progressive: int
    undetermined: int
    repeated_top: int = 0
    repeated_bottom: int = 0

    @property
    def frames(self) -> int:
        return self.tff + self.bff + self.progressive + self.undetermined

    def __str__(self) -> str:
        return (f"TFF {self.tff}, BFF {self.bff}, progressive {self.progressive}, "
                f"undetermined {self.undetermined}; repeated fields: top {self.repeated_top}, "
                f"bottom {self.repeated_bottom}")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Scan:
    """The video's scan: what its stream says (``tagged``: ffprobe's ``field_order``) and,
    where that is missing or may be wrong, what ``idet`` counted; ``top_first``: the
    field shown first, for an interlaced or telecined video."""

    type: ScanType
    top_first: bool = True
    tagged: str | None = None
    idet: FieldCounts | None = None

    @property
    def combed(self) -> bool:
        """Whether frames hold two fields (interlaced or telecined)."""
        return self.type in (ScanType.INTERLACED, ScanType.TELECINED)

    def __str__(self) -> str:
        if not self.combed:
            return str(self.type)
        return f"{self.type}, {'top' if self.top_first else 'bottom'} field first"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scan:
        idet = data.get("idet")
        return cls(**{**data, "type": ScanType(data["type"]),
                      "idet": FieldCounts(**idet) if idet else None})  # fmt: skip


PQ = "smpte2084"
HLG = "arib-std-b67"
HDR_TRANSFERS = {PQ: "PQ", HLG: "HLG"}
"""ffmpeg's names of the HDR transfer functions, and what a playlist calls each."""


@dataclass(frozen=True, slots=True)
class Mastering:
    """A master's mastering display colour volume (SMPTE ST 2086): CIE 1931 xy of its
    primaries and white point, and its luminance range in cd/m²."""

    red: tuple[float, float]
    green: tuple[float, float]
    blue: tuple[float, float]
    white: tuple[float, float]
    max_luminance: float
    min_luminance: float

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Mastering:
        pairs = {k: (float(data[k][0]), float(data[k][1]))
                 for k in ("red", "green", "blue", "white")}  # fmt: skip
        return cls(**pairs, max_luminance=float(data["max_luminance"]),
                   min_luminance=float(data["min_luminance"]))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Colour:
    """The video's colour as its stream and first frame say: ffmpeg's names of its
    primaries, transfer, matrix and range; HDR10's static metadata (``mastering``,
    ``max_cll``/``max_fall`` in cd/m²); and dynamic metadata found (``dolby_vision``,
    ``hdr10plus``)."""

    primaries: str | None = None
    transfer: str | None = None
    matrix: str | None = None
    range: str | None = None
    mastering: Mastering | None = None
    max_cll: int | None = None
    max_fall: int | None = None
    dynamic: tuple[str, ...] = ()

    @property
    def hdr(self) -> str | None:
        """``"PQ"`` or ``"HLG"`` for an HDR transfer, else ``None``."""
        return HDR_TRANSFERS.get(self.transfer or "")

    def __str__(self) -> str:
        if self.hdr is None:
            return "SDR" + (f" ({self.primaries})" if self.primaries else "")
        extra = []
        if self.mastering:
            extra.append(f"mastered at {self.mastering.max_luminance:g} cd/m²")
        if self.max_cll:
            extra.append(f"MaxCLL {self.max_cll}, MaxFALL {self.max_fall or 0}")
        extra += [d.replace("_", " ") for d in self.dynamic]
        return f"HDR {self.hdr} ({self.primaries or '?'})" + (f": {', '.join(extra)}"
                                                               if extra else "")  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Colour:
        mastering = data.get("mastering")
        return cls(**{**data, "mastering": Mastering.from_dict(mastering) if mastering else None,
                      "dynamic": tuple(data.get("dynamic") or ())})  # fmt: skip


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
    scan: Scan | None = None
    """Progressive, interlaced or telecined (``None``: not looked at)."""
    colour: Colour | None = None
    """Its colour description and HDR metadata (``None``: not read)."""

    @property
    def fps(self) -> float | None:
        return self.frame_rate[0] / self.frame_rate[1] if self.frame_rate else None

    @property
    def hdr(self) -> str | None:
        """``"PQ"`` or ``"HLG"`` when the video is HDR."""
        return self.colour.hdr if self.colour else None

    @property
    def combed(self) -> bool:
        """Whether its frames hold two fields (interlaced or telecined)."""
        return self.scan is not None and self.scan.combed

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VideoStream:
        scan, colour = data.get("scan"), data.get("colour")
        return cls(**{**data, "frame_rate": _pair(data.get("frame_rate")),
                      "scan": Scan.from_dict(scan) if scan else None,
                      "colour": Colour.from_dict(colour) if colour else None})  # fmt: skip


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
        return as_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MediaInfo:
        video = data.get("video")
        return cls(
            **{k: v for k, v in data.items() if k not in ("video", "audio", "subtitles")},
            video=VideoStream.from_dict(video) if video else None,
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
