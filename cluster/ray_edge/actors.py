"""The node-side actors: the encoder and the node agent as Ray actors, and their options.

The logic lives in plain classes (:class:`~cluster.nodes.encoder.EncoderWorker`,
:class:`~cluster.nodes.agent.NodeAgent`); this module applies Ray to them: resources,
node affinity, lifetimes. The coordinator's actor is in :mod:`cluster.ray_edge.backend`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cluster.media.encoders import FFMPEG_ENV
from cluster.model.progress import ProgressSnapshot
from cluster.nodes.agent import NodeAgent
from cluster.nodes.encoder import EncoderWorker
from cluster.scheduling.planner import Placement
from cluster.storage.scratch import DEFAULT_SCRATCH, SCRATCH_BYTES_ENV, SCRATCH_ENV, Scratch


class EncoderActor(EncoderWorker):
    """An encoder that reports progress to the coordinator actor (fire and forget)."""

    def __init__(self, coordinator: Any) -> None:
        def sink(job_id: str, attempt: int, snapshot: ProgressSnapshot) -> None:
            coordinator.report_progress.remote(job_id, attempt, snapshot)

        super().__init__(progress_sink=sink, scratch_budget=node_scratch().budget_bytes)


class NodeAgentActor(NodeAgent):
    """The node agent as a Ray actor (one per node, named by node id, detached). The node's
    settings come from the environment ``ray start`` gave its raylet (``node start``)."""

    def __init__(self) -> None:
        super().__init__(ffmpeg=os.environ.get(FFMPEG_ENV), scratch=node_scratch())
        self.start()


def node_scratch() -> Scratch:
    """This node's scratch space, as ``node start`` (or the embedded runtime) set it in
    the raylet's environment: ``FRAMEFLEET_SCRATCH`` (default: the temp folder's
    ``framefleet-scratch``) and ``FRAMEFLEET_SCRATCH_BYTES`` (a budget; default none)."""
    root = os.environ.get(SCRATCH_ENV) or DEFAULT_SCRATCH
    budget = os.environ.get(SCRATCH_BYTES_ENV)
    return Scratch(Path(root), int(budget) if budget else None)


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
