"""Whether a video is progressive, interlaced or telecined (pure): what its stream's
``field_order`` tag says, when that is worth checking with ffmpeg's ``idet`` filter, the
filter's counts read from ffmpeg's log, and the verdict of tag and counts together.
:mod:`cluster.media.probe` runs the check.

The tag is trusted when it says a field order (``tt``, ``bb``, ``tb``, ``bt``): encoders
write it only for material they coded as fields. "progressive" or no tag is checked at
the frame rates broadcast interlaces (25, 29.97, 30) up to 1080 lines, where a mistagged
or untagged source is common (an interlaced master re-encoded as progressive frames,
film telecined to 29.97); elsewhere (24, 50, 60 fps, UHD) the tag stands. So film
telecined and coded as fields (tagged ``tt``, as broadcast codes it) reads as interlaced,
not telecined: only ``idet`` could tell, and a tagged stream is not checked.

The thresholds were set on real clips: testsrc2 (fine detail, moving) through
``tinterlace``/``telecine``, encoded by ffmpeg 5.1 (mpeg2video, libx264, libx265), 320x240
to 1920x1080, 2-4 s; counts from ``idet``'s multi-frame detection:

- ``idet``'s own threshold for a combed frame (``intl_thres``, one weave of the fields
  that much smoother than the other) is raised from 1.04 to 1.2 (:data:`IDET_FILTER`):
  at 1.04 progressive testsrc2 (25 and 29.97 fps, 320x240 to 1280x720, h264, hevc and
  mpeg2) reads as combed in most frames (TFF 41, BFF 24, progressive 10 of 75; a 2 s
  clip: TFF 41, progressive 9 of 50), at 1.1 still in some (TFF 30, BFF 23 of 75), at 1.2
  in none (progressive 74-90 of 75-90); every interlaced clip still reads as interlaced
  at 1.3 (TFF or BFF 74-100 of 75-100).
- 25i and 29.97i, tagged or not: TFF (or BFF) in every frame; no repeated fields.
- 3:2 pulldown to 29.97: TFF (or BFF) 86 of 90, progressive 4 (idet's multi-frame
  detection holds one order through the pattern's clean frames), and a repeated field
  in 2 frames of 5 (top 18, bottom 18 of 90): the repeated fields, not the share of
  combed frames, tell telecine from interlacing.
- A still picture: all undetermined (the tag stands).
"""

from __future__ import annotations

import re

from cluster.model.media import FieldCounts, Scan, ScanType, VideoStream

IDET_FRAMES = 60
"""Frames ``idet`` looks at: 2-2.5 s of video, 12 turns of a 3:2 pulldown pattern (the
thresholds below were set on 2 s clips). It costs a probe ~0.1 s of one core at 360p
(ffprobe alone: ~0.05 s), which a batch pays once per input."""
IDET_FILTER = "idet=intl_thres=1.2"
"""``idet`` with its ``intl_thres`` at 1.2 (its default, 1.04, reads sharp progressive
video as combed)."""
NEVER_FIELDS = frozenset({"av1", "vp8", "vp9"})
"""Codecs that cannot code fields: their frames are never checked."""
INTERLACE_RATES = (25.0, 30000 / 1001, 30.0)
"""Frame rates of interlaced broadcast (50 and 60 fields a second)."""
RATE_TOLERANCE = 0.02
IDET_MAX_SIZE = (1920, 1080)
"""Interlaced video is at most 1080 lines; UHD is progressive."""
MIN_DETERMINED = 25
"""Fewer frames with an answer (a still picture, black) and the tag's answer stands."""
INTERLACED_SHARE = 0.6
"""One field order in at least this share of the determined frames: interlaced (one
order, not both: progressive frames misread as combed come out in both orders)."""
TELECINE_REPEATS = 0.15
"""A repeated field in at least this share of the frames looked at (3:2 pulldown: 40 %;
interlaced and progressive video: none)..."""
TELECINE_COMBED = 0.25
"""...and combed frames (TFF + BFF) in at least this share of the determined ones (3:2
pulldown: 2 in 5 truly, all by idet's multi-frame count): telecined."""

