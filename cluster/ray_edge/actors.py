"""Ray at the edge: the coordinator and encoder classes as actors, and their options.

The logic lives in plain classes (:class:`~cluster.control.coordinator.Coordinator`,
:class:`~cluster.nodes.encoder.EncoderWorker`); this module is the one place
that knows Ray's options, resources and exceptions, and turns the latter into
framefleet errors.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cluster.config import CoordinatorConfig, RuntimeConfig
from cluster.control.coordinator import Coordinator
from cluster.control.pool import EncoderHandle
from cluster.errors import EncodeError, WorkerLost
from cluster.media.encoders import FFMPEG_ENV
from cluster.media.work import WorkOrder, WorkOutcome
from cluster.model.progress import ProgressSnapshot
from cluster.nodes.agent import NodeAgent, NodeInfo, node_info
from cluster.nodes.encoder import EncoderWorker
from cluster.scheduling.planner import Placement

HEAD_RESOURCE = "node:__internal_head__"


class EncoderActor(EncoderWorker):
    """An encoder that reports progress to the coordinator actor (fire and forget)."""

    def __init__(self, coordinator: Any) -> None:
        def sink(job_id: str, attempt: int, snapshot: ProgressSnapshot) -> None:
            coordinator.report_progress.remote(job_id, attempt, snapshot)

        super().__init__(progress_sink=sink)


class CoordinatorActor(Coordinator):
    """The coordinator as a Ray actor: it creates encoder actors through :class:`RayBackend`."""

    def __init__(self, config: CoordinatorConfig) -> None:
        super().__init__(config, RayBackend(ray.get_runtime_context().current_actor))
        self.start()


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


def coordinator_options(runtime: RuntimeConfig) -> dict[str, Any]:
    """Ray options for the one coordinator: named, detached, on the head node (its SQLite
    file is on the head's disk), restarted by Ray if it dies."""
    return {
        "name": runtime.coordinator_name,
        "namespace": runtime.namespace,
        "lifetime": "detached",
        "get_if_exists": True,
        "num_cpus": 0,
        "resources": {HEAD_RESOURCE: 0.001},
        "max_restarts": -1,
        "max_concurrency": 1000,
    }


RemoteEncoder = ray.remote(EncoderActor)
RemoteCoordinator = ray.remote(CoordinatorActor)
RemoteAgent = ray.remote(NodeAgentActor)
AGENT_TIMEOUT_S = 5.0


class RayEncoder:
    """An :class:`EncoderHandle` over a Ray actor; Ray's failures become framefleet's."""

    def __init__(self, actor: Any, placement: Placement) -> None:
        self._actor = actor
        self._where = placement.address

    async def run(self, order: WorkOrder) -> WorkOutcome:
        outcome: WorkOutcome = await self._call(self._actor.run.remote(order))
        return outcome

    async def cancel(self, job_id: str) -> bool:
        done: bool = await self._call(self._actor.cancel.remote(job_id))
        return done

    async def shutdown(self) -> None:
        await self._call(self._actor.shutdown.remote())

    def kill(self) -> None:
        ray.kill(self._actor, no_restart=True)

    async def _call(self, ref: Any) -> Any:
        try:
            return await ref
        except ray.exceptions.RayTaskError as exc:
            raise EncodeError(f"encoder on {self._where} failed: {exc.cause!r}") from exc
        except ray.exceptions.RayError as exc:
            raise WorkerLost(
                f"the encoder on {self._where} was lost ({type(exc).__name__}: {lost_why(exc)})"
            ) from exc


_RAY_IDS = re.compile(r"\b[0-9a-f]{16,}\b")
MAX_WHY_CHARS = 120


def lost_why(exc: BaseException) -> str:
    """Ray's reason an actor was lost, short: its first "because..." clause, no ids."""
    text = " ".join(str(exc).split())
    _, found, after = text.partition("because ")
    why = after if found else "the process or its node died"
    why = _RAY_IDS.sub("…", why.split(". ")[0]).rstrip(".")
    return why if len(why) <= MAX_WHY_CHARS else why[: MAX_WHY_CHARS - 1] + "…"


class RayBackend:
    """The coordinator's view of the Ray cluster."""

    def __init__(self, coordinator: Any) -> None:
        self._coordinator = coordinator
        self._namespace = ray.get_runtime_context().namespace
        self._agents: dict[str, Any] = {}
        self._last: dict[str, dict[str, Any]] = {}

    async def nodes(self) -> list[NodeInfo]:
        table = await asyncio.to_thread(ray.nodes)
        alive = [n for n in table if n.get("Alive")]
        ids = {n["NodeID"] for n in alive}
        for gone in set(self._agents) - ids:
            self._agents.pop(gone, None)
            self._last.pop(gone, None)
        return list(await asyncio.gather(*(self._node(n) for n in alive)))

    async def _node(self, entry: dict[str, Any]) -> NodeInfo:
        node_id = entry["NodeID"]
        try:
            agent: Any = self._agents.get(node_id)
            if agent is None:
                agent = RemoteAgent.options(**agent_options(node_id, self._namespace)).remote()
                self._agents[node_id] = agent
            snapshot = await asyncio.wait_for(agent.snapshot.remote(), AGENT_TIMEOUT_S)
        except (ray.exceptions.RayError, TimeoutError, ValueError) as exc:
            self._agents.pop(node_id, None)
            why = f"node agent not answering ({type(exc).__name__})"
            return node_info(entry, self._last.get(node_id), error=why)
        self._last[node_id] = snapshot
        return node_info(entry, snapshot)

    async def request_capacity(self, bundles: list[dict[str, float]]) -> None:
        """``ray.autoscaler.sdk.request_resources``: a no-op hint without an autoscaler."""
        from ray.autoscaler.sdk import request_resources

        await asyncio.to_thread(request_resources, bundles=bundles)

    def create_encoder(self, placement: Placement) -> EncoderHandle:
        actor = RemoteEncoder.options(**encoder_options(placement)).remote(self._coordinator)
        return RayEncoder(actor, placement)
