"""A package's segments cut, measured, described and checked (pure).

:func:`cut` groups a track's fragments into segments (video: every ``segment_frames``
frames; audio: at the video's segment times). What was measured (:class:`Track`: each
segment's time, duration, bytes, whether it starts on a sync sample, its I-frame byte
ranges) is what the playlists and the MPD say: ``BANDWIDTH`` is the peak segment bitrate,
``AVERAGE-BANDWIDTH`` the average, ``CODECS`` the init segments' own strings. FFmpeg's
muxers guess those (110 % of a nominal rate; nothing at all for a CRF encode), so
framefleet writes every playlist and the MPD itself.

:func:`check` re-derives every rule of the package from the measurements and names the
rendition and segment that breaks one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from xml.sax.saxutils import quoteattr

from cluster.media.cmaf import Fragment, Init
from cluster.model.package import Rendition

INIT = "init.mp4"
MEDIA_PLAYLIST = "index.m3u8"
IFRAME_PLAYLIST = "iframes.m3u8"
MASTER = "master.m3u8"
MPD = "manifest.mpd"
SUBTITLES = "subtitles.vtt"
AUDIO_GROUP = "audio"
TEXT_GROUP = "subs"
DURATION_SLACK_S = 0.5
"""A segment may last the target duration plus this (Apple's HLS authoring rule)."""
BANDWIDTH_TOLERANCE = 0.10
CICP = "urn:mpeg:mpegB:cicp:"
HDR_TRANSFER_CICP = {"PQ": 16, "HLG": 18}
"""ITU-T H.273 transfer characteristics of the HDR rungs (BT.2020 primaries and matrix: 9)."""


def segment_name(number: int) -> str:
    return f"seg_{number:05d}.m4s"


@dataclass(frozen=True, slots=True)
class MeasuredSegment:
    number: int
    """From 1."""
    start: int
    """Decode time of its first sample, in the track's timescale."""
    duration: int
    size: int
    sync: bool
    samples: int
    iframes: tuple[tuple[int, int, int], ...] = ()
    """``(offset, length, duration)`` of each I-frame in the segment file (video)."""


@dataclass(frozen=True, slots=True)
class Track:
    """One video or audio rendition, cut and measured."""

    rendition: Rendition
    init: Init
    segments: tuple[MeasuredSegment, ...]

    @property
    def timescale(self) -> int:
        return self.init.timescale

    def seconds(self, ticks: int) -> float:
        return ticks / self.timescale

    @property
    def duration_s(self) -> float:
        return self.seconds(sum(s.duration for s in self.segments))

    @property
    def peak_bps(self) -> int:
        """The peak segment bitrate (RFC 8216 4.3.4.2): the highest rate over runs of
        consecutive segments lasting at least half the target duration (a short last
        segment counts with those before it)."""
        longest = max((self.seconds(s.duration) for s in self.segments), default=0.0)
        runs = [(s.size, self.seconds(s.duration)) for s in self.segments]
        return peak(runs, math.floor(longest + 0.5) / 2)

    @property
    def average_bps(self) -> int:
        return _bps(sum(s.size for s in self.segments), self.duration_s)

    @property
    def iframe_peak_bps(self) -> int:
        """The I-frames' peak rate, over runs of at least half a GOP (as :attr:`peak_bps`)."""
        runs = [(length, self.seconds(d)) for s in self.segments for _, length, d in s.iframes]
        longest = max((d for _, d in runs), default=0.0)
        return peak(runs, longest / 2)


def _bps(size: int, seconds: float) -> int:
    return math.ceil(size * 8 / seconds) if seconds > 0 else 0


def peak(runs: Sequence[tuple[int, float]], at_least_s: float) -> int:
    """The highest bitrate of ``runs`` (``(bytes, seconds)`` in order) over windows of
    consecutive runs lasting at least ``at_least_s``: each run with those after it, or,
    at the end, with those before it (the whole, when all are shorter)."""
    best = 0
    for i in range(len(runs)):
        window = _window(runs[i:], at_least_s) or _window(runs[i::-1], at_least_s)
        if window is not None:
            best = max(best, _bps(*window))
    if not best and runs:
        best = _bps(sum(r[0] for r in runs), sum(r[1] for r in runs))
    return best


def _window(runs: Sequence[tuple[int, float]], at_least_s: float) -> tuple[int, float] | None:
    """The first runs of ``runs`` that last at least ``at_least_s`` together, summed."""
    size, seconds = 0, 0.0
    for run_size, run_s in runs:
        size, seconds = size + run_size, seconds + run_s
        if seconds >= at_least_s - 1e-9:
            return size, seconds
    return None


def cut(
    fragments: Sequence[Fragment],
    *,
    segment_frames: int | None = None,
    times: Sequence[float] = (),
    every: float = 0.0,
    timescale: int = 1,
) -> list[list[Fragment]]:
    """The fragments grouped into segments: a new one where ``segment_frames`` more frames
    begin (video), or at the first fragment at or past each of ``times`` (seconds; audio,
    to follow the video's segments), and every ``every`` seconds after the last of them
    (audio that outlasts the video)."""
    groups: list[list[Fragment]] = []
    frames = 0
    boundaries = sorted(times)
    next_time = 1
    for fragment in fragments:
        if segment_frames is not None:
            new = not groups or frames >= segment_frames * len(groups)
            frames += fragment.samples
        else:
            start = fragment.decode_time / timescale
            new = not groups
            while every > 0 and boundaries and start >= boundaries[-1] + every - 1e-3:
                boundaries.append(boundaries[-1] + every)
            while next_time < len(boundaries) and start >= boundaries[next_time] - 1e-3:
                new, next_time = True, next_time + 1
        if new:
            groups.append([fragment])
        else:
            groups[-1].append(fragment)
    if every > 0 and len(groups) > max(1, len(times)):  # audio past the video's segments
        sliver, before = groups[-1], groups[-2]
        merged = sum(f.duration for f in (*before, *sliver)) / timescale
        if sum(f.duration for f in sliver) < timescale / 2 and merged <= every + DURATION_SLACK_S:
            groups.pop()  # a sliver joins the segment before, when that stays in bounds
            before += sliver
    return groups


def measure(group: Sequence[Fragment], number: int, *, video: bool) -> MeasuredSegment:
    """One segment from its fragments (offsets in its own file, which starts at the first)."""
    base = group[0].start
    iframes = (
        tuple((f.start - base, f.first_sample_end - f.start, f.duration) for f in group if f.sync)
        if video
        else ()
    )
    return MeasuredSegment(
        number=number,
        start=group[0].decode_time,
        duration=sum(f.duration for f in group),
        size=sum(f.size for f in group),
        sync=group[0].sync,
        samples=sum(f.samples for f in group),
        iframes=iframes,
    )


# ---- HLS ---------------------------------------------------------------------------------


def target_duration(tracks: Sequence[Track]) -> int:
    """``EXT-X-TARGETDURATION``: every segment's duration rounded, at most this."""
    longest = max((t.seconds(s.duration) for t in tracks for s in t.segments), default=1.0)
    return max(1, math.floor(longest + 0.5))


def hls_media(track: Track, target: int) -> str:
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:7",
        f"#EXT-X-TARGETDURATION:{target}",
        "#EXT-X-MEDIA-SEQUENCE:1",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-INDEPENDENT-SEGMENTS",
        f'#EXT-X-MAP:URI="{INIT}"',
    ]
    for segment in track.segments:
        lines += [f"#EXTINF:{track.seconds(segment.duration):.5f},", segment_name(segment.number)]
    return "\n".join([*lines, "#EXT-X-ENDLIST", ""])


