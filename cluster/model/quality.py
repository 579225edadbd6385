"""Quality you can state: scores of a distorted video against its reference (pure
vocabulary; :mod:`cluster.media.quality` builds the scoring ffmpeg and reads its logs,
:mod:`cluster.control.graphs.quality` makes a ``quality`` job a graph of time ranges
scored in parallel).

What a user asks (:class:`ScoreOptions`): which metrics, which VMAF model, every how
many frames, and (on a transcode) the VMAF below which the output fails. What a node
returns for one pass over some frames (:class:`Tally`, one per metric): mergeable
exactly, so ranges scored on several nodes pool to what one pass gives: counts, sums,
the minimum, a histogram at each metric's resolution (percentiles from it, exact to
that resolution), and the worst frames.

The pooled figures (:func:`pooled`): ``mean``, ``harmonic_mean`` (libvmaf's:
``n / Σ 1/(1+x) - 1``), ``min``, ``max``, ``p1`` and ``p5`` (the nearest-rank 1st and
5th percentiles: the value 1 % and 5 % of frames are at or below), and ``worst``: the
lowest frames with their times.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cluster.errors import SpecError


class Metric(StrEnum):
    VMAF = "vmaf"
    """Netflix's VMAF (libvmaf), 0-100: 95+ is hard to tell from the reference."""
    PSNR = "psnr"
    """Luma PSNR in dB (ffmpeg's ``psnr``); identical frames count as 100."""
    SSIM = "ssim"
    """Luma SSIM, 0-1 (ffmpeg's ``ssim``)."""
    XPSNR = "xpsnr"
    """Luma XPSNR in dB (ffmpeg's ``xpsnr``: PSNR weighted by what the eye sees)."""


METRICS: tuple[str, ...] = tuple(m.value for m in Metric)
FILTERS: dict[Metric, str] = {
    Metric.VMAF: "libvmaf",
    Metric.PSNR: "psnr",
    Metric.SSIM: "ssim",
    Metric.XPSNR: "xpsnr",
}
"""The ffmpeg filter that computes each metric (a node has a metric if its ffmpeg has it)."""
RESOLUTION: dict[Metric, float] = {
    Metric.VMAF: 0.01,
    Metric.PSNR: 0.01,
    Metric.SSIM: 0.00001,
    Metric.XPSNR: 0.01,
}
"""A histogram bin's width: the percentiles are exact to it."""
CEILING_DB = 100.0
"""What an identical frame's (infinite) PSNR or XPSNR counts as."""
WORST_FRAMES = 5


class Model(StrEnum):
    """Which VMAF model (``auto``: the 4K model for references taller than 1440 lines)."""

    AUTO = "auto"
    HD = "1080p"
    """``vmaf_v0.6.1``: 1080p viewed at three times the screen's height."""
    UHD = "4k"
    """``vmaf_4k_v0.6.1``: 4K viewed at one and a half times the screen's height."""
    NEG = "neg"
    """``vmaf_v0.6.1neg``: no enhancement gain (sharpening does not raise the score):
    for comparing encoders."""


MODEL_VERSIONS: dict[Model, str] = {
    Model.HD: "vmaf_v0.6.1",
    Model.UHD: "vmaf_4k_v0.6.1",
    Model.NEG: "vmaf_v0.6.1neg",
}
UHD_FROM_HEIGHT = 1440
MAX_SUBSAMPLE = 1000


def model_for(model: Model, height: int) -> Model:
    """The model ``auto`` means for a reference ``height`` lines tall."""
    if model is not Model.AUTO:
        return model
    return Model.UHD if height > UHD_FROM_HEIGHT else Model.HD


