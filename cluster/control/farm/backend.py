"""The coordinator's two seams to the cluster: what it asks of the cluster (:class:`Backend`)
and of one encoder (:class:`EncoderHandle`).

:mod:`cluster.ray_edge.backend` implements them on Ray; :mod:`cluster.control.fakes`
without Ray, for tests.
"""

from __future__ import annotations

from typing import Protocol

from cluster.media.work import WorkOrder, WorkOutcome
from cluster.model.media import MediaInfo
from cluster.model.split import FrameIndex
from cluster.nodes.agent import NodeInfo
from cluster.scheduling.planner import Placement


class Backend(Protocol):
    async def nodes(self) -> list[NodeInfo]:
        """Alive nodes: what they registered and what their agents read."""
        ...

    def create_encoder(self, placement: Placement) -> EncoderHandle: ...

    async def probe_on(self, node_id: str, path: str) -> MediaInfo:
        """ffprobe of ``path`` (root space) on the node that sees it, through its agent."""
        ...

    async def index_on(
        self, node_id: str, path: str, video_index: int, audio_index: int | None
    ) -> FrameIndex:
        """Every frame's time in ``path`` (root space), read on a node that sees it."""
        ...

    async def remove_partials_on(
        self, node_id: str, folder: str, job_id: str, tasks: bool = False
    ) -> None:
        """Remove what a dead attempt left half-written in ``folder`` (with ``tasks``:
        every file the job's graph's tasks made), on a node that sees it."""
        ...

    async def request_capacity(self, bundles: list[dict[str, float]]) -> None:
        """Ask the autoscaler (if any) for room for these resource shapes."""
        ...


class EncoderHandle(Protocol):
    async def run(self, order: WorkOrder) -> WorkOutcome: ...
    async def cancel(self, job_id: str) -> bool: ...
    async def shutdown(self) -> None: ...
    def kill(self) -> None: ...
