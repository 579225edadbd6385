"""framefleet's engine: jobs, media, encoders, placement, and the Ray actors that run them.

``api`` (the gateway and the CLI) uses only the names listed in ``__all__``.
"""

from cluster.config import CoordinatorConfig, RuntimeConfig
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
from cluster.media.encoders import CATALOG, CONTAINERS, FFMPEG_ENV, Encoder, FfmpegBuild, available
from cluster.media.probe import MediaInfo, probe
from cluster.media.samples import make_sample
from cluster.model.jobs import CODECS, Hardware, JobKind, JobSpec, JobStatus, Speed
from cluster.model.progress import ProgressSnapshot
from cluster.nodes.gpus import INVENTORY_ENV, InventoryError
from cluster.nodes.register import LocalNode, detect_local
from cluster.ray_edge.client import Fleet
from cluster.ray_edge.token import (
    FoundToken,
    check_reachable,
    ensure_token,
    find_token,
    missing_token_message,
)
from cluster.scheduling.admission import check_spec, confine, confine_path
from cluster.scheduling.costs import CostModel
from cluster.scheduling.planner import Policy
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
