"""Ray at the edge: the coordinator and encoder classes as actors, and their options.

The logic lives in plain classes (:class:`~cluster.coordinator.Coordinator`,
:class:`~cluster.actors.encoder.EncoderWorker`); this module is the one place
that knows Ray's options, resources and exceptions, and turns the latter into
framefleet errors.
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cluster.actors.encoder import EncoderWorker
from cluster.config import CoordinatorConfig, RuntimeConfig
from cluster.coordinator import Coordinator
from cluster.errors import EncodeError, WorkerLost
from cluster.placement import NodeState, Placement
from cluster.pool import EncoderHandle
from cluster.progress import ProgressSnapshot
from cluster.work import WorkOrder, WorkOutcome

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


def encoder_options(placement: Placement) -> dict[str, Any]:
    """Ray options for an encoder actor: the placement's resources, pinned to its node."""
    return {
        "num_cpus": placement.cpus,
        "num_gpus": placement.gpus,
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
            why = next(
                (line.strip() for line in str(exc).splitlines() if "because" in line),
                "the node may have died",
            )
            raise WorkerLost(
                f"the encoder on {self._where} was lost ({type(exc).__name__}: {why})"
            ) from exc


class RayBackend:
    """The coordinator's view of the Ray cluster."""

    def __init__(self, coordinator: Any) -> None:
        self._coordinator = coordinator

    async def nodes(self) -> list[NodeState]:
        table = await asyncio.to_thread(ray.nodes)
        return [
            NodeState(
                node_id=n["NodeID"],
                address=n["NodeManagerAddress"],
                cpus=float(n["Resources"].get("CPU", 0.0)),
                gpus=float(n["Resources"].get("GPU", 0.0)),
            )
            for n in table
            if n.get("Alive")
        ]

    def create_encoder(self, placement: Placement) -> EncoderHandle:
        actor = RemoteEncoder.options(**encoder_options(placement)).remote(self._coordinator)
        return RayEncoder(actor, placement)
