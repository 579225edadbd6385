"""framefleet's engine: jobs, media, encoders, placement, and the Ray actors that run them.

``api`` (the gateway and the CLI) uses only the names listed in ``__all__``.
"""

from cluster.admission import check_spec, confine, confine_path
from cluster.client import Fleet
from cluster.config import CoordinatorConfig, RuntimeConfig
from cluster.costs import CostModel
from cluster.encoders import CATALOG, CONTAINERS, FFMPEG_ENV, Encoder, FfmpegBuild, available
from cluster.errors import (
    CallTimeout,
    ClusterUnavailable,
    ConfigError,
    EncodeError,
    EncoderUnavailable,
    FramefleetError,
    IdempotencyConflict,
    InputError,
    InvalidTransition,
    JobFailure,
    JobNotFound,
    OutputError,
    SpecError,
    ToolMissing,
    WorkerLost,
)
from cluster.gpus import INVENTORY_ENV, InventoryError
from cluster.jobs import CODECS, Hardware, JobKind, JobSpec, JobStatus, Speed
from cluster.media import MediaInfo, probe
from cluster.placement import Policy
from cluster.progress import ProgressSnapshot
from cluster.raytoken import (
    FoundToken,
    check_reachable,
    ensure_token,
    find_token,
    missing_token_message,
)
from cluster.register import LocalNode, detect_local
from cluster.samples import make_sample
from cluster.watch import FolderWatcher, WatchRule, check_rule

__all__ = [
    "CATALOG",
    "CODECS",
    "CONTAINERS",
    "FFMPEG_ENV",
    "INVENTORY_ENV",
    "CallTimeout",
    "ClusterUnavailable",
    "ConfigError",
    "CoordinatorConfig",
    "CostModel",
    "EncodeError",
    "Encoder",
    "EncoderUnavailable",
    "FfmpegBuild",
    "Fleet",
    "FolderWatcher",
    "FoundToken",
    "FramefleetError",
    "Hardware",
    "IdempotencyConflict",
    "InputError",
    "InvalidTransition",
    "InventoryError",
    "JobFailure",
    "JobKind",
    "JobNotFound",
    "JobSpec",
    "JobStatus",
    "LocalNode",
    "MediaInfo",
    "OutputError",
    "Policy",
    "ProgressSnapshot",
    "RuntimeConfig",
    "SpecError",
    "Speed",
    "ToolMissing",
    "WatchRule",
    "WorkerLost",
    "available",
    "check_reachable",
    "check_rule",
    "check_spec",
    "confine",
    "confine_path",
    "detect_local",
    "ensure_token",
    "find_token",
    "make_sample",
    "missing_token_message",
    "probe",
]
