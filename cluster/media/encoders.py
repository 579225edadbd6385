"""Encoders and containers as data: what each encoder takes, what each container holds.

One quality scale (CRF-like, 0 = best, 51 = smallest) and one speed scale
(fast / medium / slow) are mapped here onto each encoder's own rate control
and presets, so nothing else in framefleet knows an encoder's flags.
"""

from __future__ import annotations

import functools
import os
import shutil
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from cluster.errors import SpecError, ToolMissing
from cluster.media import builds
from cluster.media.builds import FFMPEG_ENV as FFMPEG_ENV
from cluster.model.jobs import CODECS, Hardware, Speed
from cluster.model.quality import FILTERS


@dataclass(frozen=True, slots=True)
class Encoder:
    name: str
    codec: str
    hardware: Hardware
    default_quality: int
    quality_args: tuple[str, ...]
    """Rate-control arguments; ``{q}`` is replaced by the quality (0-51)."""
    presets: Mapping[Speed, str]
    ten_bit_pix_fmt: str | None
    extra_args: tuple[str, ...] = ()
    threads: str | None = None
    """How to give the encoder ``{n}`` threads: an argument template (``None``: NVENC,
    whose CPU side is the decoder's)."""

    def thread_args(self, threads: int) -> list[str]:
        """Arguments that hold the encoder to ``threads`` threads, the cores it was placed
        on: concurrent encodes then share a machine instead of each sizing its pools to
        every core, as a naive ``xargs -P`` run does."""
        if self.threads is None:
            return []
        return self.threads.replace("{n}", str(max(threads, 1))).split(" ")

    def rate_control(self, quality: int | None) -> list[str]:
        q = self.default_quality if quality is None else quality
        return [arg.replace("{q}", str(q)) for arg in self.quality_args]

    @property
    def is_nvenc(self) -> bool:
        return self.hardware is Hardware.GPU


_X26X_PRESETS = {Speed.FAST: "veryfast", Speed.MEDIUM: "medium", Speed.SLOW: "slow"}
_NVENC_PRESETS = {Speed.FAST: "p2", Speed.MEDIUM: "p4", Speed.SLOW: "p6"}
_SVT_PRESETS = {Speed.FAST: "10", Speed.MEDIUM: "8", Speed.SLOW: "5"}
_NVENC_RC = ("-rc", "vbr", "-cq", "{q}", "-b:v", "0")

CATALOG: tuple[Encoder, ...] = (
    Encoder(
        "libx264",
        "h264",
        Hardware.CPU,
        23,
        ("-crf", "{q}"),
        _X26X_PRESETS,
        None,
        threads="-threads {n}",
    ),
    Encoder(
        "libx265",
        "hevc",
        Hardware.CPU,
        28,
        ("-crf", "{q}"),
        _X26X_PRESETS,
        "yuv420p10le",
        ("-x265-params", "log-level=error"),
        threads="-x265-params log-level=error:pools={n}",  # replaces the one above
    ),
    Encoder(
        "libsvtav1",
        "av1",
        Hardware.CPU,
        35,
        ("-crf", "{q}"),
        _SVT_PRESETS,
        "yuv420p10le",
        threads="-svtav1-params lp={n}",
    ),
    Encoder("h264_nvenc", "h264", Hardware.GPU, 23, _NVENC_RC, _NVENC_PRESETS, None),
    Encoder("hevc_nvenc", "hevc", Hardware.GPU, 28, _NVENC_RC, _NVENC_PRESETS, "p010le"),
    Encoder("av1_nvenc", "av1", Hardware.GPU, 35, _NVENC_RC, _NVENC_PRESETS, "p010le"),
)


@dataclass(frozen=True, slots=True)
class Container:
    ext: str
    muxer: str
    video_codecs: frozenset[str]
    audio_copy: frozenset[str] | None
    """Audio codecs stream-copied as they are; ``None`` means any."""
    audio_fallback: tuple[str, str]
    """(encoder, bitrate) for audio the container cannot hold."""
    subtitle_copy: frozenset[str]
    text_subtitle_encoder: str | None
    """Encoder that text subtitles are converted to when they cannot be copied."""
    video_tags: Mapping[str, str]
    faststart: bool = False


_MP4_AUDIO = frozenset({"aac", "mp3", "ac3", "eac3", "alac"})

