"""Streaming packages: one master in, an ABR ladder out as HLS and DASH on shared CMAF
segments (pure vocabulary; :mod:`cluster.media.ladder` derives a ladder from a source,
:mod:`cluster.control.graphs.package` makes a package job a graph, and
:mod:`cluster.nodes.packager` writes and checks the package).

What a user asks (:class:`PackageOptions`, on a ``package`` job's spec): the ladder's
rungs (:class:`Rung`; none: derived from the source), the codecs of a derived ladder, the
segment length and the formats. What the job runs: one task per rendition
(:class:`RenditionStep`: a video rung or an audio track encoded into a hidden file beside
the package), then the finishing task (:class:`PackageStep`) that cuts them into
segments, writes the playlists and the MPD, checks the whole and publishes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cluster.errors import SpecError
from cluster.model.plain import as_dict, plain
from cluster.model.split import Segment

FORMATS: tuple[str, ...] = ("hls", "dash")
DEFAULT_SEGMENT_S = 6.0
MIN_SEGMENT_S, MAX_SEGMENT_S = 2.0, 20.0
GOP_S = 2.0
"""Keyframes every (about) this long: a segment is a whole number of GOPs."""
MAX_RUNGS = 12
MIN_HEIGHT, MAX_HEIGHT = 144, 4320
MIN_KBPS, MAX_KBPS = 50, 200_000
DEFAULT_MIN_GAIN = 1.0
DEFAULT_MIN_STEP = 1.2
AUDIO_KBPS = 128
"""Every audio track becomes AAC-LC stereo at this rate."""


@dataclass(frozen=True, slots=True)
class Rung:
    """One rung a user asks for: a height (its width follows the source's aspect), a
    codec, a bitrate cap and a quality (``None``: the codec's defaults)."""

    height: int
    codec: str = "h264"
    max_kbps: int | None = None
    quality: int | None = None

    def name(self) -> str:
        return f"{self.height}p {self.codec}"

    def check(self, number: int, codecs: tuple[str, ...]) -> None:
        """A :class:`SpecError` naming the rung (``rung 2 (720p h264)``) unless it is sane."""
        what = f"ladder rung {number} ({self.name()})"
        if self.codec not in codecs:
            raise SpecError(f"{what}: unknown codec {self.codec!r}; choose {', '.join(codecs)}")
        if not MIN_HEIGHT <= self.height <= MAX_HEIGHT or self.height % 2:
            raise SpecError(
                f"{what}: height must be an even number of pixels from {MIN_HEIGHT} to {MAX_HEIGHT}"
            )
        if self.max_kbps is not None and not MIN_KBPS <= self.max_kbps <= MAX_KBPS:
            raise SpecError(f"{what}: max_kbps must be from {MIN_KBPS} to {MAX_KBPS}")
        if self.quality is not None and not 0 <= self.quality <= 51:
            raise SpecError(f"{what}: quality must be from 0 (best) to 51 (smallest)")

    @classmethod
    def parse(cls, value: Any, number: int) -> Rung:
        """A rung from JSON (``{"height": 720, "codec": "h264", "max_kbps": 3000}``) or
        the CLI's text (``720``, ``720:h264``, ``720:h264:3000``)."""
        if isinstance(value, Rung):
            return value
        try:
            if isinstance(value, dict):
                unknown = sorted(set(value) - {"height", "codec", "max_kbps", "quality"})
                if unknown:
                    raise SpecError(f"ladder rung {number}: unknown field(s) {', '.join(unknown)}")
                return cls(
                    height=int(value["height"]),
                    codec=str(value.get("codec", "h264")),
                    max_kbps=None if value.get("max_kbps") is None else int(value["max_kbps"]),
                    quality=None if value.get("quality") is None else int(value["quality"]),
                )
            parts = str(value).strip().lower().removesuffix("p").split(":")
            if not 1 <= len(parts) <= 3:
                raise ValueError(value)
            height = int(parts[0].removesuffix("p"))
            codec = parts[1] if len(parts) > 1 and parts[1] else "h264"
            kbps = int(parts[2].removesuffix("k")) if len(parts) > 2 else None
            return cls(height, codec, kbps)
        except (KeyError, TypeError, ValueError) as exc:
            raise SpecError(
                f"ladder rung {number} {value!r} is not a rung; give HEIGHT[:CODEC[:KBPS]] "
                '(720:h264:3000) or {"height": 720, "codec": "h264", "max_kbps": 3000}'
            ) from exc


@dataclass(frozen=True, slots=True)
class PackageOptions:
    """What a ``package`` job asks for beyond its input and output folder."""

    ladder: tuple[Rung, ...] = ()
    """Explicit rungs; empty: derived from the source (:func:`cluster.media.ladder.derive`)."""
    codecs: tuple[str, ...] = ("h264",)
    """The codecs of a derived ladder (each rung in each)."""
    segment_s: float = DEFAULT_SEGMENT_S
    formats: tuple[str, ...] = FORMATS
    min_gain: float = DEFAULT_MIN_GAIN
    """A per-title ladder (a package with a target) drops a rung that adds less than this
    (VMAF at the display size) over the rung below."""
    min_step: float = DEFAULT_MIN_STEP
    """Each rung below the top is searched for the best quality at a bitrate this many
    times below the rung above's."""
    hdr: bool = False
    """From an HDR master, its HEVC and AV1 rungs stay HDR (10-bit, its transfer and
    HDR10 metadata; ``VIDEO-RANGE`` in the playlist); H.264 rungs are tone-mapped SDR."""

    def checked(self, codecs: tuple[str, ...]) -> PackageOptions:
        if not self.formats or any(f not in FORMATS for f in self.formats):
            raise SpecError(
                f"package formats {list(self.formats)}: choose from {', '.join(FORMATS)}"
            )
        if not self.codecs or any(c not in codecs for c in self.codecs):
            raise SpecError(f"package codecs {list(self.codecs)}: choose from {', '.join(codecs)}")
        if not MIN_SEGMENT_S <= self.segment_s <= MAX_SEGMENT_S:  # NaN fails too
            raise SpecError(
                f"segment length {self.segment_s:g} s: give {MIN_SEGMENT_S:g} to "
                f"{MAX_SEGMENT_S:g} seconds (6 is the HLS authoring default)"
            )
        if len(self.ladder) > MAX_RUNGS:
            raise SpecError(f"a ladder has at most {MAX_RUNGS} rungs; {len(self.ladder)} given")
        seen: dict[tuple[int, str], int] = {}
        for number, rung in enumerate(self.ladder, 1):
            rung.check(number, codecs)
            if (rung.height, rung.codec) in seen:
                raise SpecError(
                    f"ladder rung {number} ({rung.name()}) repeats rung "
                    f"{seen[(rung.height, rung.codec)]}; give each height once per codec"
                )
            seen[(rung.height, rung.codec)] = number
        if not 0 <= self.min_gain <= 50:  # NaN fails too
            raise SpecError("min_gain must be from 0 to 50 VMAF points")
        if not 1 <= self.min_step <= 4:
            raise SpecError("min_step must be from 1 (no step) to 4 times the rung below")
        rung_codecs = {r.codec for r in self.ladder} or set(self.codecs)
        if self.hdr and not rung_codecs & {"hevc", "av1"}:
            raise SpecError("hdr keeps HEVC and AV1 rungs HDR: add hevc or av1 to the codecs "
                            "or the ladder")  # fmt: skip
        return PackageOptions(
            self.ladder,
            tuple(dict.fromkeys(self.codecs)),
            self.segment_s,
            tuple(dict.fromkeys(self.formats)),
            self.min_gain,
            self.min_step,
            self.hdr,
        )

    @property
    def gop_s(self) -> float:
        """The keyframe interval: a whole number of GOPs of about :data:`GOP_S` per segment."""
        return self.segment_s / max(1, round(self.segment_s / GOP_S))

    def to_dict(self) -> dict[str, Any]:
        return {
            "ladder": [plain(r) for r in self.ladder],
            "codecs": list(self.codecs),
            "segment_s": self.segment_s,
            "formats": list(self.formats),
            "min_gain": self.min_gain,
            "min_step": self.min_step,
            "hdr": self.hdr,
        }

    @classmethod
    def parse(cls, data: Any) -> PackageOptions:
        if isinstance(data, PackageOptions):
            return data
        if not isinstance(data, dict):
            raise SpecError("package must be an object: {ladder, codecs, segment_s, formats}")
        known = {"ladder", "codecs", "segment_s", "formats", "min_gain", "min_step", "hdr"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"package: unknown field(s) {', '.join(unknown)}")
        ladder = data.get("ladder") or ()
        if isinstance(ladder, str):
            ladder = [r for r in ladder.split(",") if r.strip()]
        try:
            segment_s = float(data.get("segment_s", DEFAULT_SEGMENT_S))
        except (TypeError, ValueError) as exc:
            raise SpecError(f"segment length {data.get('segment_s')!r} is not a number") from exc
        try:
            min_gain = float(data.get("min_gain", DEFAULT_MIN_GAIN))
            min_step = float(data.get("min_step", DEFAULT_MIN_STEP))
        except (TypeError, ValueError) as exc:
            raise SpecError("min_gain and min_step must be numbers") from exc
        return cls(
            ladder=tuple(Rung.parse(r, i) for i, r in enumerate(ladder, 1)),
            codecs=_names(data.get("codecs", ("h264",))),
            segment_s=segment_s,
            formats=_names(data.get("formats", FORMATS)),
            min_gain=min_gain,
            min_step=min_step,
            hdr=bool(data.get("hdr", False)),
        )


def _names(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split(",")
    return tuple(str(v).strip().lower() for v in value if str(v).strip())


# ---- what the job runs -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rendition:
    """One rendition of the package, resolved against the source."""

    key: str
    """Its task's key and its folder in the package (``v720h264``, ``a1``, ``s0``)."""
    kind: str
    """``video``, ``audio`` or ``text``."""
    codec: str
    width: int = 0
    height: int = 0
    max_kbps: int = 0
    quality: int | None = None
    stream: int | None = None
    """The source stream it comes from (audio and text; video: the first video stream)."""
    language: str | None = None
    name: str = ""
    """How a player's menu shows it (``720p``, ``English``)."""
    hdr: str | None = None
    """A video rung kept HDR (``"PQ"``, ``"HLG"``); ``None``: SDR."""

    @property
    def bufsize_kbits(self) -> int:
        """The VBV buffer: twice the cap (two seconds at the peak rate)."""
        return 2 * self.max_kbps

    def label(self) -> str:
        if self.kind == "video":
            return f"rendition {self.key} ({self.width}x{self.height} {self.codec})"
        return f"rendition {self.key} ({self.kind} {self.name})"

    def to_dict(self) -> dict[str, Any]:
        return as_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rendition:
        return cls(**data)


@dataclass(frozen=True, slots=True)
class RenditionStep:
    """A task's work: one rendition encoded (a video rung, or an audio track to AAC), or
    several video rungs from one decode of the source (``also``), with keyframes every
    ``gop_frames`` frames; a chunk of them when ``segment`` is set."""

    rendition: Rendition
    gop_frames: int
    segment: Segment | None = None
    also: tuple[Rendition, ...] = ()
    """More rungs encoded from the same decode (a rung group)."""
    names: tuple[str, ...] = ()
    """With ``also``: every rung's file name beside the output, in order (the first is the
    task's output)."""

    @property
    def renditions(self) -> tuple[Rendition, ...]:
        return (self.rendition, *self.also)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rendition": self.rendition.to_dict(),
            "gop_frames": self.gop_frames,
            "segment": plain(self.segment) if self.segment else None,
            "also": [r.to_dict() for r in self.also],
            "names": list(self.names),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RenditionStep:
        segment = data.get("segment")
        return cls(
            Rendition.from_dict(data["rendition"]),
            int(data["gop_frames"]),
            Segment(**segment) if segment else None,
            tuple(Rendition.from_dict(r) for r in data.get("also", ())),
            tuple(data.get("names", ())),
        )


@dataclass(frozen=True, slots=True)
class PackageStep:
    """The finishing task's work: the renditions' files (hidden, beside the package; a
    rendition encoded in chunks has several, in order) cut into CMAF segments every
    ``segment_frames`` frames, described by HLS playlists and a DASH MPD, checked, and
    published as the output folder."""

    renditions: tuple[Rendition, ...]
    files: dict[str, tuple[str, ...]]
    """Each rendition's files (by key), in order."""
    chunks: dict[str, tuple[Segment, ...]]
    """The chunks each rendition's files hold (by key), in order (one: encoded whole)."""
    gop_frames: int
    segment_frames: int
    segment_s: float
    frame_rate: str
    """The source's frame rate as ``num/den``."""
    duration_s: float
    frames: int
    formats: tuple[str, ...] = FORMATS

    def files_list(self) -> list[str]:
        """Every rendition file, in the renditions' order."""
        return [name for names in self.files.values() for name in names]

    @property
    def video(self) -> tuple[Rendition, ...]:
        return tuple(r for r in self.renditions if r.kind == "video")

    @property
    def audio(self) -> tuple[Rendition, ...]:
        return tuple(r for r in self.renditions if r.kind == "audio")

    @property
    def texts(self) -> tuple[Rendition, ...]:
        return tuple(r for r in self.renditions if r.kind == "text")

    def to_dict(self) -> dict[str, Any]:
        return {
            "renditions": [r.to_dict() for r in self.renditions],
            "files": {k: list(v) for k, v in self.files.items()},
            "chunks": {k: [plain(s) for s in v] for k, v in self.chunks.items()},
            "gop_frames": self.gop_frames,
            "segment_frames": self.segment_frames,
            "segment_s": self.segment_s,
            "frame_rate": self.frame_rate,
            "duration_s": self.duration_s,
            "frames": self.frames,
            "formats": list(self.formats),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PackageStep:
        return cls(
            renditions=tuple(Rendition.from_dict(r) for r in data["renditions"]),
            files={k: tuple(v) for k, v in data["files"].items()},
            chunks={k: tuple(Segment(**s) for s in v) for k, v in data["chunks"].items()},
            gop_frames=int(data["gop_frames"]),
            segment_frames=int(data["segment_frames"]),
            segment_s=float(data["segment_s"]),
            frame_rate=str(data["frame_rate"]),
            duration_s=float(data["duration_s"]),
            frames=int(data["frames"]),
            formats=tuple(data.get("formats", FORMATS)),
        )


def gop_frames(fps: float, gop_s: float) -> int:
    """Frames per GOP at ``fps`` (29.97 fps, 2 s: 60 frames, 2.002 s)."""
    return max(1, round(fps * gop_s))


def rendition_file(package_name: str, task_id: str) -> str:
    """A rendition's hidden file beside the package: ``.<package>.<task>.mp4``."""
    return f".{package_name}.{task_id}.mp4"


# ---- what the job shows ------------------------------------------------------------------


@dataclass(slots=True)
class RenditionState:
    """What the parent shows of one rendition task."""

    key: str
    label: str
    status: str = "waiting"
    node_id: str | None = None
    where: str | None = None
    encoder: str | None = None
    attempts: int = 0
    percent: float = 0.0


@dataclass(slots=True)
class PackageView:
    """How a package job was planned, and its renditions' state."""

    why: str
    renditions: list[Rendition] = field(default_factory=list)
    tasks: list[RenditionState] = field(default_factory=list)
    segment_s: float = DEFAULT_SEGMENT_S
    chunks: int = 1
    """Chunks per rendition (1: each encoded whole)."""
    notes: list[str] = field(default_factory=list)
    """What the ladder left out, and why (a rung above the source, bitmap subtitles)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "why": self.why,
            "notes": list(self.notes),
            "renditions": [r.to_dict() for r in self.renditions],
            "tasks": [plain(t) for t in self.tasks],
            "segment_s": self.segment_s,
            "chunks": self.chunks,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PackageView:
        return cls(
            why=data["why"],
            renditions=[Rendition.from_dict(r) for r in data.get("renditions", ())],
            tasks=[RenditionState(**t) for t in data.get("tasks", ())],
            segment_s=float(data.get("segment_s", DEFAULT_SEGMENT_S)),
            chunks=int(data.get("chunks", 1)),
            notes=list(data.get("notes", ())),
        )
