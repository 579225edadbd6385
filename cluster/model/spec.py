"""What a user asks for: :class:`JobSpec` and its vocabulary (kinds, hardware, speeds,
codecs). Validated on construction; a spec never holds ffmpeg arguments."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from cluster.errors import SpecError
from cluster.model.package import PackageOptions
from cluster.model.quality import ScoreOptions
from cluster.model.search import Target
from cluster.model.split import AUTO, parse_split


class JobKind(StrEnum):
    TRANSCODE = "transcode"
    PROBE = "probe"
    VALIDATE = "validate"
    THUMBNAIL = "thumbnail"
    PACKAGE = "package"
    """A streaming package: an ABR ladder as HLS and DASH (:mod:`cluster.model.package`)."""
    QUALITY = "quality"
    """Scores of the input against a reference (:mod:`cluster.model.quality`)."""


class Hardware(StrEnum):
    AUTO = "auto"
    GPU = "gpu"
    CPU = "cpu"


class Speed(StrEnum):
    FAST = "fast"
    MEDIUM = "medium"
    SLOW = "slow"


class Codec(StrEnum):
    """The video codecs framefleet encodes (the one list; ``CODECS`` is its values)."""

    H264 = "h264"
    HEVC = "hevc"
    AV1 = "av1"


CODECS: tuple[str, ...] = tuple(c.value for c in Codec)
_URL_LIKE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*[:,]")
MAX_THUMBNAILS = 100
MAX_PATH_CHARS = 4096
MAX_URL_CHARS = 2048
OBJECT_URL_PREFIX = "s3://"
"""Objects in storage; checked strictly (and against the roots) at admission."""


def _check_path_text(what: str, value: str) -> None:
    if not value or not value.strip():
        raise SpecError(f"{what} is empty; give a file path")
    if len(value) > MAX_PATH_CHARS:
        raise SpecError(f"{what} is longer than {MAX_PATH_CHARS} characters")
    if "\x00" in value or "\n" in value:
        raise SpecError(f"{what} contains a control character; rename the file")
    if _URL_LIKE.match(value) and not value.startswith(OBJECT_URL_PREFIX):
        raise SpecError(
            f"{what} {value[:120]!r} looks like a URL or ffmpeg protocol; give a file path "
            "(prefix ./ for a file whose name contains ':') or an s3:// URL"
        )


def _check_callback_text(url: str) -> None:
    """The URL's form (an http(s) URL with a host, no credentials); which hosts are
    allowed is admission's rule (:func:`cluster.scheduling.admission.check_callback`)."""
    if len(url) > MAX_URL_CHARS or any(ord(c) < 33 for c in url):
        raise SpecError(
            f"callback_url must be one URL of at most {MAX_URL_CHARS} characters, no spaces"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SpecError(f"callback_url {url!r} is not an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise SpecError("callback_url must not carry credentials; receivers check the signature")


class Deinterlace(StrEnum):
    AUTO = "auto"
    """Deinterlace an interlaced source at its frame rate; inverse-telecine telecined film."""
    OFF = "off"
    FRAME = "frame"
    """Deinterlace, one frame per frame (25i → 25p), whatever the probe found."""
    FIELD = "field"
    """Deinterlace, one frame per field (25i → 50p): smoother motion, twice the frames."""


class Tonemap(StrEnum):
    HABLE = "hable"
    """Filmic: keeps highlights' detail, a little darker overall (the default)."""
    MOBIUS = "mobius"
    """Keeps in-range colours as they are and rolls off only the brightest."""
    REINHARD = "reinhard"


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What a user asks for. Validated on construction; never holds ffmpeg arguments."""

    kind: JobKind
    input: str
    output: str | None = None
    codec: str = "h264"
    quality: int | None = None
    speed: Speed = Speed.MEDIUM
    hardware: Hardware = Hardware.AUTO
    priority: int = 0
    keep_10bit: bool = False
    overwrite: bool = False
    thumbnail_at: float | None = None
    thumbnail_count: int | None = None
    thumbnail_width: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    callback_url: str | None = None
    """Where to POST the job's view when it ends (a host in the allowed webhook hosts)."""
    split: str = AUTO
    """A transcode's video in chunks across the farm: ``auto``, ``off`` or about how many
    seconds a chunk lasts (see :mod:`cluster.model.split`)."""
    package: PackageOptions | None = None
    """A package job's ladder, segment length and formats (default for a package job)."""
    reference: str | None = None
    """A quality job's reference: the input (the distorted) is scored against it."""
    score: ScoreOptions | None = None
    """A quality job's metrics and model; on a transcode, the output is scored against
    its input before it is committed (``min_vmaf``: it fails below)."""
    target_vmaf: float | None = None
    """A transcode as small as this VMAF allows: a CRF search across the farm first
    (:mod:`cluster.model.search`); instead of ``quality``."""
    target_xpsnr: float | None = None
    """The same, for an XPSNR in dB."""
    max_encoded_percent: float | None = None
    """A target that would leave the output larger than this share of the input (default
    80 %) ends the job instead."""
    deinterlace: Deinterlace = Deinterlace.AUTO
    """What an interlaced or telecined source gets (see :class:`Deinterlace`)."""
    sdr: bool = False
    """An HDR source comes out BT.709 SDR even where the output could stay HDR."""
    tonemap: Tonemap = Tonemap.HABLE
    """How HDR is tone-mapped to SDR (see :class:`Tonemap`)."""

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", JobKind(self.kind))
            object.__setattr__(self, "speed", Speed(self.speed))
            object.__setattr__(self, "hardware", Hardware(self.hardware))
            object.__setattr__(self, "deinterlace", Deinterlace(self.deinterlace))
            object.__setattr__(self, "tonemap", Tonemap(self.tonemap))
        except ValueError as exc:
            raise SpecError(f"{exc}; see `framefleet encode --help` for the choices") from exc
        self._check_picture()
        _check_path_text("input", self.input)
        if self.kind in (JobKind.TRANSCODE, JobKind.THUMBNAIL, JobKind.PACKAGE):
            if self.output is None:
                what = "an output file" if self.kind is JobKind.TRANSCODE else "an output folder"
                raise SpecError(f"a {self.kind} job needs {what}")
            _check_path_text("output", self.output)
        if self.codec not in CODECS:
            raise SpecError(f"unknown codec {self.codec!r}; choose one of {', '.join(CODECS)}")
        if self.quality is not None and not 0 <= self.quality <= 51:
            raise SpecError(
                f"quality {self.quality} is out of range; use 0 (best) to 51 (smallest)"
            )
        if not -1000 <= self.priority <= 1000:
            raise SpecError("priority must be between -1000 and 1000")
        if self.keep_10bit and self.codec == "h264":
            raise SpecError("10-bit output needs hevc or av1; drop keep_10bit or change the codec")
        if self.thumbnail_at is not None and self.thumbnail_at < 0:
            raise SpecError("thumbnail time must be 0 or more seconds")
        if self.thumbnail_count is not None and not 1 <= self.thumbnail_count <= MAX_THUMBNAILS:
            raise SpecError(f"thumbnail count must be between 1 and {MAX_THUMBNAILS}")
        if self.thumbnail_at is not None and self.thumbnail_count is not None:
            raise SpecError("give either a thumbnail time or a thumbnail count, not both")
        if self.thumbnail_width is not None and not 16 <= self.thumbnail_width <= 7680:
            raise SpecError("thumbnail width must be between 16 and 7680 pixels")
        if not isinstance(self.labels, dict):
            raise SpecError("labels must be an object of text keys and values")
        if self.callback_url is not None:
            _check_callback_text(self.callback_url)
        object.__setattr__(self, "split", parse_split(self.split))
        self._check_package()
        self._check_score()
        self._check_target()

    def _check_picture(self) -> None:
        """Deinterlacing and tone-mapping are for what encodes video: transcodes and
        packages (whose rungs are progressive)."""
        options = (("deinterlace", self.deinterlace is not Deinterlace.AUTO),
                   ("sdr", self.sdr), ("tonemap", self.tonemap is not Tonemap.HABLE))  # fmt: skip
        asked = [name for name, on in options if on]
        if asked and self.kind not in (JobKind.TRANSCODE, JobKind.PACKAGE):
            raise SpecError(f"{', '.join(asked)} is for transcodes and packages, not {self.kind}")
        if self.kind is JobKind.PACKAGE and self.deinterlace is Deinterlace.OFF:
            raise SpecError("a package's rungs are progressive (HLS asks it): deinterlace "
                            "auto or frame")  # fmt: skip

    @property
    def target(self) -> Target | None:
        """The quality a search must reach (``None``: none asked)."""
        return Target.of(self.target_vmaf, self.target_xpsnr, self.max_encoded_percent)

    def _check_target(self) -> None:
        target = self.target  # checks the values
        if target is None:
            return
        if self.kind not in (JobKind.TRANSCODE, JobKind.PACKAGE):
            raise SpecError(f"a quality target is for transcodes and packages, not {self.kind}")
        if self.package is not None and any(r.quality is not None for r in self.package.ladder):
            raise SpecError("a per-title ladder searches each rung's quality; drop the rungs' "
                            f"quality or the {target.metric.value} target")  # fmt: skip
        if self.quality is not None:
            raise SpecError(
                f"give quality (a fixed CRF) or {target.metric.value} target, not both: the "
                "search chooses the CRF"
            )
        if self.score is not None:
            raise SpecError(
                "a target already scores the output (its result's quality); drop score and "
                "min_vmaf, or the target"
            )
        if self.deinterlace is Deinterlace.FIELD:
            raise SpecError("a quality target scores frames one to one with the source; "
                            "deinterlace field makes twice as many: use auto or frame")  # fmt: skip

    def _check_score(self) -> None:
        if self.kind is JobKind.QUALITY:
            if self.reference is None:
                raise SpecError("a quality job needs a reference to score the input against")
            _check_path_text("reference", self.reference)
            if self.output is not None:
                raise SpecError("a quality job writes no file; drop the output")
        elif self.reference is not None:
            raise SpecError(f"a reference is for quality jobs, not {self.kind}")
        if self.kind in (JobKind.QUALITY, JobKind.TRANSCODE):
            if self.score is not None or self.kind is JobKind.QUALITY:
                object.__setattr__(self, "score", ScoreOptions.parse(self.score or {}))
        elif self.score is not None:
            raise SpecError(f"score options are for quality and transcode jobs, not {self.kind}")

    def _check_package(self) -> None:
        if self.kind is JobKind.PACKAGE:
            options = PackageOptions.parse(self.package or {}).checked(CODECS)
            object.__setattr__(self, "package", options)
            if self.keep_10bit:
                raise SpecError("a package's rungs are 8-bit; drop keep_10bit")
            if self.deinterlace is Deinterlace.FIELD:
                raise SpecError("a package deinterlaces at the frame rate (its segments are "
                                "counted in the source's frames): use auto or frame")  # fmt: skip
        elif self.package is not None:
            raise SpecError(f"package options are for package jobs, not {self.kind}")

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        package = self.package.to_dict() if self.package else None
        score = self.score.to_dict() if self.score else None
        return data | {"labels": dict(self.labels), "package": package, "score": score}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"unknown job field(s): {', '.join(unknown)}")
        return cls(**data)


MAX_LABELS = 32
MAX_LABEL_KEY = 64
MAX_LABEL_VALUE = 256
MAX_LABELS_CHARS = 4096
"""Labels tag a job for the people and tools that follow it (a show, a shot, an
order): a few short strings, at most these, so a queue of them stays small."""


def check_labels(labels: dict[str, str]) -> None:
    """Labels within their caps, at admission (a job stored under older caps still
    loads)."""
    total = sum(len(str(k)) + len(str(v)) for k, v in labels.items())
    if (
        len(labels) > MAX_LABELS
        or total > MAX_LABELS_CHARS
        or any(len(str(k)) > MAX_LABEL_KEY or len(str(v)) > MAX_LABEL_VALUE
               for k, v in labels.items())
    ):  # fmt: skip
        raise SpecError(
            f"labels: at most {MAX_LABELS}, keys up to {MAX_LABEL_KEY} and values up to "
            f"{MAX_LABEL_VALUE} characters, {MAX_LABELS_CHARS} in all (these have "
            f"{len(labels)}, {total} characters); keep long text outside the job"
        )
