"""The node-side actors: the encoder and the node agent as Ray actors, and their options.

The logic lives in plain classes (:class:`~cluster.nodes.encoder.EncoderWorker`,
:class:`~cluster.nodes.agent.NodeAgent`); this module applies Ray to them: resources,
node affinity, lifetimes. The coordinator's actor is in :mod:`cluster.ray_edge.backend`.
"""

from __future__ import annotations

import os
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cluster.media.encoders import FFMPEG_ENV
from cluster.model.progress import ProgressSnapshot
from cluster.nodes.agent import NodeAgent
from cluster.nodes.encoder import EncoderWorker
from cluster.scheduling.planner import Placement


class EncoderActor(EncoderWorker):
    """An encoder that reports progress to the coordinator actor (fire and forget)."""

    def __init__(self, coordinator: Any) -> None:
        def sink(job_id: str, attempt: int, snapshot: ProgressSnapshot) -> None:
            coordinator.report_progress.remote(job_id, attempt, snapshot)

        super().__init__(progress_sink=sink)


class NodeAgentActor(NodeAgent):
    """The node agent as a Ray actor (one per node, named by node id, detached). The node's
    settings come from the environment ``ray start`` gave its raylet (``node start``)."""

    def __init__(self) -> None:
        super().__init__(ffmpeg=os.environ.get(FFMPEG_ENV))
        self.start()


def agent_options(node_id: str, namespace: str) -> dict[str, Any]:
    """One agent per node: pinned there, no CPUs, found again by name after a coordinator
    restart so its capability cache lives as long as the node."""
    return {
        "name": f"framefleet-agent-{node_id}",
        "namespace": namespace,
        "lifetime": "detached",
        "get_if_exists": True,
        "num_cpus": 0,
        "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=False),
        "max_restarts": 3,
        "max_concurrency": 16,
    }


def encoder_options(placement: Placement) -> dict[str, Any]:
    """Ray options for an encoder actor: the placement's cores plus, for NVENC, the chosen
    GPU's memory and session resources (so Ray enforces them), pinned to its node."""
    return {
        "num_cpus": placement.cpus,
        "resources": dict(placement.resources),
        "scheduling_strategy": NodeAffinitySchedulingStrategy(placement.node_id, soft=False),
        "max_restarts": 0,
        "max_concurrency": 8,
    }


RemoteEncoder = ray.remote(EncoderActor)
RemoteAgent = ray.remote(NodeAgentActor)