def hls_iframes(track: Track) -> str:
    """The I-frame playlist: each keyframe as a byte range of its segment (its ``moof``
    and the frame's data)."""
    longest = max((track.seconds(d) for s in track.segments for _, _, d in s.iframes), default=1)
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:7",
        f"#EXT-X-TARGETDURATION:{max(1, math.floor(longest + 0.5))}",
        "#EXT-X-MEDIA-SEQUENCE:1",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-I-FRAMES-ONLY",
        "#EXT-X-INDEPENDENT-SEGMENTS",
        f'#EXT-X-MAP:URI="{INIT}"',
    ]
    for segment in track.segments:
        for offset, length, duration in segment.iframes:
            lines += [
                f"#EXTINF:{track.seconds(duration):.5f},",
                f"#EXT-X-BYTERANGE:{length}@{offset}",
                segment_name(segment.number),
            ]
    return "\n".join([*lines, "#EXT-X-ENDLIST", ""])


def hls_text(duration_s: float) -> str:
    """A WebVTT rendition's playlist: the whole file as one segment."""
    target = max(1, math.ceil(duration_s))
    return "\n".join(
        [
            "#EXTM3U",
            "#EXT-X-VERSION:7",
            f"#EXT-X-TARGETDURATION:{target}",
            "#EXT-X-MEDIA-SEQUENCE:1",
            "#EXT-X-PLAYLIST-TYPE:VOD",
            f"#EXTINF:{duration_s:.5f},",
            SUBTITLES,
            "#EXT-X-ENDLIST",
            "",
        ]
    )


