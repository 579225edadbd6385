"""What a transcode does to the picture before it is encoded (pure): a combed source
deinterlaced or inverse-telecined, HDR tone-mapped for an output that cannot carry it, or
kept, its tags and static metadata passed through the encoder's own parameters.

- **Scan.** ``deinterlace`` ``auto`` (the default) deinterlaces an interlaced source at its
  frame rate (25i → 25p, 30i → 30p) with ``bwdif``, and turns telecined film back into its
  24 frames/s (``fieldmatch,decimate``); ``frame`` and ``field`` deinterlace whatever the
  probe said, at the frame rate or the field rate (25i → 50p); ``off`` encodes the fields
  as they are, flagged interlaced so a player can deinterlace. The filters run on the
  CPU, before the encoder (an NVENC encode gets its frames from the CPU too).
- **Colour.** An HDR source (PQ or HLG) to an HEVC or AV1 output stays HDR: 10-bit, its
  primaries, transfer and matrix tagged, and HDR10's mastering display and content
  light level written by the encoder (x265 ``master-display``/``max-cll``, SVT-AV1
  ``mastering-display``/``content-light``). To H.264, or with ``sdr``, it is tone-mapped
  to BT.709 SDR (``zscale`` to linear light, ``tonemap``, back to BT.709) and tagged so.
  Dynamic metadata (Dolby Vision, HDR10+) is not carried: the job says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from cluster.errors import SpecError
from cluster.media.encoders import Encoder
from cluster.model.media import HLG, PQ, Colour, Mastering, ScanType, VideoStream
from cluster.model.spec import Deinterlace, Tonemap

SDR_TAGS = ("-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709",
            "-color_range", "tv")  # fmt: skip
PARAMS_FLAGS = {"libx265": "-x265-params", "libsvtav1": "-svtav1-params"}
"""The option each encoder takes its own parameters in (merged with what it already has)."""
TAGGED_FIELDS = frozenset({"tt", "bb", "tb", "bt"})
"""ffprobe's ``field_order`` values that say the stream is interlaced."""
NPL = 100
"""The SDR display's peak, cd/m², that tone-mapping maps to (zscale's nominal peak)."""


@dataclass(frozen=True, slots=True)
class Picture:
    """What the picture gets: ``filters`` before the encoder, ``args`` and ``tags`` for
    it (and ``params`` merged into its own parameters), the pixel format it must be
    written in (``None``: the usual), output frames per input frame (``rate``), the
    output's HDR (``"PQ"``, ``"HLG"``, ``None``: SDR), and what the job should say."""

    filters: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    """The encoder's flags for fields kept (``deinterlace: off``)."""
    tags: tuple[str, ...] = ()
    """The output's colour tags."""
    params: tuple[str, ...] = ()
    pix_fmt: str | None = None
    rate: Fraction = Fraction(1)
    hdr: str | None = None
    notes: tuple[str, ...] = ()
    combed_out: bool = False
    """The output's frames still hold two fields (``deinterlace: off``)."""
    deinterlaced: bool = False
    """Its filters deinterlace or inverse-telecine: frames go to the output's pixel
    format before them (ffmpeg's chroma subsampling after a deinterlacer combs the
    frames again: ``idet`` sees them all interlaced)."""

    def frames(self, source_frames: int | None) -> int | None:
        """How many frames ``source_frames`` input frames become."""
        return None if source_frames is None else int(source_frames * self.rate)

    def with_params(self, argv: list[str], encoder: Encoder) -> list[str]:
        """``argv`` with :attr:`params` added to the encoder's own parameters (its last
        ``-x265-params``/``-svtav1-params``, which is the one ffmpeg uses)."""
        flag = PARAMS_FLAGS.get(encoder.name)
        if not self.params or flag is None:
            return argv
        extra = ":".join(self.params)
        at = max((i for i, a in enumerate(argv[:-1]) if a == flag), default=None)
        if at is None:
            return [*argv, flag, extra]
        return [*argv[: at + 1], f"{argv[at + 1]}:{extra}", *argv[at + 2 :]]


