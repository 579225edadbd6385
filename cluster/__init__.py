"""framefleet's engine: jobs, media, encoders, placement, and the Ray actors that run them.

``api`` (the gateway and the CLI) uses only the names listed in ``__all__``.
"""

from cluster.admission import check_spec, confine, confine_path
from cluster.client import Fleet
from cluster.config import CoordinatorConfig, RuntimeConfig
from cluster.costs import CostModel
from cluster.encoders import CATALOG, CONTAINERS, Encoder, available
from cluster.errors import (
    ClusterUnavailable,
    EncodeError,
    EncoderUnavailable,
    FramefleetError,
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
from cluster.register import LocalNode, detect_local
from cluster.samples import make_sample
from cluster.watch import FolderWatcher, WatchRule, check_rule

__all__ = [
    "CATALOG",
    "CODECS",
    "CONTAINERS",
    "INVENTORY_ENV",
    "ClusterUnavailable",
    "CoordinatorConfig",
    "CostModel",
    "EncodeError",
    "Encoder",
    "EncoderUnavailable",
    "Fleet",
    "FolderWatcher",
    "FramefleetError",
    "Hardware",
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
    "check_rule",
    "check_spec",
    "confine",
    "confine_path",
    "detect_local",
    "make_sample",
    "probe",
]
