"""The scheduler's snapshot and the users' node view, from what agents report and what
the coordinator has given out.

``node_states`` merges each :class:`~cluster.nodes.agent.NodeInfo` with the pool's usage and
with NVENC failures seen on real encodes, into the :class:`~cluster.scheduling.planner.NodeState`
the planner works on. ``node_view`` is the same for people (``GET /v1/nodes``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cluster.nodes.agent import NodeInfo
from cluster.nodes.capability import Capability
from cluster.scheduling.planner import GpuState, NodeState, memory_resource


def gpu_states(
    info: NodeInfo,
    gpu_used: Mapping[str, tuple[int, int]],
    failures: Mapping[tuple[str, str], Capability],
) -> tuple[GpuState, ...]:
    states = []
    for g in info.gpus:
        codecs = dict(info.codecs.get(g.uuid, {}))
        for codec in list(codecs):
            failed = failures.get((g.uuid, codec))
            if failed is not None:
                codecs[codec] = failed
        reserved, sessions = gpu_used.get(g.uuid, (0, 0))
        states.append(
            GpuState(
                uuid=g.uuid,
                index=g.index,
                name=g.name,
                memory_total_mb=g.memory_total_mb,
                memory_free_live_mb=g.memory_free_mb,
                memory_reserved_mb=reserved,
                sessions=sessions,
                sessions_live=g.encoder_sessions,
                max_sessions=g.max_encoder_sessions,
                codecs=codecs,
                ray_resources=memory_resource(g.uuid) in info.resources,
            )
        )
    return tuple(states)


def node_states(
    infos: list[NodeInfo],
    used: Mapping[str, tuple[float, int, int]],
    gpu_used: Mapping[str, tuple[int, int]],
    caps: Mapping[str, int | None],
    default_cap: int | None,
    failures: Mapping[tuple[str, str], Capability],
) -> list[NodeState]:
    states = []
    for info in infos:
        cpus_used, running, memory_used = used.get(info.node_id, (0.0, 0, 0))
        memory = info.resources.get("memory")  # bytes, as Ray counts it
        states.append(
            NodeState(
                node_id=info.node_id,
                address=info.address,
                cpus=info.cpus,
                cpus_used=cpus_used,
                running=running,
                max_jobs=caps.get(info.node_id, default_cap),
                gpus=gpu_states(info, gpu_used, failures),
                encoders=info.encoders,
                memory_mb=memory / 2**20 if memory else None,
                memory_used_mb=memory_used,
            )
        )
    return states


def node_view(
    infos: list[NodeInfo],
    states: list[NodeState],
    running_jobs: Mapping[str, list[str]],
    jobs_on_gpu: Mapping[str, list[str]],
) -> list[dict[str, Any]]:
    """Nodes for people: CPUs, GPUs with readings and NVENC codec states, running jobs."""
    by_id = {s.node_id: s for s in states}
    view = []
    for info in infos:
        state = by_id[info.node_id]
        gpus = []
        for reading, gs in zip(info.gpus, state.gpus, strict=True):
            gpus.append(
                {
                    **reading.to_dict(),
                    "memory_reserved_mb": gs.memory_reserved_mb,
                    "sessions": gs.sessions,
                    "nvenc": {c: cap.to_dict() for c, cap in gs.codecs.items()},
                    "ray_resources": gs.ray_resources,
                    "running_jobs": jobs_on_gpu.get(reading.uuid, []),
                }
            )
        view.append(
            {
                "node_id": info.node_id,
                "address": info.address,
                "hostname": info.hostname,
                "cpus": info.cpus,
                "cpus_used": state.cpus_used,
                "memory_mb": round(state.memory_mb) if state.memory_mb is not None else None,
                "memory_used_mb": state.memory_used_mb,
                "load_1m": info.load_1m,
                "max_jobs": state.max_jobs,
                "labels": {k: v for k, v in info.labels.items() if not k.startswith("ray.io/")},
                "gpu_source": info.gpu_source,
                "agent_error": info.agent_error,
                "ready": info.reported and not info.detecting,
                "ffmpeg": info.ffmpeg.to_dict() if info.ffmpeg else None,
                "ffmpeg_error": info.ffmpeg_error,
                "gpus": gpus,
                "running_jobs": running_jobs.get(info.node_id, []),
            }
        )
    return view