def plan_picture(
    video: VideoStream,
    encoder: Encoder,
    *,
    deinterlace: str = Deinterlace.AUTO,
    sdr: bool = False,
    tonemap: str = Tonemap.HABLE,
    keep_10bit: bool = False,
    keep_rate: bool = False,
) -> Picture:
    """What ``video`` gets on its way into ``encoder`` (see the module's docstring).
    ``keep_rate``: one output frame per input frame (a package's rungs, whose segments
    are counted in the source's frames): telecined film is deinterlaced at its rate
    rather than inverse-telecined, and ``field`` is refused."""
    mode = Deinterlace(deinterlace)
    if keep_rate and mode is Deinterlace.FIELD:
        raise SpecError("a package deinterlaces at the frame rate (its segments are counted "
                        "in the source's frames); use deinterlace auto or frame")  # fmt: skip
    scan = video.scan
    if keep_rate and mode is Deinterlace.AUTO and scan and scan.type is ScanType.TELECINED:
        mode = Deinterlace.FRAME
    done = _scan(video, mode, encoder)
    colour = _colour(video, encoder, sdr=sdr, tonemap=Tonemap(tonemap), keep_10bit=keep_10bit)
    return Picture(
        filters=(*done.filters, *colour.filters),
        args=_interlaced_args(video, encoder) if done.combed else (),
        tags=colour.args,
        params=colour.params,
        pix_fmt=colour.pix_fmt,
        rate=done.rate,
        hdr=colour.hdr,
        notes=(*done.notes, *colour.notes),
        combed_out=done.combed,
        deinterlaced=bool(done.filters),
    )


@dataclass(frozen=True, slots=True)
class _Scan:
    filters: tuple[str, ...] = ()
    rate: Fraction = Fraction(1)
    notes: tuple[str, ...] = ()
    combed: bool = False


def _scan(video: VideoStream, mode: Deinterlace, encoder: Encoder) -> _Scan:
    """Filters, frames per input frame, notes, and whether the output stays combed."""
    scan = video.scan
    kind = scan.type if scan else ScanType.UNKNOWN
    top = scan.top_first if scan else True
    parity = "tff" if top else "bff"
    fields = f"{'top' if top else 'bottom'} field first"
    known = kind in (ScanType.INTERLACED, ScanType.TELECINED)
    rate = video.fps
    rate_s = f"{rate:.4g}" if rate else "?"
    if mode is Deinterlace.OFF:
        if not known:
            return _Scan()
        kept = f"{kind} source encoded as it is (deinterlace off): two fields a frame, {fields}"
        return _Scan(notes=(kept,), combed=True)
    if mode is Deinterlace.AUTO and kind is ScanType.TELECINED:
        film = f"{rate * 4 / 5:.4g}" if rate else "24"
        note = (f"telecined film ({rate_s} frames/s, 3:2 pulldown) inverse-telecined to "
                f"{film} frames/s (fieldmatch, decimate)")  # fmt: skip
        # Frames fieldmatch cannot match (an edit, a broken cadence) come out flagged
        # combed: bwdif deinterlaces those alone; decimate then drops the repeats.
        ivtc = (f"fieldmatch=order={parity}:combmatch=full",
                f"bwdif=mode=send_frame:parity={parity}:deint=interlaced", "decimate",
                "setfield=prog")  # fmt: skip
        return _Scan(ivtc, Fraction(4, 5), (note,))
    if mode is Deinterlace.AUTO and kind is not ScanType.INTERLACED:
        return _Scan()
    field = mode is Deinterlace.FIELD
    send = "send_field" if field else "send_frame"
    # Frames flagged interlaced only, where the stream flags them (a mixed broadcast);
    # every frame where only idet found the fields (frames flagged progressive).
    flagged = scan is not None and scan.tagged in TAGGED_FIELDS
    deint = "interlaced" if mode is Deinterlace.AUTO and flagged else "all"
    bwdif = f"bwdif=mode={send}:parity={parity if known else 'auto'}:deint={deint}"
    out = rate * (2 if field else 1) if rate else None
    to = f"{out:.4g}p" if out else ("field rate" if field else "frame rate")
    on = " on the CPU before NVENC" if encoder.is_nvenc else ""
    said = f"{kind}, {fields}" if known else "not found interlaced by the probe"
    note = f"deinterlaced with bwdif{on}: {rate_s}i ({said}) to {to}"
    return _Scan((bwdif, "setfield=prog"), Fraction(2 if field else 1), (note,))


def _interlaced_args(video: VideoStream, encoder: Encoder) -> tuple[str, ...]:
    """An encode that keeps the fields: flagged interlaced (x264 codes them so)."""
    top = video.scan.top_first if video.scan else True
    flags = ("-flags", "+ildct+ilme", "-top", "1" if top else "0") \
        if encoder.name == "libx264" else ()  # fmt: skip
    return (*flags, "-field_order", "tt" if top else "bb")


@dataclass(frozen=True, slots=True)
class _Colour:
    filters: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    pix_fmt: str | None = None
    hdr: str | None = None
    notes: tuple[str, ...] = ()