@dataclass(frozen=True, slots=True)
class Variant:
    """What the multivariant playlist says of one video rendition (with its audio)."""

    track: Track
    bandwidth: int
    average: int
    codecs: str


def variants(videos: Sequence[Track], audios: Sequence[Track]) -> list[Variant]:
    """Each video rendition with the audio group: its peak and average plus the group's
    highest, and both codecs."""
    audio_peak = max((a.peak_bps for a in audios), default=0)
    audio_average = max((a.average_bps for a in audios), default=0)
    audio_codecs = list(dict.fromkeys(a.init.codecs for a in audios))
    return [
        Variant(
            v,
            v.peak_bps + audio_peak,
            v.average_bps + audio_average,
            ",".join([v.init.codecs, *audio_codecs]),
        )
        for v in videos
    ]


def hls_master(
    videos: Sequence[Track], audios: Sequence[Track], texts: Sequence[Rendition], frame_rate: str
) -> str:
    rate = float(Fraction(frame_rate))
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    names = unique_names([*[a.rendition for a in audios], *texts])
    for i, audio in enumerate(audios):
        r = audio.rendition
        lines.append(
            f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="{AUDIO_GROUP}",NAME={_q(names[r.key])}'
            + (f",LANGUAGE={_q(r.language)}" if r.language else "")
            + f",DEFAULT={'YES' if i == 0 else 'NO'},AUTOSELECT=YES"
            + f',CHANNELS="{audio.init.channels or 2}",URI="{r.key}/{MEDIA_PLAYLIST}"'
        )
    for text in texts:
        lines.append(
            f'#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="{TEXT_GROUP}",NAME={_q(names[text.key])}'
            + (f",LANGUAGE={_q(text.language)}" if text.language else "")
            + f',DEFAULT=NO,AUTOSELECT=YES,URI="{text.key}/{MEDIA_PLAYLIST}"'
        )
    for variant in variants(videos, audios):
        r, init = variant.track.rendition, variant.track.init
        attrs = [
            f"BANDWIDTH={variant.bandwidth}",
            f"AVERAGE-BANDWIDTH={variant.average}",
            f'CODECS="{variant.codecs}"',
            f"RESOLUTION={init.width}x{init.height}",
            f"FRAME-RATE={rate:.3f}",
        ]
        if any(v.rendition.hdr for v in videos):  # a player picks what its screen shows
            attrs.append(f"VIDEO-RANGE={r.hdr or 'SDR'}")
        if audios:
            attrs.append(f'AUDIO="{AUDIO_GROUP}"')
        if texts:
            attrs.append(f'SUBTITLES="{TEXT_GROUP}"')
        attrs.append("CLOSED-CAPTIONS=NONE")
        lines += ["#EXT-X-STREAM-INF:" + ",".join(attrs), f"{r.key}/{MEDIA_PLAYLIST}"]
    for video in videos:
        r, init = video.rendition, video.init
        lines.append(
            f"#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH={video.iframe_peak_bps},"
            f'CODECS="{init.codecs}",RESOLUTION={init.width}x{init.height},'
            f'URI="{r.key}/{IFRAME_PLAYLIST}"'
        )
    return "\n".join([*lines, ""])


def unique_names(renditions: Sequence[Rendition]) -> dict[str, str]:
    """Each rendition's menu name, made unique within its kind (``eng``, ``eng 2``):
    RFC 8216 wants one NAME per rendition of a group."""
    names: dict[str, str] = {}
    seen: dict[tuple[str, str], int] = {}
    for r in renditions:
        count = seen[(r.kind, r.name)] = seen.get((r.kind, r.name), 0) + 1
        names[r.key] = r.name if count == 1 else f"{r.name} {count}"
    return names


def _q(text: str) -> str:
    clean = "".join(c if c.isprintable() else " " for c in text)
    return '"' + clean.replace('"', "'") + '"'


# ---- DASH --------------------------------------------------------------------------------


def _iso(seconds: float) -> str:
    return f"PT{seconds:.3f}S"


