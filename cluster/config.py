"""Engine configuration: frozen dataclasses, passed in. Only the CLI and the gateway read
the environment; the engine never does."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from cluster.scheduling.costs import CostModel
from cluster.scheduling.planner import Policy
from cluster.storage.objects import ObjectStore


@dataclass(frozen=True, kw_only=True, slots=True)
class CoordinatorConfig:
    data_dir: Path
    media_roots: tuple[Path, ...] = ()
    """Jobs read and write only under these folders; with no root of either kind (local
    CLI use), anywhere."""
    root_ids: tuple[tuple[str, str], ...] = ()
    """``(root, identity)`` for the local roots: the identity in each root's
    ``.framefleet-root`` (:func:`~cluster.storage.roots.mark_root`), by which nodes
    show they see it; ``""``: none could be written (the folder alone decides)."""
    object_roots: tuple[str, ...] = ()
    """``s3://bucket[/prefix]`` roots: jobs may read and write objects only under these;
    empty: no object storage."""
    s3_endpoint: str | None = None
    """The S3 API's URL (MinIO, Ceph, R2...); ``None``: AWS. Credentials and region come
    from each machine's standard AWS settings."""
    s3_region: str | None = None
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
    aging_s: float = 60.0
    """A queued job gains one priority level for each ``aging_s`` it waits, so low
    priorities are not starved; FIFO still holds within a level."""
    finished_retention_s: float = 600.0
    """How long a finished job stays in the coordinator's memory; after that it is read
    from SQLite (it stays there, readable), so memory does not grow with every job."""
    idempotency_ttl_s: float = 24 * 3600.0
    """How long an idempotency key returns the job(s) it first made."""
    max_queued_jobs: int = 10_000
    """Jobs one submitter (a token; every local client together) may have queued at once;
    more are refused (``queue_full``: HTTP 429) until some start. 0: no bound."""
    stall_s: float | None = None
    """Kill an encode whose progress stands still this long (``None``: derived per job
    from its expected speed, never below a minute; see :mod:`cluster.control.rules.watchdog`)."""
    max_runtime_factor: float = 10.0
    """Kill an encode that runs this many times longer than expected."""
    quarantine_after: int = 3
    """Failures in a row (not the input's fault) that quarantine a node or GPU."""
    quarantine_window_s: float = 900.0
    """Strikes older than this are forgotten."""
    quarantine_s: float = 60.0
    """The first quarantine; it doubles each time the trial job after it fails."""
    quarantine_max_s: float = 3600.0
    poison_after: int = 3
    """A job whose encoders crashed on this many different nodes fails as poison."""
    webhook_hosts: tuple[str, ...] = ()
    """Hosts (``name`` or ``name:port``) a job's ``callback_url`` may name; empty: none."""
    webhook_secret: str | None = field(default=None, repr=False)
    """Signs every webhook (HMAC-SHA256); needed when ``webhook_hosts`` is set."""
    webhook_attempts: int = 12
    """Deliveries tried per ending before the webhook is given up (recorded on the job)."""
    webhook_backoff_s: float = 10.0
    """Wait before the second delivery; doubles for each further one (capped at 1 h)."""
    costs: CostModel = field(default_factory=CostModel)
    """GPU memory and cores a job is expected to take (see :mod:`cluster.scheduling.costs`)."""

    jobs_db: Path | None = None
    """The job store (default ``<data_dir>/jobs.sqlite3``): a one-shot command keeps its
    own, so it never takes over another's jobs (:mod:`cluster.control.local`)."""

    @property
    def db_path(self) -> Path:
        return self.jobs_db or self.data_dir / "jobs.sqlite3"

    @property
    def store(self) -> ObjectStore:
        return ObjectStore(self.s3_endpoint, self.s3_region)


def config_differences(asked: CoordinatorConfig, running: CoordinatorConfig) -> list[str]:
    """What a client asked for that the running coordinator does not use, in words.

    On a farm the first client starts the coordinator; later ones join it with its
    config. ``data_dir`` is left out: it is each machine's own; so are ``root_ids``,
    which a machine that does not mount a root cannot read."""
    return [
        f"{f.name} differs (not shown)"
        if f.name == "webhook_secret"
        else f"{f.name} is {getattr(running, f.name)!r}, not {getattr(asked, f.name)!r}"
        for f in fields(CoordinatorConfig)
        if f.name not in ("data_dir", "root_ids")
        and getattr(asked, f.name) != getattr(running, f.name)
    ]


@dataclass(frozen=True, kw_only=True, slots=True)
class RuntimeConfig:
    """How to reach Ray: ``address=None`` starts an embedded local Ray for this process."""

    data_dir: Path
    address: str | None = None
    num_cpus: int | None = None
    """Cores an embedded Ray offers (default: all)."""
    gpu_inventory: Path | None = None
    """A static GPU inventory for the embedded node (else ``FRAMEFLEET_GPU_INVENTORY``,
    else NVML)."""
    ffmpeg: str | None = None
    """The embedded node's ffmpeg (else ``FRAMEFLEET_FFMPEG``, else ``ffmpeg`` on PATH)."""
    scratch: Path | None = None
    """The embedded node's scratch folder (else ``FRAMEFLEET_SCRATCH``, else
    ``<data_dir>/scratch``)."""
    scratch_bytes: int | None = None
    """At most this much in the embedded node's scratch at once (``None``: the disk's room)."""
    namespace: str = "framefleet"
    coordinator_name: str = "framefleet-coordinator"