CONTAINERS: Mapping[str, Container] = {
    c.ext: c
    for c in (
        Container(
            "mp4",
            "mp4",
            frozenset(CODECS),
            _MP4_AUDIO,
            ("aac", "192k"),
            frozenset({"mov_text"}),
            "mov_text",
            {"hevc": "hvc1"},
            faststart=True,
        ),
        Container(
            "mov",
            "mov",
            frozenset({"h264", "hevc"}),
            _MP4_AUDIO | {"pcm_s16le", "pcm_s24le"},
            ("aac", "192k"),
            frozenset({"mov_text"}),
            "mov_text",
            {"hevc": "hvc1"},
            faststart=True,
        ),
        Container(
            "mkv",
            "matroska",
            frozenset(CODECS),
            None,
            ("aac", "192k"),
            frozenset(
                {"subrip", "ass", "ssa", "webvtt", "hdmv_pgs_subtitle", "dvd_subtitle"}
                | {"dvb_subtitle"}
            ),
            "srt",
            {},
        ),
        Container(
            "webm",
            "webm",
            frozenset({"av1"}),
            frozenset({"opus", "vorbis"}),
            ("libopus", "128k"),
            frozenset({"webvtt"}),
            "webvtt",
            {},
        ),
    )
}


def container_for(output: str) -> Container:
    """The container named by ``output``'s extension, or a :class:`SpecError` listing them."""
    ext = output.rsplit(".", 1)[-1].lower() if "." in output else ""
    try:
        return CONTAINERS[ext]
    except KeyError:
        raise SpecError(
            f"output {output!r}: unsupported extension {('.' + ext) if ext else '(none)'}; "
            f"use one of {', '.join('.' + e for e in CONTAINERS)}"
        ) from None


@dataclass(frozen=True, slots=True)
class FfmpegBuild:
    """One node's ffmpeg: where it is, its version, and every encoder it was built with."""

    path: str
    version: str
    encoders: frozenset[str]
    metrics: frozenset[str] = frozenset()
    """Quality metrics its filters compute (:data:`cluster.model.quality.FILTERS`)."""

    def catalog(self) -> tuple[Encoder, ...]:
        """The catalog's encoders this build has (NVENC ones still need a GPU to prove)."""
        return available(self.encoders)

    def to_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "version": self.version,
            "encoders": [e.name for e in self.catalog()],
            "metrics": sorted(self.metrics),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> FfmpegBuild:
        names = data.get("encoders") or []
        if not isinstance(names, list):
            names = []
        metrics = data.get("metrics") or []
        if not isinstance(metrics, list):
            metrics = []
        return cls(str(data["path"]), str(data["version"]), frozenset(str(n) for n in names),
                   frozenset(str(m) for m in metrics))  # fmt: skip


_BUILDS = threading.Lock()
_READING: dict[str, threading.Lock] = {}


def ffmpeg_build(path: str = "ffmpeg") -> FfmpegBuild:
    """What the ffmpeg at ``path`` (a file, or a name on PATH) is (cached per process; a
    thread asking while another reads the same one waits for that answer; two builds are
    read at once)."""
    with _BUILDS:
        reading = _READING.setdefault(path, threading.Lock())
    with reading:
        return _read_build(path)


@functools.cache
def _read_build(path: str) -> FfmpegBuild:
    resolved = shutil.which(path)
    if resolved is None:
        raise ToolMissing.for_tool(path)
    (encoders_text, banner), (filters_text, _) = builds.answers(resolved)
    first = next((line for line in banner.splitlines() if line.startswith("ffmpeg version ")), "")
    version = first.split()[2] if first else "unknown"
    names = set()
    for line in encoders_text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and len(parts[0]) == 6 and parts[0][0] in "VAS":
            names.add(parts[1])
    filters = set()
    for line in filters_text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and "->" in parts[2]:
            filters.add(parts[1])
    metrics = frozenset(m.value for m, name in FILTERS.items() if name in filters)
    return FfmpegBuild(os.path.realpath(resolved), version, frozenset(names), metrics)


def ffmpeg_encoders() -> frozenset[str]:
    """Encoder names this machine's ffmpeg (on PATH) was built with."""
    return ffmpeg_build().encoders


def available(built: frozenset[str] | None = None) -> tuple[Encoder, ...]:
    """Catalog entries that ffmpeg was built with. NVENC still needs a trial encode to prove."""
    names = ffmpeg_encoders() if built is None else built
    return tuple(e for e in CATALOG if e.name in names)


def cpu_encoder(codec: str) -> Encoder:
    """The catalog's software encoder for ``codec``."""
    return next(e for e in CATALOG if e.codec == codec and not e.is_nvenc)


def choose_encoder(codec: str, hardware: Hardware, encoders: tuple[Encoder, ...]) -> Encoder:
    """The encoder for ``codec`` on ``hardware`` (``auto`` resolves to CPU here)."""
    want = Hardware.GPU if hardware is Hardware.GPU else Hardware.CPU
    for encoder in encoders:
        if encoder.codec == codec and encoder.hardware is want:
            return encoder
    kind = "NVENC" if want is Hardware.GPU else "CPU"
    raise SpecError(
        f"no {kind} encoder for {codec} in this ffmpeg build; "
        f"choose another codec or hardware ({', '.join(sorted(e.name for e in encoders))})"
    )