def _timeline(track: Track) -> str:
    """``<S>`` entries: runs of equal durations folded with ``r``."""
    parts: list[str] = []
    runs: list[list[int]] = []  # [start, duration, repeats]
    for segment in track.segments:
        if (
            runs
            and runs[-1][1] == segment.duration
            and runs[-1][0] + runs[-1][1] * (runs[-1][2] + 1) == segment.start
        ):
            runs[-1][2] += 1
        else:
            runs.append([segment.start, segment.duration, 0])
    for start, duration, repeats in runs:
        parts.append(
            f'<S t="{start}" d="{duration}"' + (f' r="{repeats}"' if repeats else "") + "/>"
        )
    return "".join(parts)


def _template(track: Track) -> str:
    key = track.rendition.key
    return (
        f'<SegmentTemplate timescale="{track.timescale}" initialization="{key}/{INIT}" '
        f'media="{key}/seg_$Number%05d$.m4s" startNumber="1">'
        f"<SegmentTimeline>{_timeline(track)}</SegmentTimeline></SegmentTemplate>"
    )


def dash_mpd(
    videos: Sequence[Track],
    audios: Sequence[Track],
    texts: Sequence[Rendition],
    frame_rate: str,
    duration_s: float,
    segment_s: float,
) -> str:
    """A static MPD (ISO BMFF live profile: a segment template with a timeline) over the
    same segments the HLS playlists list; one adaptation set per video codec."""
    out = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
        'profiles="urn:mpeg:dash:profile:isoff-live:2011,urn:mpeg:dash:profile:cmaf:2019" '
        f'mediaPresentationDuration="{_iso(duration_s)}" '
        f'minBufferTime="{_iso(2 * segment_s)}">',
        '<Period id="0" start="PT0S">',
    ]
    set_id = 0
    for codec in dict.fromkeys(v.rendition.codec for v in videos):
        group = [v for v in videos if v.rendition.codec == codec]
        top = max(group, key=lambda v: v.init.height)
        out.append(
            f'<AdaptationSet id="{set_id}" contentType="video" mimeType="video/mp4" '
            f'segmentAlignment="true" startWithSAP="1" frameRate="{frame_rate}" '
            f'maxWidth="{top.init.width}" maxHeight="{top.init.height}">'
        )
        if top.rendition.hdr:  # a player that cannot show it skips the set (essential)
            out += [
                f'<EssentialProperty schemeIdUri="{CICP}TransferCharacteristics" '
                f'value="{HDR_TRANSFER_CICP[top.rendition.hdr]}"/>',
                f'<SupplementalProperty schemeIdUri="{CICP}ColourPrimaries" value="9"/>',
                f'<SupplementalProperty schemeIdUri="{CICP}MatrixCoefficients" value="9"/>',
            ]
        for video in group:
            init = video.init
            out.append(
                f'<Representation id="{video.rendition.key}" codecs="{init.codecs}" '
                f'bandwidth="{video.peak_bps}" width="{init.width}" '
                f'height="{init.height}" sar="1:1">{_template(video)}</Representation>'
            )
        out.append("</AdaptationSet>")
        set_id += 1
    for i, audio in enumerate(audios):
        r, init = audio.rendition, audio.init
        lang = f" lang={quoteattr(r.language)}" if r.language else ""
        out.append(
            f'<AdaptationSet id="{set_id}" contentType="audio" mimeType="audio/mp4"'
            f'{lang} segmentAlignment="true" startWithSAP="1">'
            f"<Label>{_xml(r.name)}</Label>"
            '<Role schemeIdUri="urn:mpeg:dash:role:2011" '
            f'value="{"main" if i == 0 else "alternate"}"/>'
            f'<Representation id="{r.key}" codecs="{init.codecs}" '
            f'bandwidth="{audio.peak_bps}" audioSamplingRate="{init.sample_rate}">'
            '<AudioChannelConfiguration schemeIdUri="urn:mpeg:dash:23003:3:'
            f'audio_channel_configuration:2011" value="{init.channels or 2}"/>'
            f"{_template(audio)}</Representation></AdaptationSet>"
        )
        set_id += 1
    for text in texts:
        lang = f" lang={quoteattr(text.language)}" if text.language else ""
        out.append(
            f'<AdaptationSet id="{set_id}" contentType="text" mimeType="text/vtt"{lang}>'
            f"<Label>{_xml(text.name)}</Label>"
            '<Role schemeIdUri="urn:mpeg:dash:role:2011" value="subtitle"/>'
            f'<Representation id="{text.key}" bandwidth="256">'
            f"<BaseURL>{text.key}/{SUBTITLES}</BaseURL></Representation></AdaptationSet>"
        )
        set_id += 1
    out += ["</Period>", "</MPD>", ""]
    return "\n".join(out)