@dataclass(frozen=True, slots=True)
class ScoreOptions:
    """What a quality job (or a transcode that is scored) asks for."""

    metrics: tuple[str, ...] = (Metric.VMAF.value,)
    model: str = Model.AUTO.value
    subsample: int = 1
    """Score every Nth frame (1: every frame)."""
    min_vmaf: float | None = None
    """A transcode whose output's mean VMAF is lower fails, with its score."""

    @property
    def metric_set(self) -> tuple[Metric, ...]:
        return tuple(Metric(m) for m in self.metrics)

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": list(self.metrics), "model": self.model,
                "subsample": self.subsample, "min_vmaf": self.min_vmaf}  # fmt: skip

    @classmethod
    def parse(cls, data: Any) -> ScoreOptions:
        """From JSON (``{"metrics": ["vmaf", "psnr"], "model": "auto"}``), checked; a
        :class:`SpecError` names what is wrong."""
        if isinstance(data, ScoreOptions):
            data = data.to_dict()
        if not isinstance(data, dict):
            raise SpecError("score must be an object: metrics, model, subsample, min_vmaf")
        unknown = sorted(set(data) - {"metrics", "model", "subsample", "min_vmaf"})
        if unknown:
            raise SpecError(f"score: unknown field(s) {', '.join(unknown)}")
        metrics = _metric_names(data.get("metrics") or [Metric.VMAF.value])
        model = str(data.get("model") or Model.AUTO.value).lower()
        if model not in {m.value for m in Model}:
            choices = ", ".join(m.value for m in Model)
            raise SpecError(f"unknown VMAF model {model!r}; choose from {choices}")
        subsample = _whole(data.get("subsample"))
        if not 1 <= subsample <= MAX_SUBSAMPLE:
            raise SpecError(f"subsample must be from 1 (every frame) to {MAX_SUBSAMPLE}")
        floor = data.get("min_vmaf")
        if floor is not None:
            try:
                floor = float(floor)
            except (TypeError, ValueError) as exc:
                raise SpecError("min_vmaf must be a number from 0 to 100") from exc
            if not 0 <= floor <= 100:
                raise SpecError("min_vmaf must be from 0 to 100")
            if Metric.VMAF.value not in metrics:
                metrics.insert(0, Metric.VMAF.value)
        return cls(tuple(metrics), model, subsample, floor)


def _metric_names(raw: Any) -> list[str]:
    if isinstance(raw, str):
        raw = [m for m in raw.split(",") if m.strip()]
    if not isinstance(raw, list | tuple):
        raise SpecError(f"metrics must be a list of names from {', '.join(METRICS)}")
    metrics: list[str] = []
    for m in raw:
        name = str(m).strip().lower()
        if name not in METRICS:
            raise SpecError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}")
        if name not in metrics:
            metrics.append(name)
    return metrics


def _whole(given: Any) -> int:
    """A subsample: a whole number (``None``: 1), else a :class:`SpecError`."""
    if given is None:
        return 1
    wrong = SpecError("subsample must be a whole number of frames")
    if isinstance(given, bool) or not isinstance(given, int | float | str):
        raise wrong
    try:
        exact = float(str(given).strip())
    except ValueError as exc:
        raise wrong from exc
    if not math.isfinite(exact) or exact != int(exact):  # NaN, infinite, or a fraction
        raise wrong
    return int(exact)


@dataclass(frozen=True, slots=True)
class Reference:
    """What scoring needs of the reference, from its probe."""

    path: str
    width: int
    height: int
    frame_rate: tuple[int, int]
    bit_depth: int = 8
    frames: int = 0

    @property
    def frame_s(self) -> float:
        num, den = self.frame_rate
        return den / num

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "width": self.width, "height": self.height,
                "frame_rate": list(self.frame_rate), "bit_depth": self.bit_depth,
                "frames": self.frames}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reference:
        num, den = data["frame_rate"]
        return cls(data["path"], int(data["width"]), int(data["height"]), (int(num), int(den)),
                   int(data.get("bit_depth", 8)), int(data.get("frames", 0)))  # fmt: skip


@dataclass(frozen=True, slots=True)
class ScoreStep:
    """One scoring pass: frames ``[start, start + frames)`` of the reference (all of it:
    ``frames`` 0), read from ``lead`` frames before so the motion features see the
    frames around each scored one, and ``tail`` after."""

    reference: Reference
    options: ScoreOptions
    model: str
    """The model resolved (never ``auto``)."""
    start: int = 0
    frames: int = 0
    lead: int = 0
    tail: int = 0
    index: int = 0
    open_end: bool = False
    """The last range: read to the end of the file (a frame count may be an estimate)."""
    offset: int = 0
    """The reference frame the distorted's first frame is (a sample encode's first)."""

    @property
    def whole(self) -> bool:
        return self.frames == 0

    @property
    def label(self) -> str:
        if self.whole:
            return "the whole file"
        frame_s = self.reference.frame_s
        end = self.start + self.frames
        return (f"range {self.index + 1} (frames {self.start}-{end - 1}, "
                f"{self.start * frame_s:.2f}-{end * frame_s:.2f} s)")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference.to_dict(), "options": self.options.to_dict(),
                "model": self.model, "start": self.start, "frames": self.frames,
                "lead": self.lead, "tail": self.tail, "index": self.index,
                "open_end": self.open_end, "offset": self.offset}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoreStep:
        return cls(Reference.from_dict(data["reference"]),
                   ScoreOptions.parse(data["options"]), str(data["model"]),
                   int(data.get("start", 0)), int(data.get("frames", 0)),
                   int(data.get("lead", 0)), int(data.get("tail", 0)),
                   int(data.get("index", 0)), bool(data.get("open_end", False)),
                   int(data.get("offset", 0)))  # fmt: skip


