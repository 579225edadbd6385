"""The coordinator on Ray: its actor, and the :class:`RayBackend` it sees the cluster through.

:class:`~cluster.control.coordinator.Coordinator` is a plain class; here it becomes one
named, detached actor on the head, and gets a backend that lists Ray's nodes (with
their agents' readings) and creates encoder actors, whose failures become framefleet's
(see :mod:`cluster.ray_edge.errors`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray

from cluster.config import CoordinatorConfig, RuntimeConfig
from cluster.control.coordinator import Coordinator
from cluster.control.farm.backend import EncoderHandle
from cluster.control.heap import Heap
from cluster.media.work import WorkOrder, WorkOutcome
from cluster.model.media import MediaInfo
from cluster.model.split import FrameIndex
from cluster.nodes.agent import HEAD_RESOURCE, NodeInfo, node_info
from cluster.ray_edge.actors import RemoteAgent, RemoteEncoder, agent_options, encoder_options
from cluster.ray_edge.errors import encoder_error, peer_error
from cluster.scheduling.planner import Placement
from cluster.storage.roots import Pairs

AGENT_TIMEOUT_S = 10.0
"""An agent's snapshot may look at mounts (bounded at 5 s) besides reading GPUs."""


class CoordinatorActor(Coordinator):
    """The coordinator as a Ray actor: it creates encoder actors through :class:`RayBackend`."""

    def __init__(self, config: CoordinatorConfig) -> None:
        actor = ray.get_runtime_context().current_actor
        # Its worker process is the head's alone: its long-lived objects are frozen.
        super().__init__(config, RayBackend(actor, config.root_ids), heap=Heap())
        self.start()


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
        except ray.exceptions.RayError as exc:
            raise encoder_error(exc, self._where) from exc


class RayBackend:
    """The coordinator's view of the Ray cluster."""

    def __init__(self, coordinator: Any, roots: Pairs = ()) -> None:
        """``roots``: the local media roots and their identities, which each node's agent
        is asked whether it sees."""
        self._coordinator = coordinator
        self._roots = roots
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
            snapshot = await asyncio.wait_for(
                agent.snapshot.remote(self._roots, self._coordinator), AGENT_TIMEOUT_S
            )
        except (ray.exceptions.RayError, TimeoutError, ValueError) as exc:
            self._agents.pop(node_id, None)
            why = f"node agent not answering ({type(exc).__name__})"
            return node_info(entry, self._last.get(node_id), error=why)
        self._last[node_id] = snapshot
        return node_info(entry, snapshot)

    async def probe_on(self, node_id: str, path: str) -> MediaInfo:
        media: MediaInfo = await self._agent_call(node_id, "probe", path)
        return media

    async def index_on(
        self, node_id: str, path: str, video_index: int, audio_index: int | None
    ) -> FrameIndex:
        index: FrameIndex = await self._agent_call(node_id, "index", path, video_index,
                                                   audio_index)  # fmt: skip
        return index

    async def remove_partials_on(
        self, node_id: str, folder: str, job_id: str, tasks: bool = False
    ) -> None:
        await self._agent_call(node_id, "remove_partials", folder, job_id, tasks)

    async def _agent_call(self, node_id: str, method: str, *args: Any) -> Any:
        agent = self._agents.get(node_id)
        try:
            if agent is None:
                agent = RemoteAgent.options(**agent_options(node_id, self._namespace)).remote()
            return await getattr(agent, method).remote(*args)
        except ray.exceptions.RayError as exc:
            raise peer_error(exc, node_id) from exc

    async def request_capacity(self, bundles: list[dict[str, float]]) -> None:
        """``ray.autoscaler.sdk.request_resources``: a no-op hint without an autoscaler."""
        from ray.autoscaler.sdk import request_resources

        await asyncio.to_thread(request_resources, bundles=bundles)

    def create_encoder(self, placement: Placement) -> EncoderHandle:
        actor = RemoteEncoder.options(**encoder_options(placement)).remote(self._coordinator)
        return RayEncoder(actor, placement)


RemoteCoordinator = ray.remote(CoordinatorActor)
