"""framefleet's engine: jobs, media, encoders, placement, and the Ray actors that run them.

``api`` (the gateway and the CLI) uses only the names listed in ``__all__``. They load
on first use (PEP 562), so ``import cluster`` and its pure rooms never import Ray; only
:mod:`cluster.ray_edge` does, when ``Fleet`` is first touched.

Where each room runs (see the README for the picture):

- ``model/``: pure vocabulary (jobs, progress, events): everywhere.
- ``storage/``: object storage URLs (pure), the S3 client, node scratch: head and nodes.
- ``media/``: probing and ffmpeg (catalog, argv, the process, opened files): head and nodes.
- ``scheduling/``: the planner, costs, admission: pure, on the head.
- ``nodes/``: GPU sources, NVENC capability, registration, the agent, the encoder: every node.
- ``control/``: the coordinator and its parts: the head.
- ``ray_edge/``: the runtime, actors, backend, client: the only room that imports ray.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cluster.config import CoordinatorConfig, RuntimeConfig
    from cluster.control.farm.view import GpuRecord, NodeRecord
    from cluster.control.farmapi import EncodeRate, MetricsSnapshot
    from cluster.control.local import LocalFleet
    from cluster.control.records.audit import AuditEntry, AuditLog
    from cluster.control.records.metrics import JobMetrics
    from cluster.control.records.sweep import sweep_partials
    from cluster.control.records.webhooks import sign_webhook, verify_webhook
    from cluster.errors import (
        CallTimeout,
        CapacityError,
        ClusterUnavailable,
        ConfigError,
        CostModelError,
        EncodeError,
        EncoderUnavailable,
        ErrorCode,
        FramefleetError,
        IdempotencyConflict,
        InputError,
        InvalidTransition,
        InventoryError,
        JobFailure,
        JobNotFound,
        Kind,
        OutputError,
        QueueFull,
        RemoteError,
        SpecError,
        ToolMissing,
        TransferError,
        WorkerLost,
    )
    from cluster.media.builds import FFMPEG_ENV, read_ahead
    from cluster.media.confine import confine, confine_path
    from cluster.media.encoders import (
        CATALOG,
        CONTAINERS,
        Encoder,
        FfmpegBuild,
        available,
    )
    from cluster.media.probe import probe
    from cluster.media.samples import make_sample
    from cluster.model.counters import COUNTER_HELP, JobCounter
    from cluster.model.events import EventBatch, EventType, JobEvent
    from cluster.model.jobs import (
        CODECS,
        Codec,
        GpuRef,
        Hardware,
        Job,
        JobKind,
        JobPlacement,
        JobSpec,
        JobStatus,
        Speed,
    )
    from cluster.model.media import MediaInfo
    from cluster.model.package import PackageOptions
    from cluster.model.progress import ProgressSnapshot
    from cluster.model.public import job_view
    from cluster.model.quality import METRICS, Metric, Model, ScoreOptions
    from cluster.model.spec import Deinterlace, Tonemap
    from cluster.model.split import Split
    from cluster.model.tenancy import DEFAULT_TENANT, Caller, Tenant, Tenants, check_name
    from cluster.nodes.gpus import INVENTORY_ENV
    from cluster.nodes.register import LocalNode, detect_local
    from cluster.ray_edge.client import Fleet
    from cluster.ray_edge.token import (
        FoundToken,
        check_reachable,
        ensure_token,
        find_token,
        missing_token_message,
    )
    from cluster.scheduling.admission import check_spec
    from cluster.scheduling.costs import CostModel
    from cluster.scheduling.planner import Policy
    from cluster.storage.private import private_dir, write_secret
    from cluster.storage.roots import MEDIA_MAP_ENV, NO_MEDIA_ENV, mark_root, parse_media_map
    from cluster.storage.scratch import SCRATCH_BYTES_ENV, SCRATCH_ENV
    from cluster.storage.urls import is_object_url, is_url, parse_object_roots
    from cluster.watch import FolderWatcher, WatchRule, check_rule

_WHERE: dict[str, str] = {
    "private_dir": "cluster.storage.private",
    "sweep_partials": "cluster.control.records.sweep",
    "write_secret": "cluster.storage.private",
    "DEFAULT_TENANT": "cluster.model.tenancy",
    "Caller": "cluster.model.tenancy",
    "Tenant": "cluster.model.tenancy",
    "Tenants": "cluster.model.tenancy",
    "check_name": "cluster.model.tenancy",
    "AuditEntry": "cluster.control.records.audit",
    "AuditLog": "cluster.control.records.audit",
    "CoordinatorConfig": "cluster.config",
    "RuntimeConfig": "cluster.config",
    "EncodeRate": "cluster.control.farmapi",
    "COUNTER_HELP": "cluster.model.counters",
    "JobCounter": "cluster.model.counters",
    "JobMetrics": "cluster.control.records.metrics",
    "MetricsSnapshot": "cluster.control.farmapi",
    "GpuRecord": "cluster.control.farm.view",
    "sign_webhook": "cluster.control.records.webhooks",
    "verify_webhook": "cluster.control.records.webhooks",
    "NodeRecord": "cluster.control.farm.view",
    "CallTimeout": "cluster.errors",
    "CapacityError": "cluster.errors",
    "ClusterUnavailable": "cluster.errors",
    "ConfigError": "cluster.errors",
    "CostModelError": "cluster.errors",
    "EncodeError": "cluster.errors",
    "EncoderUnavailable": "cluster.errors",
    "ErrorCode": "cluster.errors",
    "FramefleetError": "cluster.errors",
    "IdempotencyConflict": "cluster.errors",
    "QueueFull": "cluster.errors",
    "InputError": "cluster.errors",
    "InvalidTransition": "cluster.errors",
    "InventoryError": "cluster.errors",
    "JobFailure": "cluster.errors",
    "JobNotFound": "cluster.errors",
    "Kind": "cluster.errors",
    "OutputError": "cluster.errors",
    "RemoteError": "cluster.errors",
    "SpecError": "cluster.errors",
    "ToolMissing": "cluster.errors",
    "TransferError": "cluster.errors",
    "WorkerLost": "cluster.errors",
    "CATALOG": "cluster.media.encoders",
    "CONTAINERS": "cluster.media.encoders",
    "FFMPEG_ENV": "cluster.media.builds",
    "Encoder": "cluster.media.encoders",
    "FfmpegBuild": "cluster.media.encoders",
    "available": "cluster.media.encoders",
    "probe": "cluster.media.probe",
    "read_ahead": "cluster.media.builds",
    "make_sample": "cluster.media.samples",
    "EventBatch": "cluster.model.events",
    "EventType": "cluster.model.events",
    "JobEvent": "cluster.model.events",
    "CODECS": "cluster.model.jobs",
    "Codec": "cluster.model.jobs",
    "GpuRef": "cluster.model.jobs",
    "Hardware": "cluster.model.jobs",
    "Job": "cluster.model.jobs",
    "JobKind": "cluster.model.jobs",
    "JobPlacement": "cluster.model.jobs",
    "JobSpec": "cluster.model.jobs",
    "JobStatus": "cluster.model.jobs",
    "Speed": "cluster.model.jobs",
    "Deinterlace": "cluster.model.spec",
    "Tonemap": "cluster.model.spec",
    "MediaInfo": "cluster.model.media",
    "job_view": "cluster.model.public",
    "Split": "cluster.model.split",
    "PackageOptions": "cluster.model.package",
    "METRICS": "cluster.model.quality",
    "Metric": "cluster.model.quality",
    "Model": "cluster.model.quality",
    "ScoreOptions": "cluster.model.quality",
    "ProgressSnapshot": "cluster.model.progress",
    "INVENTORY_ENV": "cluster.nodes.gpus",
    "LocalNode": "cluster.nodes.register",
    "detect_local": "cluster.nodes.register",
    "Fleet": "cluster.ray_edge.client",
    "LocalFleet": "cluster.control.local",
    "FoundToken": "cluster.ray_edge.token",
    "check_reachable": "cluster.ray_edge.token",
    "ensure_token": "cluster.ray_edge.token",
    "find_token": "cluster.ray_edge.token",
    "missing_token_message": "cluster.ray_edge.token",
    "check_spec": "cluster.scheduling.admission",
    "confine": "cluster.media.confine",
    "confine_path": "cluster.media.confine",
    "CostModel": "cluster.scheduling.costs",
    "Policy": "cluster.scheduling.planner",
    "MEDIA_MAP_ENV": "cluster.storage.roots",
    "NO_MEDIA_ENV": "cluster.storage.roots",
    "mark_root": "cluster.storage.roots",
    "parse_media_map": "cluster.storage.roots",
    "SCRATCH_BYTES_ENV": "cluster.storage.scratch",
    "SCRATCH_ENV": "cluster.storage.scratch",
    "is_object_url": "cluster.storage.urls",
    "is_url": "cluster.storage.urls",
    "parse_object_roots": "cluster.storage.urls",
    "FolderWatcher": "cluster.watch",
    "WatchRule": "cluster.watch",
    "check_rule": "cluster.watch",
}

__all__ = [
    "CATALOG",
    "CODECS",
    "CONTAINERS",
    "COUNTER_HELP",
    "DEFAULT_TENANT",
    "FFMPEG_ENV",
    "INVENTORY_ENV",
    "MEDIA_MAP_ENV",
    "METRICS",
    "NO_MEDIA_ENV",
    "SCRATCH_BYTES_ENV",
    "SCRATCH_ENV",
    "AuditEntry",
    "AuditLog",
    "CallTimeout",
    "Caller",
    "CapacityError",
    "ClusterUnavailable",
    "Codec",
    "ConfigError",
    "CoordinatorConfig",
    "CostModel",
    "CostModelError",
    "Deinterlace",
    "EncodeError",
    "EncodeRate",
    "Encoder",
    "EncoderUnavailable",
    "ErrorCode",
    "EventBatch",
    "EventType",
    "FfmpegBuild",
    "Fleet",
    "FolderWatcher",
    "FoundToken",
    "FramefleetError",
    "GpuRecord",
    "GpuRef",
    "Hardware",
    "IdempotencyConflict",
    "InputError",
    "InvalidTransition",
    "InventoryError",
    "Job",
    "JobCounter",
    "JobEvent",
    "JobFailure",
    "JobKind",
    "JobMetrics",
    "JobNotFound",
    "JobPlacement",
    "JobSpec",
    "JobStatus",
    "Kind",
    "LocalFleet",
    "LocalNode",
    "MediaInfo",
    "Metric",
    "MetricsSnapshot",
    "Model",
    "NodeRecord",
    "OutputError",
    "PackageOptions",
    "Policy",
    "ProgressSnapshot",
    "QueueFull",
    "RemoteError",
    "RuntimeConfig",
    "ScoreOptions",
    "SpecError",
    "Speed",
    "Split",
    "Tenant",
    "Tenants",
    "Tonemap",
    "ToolMissing",
    "TransferError",
    "WatchRule",
    "WorkerLost",
    "available",
    "check_name",
    "check_reachable",
    "check_rule",
    "check_spec",
    "confine",
    "confine_path",
    "detect_local",
    "ensure_token",
    "find_token",
    "is_object_url",
    "is_url",
    "job_view",
    "make_sample",
    "mark_root",
    "missing_token_message",
    "parse_media_map",
    "parse_object_roots",
    "private_dir",
    "probe",
    "read_ahead",
    "sign_webhook",
    "sweep_partials",
    "verify_webhook",
    "write_secret",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'cluster' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
