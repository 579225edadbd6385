"""What a node registers with Ray, so Ray itself enforces GPU memory and NVENC sessions.

Per GPU, keyed by UUID: ``ff_gpu_mem_<uuid>`` (its memory in MiB) and ``ff_nvenc_<uuid>``
(its NVENC sessions: the driver's cap, or 256 where there is none). An encoder actor
placed on a GPU asks for its estimated MiB and one session, so two coordinators, or a
stale view, can never over-commit a GPU: Ray will not start the actor. Ray resources are
static, so live free memory (other processes use GPUs too) is checked by the scheduler
from the agents' NVML readings on top.

Node labels say what the node has, for ``label_selector`` and for people:
``framefleet.io/gpu-model``, ``framefleet.io/gpu-count`` and
``framefleet.io/nvenc-<codec>=true`` for each codec some GPU can encode.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

from cluster.media.encoders import FfmpegBuild, ffmpeg_build
from cluster.model.capability import Capability
from cluster.model.jobs import CODECS
from cluster.nodes.capability import detect
from cluster.nodes.gpus import GpuReading, gpu_source
from cluster.scheduling.planner import memory_resource, session_resource

UNCAPPED_SESSION_SLOTS = 256
LABEL_PREFIX = "framefleet.io/"


@dataclass(frozen=True, slots=True)
class Registration:
    num_cpus: int | None
    num_gpus: int
    resources: dict[str, float] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    def ray_start_args(self) -> list[str]:
        """Arguments for ``ray start``."""
        args = [f"--num-gpus={self.num_gpus}"]
        if self.num_cpus is not None:
            args.append(f"--num-cpus={self.num_cpus}")
        if self.resources:
            args.append(f"--resources={json.dumps(self.resources, sort_keys=True)}")
        if self.labels:
            args.append("--labels=" + ",".join(f"{k}={v}" for k, v in sorted(self.labels.items())))
        return args


def label_value(text: str) -> str:
    """``text`` as a valid Ray/Kubernetes label value (63 chars of [A-Za-z0-9_.-])."""
    value = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-_.")
    return value[:63].rstrip("-_.") or "unknown"


def registration(
    gpus: list[GpuReading],
    codecs: dict[str, dict[str, Capability]],
    num_cpus: int | None = None,
) -> Registration:
    resources: dict[str, float] = {}
    for g in gpus:
        resources[memory_resource(g.uuid)] = float(g.memory_total_mb)
        resources[session_resource(g.uuid)] = float(
            g.max_encoder_sessions or UNCAPPED_SESSION_SLOTS
        )
    labels: dict[str, str] = {}
    if gpus:
        models = sorted({g.name for g in gpus})
        labels[LABEL_PREFIX + "gpu-model"] = label_value(models[0] if len(models) == 1 else "mixed")
        labels[LABEL_PREFIX + "gpu-count"] = str(len(gpus))
    for codec in CODECS:
        if any(c.get(codec) is not None and c[codec].state.usable for c in codecs.values()):
            labels[LABEL_PREFIX + f"nvenc-{codec}"] = "true"
    return Registration(num_cpus, len(gpus), resources, labels)


@dataclass(frozen=True, slots=True)
class LocalNode:
    """What this machine has, as ``framefleet node start`` and the embedded Ray see it."""

    source: str
    gpus: list[GpuReading]
    codecs: dict[str, dict[str, Capability]]
    registration: Registration
    ffmpeg: FfmpegBuild


def detect_local(
    inventory: str | os.PathLike[str] | None = None,
    num_cpus: int | None = None,
    ffmpeg: str | None = None,
) -> LocalNode:
    """Read this machine's ffmpeg and GPUs (static inventory, else NVML), prove their NVENC
    codecs with that ffmpeg, and compute what to register with Ray."""
    build = ffmpeg_build(ffmpeg or "ffmpeg")
    source = gpu_source(inventory)
    try:
        gpus = source.read()
    finally:
        source.close()
    codecs = detect(gpus, build.encoders, build.path) if gpus else {}
    return LocalNode(source.kind, gpus, codecs, registration(gpus, codecs, num_cpus), build)
