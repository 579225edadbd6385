"""Learned speeds: how fast each kind of work runs on each kind of node, from what ran.

Every finished encode (a whole transcode, a chunk, a package's rendition, a search's
sample, a score) leaves a :class:`SpeedSample`: how many seconds of media its ffmpeg got
through in how many seconds, with what determined it (the node, its device: a GPU model
or a CPU model with the cores given, the encoder, preset, frame height and rate buckets,
the input's codec, 10-bit or not).

The model is deliberately small: a hierarchy of exponentially weighted averages of the
**log ratio** between the measured speed and the static table's
(:func:`~cluster.scheduling.costs.expected_speed`), each level shrunk toward the one
above it with a few pseudo-samples:

    static table  ->  device (e.g. "NVIDIA L4", or "EPYC 7B13 x 8 cores")
                  ->  device and work (encoder, preset, size, rate, input codec, depth)
                  ->  this node and work

So one run on a new L4 already moves every L4 estimate (the device level), a key never
seen on that device still gets the device's learned factor, and a node that got slower
(thermal throttling, a noisy neighbour) drifts away from its class within a few runs:
each average weighs the newest run most: a node's by a decay of 0.8 per run (its last
five runs carry two thirds of the weight), a device's and a work's more slowly (0.95,
0.9): they pool many nodes. A run far off the estimate (three spreads, at least 65 %)
counts as that far: one broken measurement moves an estimate by a few percent.

Why not more: speeds on one device and work are close to log-normal with a spread of
10-20 %; a regression on pixels per second would need features (content complexity,
B-frames) framefleet does not know at submit, and a learned model would need far more
runs than a farm makes per key. The uncertainty
is the spread of the measurements at the level that answered, widened while it has
few samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

DECAY = {"device": 0.95, "work": 0.9, "node": 0.8}
"""Per level: each older run weighs this much of the next newer one."""
PRIOR_WEIGHT = {"device": 1.0, "work": 2.0, "node": 0.5}
"""Pseudo-samples of the level above, at each level (its shrinkage)."""
PRIOR_SPREAD = 0.7
"""The static table's uncertainty in log terms (a factor of about 2)."""
DEFAULT_SPREAD = 0.2
"""A level's spread before it has seen two runs (about 20 %)."""
CLIP = math.log(8.0)
"""Before three runs, a run more than 8x off the estimate counts as 8x."""
CLIP_SPREADS, MIN_CLIP = 3.0, 0.5
HEIGHTS = (360, 480, 576, 720, 1080, 1440, 2160, 4320)
RATES = (24, 25, 30, 50, 60, 120)


def height_bucket(height: int) -> int:
    """The smallest of :data:`HEIGHTS` at or above ``height`` (0: unknown)."""
    if height <= 0:
        return 0
    return next((h for h in HEIGHTS if height <= h), HEIGHTS[-1])


def rate_bucket(fps: float | None) -> int:
    if not fps or fps <= 0:
        return 0
    return min(RATES, key=lambda r: abs(r - fps))


def cores_bucket(cores: float) -> int:
    """1, 2, 4, 8… (0 for a GPU encode, whose speed is the GPU's)."""
    if cores <= 0:
        return 0
    return int(2 ** max(0, round(math.log2(cores))))


@dataclass(frozen=True, slots=True)
class Work:
    """What determines a speed besides where it runs."""

    encoder: str
    """The encoder (``libx264``, ``hevc_nvenc``), or ``decode`` / ``score`` for a read."""
    preset: str = ""
    height: int = 0
    """A bucket of :data:`HEIGHTS`."""
    rate: int = 0
    """A bucket of :data:`RATES`."""
    codec_in: str = ""
    ten_bit: bool = False

    @classmethod
    def of(
        cls,
        encoder: str,
        preset: str,
        height: int,
        fps: float | None,
        codec_in: str,
        ten_bit: bool,
    ) -> Work:
        return cls(encoder, preset, height_bucket(height), rate_bucket(fps), codec_in, ten_bit)

    def key(self) -> str:
        bits = "10" if self.ten_bit else "8"
        return f"{self.encoder}/{self.preset}/{self.height}p{self.rate}/{self.codec_in}/{bits}"


@dataclass(frozen=True, slots=True)
class Device:
    """What a node runs work on: a GPU model, or a CPU model with the cores given."""

    kind: str
    """``gpu`` or ``cpu``."""
    model: str
    cores: int = 0
    """For a CPU: a bucket of the cores given (:func:`cores_bucket`)."""

    def key(self) -> str:
        return f"{self.kind}:{self.model}" + (f"x{self.cores}" if self.cores else "")

    def __str__(self) -> str:
        if self.kind == "gpu":
            return self.model
        return f"{self.model}, {self.cores} core{'s' if self.cores != 1 else ''}"


