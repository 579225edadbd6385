"""The node-side actors: the encoder and the node agent as Ray actors, and their options.

The logic lives in plain classes (:class:`~cluster.nodes.encoder.EncoderWorker`,
:class:`~cluster.nodes.agent.NodeAgent`); this module applies Ray to them: resources,
node affinity, lifetimes. The coordinator's actor is in :mod:`cluster.ray_edge.backend`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cluster.media.encoders import FFMPEG_ENV
from cluster.model.progress import ProgressSnapshot
from cluster.nodes.agent import NodeAgent
from cluster.nodes.encoder import EncoderWorker
from cluster.nodes.environ import env_setting
from cluster.nodes.serving import MediaServer
from cluster.ray_edge.errors import peer_error
from cluster.scheduling.planner import Placement
from cluster.storage.roots import MEDIA_MAP_ENV, NO_MEDIA_ENV, Pairs, parse_media_map
from cluster.storage.scratch import DEFAULT_SCRATCH, SCRATCH_BYTES_ENV, SCRATCH_ENV, Scratch

AGENT_PREFIX = "framefleet-agent-"


class EncoderActor(EncoderWorker):
    """An encoder that reports progress to its node's agent, which sends the node's
    encodes' progress to the coordinator in one batch per interval (fire and forget);
    straight to the coordinator when the node has no agent."""

    def __init__(self, coordinator: Any) -> None:
        context = ray.get_runtime_context()
        namespace = context.namespace
        try:
            agent: Any = ray.get_actor(AGENT_PREFIX + context.get_node_id(), namespace)
        except ValueError:
            agent = None

        def sink(job_id: str, attempt: int, snapshot: ProgressSnapshot) -> None:
            nonlocal agent
            if agent is not None:
                try:
                    agent.report.remote(job_id, attempt, snapshot)
                    return
                except (AttributeError, ray.exceptions.RayError):  # an agent of an older
                    agent = None  # framefleet (no batches): straight to the coordinator
            coordinator.report_progress.remote(job_id, attempt, snapshot)

        super().__init__(
            progress_sink=sink,
            scratch_budget=node_scratch().budget_bytes,
            peers=lambda node_id: RayPeer(node_id, namespace),
        )


class RayPeer:
    """The agent of another node, serving media this node cannot see
    (:class:`~cluster.nodes.stager.Peer`); Ray's failures become framefleet's."""

    def __init__(self, node_id: str, namespace: str) -> None:
        self._node_id = node_id
        self._namespace = namespace
        self._actor: Any = None

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            if self._actor is None:
                self._actor = ray.get_actor(AGENT_PREFIX + self._node_id, self._namespace)
            return await getattr(self._actor, method).remote(*args, **kwargs)
        except ValueError as exc:  # no such actor: the node left
            raise peer_error(ray.exceptions.RayError(str(exc)), self._node_id) from exc
        except ray.exceptions.RayError as exc:
            raise peer_error(exc, self._node_id) from exc

    async def read(self, path: str, offset: int, size: int) -> dict[str, Any]:
        found: dict[str, Any] = await self._call("read", path, offset, size)
        return found

    async def open_upload(
        self, final: str, tag: str, *, overwrite: bool, make_folder: bool = False
    ) -> str:
        upload: str = await self._call("open_upload", final, tag, overwrite=overwrite,
                                       make_folder=make_folder)  # fmt: skip
        return upload

    async def write(self, upload: str, offset: int, data: bytes, crc: int) -> None:
        await self._call("write", upload, offset, data, crc)

    async def commit(self, upload: str, size: int) -> None:
        await self._call("commit", upload, size)

    async def abort(self, upload: str) -> None:
        await self._call("abort", upload)


class NodeAgentActor(NodeAgent):
    """The node agent as a Ray actor (one per node, named by node id, detached). The node's
    settings come from the environment ``ray start`` gave its raylet (``node start``)."""

    def __init__(self) -> None:
        super().__init__(ffmpeg=env_setting(FFMPEG_ENV), scratch=node_scratch(), media=node_media())
        self.start()

    async def snapshot(self, roots: Pairs = (), head: Any = None) -> dict[str, Any]:
        """See :meth:`NodeAgent.snapshot`; ``head``: the coordinator asking, which the
        node's progress batches go to (given with every snapshot, so an agent Ray
        restarted, or a new coordinator, is known within one refresh)."""
        if head is not None:
            self.progress.send = head.report_batch.remote
        return await super().snapshot(roots)


def node_media() -> MediaServer:
    """What serves this node's media, with the path map and declaration ``node start``
    set in the raylet's environment (``FRAMEFLEET_MEDIA_MAP``, ``FRAMEFLEET_NO_MEDIA``)."""
    no_media = (env_setting(NO_MEDIA_ENV) or "").lower() in ("1", "true", "yes")
    return MediaServer(parse_media_map(env_setting(MEDIA_MAP_ENV)), no_media=no_media)


def node_scratch() -> Scratch:
    """This node's scratch space, as ``node start`` (or the embedded runtime) set it in
    the raylet's environment: ``FRAMEFLEET_SCRATCH`` (default: the temp folder's
    ``framefleet-scratch``) and ``FRAMEFLEET_SCRATCH_BYTES`` (a budget; default none)."""
    root = env_setting(SCRATCH_ENV) or DEFAULT_SCRATCH
    budget = env_setting(SCRATCH_BYTES_ENV)
    return Scratch(Path(root), int(budget) if budget else None)


def agent_options(node_id: str, namespace: str) -> dict[str, Any]:
    """One agent per node: pinned there, no CPUs, found again by name after a coordinator
    restart so its capability cache lives as long as the node."""
    return {
        "name": AGENT_PREFIX + node_id,
        "namespace": namespace,
        "lifetime": "detached",
        "get_if_exists": True,
        "num_cpus": 0,
        "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=False),
        "max_restarts": 3,
        "max_concurrency": 64,  # chunks for other nodes' jobs besides its own reports
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