def _xml(text: str) -> str:
    return quoteattr("".join(c if c.isprintable() else " " for c in text))[1:-1]


# ---- the check ---------------------------------------------------------------------------


@dataclass(slots=True)
class Expected:
    """What the package must hold."""

    frames: int | None
    """The source's video frames (``None``: only estimated)."""
    duration_s: float
    frame_s: float
    segment_s: float
    segment_frames: int


@dataclass(slots=True)
class Verdict:
    problems: list[str] = field(default_factory=list)
    segments: int = 0


def check(videos: Sequence[Track], audios: Sequence[Track], expected: Expected) -> Verdict:
    """Every rule of the package, re-derived from what was measured: each segment starts
    with a sync sample; each lasts at most the target duration + 0.5 s; the video
    renditions' segments have the same count and start times; each video rendition holds
    the source's frames and lasts as long; no audio track is short. Each problem names
    the rendition and segment."""
    verdict = Verdict()
    target = max(1, math.floor(expected.segment_s + 0.5))
    reference = videos[0] if videos else None
    for track in [*videos, *audios]:
        label = track.rendition.label()
        verdict.segments += len(track.segments)
        for segment in track.segments:
            seconds = track.seconds(segment.duration)
            if not segment.sync:
                verdict.problems.append(
                    f"{label} segment {segment.number} does not start with a keyframe"
                )
            if seconds > target + DURATION_SLACK_S:
                verdict.problems.append(
                    f"{label} segment {segment.number} lasts {seconds:.3f} s,"
                    f" past the target {target} s + {DURATION_SLACK_S} s"
                )
        if track.rendition.kind == "video":
            _check_video(track, reference, expected, verdict)
        elif (
            track.duration_s < expected.duration_s - max(0.25, 2 * expected.frame_s)
            and reference is not None
            and track.duration_s < reference.duration_s - 0.25
        ):
            verdict.problems.append(
                f"{label} lasts {track.duration_s:.3f} s; the video {reference.duration_s:.3f} s"
            )
    return verdict


def _check_video(
    track: Track, reference: Track | None, expected: Expected, verdict: Verdict
) -> None:
    label = track.rendition.label()
    frames = sum(s.samples for s in track.segments)
    if expected.frames is not None:
        if frames != expected.frames:
            verdict.problems.append(f"{label} holds {frames} frames; the source {expected.frames}")
    elif abs(track.duration_s - expected.duration_s) > max(0.25, 2 * expected.frame_s):
        verdict.problems.append(
            f"{label} lasts {track.duration_s:.3f} s; the source {expected.duration_s:.3f} s"
        )
    for segment in track.segments[:-1]:
        if segment.samples != expected.segment_frames:
            verdict.problems.append(
                f"{label} segment {segment.number} holds {segment.samples} "
                f"frames, not {expected.segment_frames}: a keyframe is "
                "missing at a segment boundary"
            )
            break
    if reference is None or track is reference:
        return
    if len(track.segments) != len(reference.segments):
        verdict.problems.append(
            f"{label} has {len(track.segments)} segments; "
            f"{reference.rendition.label()} {len(reference.segments)}"
        )
        return
    for mine, theirs in zip(track.segments, reference.segments, strict=True):
        gap = abs(track.seconds(mine.start) - reference.seconds(theirs.start))
        if gap > expected.frame_s / 2:
            verdict.problems.append(
                f"{label} segment {mine.number} starts "
                f"{track.seconds(mine.start):.3f} s; "
                f"{reference.rendition.label()}'s at "
                f"{reference.seconds(theirs.start):.3f} s"
            )
            return


def bandwidth_problems(variant: Variant, said_peak: int, said_average: int) -> list[str]:
    """Whether what a playlist says of a variant is within 10 % of what was measured."""
    out = []
    label = variant.track.rendition.label()
    if abs(said_peak - variant.bandwidth) > BANDWIDTH_TOLERANCE * variant.bandwidth:
        out.append(
            f"{label}: BANDWIDTH {said_peak} is not within 10 % of the measured peak "
            f"{variant.bandwidth}"
        )
    if abs(said_average - variant.average) > BANDWIDTH_TOLERANCE * variant.average:
        out.append(
            f"{label}: AVERAGE-BANDWIDTH {said_average} is not within 10 % of the "
            f"measured average {variant.average}"
        )
    return out
