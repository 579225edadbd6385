"""The coordinator's job counters and histograms, exported through the gateway's /metrics.

Plain data, no prometheus-client here: the coordinator records what happens to jobs
(every state change goes through one function), and ``snapshot()`` returns it with
the live gauges for the gateway to render. Label sets are initialised at start-up, so
every series exists from the first scrape. No job ids as labels.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster.media.encoders import CATALOG
from cluster.model.counters import JobCounter
from cluster.model.jobs import CODECS, JobKind

WAIT_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)
DURATION_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)
OUTCOMES = ("succeeded", "failed", "cancelled")
NO_ENCODER = "none"


@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)  # the last is +Inf

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1

    def cumulative(self) -> list[int]:
        """Counts at or below each bucket, then +Inf (Prometheus' shape)."""
        totals, running = [], 0
        for count in self.counts:
            running += count
            totals.append(running)
        return totals


def _job_labels() -> list[tuple[str, str, str]]:
    """(kind, codec, encoder) that can occur: transcodes per encoder, others with none."""
    labels = [(str(JobKind.TRANSCODE), e.codec, e.name) for e in CATALOG]
    for kind in (JobKind.PROBE, JobKind.VALIDATE, JobKind.THUMBNAIL):
        labels += [(str(kind), codec, NO_ENCODER) for codec in CODECS]
    return labels


@dataclass
class JobMetrics:
    submitted: dict[tuple[str, str], int] = field(default_factory=dict)
    finished: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    counts: dict[JobCounter, int] = field(default_factory=lambda: dict.fromkeys(JobCounter, 0))
    frames: dict[str, int] = field(default_factory=dict)
    bytes_written: dict[str, int] = field(default_factory=dict)
    queue_wait: dict[str, Histogram] = field(default_factory=dict)
    duration: dict[str, Histogram] = field(default_factory=dict)
    tenant_finished: dict[tuple[str, str], int] = field(default_factory=dict)
    """(tenant, outcome) -> jobs that ended so."""
    gpu_seconds: dict[str, float] = field(default_factory=dict)
    """Tenant -> GPU-seconds its ended attempts held (tasks included)."""
    core_seconds: dict[str, float] = field(default_factory=dict)
    """Tenant -> core-seconds its ended attempts held (tasks included)."""

    def __post_init__(self) -> None:
        for kind, codec, encoder in _job_labels():
            self.submitted.setdefault((kind, codec), 0)
            for outcome in OUTCOMES:
                self.finished.setdefault((kind, codec, encoder, outcome), 0)
            self.frames.setdefault(encoder, 0)
            self.queue_wait.setdefault(kind, Histogram(WAIT_BUCKETS))
            self.duration.setdefault(kind, Histogram(DURATION_BUCKETS))
        for kind in JobKind:
            self.bytes_written.setdefault(str(kind), 0)

    def count(self, counter: JobCounter) -> None:
        self.counts[counter] += 1

    def __getitem__(self, counter: JobCounter) -> int:
        return self.counts[counter]

    def on_submit(self, kind: str, codec: str) -> None:
        self.submitted[(kind, codec)] = self.submitted.get((kind, codec), 0) + 1

    def on_tenant_finish(self, tenant: str, outcome: str) -> None:
        key = (tenant, outcome)
        self.tenant_finished[key] = self.tenant_finished.get(key, 0) + 1

    def on_held(self, tenant: str, gpus: int, cores: float, seconds: float) -> None:
        """An attempt of ``tenant``'s that held ``gpus`` and ``cores`` for ``seconds``."""
        seconds = max(seconds, 0.0)
        self.gpu_seconds[tenant] = self.gpu_seconds.get(tenant, 0.0) + gpus * seconds
        self.core_seconds[tenant] = self.core_seconds.get(tenant, 0.0) + cores * seconds

    def on_start(self, kind: str, waited_s: float) -> None:
        self.queue_wait.setdefault(kind, Histogram(WAIT_BUCKETS)).observe(max(waited_s, 0.0))

    def on_finish(
        self,
        kind: str,
        codec: str,
        encoder: str | None,
        outcome: str,
        ran_s: float | None,
        result: dict[str, Any] | None,
    ) -> None:
        key = (kind, codec, encoder or NO_ENCODER, outcome)
        self.finished[key] = self.finished.get(key, 0) + 1
        if ran_s is not None:
            self.duration.setdefault(kind, Histogram(DURATION_BUCKETS)).observe(max(ran_s, 0.0))
        if outcome == "succeeded" and result:
            frames = result.get("frames")
            if isinstance(frames, int) and encoder:
                self.frames[encoder] = self.frames.get(encoder, 0) + frames
            size = result.get("size_bytes")
            if isinstance(size, int):
                self.bytes_written[kind] = self.bytes_written.get(kind, 0) + size


def resident_mb() -> float | None:
    """This process's resident memory in MiB (Linux), for ping and the memory bench."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
