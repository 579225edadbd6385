"""Fragmented MP4 (CMAF) read box by box: a track's init segment (its timescale, size
and RFC 6381 ``CODECS`` string, from the sample entry's own configuration record) and its
fragments (where each starts and ends in decode time, its bytes, whether its first sample
is a sync sample). Pure: bytes in, facts out; the packager cuts segments with them and
the package check trusts nothing else.

ISO/IEC 14496-12 boxes read here: ``ftyp moov trak tkhd mdia mdhd hdlr minf stbl stsd``
(``avc1 hvc1 hev1 av01 mp4a`` and their ``avcC hvcC av1C esds``), ``mvex trex``,
``moof traf tfhd tfdt trun``, ``mdat``; anything else is skipped by its size.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterator
from dataclasses import dataclass

CONTAINERS = frozenset({b"moov", b"trak", b"mdia", b"minf", b"stbl", b"mvex", b"moof", b"traf"})
Buffer = bytes | memoryview | mmap.mmap
"""What the readers take: the file's bytes, or the file mapped into memory."""
NON_SYNC = 0x10000
"""``sample_is_non_sync_sample`` in a sample's flags."""


class CmafError(ValueError):
    """The bytes are not the fragmented MP4 this module reads."""


@dataclass(frozen=True, slots=True)
class Box:
    kind: bytes
    start: int
    """Where the box starts (its header) in the buffer."""
    end: int
    body: int
    """Where its content starts."""


def boxes(data: Buffer, start: int = 0, end: int | None = None) -> Iterator[Box]:
    """The boxes laid out between ``start`` and ``end`` (one level)."""
    end = len(data) if end is None else end
    at = start
    while at + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, at)
        body = at + 8
        if size == 1:
            if at + 16 > end:
                raise CmafError(f"box {kind!r} at {at} is cut short")
            size = struct.unpack_from(">Q", data, at + 8)[0]
            body = at + 16
        elif size == 0:
            size = end - at
        if size < body - at or at + size > end:
            raise CmafError(f"box {kind!r} at {at} claims {size} bytes past the end")
        yield Box(bytes(kind), at, at + size, body)
        at += size


def _find(data: Buffer, box: Box, path: tuple[bytes, ...]) -> Box | None:
    here: Box | None = box
    for kind in path:
        if here is None:
            return None
        here = next((b for b in boxes(data, here.body, here.end) if b.kind == kind), None)
    return here


# ---- init segment ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Init:
    """What a track's init segment says."""

    handler: str
    """``vide`` or ``soun``."""
    timescale: int
    codecs: str
    """The RFC 6381 string (``avc1.640028``, ``hvc1.1.6.L93.B0``, ``av01.0.08M.08``,
    ``mp4a.40.2``)."""
    width: int = 0
    height: int = 0
    channels: int = 0
    sample_rate: int = 0
    default_duration: int = 0
    default_size: int = 0
    default_flags: int = 0
    size: int = 0
    """Bytes of ``ftyp`` + ``moov`` (the init segment)."""


def read_init(data: Buffer) -> Init:
    """The first track of a fragmented MP4's ``moov``; a :class:`CmafError` when the
    boxes do not hold what they must."""
    try:
        return _init(data)
    except (struct.error, IndexError) as exc:
        raise CmafError(f"the init segment is cut short or malformed ({exc})") from None


def _init(data: Buffer) -> Init:
    top = list(boxes(data))
    moov = next((b for b in top if b.kind == b"moov"), None)
    if moov is None:
        raise CmafError("no moov box: not an MP4")
    trak = _find(data, moov, (b"trak",))
    mdhd = _find(data, trak, (b"mdia", b"mdhd")) if trak else None
    hdlr = _find(data, trak, (b"mdia", b"hdlr")) if trak else None
    stsd = _find(data, trak, (b"mdia", b"minf", b"stbl", b"stsd")) if trak else None
    if trak is None or mdhd is None or hdlr is None or stsd is None:
        raise CmafError("the moov box has no complete track")
    version = data[mdhd.body]
    timescale = struct.unpack_from(">I", data, mdhd.body + (20 if version == 1 else 12))[0]
    handler = bytes(data[hdlr.body + 8 : hdlr.body + 12]).decode("ascii", "replace")
    entry = next(boxes(data, stsd.body + 8, stsd.end), None)
    if entry is None:
        raise CmafError("the track has no sample entry")
    fields: dict[str, int] = {}
    if handler == "vide":
        width, height = struct.unpack_from(">HH", data, entry.body + 24)
        codecs = _video_codecs(data, entry, entry.body + 78)
        fields = {"width": width, "height": height}
    elif handler == "soun":
        channels = struct.unpack_from(">H", data, entry.body + 16)[0]
        rate = struct.unpack_from(">I", data, entry.body + 24)[0] >> 16
        codecs = _audio_codecs(data, entry, entry.body + 28)
        fields = {"channels": channels, "sample_rate": rate}
    else:
        raise CmafError(f"a {handler!r} track is neither video nor audio")
    trex = _find(data, moov, (b"mvex", b"trex"))
    if trex is not None:
        duration, size, flags = struct.unpack_from(">III", data, trex.body + 12)
        fields |= {"default_duration": duration, "default_size": size, "default_flags": flags}
    init_end = max(b.end for b in top if b.kind in (b"ftyp", b"moov"))
    return Init(handler, timescale, codecs, size=init_end, **fields)