@dataclass(frozen=True, slots=True)
class SpeedSample:
    """One finished run: ``media_s`` seconds of media in ``seconds`` of ffmpeg."""

    at: float
    node_id: str
    device: Device
    work: Work
    media_s: float
    seconds: float
    frames: int = 0
    prior: float = 1.0
    """The static table's speed for it (what the model learns a ratio to)."""
    what: str = "transcode"
    """``transcode``, ``chunk``, ``rendition``, ``sample`` or ``score``."""

    @property
    def speed(self) -> float:
        """Times real time."""
        return self.media_s / self.seconds if self.seconds > 0 else 0.0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def usable(self) -> bool:
        """A measurement the model may learn from: positive, finite, and within a
        thousand times the table either way (anything further is a broken clock)."""
        if not (self.seconds > 0 and self.media_s > 0 and self.prior > 0):
            return False
        ratio = self.speed / self.prior
        return math.isfinite(ratio) and 1e-3 < ratio < 1e3

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["speed"] = round(self.speed, 4)
        data["fps"] = round(self.fps, 2)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpeedSample:
        fields = {k: v for k, v in data.items() if k not in ("speed", "fps", "seq")}
        fields["device"] = Device(**fields["device"])
        fields["work"] = Work(**fields["work"])
        return cls(**fields)


@dataclass(slots=True)
class _Average:
    """An exponentially weighted mean and variance of log ratios."""

    decay: float
    weight: float = 0.0
    mean: float = 0.0
    var: float = 0.0
    runs: int = 0
    last_at: float = 0.0

    def add(self, x: float, at: float) -> None:
        clip = CLIP if self.runs < 3 else max(CLIP_SPREADS * math.sqrt(self.var), MIN_CLIP)
        x = min(max(x, self.mean - clip), self.mean + clip)  # the first: within 8x the table
        self.weight = self.weight * self.decay + 1.0
        alpha = 1.0 / self.weight
        delta = x - self.mean
        self.mean += alpha * delta
        self.var = (1 - alpha) * (self.var + alpha * delta * delta)
        self.runs += 1
        self.last_at = max(self.last_at, at)


@dataclass(frozen=True, slots=True)
class Estimate:
    """A predicted speed (times real time) with a range and what it rests on."""

    speed: float
    low: float
    high: float
    basis: str
    """``static`` (the table only), ``device``, ``work`` or ``node`` (the most specific
    level that has runs)."""
    runs: int = 0
    """Runs at that level."""

    def seconds(self, media_s: float) -> float:
        """How long ``media_s`` seconds of media should take."""
        return media_s / self.speed if self.speed > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {"speed": round(self.speed, 3), "low": round(self.low, 3),
                "high": round(self.high, 3), "basis": self.basis, "runs": self.runs}  # fmt: skip


@dataclass
class SpeedModel:
    """The learned ratios, by level; fed samples oldest first."""

    device: dict[str, _Average] = field(default_factory=dict)
    work: dict[tuple[str, str], _Average] = field(default_factory=dict)
    node: dict[tuple[str, str, str], _Average] = field(default_factory=dict)
    samples: int = 0

    def learn(self, sample: SpeedSample) -> None:
        if not sample.usable():
            return
        ratio = math.log(sample.speed / sample.prior)
        dev, work = sample.device.key(), sample.work.key()
        self.device.setdefault(dev, _Average(DECAY["device"])).add(ratio, sample.at)
        self.work.setdefault((dev, work), _Average(DECAY["work"])).add(ratio, sample.at)
        node = (sample.node_id, dev, work)
        self.node.setdefault(node, _Average(DECAY["node"])).add(ratio, sample.at)
        self.samples += 1

    def learn_all(self, samples: Iterable[SpeedSample]) -> None:
        for sample in samples:
            self.learn(sample)

    def predict(self, node_id: str, device: Device, work: Work, prior: float) -> Estimate:
        """The speed of ``work`` on ``node_id`` (its ``device``), the static table saying
        ``prior``: each level's average shrunk toward the level above."""
        dev, key = device.key(), work.key()
        mean, spread, basis, runs = 0.0, PRIOR_SPREAD, "static", 0
        for level, avg in (
            ("device", self.device.get(dev)),
            ("work", self.work.get((dev, key))),
            ("node", self.node.get((node_id, dev, key))),
        ):
            if avg is None or not avg.runs:
                continue
            k = PRIOR_WEIGHT[level]
            mean = (avg.weight * avg.mean + k * mean) / (avg.weight + k)
            measured = math.sqrt(avg.var) if avg.runs >= 2 else DEFAULT_SPREAD
            # The spread of one more run: the runs' own, widened while there are few.
            spread = math.sqrt(measured**2 + (spread**2) * k / (avg.weight + k))
            basis, runs = level, avg.runs
        speed = prior * math.exp(mean)
        return Estimate(speed, speed * math.exp(-spread), speed * math.exp(spread), basis, runs)

    def devices(self) -> Iterator[tuple[str, float, int]]:
        """Each device with its learned factor over the static table and its runs."""
        for key, avg in sorted(self.device.items()):
            yield key, math.exp(avg.mean), avg.runs
