"""Split-and-stitch vocabulary: a long transcode's video encoded as chunks across the farm,
then joined without re-encoding (pure data; :mod:`cluster.media.split` plans the chunks,
:mod:`cluster.control.graphs.split` makes them a job graph).

A job's ``split`` field says what was decided and why, and what the job shows of its
chunks (:class:`Split`); each chunk is a task of the job's graph (:mod:`cluster.model.graph`)
whose step is its frames (:class:`Segment`), and the last task, the stitch
(:class:`Stitch`), joins them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cluster.errors import SpecError
from cluster.model.plain import as_dict, plain

AUTO = "auto"
OFF = "off"
MIN_CHUNK_S = 1.0
"""The shortest chunk a user may ask for (``split=SECONDS``)."""
MAX_CHUNK_S = 86_400.0


def parse_split(value: object) -> str:
    """``auto``, ``off`` or a number of seconds (as text), checked; the canonical text."""
    text = str(value).strip().lower()
    if text in (AUTO, OFF):
        return text
    try:
        seconds = float(text.removesuffix("s"))
    except ValueError:
        seconds = float("nan")
    if not MIN_CHUNK_S <= seconds <= MAX_CHUNK_S:  # NaN fails too
        raise SpecError(
            f"split {value!r} is not auto, off or a chunk length in seconds "
            f"({MIN_CHUNK_S:g} to {MAX_CHUNK_S:g}); for example --split 60"
        )
    return f"{seconds:g}"


class SplitMode(StrEnum):
    WHOLE = "whole"
    """One ffmpeg for the whole file (``why`` says why it was not split)."""
    CHUNKS = "chunks"


@dataclass(frozen=True, slots=True)
class Segment:
    """One chunk of the source's video: ``frames`` frames from ``start_frame``."""

    index: int
    start_frame: int
    frames: int
    start_s: float
    """Its first frame's time from the start of the file (what ``-ss`` seeks to)."""
    duration_s: float
    """Until the next chunk's first frame (the last: its last frame's end)."""
    keyframe: bool
    """It starts on a source keyframe (a cheap, exact seek); else the frames from the
    keyframe before it are decoded and dropped."""

    @property
    def label(self) -> str:
        """``chunk 3 (frames 150-224, 5.00-7.50 s)``, as a reason names it."""
        end = self.start_frame + self.frames - 1
        return (
            f"chunk {self.index + 1} (frames {self.start_frame}-{end}, "
            f"{self.start_s:.2f}-{self.start_s + self.duration_s:.2f} s)"
        )


@dataclass(frozen=True, slots=True)
class FrameIndex:
    """A file's video frames (display order), read from its packets."""

    start_s: float
    """The file's start time (what ``-ss`` counts from)."""
    times: tuple[float, ...]
    keyframes: frozenset[int]
    """Frame numbers (display order) that are keyframes."""
    audio_end_s: float | None = None
    problem: str | None = None
    """Why the frames cannot be counted on (missing timestamps)."""

    @property
    def frames(self) -> int:
        return len(self.times)


@dataclass(slots=True)
class ChunkState:
    """What the parent shows of one chunk."""

    index: int
    job_id: str
    status: str = "queued"
    node_id: str | None = None
    where: str | None = None
    encoder: str | None = None
    attempts: int = 0
    frames_done: int = 0
    encode_s: float | None = None
    reused: bool = False
    """Finished before the job last ran again (a coordinator restart): not encoded again."""


@dataclass(slots=True)
class Split:
    """How a transcode was split, and why; with its chunks' state."""

    mode: SplitMode
    why: str
    segments: list[Segment] = field(default_factory=list)
    frames: int = 0
    """The source's video frames (what the stitched file must hold)."""
    frame_s: float = 0.0
    hardware: str | None = None
    """The one hardware every chunk uses (so one encoder, identical settings)."""
    audio_end_s: float | None = None
    """Where the source's first audio stream ends (the stitched file's must match)."""
    chunks: list[ChunkState] = field(default_factory=list)
    reused: int = 0
    """Chunks finished before a restart and reused (summed over restarts)."""
    started_at: float | None = None
    """When its first chunk was queued (the split job's wall time counts from here)."""

    @classmethod
    def whole(cls, why: str) -> Split:
        return cls(SplitMode.WHOLE, why)

    @property
    def chunked(self) -> bool:
        return self.mode is SplitMode.CHUNKS

    def to_dict(self) -> dict[str, Any]:
        data = as_dict(self)
        data["mode"] = str(self.mode)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Split:
        data = dict(data)
        data["mode"] = SplitMode(data["mode"])
        data["segments"] = [Segment(**s) for s in data.get("segments", ())]
        data["chunks"] = [ChunkState(**c) for c in data.get("chunks", ())]
        return cls(**data)


@dataclass(frozen=True, slots=True)
class Stitch:
    """What a stitch joins: the chunk files (names beside the output, in order) and
    what the joined file must hold."""

    chunks: tuple[str, ...]
    segments: tuple[Segment, ...]
    frame_s: float
    audio_end_s: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "chunks": list(self.chunks),
            "segments": [plain(s) for s in self.segments],
            "frame_s": self.frame_s,
            "audio_end_s": self.audio_end_s,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Stitch:
        return cls(
            chunks=tuple(data["chunks"]),
            segments=tuple(Segment(**s) for s in data["segments"]),
            frame_s=float(data["frame_s"]),
            audio_end_s=data.get("audio_end_s"),
        )


def chunk_id(parent: str, index: int) -> str:
    """A chunk's job id: its files (``.<name>.<id>...``) never match the parent's own
    partial-file pattern (``.*.<parent>.*partial``), so a retry of the parent's stitch
    does not remove them."""
    return f"{parent}-c{index + 1:03d}"


def chunk_name(output_name: str, parent: str, index: int) -> str:
    """The hidden chunk file beside the output: ``.<output>.<parent>-c003.chunk.mp4``."""
    return f".{output_name}.{chunk_id(parent, index)}.chunk.mp4"