def _video_codecs(data: Buffer, entry: Box, children: int) -> str:
    fourcc = entry.kind.decode("ascii", "replace")
    for child in boxes(data, children, entry.end):
        body = child.body
        if child.kind == b"avcC":
            profile, compat, level = data[body + 1], data[body + 2], data[body + 3]
            return f"{fourcc}.{profile:02x}{compat:02x}{level:02x}"
        if child.kind == b"hvcC":
            first = data[body + 1]
            space = "" if first >> 6 == 0 else "ABC"[(first >> 6) - 1]
            profile = first & 0x1F
            compat = struct.unpack_from(">I", data, body + 2)[0]
            reversed_compat = int(f"{compat:032b}"[::-1], 2)
            tier = "H" if first & 0x20 else "L"
            constraints = bytes(data[body + 6 : body + 12]).rstrip(b"\x00")
            level = data[body + 12]
            text = f"{fourcc}.{space}{profile}.{reversed_compat:x}.{tier}{level}"
            return text + "".join(f".{b:02X}" for b in constraints)
        if child.kind == b"av1C":
            second, third = data[body + 1], data[body + 2]
            profile, level = second >> 5, second & 0x1F
            tier = "H" if third & 0x80 else "M"
            depth = 12 if third & 0x20 else 10 if third & 0x40 else 8
            return f"av01.{profile}.{level:02d}{tier}.{depth:02d}"
    raise CmafError(f"a {fourcc} sample entry without its configuration record")


def _audio_codecs(data: Buffer, entry: Box, children: int) -> str:
    fourcc = entry.kind.decode("ascii", "replace")
    for child in boxes(data, children, entry.end):
        if child.kind == b"esds":
            return f"{fourcc}.{_esds_type(bytes(data[child.body + 4 : child.end]))}"
    raise CmafError(f"a {fourcc} sample entry without an esds box")


def _esds_type(payload: bytes) -> str:
    """``40.2`` from an ES descriptor: the object type, and for AAC the audio object type
    (the first 5 bits of its decoder specific info)."""
    at, object_type = 0, None
    while at < len(payload):
        tag = payload[at]
        at += 1
        size = 0
        for _ in range(4):
            byte = payload[at]
            at += 1
            size = (size << 7) | (byte & 0x7F)
            if not byte & 0x80:
                break
        if tag == 0x03:  # ES_Descriptor: ES_ID, flags, then nested descriptors
            flags = payload[at + 2]
            at += 3 + (2 if flags & 0x80 else 0)  # ES_ID and flags, dependsOn_ES_ID
            at += 1 + payload[at] if flags & 0x40 else 0  # URL_length and the URL
            at += 2 if flags & 0x20 else 0  # OCR_ES_Id
            continue
        if tag == 0x04:  # DecoderConfigDescriptor: objectTypeIndication first, 13 bytes
            object_type = payload[at]
            at += 13
            continue
        if tag == 0x05 and object_type is not None:  # DecoderSpecificInfo
            aot = payload[at] >> 3
            return f"{object_type:x}.{aot}"
        at += size
    if object_type is None:
        raise CmafError("an esds box without a decoder configuration")
    return f"{object_type:x}"


# ---- fragments ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fragment:
    """One ``moof`` + ``mdat`` pair."""

    start: int
    """Where its ``moof`` starts in the file."""
    end: int
    """Where its ``mdat`` ends."""
    decode_time: int
    """Its first sample's decode time (``tfdt``), in the track's timescale."""
    duration: int
    samples: int
    sync: bool
    """Its first sample is a sync sample (an IDR frame, for video)."""
    first_sample_end: int
    """Where its first sample's data ends in the file (an I-frame playlist's byte range
    runs from ``start`` to here)."""

    @property
    def size(self) -> int:
        return self.end - self.start