@dataclass(slots=True)
class Tally:
    """One metric over some frames, mergeable exactly (see the module docstring)."""

    metric: Metric
    count: int = 0
    total: float = 0.0
    inverse: float = 0.0
    """Σ 1/(1+x), for the harmonic mean."""
    low: float = math.inf
    high: float = -math.inf
    bins: dict[int, int] = field(default_factory=dict)
    worst: list[tuple[float, int]] = field(default_factory=list)
    """The lowest frames as (value, frame), lowest first."""

    def add(self, frame: int, value: float) -> None:
        self.count += 1
        self.total += value
        self.inverse += 1.0 / (1.0 + max(value, 0.0))
        self.low, self.high = min(self.low, value), max(self.high, value)
        key = round(value / RESOLUTION[self.metric])
        self.bins[key] = self.bins.get(key, 0) + 1
        self.worst = heapq.nsmallest(WORST_FRAMES, [*self.worst, (value, frame)])

    def merge(self, other: Tally) -> None:
        self.count += other.count
        self.total += other.total
        self.inverse += other.inverse
        self.low, self.high = min(self.low, other.low), max(self.high, other.high)
        for key, n in other.bins.items():
            self.bins[key] = self.bins.get(key, 0) + n
        self.worst = heapq.nsmallest(WORST_FRAMES, [*self.worst, *other.worst])

    def percentile(self, p: float) -> float:
        """The nearest-rank ``p``-th percentile, exact to the metric's resolution."""
        rank, seen = max(1, math.ceil(p / 100 * self.count)), 0
        for key in sorted(self.bins):
            seen += self.bins[key]
            if seen >= rank:
                return key * RESOLUTION[self.metric]
        return self.high

    def to_dict(self) -> dict[str, Any]:
        return {"metric": str(self.metric), "count": self.count, "total": self.total,
                "inverse": self.inverse, "low": self.low if self.count else None,
                "high": self.high if self.count else None,
                "bins": {str(k): n for k, n in self.bins.items()},
                "worst": [[v, f] for v, f in self.worst]}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tally:
        low, high = data.get("low"), data.get("high")
        return cls(Metric(data["metric"]), int(data["count"]), float(data["total"]),
                   float(data["inverse"]), math.inf if low is None else float(low),
                   -math.inf if high is None else float(high),
                   {int(k): int(n) for k, n in data.get("bins", {}).items()},
                   [(float(v), int(f)) for v, f in data.get("worst", [])])  # fmt: skip


def merged(tallies: Iterable[Tally]) -> dict[Metric, Tally]:
    """Tallies of several passes, by metric, merged."""
    out: dict[Metric, Tally] = {}
    for t in tallies:
        into = out.setdefault(t.metric, Tally(t.metric))
        into.merge(t)
    return out


def pooled(tally: Tally, frame_s: float) -> dict[str, Any]:
    """What a user reads of one metric (see the module docstring); ``frame_s`` gives
    the worst frames' times."""
    if not tally.count:
        return {"frames": 0}
    digits = 5 if tally.metric is Metric.SSIM else 3
    harmonic = tally.count / tally.inverse - 1.0 if tally.inverse else 0.0
    worst = [{"frame": f, "time_s": round(f * frame_s, 3), "value": round(v, digits)}
             for v, f in tally.worst]  # fmt: skip
    return {
        "mean": round(tally.total / tally.count, digits),
        "harmonic_mean": round(harmonic, digits),
        "min": round(tally.low, digits),
        "max": round(tally.high, digits),
        "p1": round(tally.percentile(1), digits),
        "p5": round(tally.percentile(5), digits),
        "frames": tally.count,
        "worst": worst,
    }