def _colour(
    video: VideoStream, encoder: Encoder, *, sdr: bool, tonemap: Tonemap, keep_10bit: bool
) -> _Colour:
    colour = video.colour or Colour()
    hdr = colour.hdr
    if hdr is None:
        return _Colour()
    dropped = tuple(f"{d.replace('_', ' ')} metadata dropped: {encoder.name} cannot carry it"
                    for d in colour.dynamic)  # fmt: skip
    if sdr or encoder.ten_bit_pix_fmt is None:
        why = "asked for SDR" if sdr else f"{encoder.codec} is written 8-bit SDR"
        note = (f"HDR {hdr} tone-mapped to BT.709 SDR ({tonemap}, zscale): {why}"
                + ("" if sdr else "; --codec hevc or av1 keeps it HDR"))  # fmt: skip
        deep = keep_10bit and encoder.ten_bit_pix_fmt is not None
        out = "yuv420p10le" if deep else "yuv420p"
        return _Colour(filters=(*_tonemap_filters(colour, tonemap), f"format={out}"),
                       args=SDR_TAGS, pix_fmt=out, notes=(note, *dropped))  # fmt: skip
    tags = ("-color_primaries", colour.primaries or "bt2020",
            "-color_trc", colour.transfer or PQ,
            "-colorspace", colour.matrix or "bt2020nc",
            "-color_range", colour.range or "tv")  # fmt: skip
    params = _hdr_params(encoder, colour)
    notes = [f"HDR {hdr} kept: 10-bit {encoder.codec}, {colour.primaries or 'bt2020'} tagged"]
    if hdr == "PQ" and (colour.mastering or colour.max_cll):
        if params:
            notes.append("HDR10 mastering display and content light level written")
        else:
            notes.append(f"HDR10 static metadata dropped: {encoder.name} here cannot write it")
    return _Colour(args=tags, params=params, pix_fmt=encoder.ten_bit_pix_fmt, hdr=hdr,
                   notes=(*notes, *dropped))  # fmt: skip


def _tonemap_filters(colour: Colour, tonemap: Tonemap) -> tuple[str, ...]:
    """HDR to BT.709 SDR: to linear light (the source's transfer, primaries, matrix and
    range named, so untagged frames convert too), tone-mapped in float RGB, to BT.709."""
    source = (f"tin={colour.transfer}:pin={colour.primaries or 'bt2020'}:"
              f"min={colour.matrix or 'bt2020nc'}:rin={colour.range or 'tv'}")  # fmt: skip
    if colour.transfer not in (PQ, HLG):
        raise SpecError(f"cannot tone-map the {colour.transfer} transfer")
    return (
        f"zscale={source}:t=linear:npl={NPL}",
        "format=gbrpf32le",
        "zscale=p=bt709",
        f"tonemap=tonemap={tonemap}:desat=0",
        "zscale=t=bt709:m=bt709:r=tv",
    )


def _hdr_params(encoder: Encoder, colour: Colour) -> tuple[str, ...]:
    """The encoder's own parameters for HDR: its colour description, and for PQ its
    HDR10 static metadata (empty: this encoder takes none here)."""
    primaries, transfer = colour.primaries or "bt2020", colour.transfer or PQ
    matrix = colour.matrix or "bt2020nc"
    pq = transfer == PQ
    m, cll = colour.mastering, colour.max_cll
    if encoder.name == "libx265":
        params = [f"colorprim={primaries}", f"transfer={transfer}", f"colormatrix={matrix}"]
        if pq:
            params += ["hdr10=1", "repeat-headers=1"]
            if m is not None:
                params.append(f"master-display={_x265_mastering(m)}")
            if cll:
                params.append(f"max-cll={cll},{colour.max_fall or 0}")
        return tuple(params)
    if encoder.name == "libsvtav1" and pq:
        params = []
        if m is not None:
            params.append(f"mastering-display={_svt_mastering(m)}")
        if cll:
            params.append(f"content-light={cll},{colour.max_fall or 0}")
        return tuple(params)
    return ()


def _x265_mastering(m: Mastering) -> str:
    """x265's ``master-display``: xy in units of 0.00002, luminance in 0.0001 cd/m²."""

    def xy(p: tuple[float, float]) -> str:
        return f"({round(p[0] / 0.00002)},{round(p[1] / 0.00002)})"

    return (f"G{xy(m.green)}B{xy(m.blue)}R{xy(m.red)}WP{xy(m.white)}"
            f"L({round(m.max_luminance / 0.0001)},{round(m.min_luminance / 0.0001)})")  # fmt: skip


def _svt_mastering(m: Mastering) -> str:
    """SVT-AV1's ``mastering-display``: xy and luminance as decimals."""

    def xy(p: tuple[float, float]) -> str:
        return f"({p[0]:.4f},{p[1]:.4f})"

    return (f"G{xy(m.green)}B{xy(m.blue)}R{xy(m.red)}WP{xy(m.white)}"
            f"L({m.max_luminance:.4f},{m.min_luminance:.4f})")  # fmt: skip