def read_fragments(data: Buffer, init: Init) -> list[Fragment]:
    """Every fragment after the init segment, in order (an ``mfra`` index after them
    ends the read); a :class:`CmafError` on a ``moof`` not followed by its ``mdat``, or
    on a box that does not hold what it must."""
    try:
        return _fragments(data, init)
    except (struct.error, IndexError) as exc:
        raise CmafError(f"a box is cut short or malformed ({exc})") from None


def _fragments(data: Buffer, init: Init) -> list[Fragment]:
    out: list[Fragment] = []
    top = []
    for box in boxes(data):
        if box.kind == b"mfra":
            break
        if box.kind in (b"moof", b"mdat"):
            top.append(box)
    for moof, mdat in zip(top[::2], top[1::2], strict=False):
        if moof.kind != b"moof" or mdat.kind != b"mdat":
            raise CmafError(f"a fragment at byte {moof.start} is not a moof then an mdat")
        out.append(_fragment(data, moof, mdat, init))
    if len(top) % 2:
        raise CmafError(f"the last fragment at byte {top[-1].start} has no mdat")
    return out


@dataclass(slots=True)
class _Defaults:
    """A fragment's sample defaults (the ``trex``'s, then its ``tfhd``'s) and base offset."""

    duration: int
    size: int
    flags: int
    base: int


def _fragment(data: Buffer, moof: Box, mdat: Box, init: Init) -> Fragment:
    traf = _find(data, moof, (b"traf",))
    if traf is None:
        raise CmafError(f"a moof at byte {moof.start} has no traf")
    defaults = _Defaults(init.default_duration, init.default_size, init.default_flags, moof.start)
    decode_time, samples, total, sync, first_end = -1, 0, 0, False, mdat.body
    for box in boxes(data, traf.body, traf.end):
        flags = int.from_bytes(data[box.body + 1 : box.body + 4], "big")
        if box.kind == b"tfhd":
            _tfhd(data, box.body + 8, flags, defaults)
        elif box.kind == b"tfdt":
            wide = data[box.body] == 1
            decode_time = struct.unpack_from(">Q" if wide else ">I", data, box.body + 4)[0]
        elif box.kind == b"trun":
            count, duration, first = _trun(data, box.body + 4, flags, defaults, mdat)
            if samples == 0 and first is not None:
                sync, first_end = first
            total += duration
            samples += count
    if decode_time < 0:
        raise CmafError(f"a fragment at byte {moof.start} has no tfdt (its decode time)")
    return Fragment(moof.start, mdat.end, decode_time, total, samples, sync, first_end)


def _tfhd(data: Buffer, at: int, flags: int, defaults: _Defaults) -> None:
    """The ``tfhd``'s overrides (``at``: after its track id)."""
    if flags & 0x1:
        defaults.base = struct.unpack_from(">Q", data, at)[0]
        at += 8
    if flags & 0x2:
        at += 4
    for bit, name in ((0x8, "duration"), (0x10, "size"), (0x20, "flags")):
        if flags & bit:
            setattr(defaults, name, struct.unpack_from(">I", data, at)[0])
            at += 4


def _trun(
    data: Buffer, at: int, flags: int, defaults: _Defaults, mdat: Box
) -> tuple[int, int, tuple[bool, int] | None]:
    """A ``trun``'s sample count, total duration, and its first sample's sync flag and
    data end (``None``: no samples)."""
    count = struct.unpack_from(">I", data, at)[0]
    at += 4
    offset = mdat.body - defaults.base
    if flags & 0x1:
        offset = struct.unpack_from(">i", data, at)[0]
        at += 4
    first_flags = None
    if flags & 0x4:
        first_flags = struct.unpack_from(">I", data, at)[0]
        at += 4
    total, first = 0, None
    fields = [bit for bit in (0x100, 0x200, 0x400, 0x800) if flags & bit]
    for i in range(count):
        values = struct.unpack_from(">" + "I" * len(fields), data, at)
        at += 4 * len(fields)
        got = dict(zip(fields, values, strict=True))
        total += got.get(0x100, defaults.duration)
        if i == 0:
            sample_flags = (
                first_flags if first_flags is not None else got.get(0x400, defaults.flags)
            )
            end = defaults.base + offset + got.get(0x200, defaults.size)
            first = (not sample_flags & NON_SYNC, end)
    return count, total, first