FIELD_ORDERS = {"tt": True, "tb": True, "bb": False, "bt": False}
"""ffprobe's ``field_order`` values that say interlaced, and whether the top field is
shown first. ``tb``/``bt`` come from QuickTime's ``fiel`` atom (9 and 14), whose 9 means
"the top line belongs to the earlier field" (Apple TN2162): top first, as ``tt``."""

_MULTI = re.compile(
    r"Multi frame detection:\s*TFF:\s*(\d+)\s+BFF:\s*(\d+)\s+"
    r"Progressive:\s*(\d+)\s+Undetermined:\s*(\d+)"
)
_REPEATED = re.compile(r"Repeated Fields:\s*Neither:\s*\d+\s+Top:\s*(\d+)\s+Bottom:\s*(\d+)")


def tagged_scan(field_order: str | None) -> Scan:
    """What the stream's ``field_order`` tag says (``None`` or ``unknown``: nothing)."""
    tag = field_order or None
    if tag in FIELD_ORDERS:
        return Scan(ScanType.INTERLACED, top_first=FIELD_ORDERS[tag], tagged=tag)
    if tag == "progressive":
        return Scan(ScanType.PROGRESSIVE, tagged=tag)
    return Scan(ScanType.UNKNOWN, tagged=tag)


def needs_idet(video: VideoStream) -> bool:
    """Whether the tag is worth checking with ``idet``: it names no field order, the
    codec can code fields, the frame rate is an interlaced one and the picture at most
    1080 lines."""
    if video.scan is not None and video.scan.tagged in FIELD_ORDERS:
        return False
    if video.codec in NEVER_FIELDS:
        return False
    fps = video.fps
    if fps is None or not any(abs(fps - rate) <= RATE_TOLERANCE for rate in INTERLACE_RATES):
        return False
    return 0 < video.width <= IDET_MAX_SIZE[0] and 0 < video.height <= IDET_MAX_SIZE[1]


def idet_argv(source: list[str], stream_index: int) -> list[str]:
    """ffmpeg's argv counting the fields of the first :data:`IDET_FRAMES` frames of the
    video stream ``stream_index``; ``source``: the input options and ``-i`` input."""
    return ["ffmpeg", "-nostdin", "-hide_banner", "-nostats", "-v", "info", "-threads", "1",
            *source,
            "-map", f"0:{stream_index}", "-frames:v", str(IDET_FRAMES), "-vf", IDET_FILTER,
            "-an", "-sn", "-dn", "-f", "null", "-"]  # fmt: skip


def parse_idet(stderr: str) -> FieldCounts | None:
    """``idet``'s counts from ffmpeg's log (its multi-frame detection and repeated
    fields), or ``None`` when the log has none."""
    multi = _MULTI.findall(stderr)
    if not multi:
        return None
    tff, bff, progressive, undetermined = (int(n) for n in multi[-1])
    repeated = _REPEATED.findall(stderr)
    top, bottom = (int(n) for n in repeated[-1]) if repeated else (0, 0)
    return FieldCounts(tff, bff, progressive, undetermined, top, bottom)


def scan_of(tagged: str | None, counts: FieldCounts | None) -> Scan:
    """The scan from the tag and ``idet``'s counts (``None``: not looked): telecined when
    fields repeat often and enough frames are combed; interlaced when one field order
    holds most determined frames; else progressive; the tag's answer when too few
    frames were determined."""
    said = tagged_scan(tagged)
    if counts is None:
        return said
    determined = counts.tff + counts.bff + counts.progressive
    if determined < MIN_DETERMINED:
        return Scan(said.type, said.top_first, tagged=said.tagged, idet=counts)
    top_first = counts.tff >= counts.bff
    repeated = counts.repeated_top + counts.repeated_bottom
    combed = counts.tff + counts.bff
    if repeated >= TELECINE_REPEATS * counts.frames and combed >= TELECINE_COMBED * determined:
        kind = ScanType.TELECINED
    elif max(counts.tff, counts.bff) >= INTERLACED_SHARE * determined:
        kind = ScanType.INTERLACED
    else:
        kind, top_first = ScanType.PROGRESSIVE, True
    return Scan(kind, top_first, tagged=said.tagged, idet=counts)
