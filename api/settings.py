"""framefleet's settings from the environment (``FRAMEFLEET_*``), with pydantic-settings.

One object feeds ``framefleet serve`` and the CLI commands that run a local cluster
(``encode``, ``probe``, ...): the same variables mean the same thing to both, and
command-line options override them. Lists are comma-separated
(``FRAMEFLEET_API_TOKENS=a,b``; media roots also accept ``:``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

import cluster
from api.access import Keyring
from api.paths import DEFAULT_DATA_DIR, TOKENS_FILE_NAME
from cluster import ConfigError, CoordinatorConfig, CostModel, RuntimeConfig

if TYPE_CHECKING:
    from cluster import Fleet, LocalFleet


def _split(value: object, pattern: str = r"[,]") -> object:
    if isinstance(value, str):
        return [part.strip() for part in re.split(pattern, value) if part.strip()]
    return value


class WatchFolder(BaseModel):
    """One watch folder on ``serve``: a job per new video file (see cluster.watch)."""

    model_config = ConfigDict(extra="forbid")
    folder: Path
    output_dir: Path | None = None
    output_ext: str = Field(default="mp4", pattern=r"^(mp4|mov|mkv|webm)$")
    extensions: list[str] | None = None
    stable_s: float = Field(default=5.0, ge=0)
    recursive: bool = False
    kind: str = "transcode"
    codec: str = "h264"
    quality: int | None = Field(default=None, ge=0, le=51)
    speed: str = "medium"
    hardware: str = "auto"
    priority: int = 0
    split: str = "auto"

    def template(self) -> dict[str, Any]:
        keys = ("kind", "codec", "quality", "speed", "hardware", "priority", "split")
        return {k: getattr(self, k) for k in keys}


class Settings(BaseSettings):
    # An empty variable means unset (compose files and systemd env files write them):
    # FRAMEFLEET_GPU_INVENTORY="" is no inventory, not the current folder.
    model_config = SettingsConfigDict(env_prefix="FRAMEFLEET_", extra="ignore",
                                      env_ignore_empty=True)  # fmt: skip

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    ray_address: str | None = None
    """Join this Ray cluster; unset starts an embedded local one."""
    data_dir: Path = DEFAULT_DATA_DIR
    api_tokens: Annotated[list[str], NoDecode] = []
    """Bearer tokens accepted on /v1 (comma-separated)."""
    token_file: Path | None = None
    """A file with one token per line (added to ``api_tokens``)."""
    tokens_file: Path | None = None
    """The tokens file (TOML): hashed tokens with a name, a tenant and a role, and the
    tenants' weights, limits and media roots (see :mod:`api.access`)."""
    media_roots: Annotated[list[str], NoDecode] = []
    """Inputs and outputs must resolve inside these folders or ``s3://bucket/prefix``
    roots (comma- or colon-separated)."""
    s3_endpoint: str | None = None
    """The S3 API's URL for a store other than AWS (MinIO, Ceph, R2); credentials and
    region come from the standard AWS settings (AWS_ACCESS_KEY_ID, AWS_REGION, ...)."""
    s3_region: str | None = None
    scratch: Path | None = None
    """The embedded node's scratch folder for object-storage media [<data dir>/scratch]."""
    scratch_bytes: int | None = Field(default=None, ge=0)
    """At most this much scratch in use at once on the embedded node [the disk's room]."""
    gpu_inventory: Path | None = None
    ffmpeg: str | None = None
    """The embedded node's ffmpeg (a path or a name on PATH; default ``ffmpeg``)."""
    cost_model: Path | None = None
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_batch: int = Field(default=1000, ge=1)
    max_queued_jobs: int = Field(default=10_000, ge=0)
    """Jobs one token may have queued at once; more get 429 until some start (0: no bound)."""
    max_streams_per_token: int = Field(default=32, ge=1)
    """Event streams (SSE) one token may hold open at once, and as many WebSockets; past
    it a stream gets 429 and a WebSocket is closed with 1013."""
    body_timeout_s: float = Field(default=20.0, gt=0)
    """A request body must arrive within this long of its headers, else 408."""
    max_connections: int = Field(default=1000, ge=1)
    """Connections (WebSockets included) and requests in progress that ``serve`` takes at
    once; a request past it gets 503 (uvicorn's ``limit_concurrency``)."""
    watch_folders: list[WatchFolder] = []
    """JSON: ``[{"folder": "/media/in", "output_dir": "/media/out", "codec": "hevc"}]``."""
    metrics_public: bool = True
    """Serve /metrics without a token (Prometheus scrapes it)."""
    stall_s: float | None = Field(default=None, gt=0)
    """Kill an encode whose progress stands still this long (default: derived per job)."""
    max_runtime_factor: float = Field(default=10.0, gt=1)
    """Kill an encode that runs this many times longer than expected."""
    quarantine_after: int = Field(default=3, ge=1)
    """Failures in a row, not the input's fault, that quarantine a node or GPU."""
    quarantine_s: float = Field(default=60.0, gt=0)
    """The first quarantine; doubled each time the trial job after it fails."""
    poison_after: int = Field(default=3, ge=0)
    """Encoder crashes on this many different nodes fail a job as poison (0: never)."""
    webhook_hosts: Annotated[list[str], NoDecode] = []
    """Hosts a job's callback_url may name (``name`` or ``name:port``; comma-separated)."""
    webhook_secret: pydantic.SecretStr | None = None
    """Signs every webhook (HMAC-SHA256); required with ``webhook_hosts``."""
    webhook_attempts: int = Field(default=12, ge=1, le=100)
    webhook_backoff_s: float = Field(default=10.0, gt=0)
    """The wait before a webhook's second try; doubled for each further one (to 1 h)."""

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _tokens(cls, value: object) -> object:
        return _split(value)

    @field_validator("webhook_hosts", mode="before")
    @classmethod
    def _hooks(cls, value: object) -> object:
        return _split(value)

    @pydantic.model_validator(mode="after")
    def _signed(self) -> Settings:
        if self.webhook_hosts and not self.webhook_secret:
            raise ValueError(
                "webhook_hosts is set but webhook_secret is not: every webhook is signed; "
                "set FRAMEFLEET_WEBHOOK_SECRET (e.g. to `openssl rand -hex 32`)"
            )
        return self

    @field_validator("media_roots", mode="before")
    @classmethod
    def _roots(cls, value: object) -> object:
        return _split(value, r",|:(?!//)")  # `:` separates folders, not `s3://`

    @field_validator("media_roots", mode="after")
    @classmethod
    def _objects(cls, value: list[str]) -> list[str]:
        for raw in value:
            if cluster.is_url(raw):
                try:
                    cluster.parse_object_roots((raw,))
                except cluster.SpecError as exc:
                    raise ValueError(str(exc)) from None
        return value

    def object_roots(self) -> tuple[str, ...]:
        """The ``s3://`` roots, normalized."""
        urls = tuple(raw for raw in self.media_roots if cluster.is_url(raw))
        return tuple(str(url) for url in cluster.parse_object_roots(urls))

    def keyring(self) -> Keyring:
        """Every token the gateway accepts: the tokens file's (``tokens_file``, else
        ``<data dir>/tokens.toml`` if it exists) and the plain ones."""
        path = self.tokens_file
        if path is None and (self.data_dir / TOKENS_FILE_NAME).is_file():
            path = self.data_dir / TOKENS_FILE_NAME
        return Keyring(self.tokens(), path, self.check_tenants)

    def check_tenants(self, tenants: cluster.Tenants) -> None:
        """Each tenant's media roots lie inside this gateway's (a :class:`ConfigError`
        naming the first that does not): a tenant is never less confined than the farm."""
        folders = self.roots(serving=True)
        objects = self.object_roots()
        for tenant in tenants.known:
            for raw in tenant.media_roots:
                if cluster.is_url(raw):
                    norm = raw.rstrip("/") + "/"
                    if not any(norm.startswith(o.rstrip("/") + "/") for o in objects):
                        raise ConfigError(
                            f"tenant {tenant.name}: media root {raw} is outside the farm's "
                            f"object roots ({', '.join(objects) or 'none'}); pick a prefix "
                            "inside them"
                        )
                    continue
                try:
                    cluster.confine_path(raw, folders, f"tenant {tenant.name}'s media root")
                except cluster.SpecError as exc:
                    raise ConfigError(str(exc)) from None

    def tokens(self) -> list[str]:
        """Every accepted token: ``api_tokens`` plus the lines of ``token_file``."""
        found = list(self.api_tokens)
        if self.token_file is not None:
            text = self.token_file.read_text()
            found += [line.strip() for line in text.splitlines() if line.strip()]
        return [t for t in found if t]

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """The environment, with the options that were given (``None``: not given); a bad
        value is a :class:`ConfigError` naming its variable."""
        try:
            return cls(**{k: v for k, v in overrides.items() if v is not None})
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            if not where:  # a rule across settings says which ones itself
                raise ConfigError(first["msg"].removeprefix("Value error, ")) from None
            raise ConfigError(
                f"setting {where}: {first['msg']} (FRAMEFLEET_{where.upper()})"
            ) from None

    def roots(self, *, serving: bool) -> tuple[Path, ...]:
        """Where jobs may read and write: the configured roots; else, for a server,
        ``<data dir>/media`` (created: a gateway never serves the whole filesystem) and,
        for a local command, anywhere (``()``)."""
        folders = [Path(raw) for raw in self.media_roots if not cluster.is_url(raw)]
        if folders or self.media_roots:  # only s3:// roots: no local path at all
            return tuple(p.resolve() for p in folders)
        if not serving:
            return ()
        default = self.data_dir / "media"
        default.mkdir(parents=True, exist_ok=True)
        return (default.resolve(),)

    def runtime_config(self) -> RuntimeConfig:
        """Where the cluster is (``None``: a local one) and what the local node has."""
        return RuntimeConfig(
            data_dir=self.data_dir,
            address=self.ray_address,
            gpu_inventory=self.gpu_inventory,
            ffmpeg=self.ffmpeg,
            scratch=self.scratch,
            scratch_bytes=self.scratch_bytes,
        )

    def coordinator_config(self, *, serving: bool) -> CoordinatorConfig:
        """How the coordinator runs: its roots, costs, limits and healing."""
        costs = CostModel.from_file(self.cost_model) if self.cost_model else CostModel()
        roots = self.roots(serving=serving)
        return CoordinatorConfig(
            data_dir=self.data_dir,
            media_roots=roots,
            # A server marks each root, so nodes can show they see the same share.
            root_ids=tuple((str(r), cluster.mark_root(r)) for r in roots) if serving else (),
            object_roots=self.object_roots(),
            s3_endpoint=self.s3_endpoint,
            s3_region=self.s3_region,
            costs=costs,
            max_queued_jobs=self.max_queued_jobs,
            stall_s=self.stall_s,
            max_runtime_factor=self.max_runtime_factor,
            quarantine_after=self.quarantine_after,
            quarantine_s=self.quarantine_s,
            poison_after=self.poison_after,
            webhook_hosts=tuple(self.webhook_hosts),
            webhook_secret=self.webhook_secret.get_secret_value() if self.webhook_secret else None,
            webhook_attempts=self.webhook_attempts,
            webhook_backoff_s=self.webhook_backoff_s,
        )

    def connect_here(self) -> LocalFleet:
        """The coordinator and its encoders in this process, without Ray: a one-shot
        command on this machine (see :class:`cluster.LocalFleet`)."""
        return cluster.LocalFleet.connect(
            self.runtime_config(), self.coordinator_config(serving=False)
        )

    def connect(self, *, serving: bool) -> Fleet:
        """Connect to (or start) the cluster these settings describe.

        A server refuses to join a coordinator that confines jobs to other media roots
        than its own: the coordinator is what resolves and checks every path."""
        roots = self.roots(serving=serving)
        fleet = cluster.Fleet.connect(
            self.runtime_config(), self.coordinator_config(serving=serving)
        )
        config = fleet.coordinator_config
        running = (*map(str, config.media_roots), *config.object_roots)
        mine = (*map(str, roots), *self.object_roots())
        if serving and running != mine:
            fleet.close()
            raise ConfigError(
                f"the running coordinator confines jobs to {', '.join(running) or 'anywhere'}, "
                f"not to {', '.join(mine)}; set FRAMEFLEET_MEDIA_ROOTS to match, or "
                "restart the cluster's coordinator with these roots"
            )
        return fleet
