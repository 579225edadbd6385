"""framefleet's engine: jobs, media, encoders, placement, and the Ray actors that run them.

``api`` (the gateway and the CLI) uses only the names listed in ``__all__``.
"""

from cluster.admission import check_spec
from cluster.client import Fleet
from cluster.config import CoordinatorConfig, RuntimeConfig
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
from cluster.jobs import CODECS, Hardware, JobKind, JobSpec, JobStatus, Speed
from cluster.media import MediaInfo, probe
from cluster.placement import Policy
from cluster.progress import ProgressSnapshot
from cluster.samples import make_sample

__all__ = [
    "CATALOG",
    "CODECS",
    "CONTAINERS",
    "ClusterUnavailable",
    "CoordinatorConfig",
    "EncodeError",
    "Encoder",
    "EncoderUnavailable",
    "Fleet",
    "FramefleetError",
    "Hardware",
    "InputError",
    "InvalidTransition",
    "JobFailure",
    "JobKind",
    "JobNotFound",
    "JobSpec",
    "JobStatus",
    "MediaInfo",
    "OutputError",
    "Policy",
    "ProgressSnapshot",
    "RuntimeConfig",
    "SpecError",
    "Speed",
    "ToolMissing",
    "WorkerLost",
    "available",
    "check_spec",
    "make_sample",
    "probe",
]
