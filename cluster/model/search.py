"""Encodes to a target quality: a CRF (or NVENC CQ) search in the spirit of ab-av1's
``crf-search``, run as tasks across the farm (pure vocabulary; the search itself is
:mod:`cluster.control.graphs.search`).

What a user asks (:class:`Target`, from a transcode's ``target_vmaf`` or
``target_xpsnr``): the score the output must reach, and how large it may be at most
compared with the input (``max_encoded_percent``). What the farm runs: probes
(:class:`ProbeStep`): one sample of the input encoded at one CRF with the encoder the
final encode will use, then scored against the same frames of the input. What the user
reads (:class:`Probe`, in the job's ``search``): every CRF tried, its score and the size
it predicts, and why the search stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cluster.errors import SpecError
from cluster.model.package import Rendition
from cluster.model.quality import Metric, ScoreStep
from cluster.model.split import Segment

DEFAULT_MAX_ENCODED_PERCENT = 80.0
CRF_RANGES: dict[str, tuple[int, int]] = {"h264": (10, 46), "hevc": (10, 46), "av1": (10, 51)}
"""The CRF (or CQ) a search may choose from, by codec (lower is better and larger)."""


@dataclass(frozen=True, slots=True)
class Target:
    """The score an encode must reach, as small as it can be."""

    metric: Metric
    value: float
    max_encoded_percent: float = DEFAULT_MAX_ENCODED_PERCENT

    @classmethod
    def of(
        cls, vmaf: float | None, xpsnr: float | None, max_percent: float | None
    ) -> Target | None:
        """The target a spec's fields ask for (``None``: none), checked."""
        if vmaf is not None and xpsnr is not None:
            raise SpecError("give target_vmaf or target_xpsnr, not both")
        if vmaf is None and xpsnr is None:
            if max_percent is not None:
                raise SpecError("max_encoded_percent goes with target_vmaf or target_xpsnr")
            return None
        percent = DEFAULT_MAX_ENCODED_PERCENT if max_percent is None else float(max_percent)
        if not 1 <= percent <= 100:
            raise SpecError("max_encoded_percent must be from 1 to 100")
        if vmaf is not None:
            if not 0 < vmaf <= 100:
                raise SpecError("target_vmaf must be above 0 and at most 100")
            return cls(Metric.VMAF, float(vmaf), percent)
        if xpsnr is None or not 0 < xpsnr <= 100:
            raise SpecError("target_xpsnr must be above 0 and at most 100 dB")
        return cls(Metric.XPSNR, float(xpsnr), percent)

    @property
    def words(self) -> str:
        unit = " dB" if self.metric is Metric.XPSNR else ""
        return f"{self.metric.value.upper()} {self.value:g}{unit}"

    def to_dict(self) -> dict[str, Any]:
        return {"metric": str(self.metric), "value": self.value,
                "max_encoded_percent": self.max_encoded_percent}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Target:
        return cls(Metric(data["metric"]), float(data["value"]),
                   float(data.get("max_encoded_percent", DEFAULT_MAX_ENCODED_PERCENT)))  # fmt: skip


@dataclass(frozen=True, slots=True)
class ProbeStep:
    """One probe: ``sample`` of the input encoded at ``crf``, then scored (``score``:
    the sample's frames of the input as the reference)."""

    sample: Segment
    crf: int
    score: ScoreStep
    round: int = 1
    rendition: Rendition | None = None
    """A package's rung (scaled, capped, its GOP fixed), searched for a per-title
    ladder; ``None``: the transcode's own encode."""
    gop: int = 0
    width: int = 4
    """CRFs its search probes at once (every round: chosen by the farm's size when the
    search began)."""

    def to_dict(self) -> dict[str, Any]:
        s = self.sample
        sample = {"index": s.index, "start_frame": s.start_frame, "frames": s.frames,
                  "start_s": s.start_s, "duration_s": s.duration_s,
                  "keyframe": s.keyframe}  # fmt: skip
        return {"sample": sample, "crf": self.crf, "score": self.score.to_dict(),
                "round": self.round, "gop": self.gop, "width": self.width,
                "rendition": self.rendition.to_dict() if self.rendition else None}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeStep:
        rung = data.get("rendition")
        return cls(Segment(**data["sample"]), int(data["crf"]),
                   ScoreStep.from_dict(data["score"]), int(data.get("round", 1)),
                   Rendition.from_dict(rung) if rung else None,
                   int(data.get("gop", 0)), int(data.get("width", 4)))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Probe:
    """One CRF tried: its score over every sample, and the output size it predicts."""

    crf: int
    score: float
    predicted_bytes: int
    predicted_percent: float
    """Of the input's size."""
    round: int
    samples: int

    def to_dict(self) -> dict[str, Any]:
        return {"crf": self.crf, "score": round(self.score, 3),
                "predicted_bytes": self.predicted_bytes,
                "predicted_percent": round(self.predicted_percent, 1), "round": self.round,
                "samples": self.samples}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a search stands after a round: more CRFs to try, a CRF chosen, or an end
    (the target cannot be met, or would not shrink the file enough)."""

    why: str
    crfs: tuple[int, ...] = ()
    """Try these next."""
    chosen: int | None = None
    failed: bool = False
    probes: tuple[Probe, ...] = field(default_factory=tuple)
