"""A package's renditions, resolved against its source (pure).

The default ladder follows Apple's HLS authoring examples for H.264 (1080p at 6 Mb/s down
to 360p at 730 kb/s), with lower caps for HEVC and AV1 (about 65 % and 55 % of H.264's
bits at equal quality). Every rung is encoded at a constant quality with a bitrate cap
(CRF or NVENC CQ with ``maxrate``/``bufsize``), so no rendition exceeds its rung's cap,
and nothing is upscaled: a rung higher than the source is dropped (a ladder left empty
gets one rung at the source's height).
"""

from __future__ import annotations

from cluster.errors import InputError
from cluster.model.media import MediaInfo
from cluster.model.package import AUDIO_KBPS, PackageOptions, Rendition, Rung

H264_CAPS_KBPS: dict[int, int] = {
    2160: 16_000,
    1440: 9_000,
    1080: 6_000,
    720: 3_000,
    540: 2_000,
    432: 1_100,
    360: 730,
    234: 365,
}
DEFAULT_HEIGHTS = (2160, 1440, 1080, 720, 540, 360)
CODEC_SHARE = {"h264": 1.0, "hevc": 0.65, "av1": 0.55}
"""A codec's bits for H.264's quality."""
TEXT_CODECS = frozenset({"subrip", "srt", "ass", "ssa", "webvtt", "mov_text", "text"})
"""Subtitle codecs that become WebVTT (bitmap subtitles cannot)."""


def default_cap(height: int, codec: str) -> int:
    """The cap for a rung of ``height`` in ``codec``, in kb/s (interpolated by pixels
    between the table's heights)."""
    heights = sorted(H264_CAPS_KBPS)
    below = max((h for h in heights if h <= height), default=heights[0])
    above = min((h for h in heights if h >= height), default=heights[-1])
    if above == below:
        kbps = float(H264_CAPS_KBPS[below])
    else:
        share = (height**2 - below**2) / (above**2 - below**2)
        kbps = H264_CAPS_KBPS[below] + share * (H264_CAPS_KBPS[above] - H264_CAPS_KBPS[below])
    return max(50, int(round(kbps * CODEC_SHARE.get(codec, 1.0) / 10.0) * 10))


def display_size(media: MediaInfo) -> tuple[int, int]:
    video = media.require_video()
    width, height = video.width, video.height
    if video.rotation in (90, 270):
        width, height = height, width
    return width, height


def _even(value: float) -> int:
    return max(2, round(value / 2.0) * 2)


HDR_CODECS = frozenset({"hevc", "av1"})
"""Codecs whose rungs can stay HDR (10-bit); H.264 rungs are 8-bit SDR."""


def resolve(options: PackageOptions, media: MediaInfo) -> tuple[list[Rendition], list[str]]:
    """The package's renditions (video rungs highest first, then every audio track, then
    every text subtitle track) and notes on what was dropped and why."""
    width, height = display_size(media)
    if not media.require_video().fps:
        raise InputError(
            "the input's video has no known frame rate; a package needs one "
            "(its segments are a whole number of frames)"
        )
    notes: list[str] = []
    rungs = list(options.ladder)
    if not rungs:
        rungs = [Rung(h, c) for c in options.codecs for h in DEFAULT_HEIGHTS if h <= height]
    kept = []
    for number, rung in enumerate(rungs, 1):
        if rung.height > height:
            if options.ladder:
                notes.append(
                    f"ladder rung {number} ({rung.name()}) dropped: the source is "
                    f"{height} pixels high and framefleet never upscales"
                )
            continue
        kept.append(rung)
    if not kept:
        top = height - height % 2
        kept = [
            Rung(top, c)
            for c in (
                options.codecs if not options.ladder else dict.fromkeys(r.codec for r in rungs)
            )
        ]
        notes.append(f"one rung at the source's own height ({top}p): no rung asked for fits it")
    hdr = media.require_video().hdr if options.hdr else None
    if options.hdr and hdr is None:
        notes.append("hdr asked, but the source is SDR: every rung is SDR")
    order = list(dict.fromkeys(r.codec for r in kept))
    kept.sort(key=lambda r: (order.index(r.codec), -r.height))
    renditions = []
    for rung in kept:
        rung_width = _even(width * rung.height / height)
        renditions.append(
            Rendition(
                key=f"v{rung.height}{rung.codec}",
                kind="video",
                codec=rung.codec,
                width=rung_width,
                height=rung.height,
                max_kbps=rung.max_kbps or default_cap(rung.height, rung.codec),
                quality=rung.quality,
                name=f"{rung.height}p",
                hdr=hdr if rung.codec in HDR_CODECS else None,
            )
        )
    for number, stream in enumerate(media.audio, 1):
        language = stream.language if stream.language not in (None, "und") else None
        renditions.append(
            Rendition(
                key=f"a{number}",
                kind="audio",
                codec="aac",
                max_kbps=AUDIO_KBPS,
                stream=stream.index,
                language=language,
                name=language or f"audio {number}",
            )
        )
    for number, sub in enumerate(media.subtitles, 1):
        if sub.codec not in TEXT_CODECS:
            notes.append(
                f"subtitle stream {sub.index} ({sub.codec}) left out: only text "
                "subtitles become WebVTT"
            )
            continue
        language = sub.language if sub.language not in (None, "und") else None
        renditions.append(
            Rendition(
                key=f"s{number}",
                kind="text",
                codec="wvtt",
                stream=sub.index,
                language=language,
                name=language or f"subtitles {number}",
            )
        )
    return renditions, notes
