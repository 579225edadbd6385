"""Engine configuration: frozen dataclasses, passed in. Only the CLI and the gateway read
the environment; the engine never does."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cluster.placement import Policy


@dataclass(frozen=True, kw_only=True, slots=True)
class CoordinatorConfig:
    data_dir: Path
    media_roots: tuple[Path, ...] = ()
    """Jobs read and write only under these folders; empty means anywhere (local CLI use)."""
    max_attempts: int = 3
    """Attempts per job for failures that are not the input's fault."""
    retry_backoff_s: float = 2.0
    """Wait before the second attempt; doubles for each further one (capped at 60 s)."""
    max_jobs_per_node: int | None = None
    encoder_idle_s: float = 300.0
    """How long an idle encoder actor is kept warm for the next job of its shape. Idle
    actors hold their Ray resources, but the pool evicts them as soon as another job
    shape needs the room, so the cost of keeping them is memory (~100 MB each)."""
    node_refresh_s: float = 2.0
    policy: Policy = Policy.PACK

    @property
    def db_path(self) -> Path:
        return self.data_dir / "jobs.sqlite3"


@dataclass(frozen=True, kw_only=True, slots=True)
class RuntimeConfig:
    """How to reach Ray: ``address=None`` starts an embedded local Ray for this process."""

    data_dir: Path
    address: str | None = None
    num_cpus: int | None = None
    """Cores an embedded Ray offers (default: all)."""
    num_gpus: int | None = None
    """GPUs an embedded Ray offers (default: what Ray detects)."""
    namespace: str = "framefleet"
    coordinator_name: str = "framefleet-coordinator"
