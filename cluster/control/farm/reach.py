"""Where a job's local media can be read: which nodes see its media roots, and how the
coordinator probes, checks and places jobs on a farm without a shared mount.

Each node's agent reports, for every local media root, whether the node sees it (its
identity file, :mod:`cluster.storage.roots`) and at which path. From those reports:

- a job's input is probed where it can be read: on the head when the head sees its
  root, else through the agent of a node that does (never by guessing at the head's
  filesystem);
- admission checks an output's folder on the head only where the head sees it (a node
  checks it again, always, right before ffmpeg starts);
- :meth:`MediaReach.reach` says which nodes see a job's media and whether moving them to
  a node that does not is worth it (:class:`~cluster.control.rules.dispatch.Reach`); the
  dispatch round prefers nodes that see them;
- a work order for a node that mounts a root elsewhere gets that node's paths.

Roots the gateway did not mark (no identities: the Python API, local CLI use) are taken
to be seen by every node, at their own paths, as before.
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

from cluster.config import CoordinatorConfig
from cluster.control.farm.backend import Backend
from cluster.control.farm.prober import ProbeFn
from cluster.control.farm.view import ClusterView
from cluster.control.rules.dispatch import Reach
from cluster.errors import ErrorCode, FramefleetError, InputError
from cluster.media.runner import remove_stale_partials
from cluster.media.split import index_file
from cluster.model.jobs import Job, JobKind, JobSpec
from cluster.model.media import MediaInfo
from cluster.model.split import FrameIndex
from cluster.nodes.agent import NodeInfo
from cluster.scheduling.costs import expected_speed
from cluster.storage import objects
from cluster.storage.roots import Pairs, look, root_of, to_node
from cluster.storage.urls import is_object_url, parse_object_url

IndexFn = Callable[[str, tuple[Path, ...], int, int | None], Awaitable[FrameIndex]]
"""Reads every frame's time in a file this machine sees (:func:`index_file`)."""
log = logging.getLogger("framefleet.coordinator.farm")
MIB = 1024 * 1024


class MediaReach:
    def __init__(
        self,
        config: CoordinatorConfig,
        view: ClusterView,
        backend: Backend,
        probe: ProbeFn,
        index: IndexFn = index_file,
    ) -> None:
        self.roots = tuple(str(r) for r in config.media_roots)
        self._tracked = bool(config.root_ids)
        self._ids = dict(config.root_ids)
        self._view = view
        self._backend = backend
        self._probe = probe
        self._index = index
        self._costs = config.costs
        self.learned: Callable[[Job], float | None] | None = None
        """A job's learned speed (the coordinator's), when the farm has seen such work."""
        self._network_bps = config.costs.network_mib_s * MIB
        self.store = config.store
        self._clearing: set[asyncio.Task[None]] = set()

    def roots_of(self, spec: JobSpec) -> tuple[str, ...]:
        """The local media roots ``spec`` reads or writes under (none when untracked)."""
        if not self._tracked:
            return ()
        paths = [p for p in (spec.input, spec.output) if p is not None and not is_object_url(p)]
        return tuple(sorted({r for p in paths if (r := root_of(p, self.roots)) is not None}))

    def seers(self, roots: tuple[str, ...]) -> list[NodeInfo]:
        """Nodes that see every one of ``roots``; nodes without CPUs (the head, a storage
        node: they encode nothing) first, as the ones to serve the media."""
        found = [
            n
            for n in self._view.nodes
            if all((s := n.sight(r)) is not None and s.seen for r in roots)
        ]
        return sorted(found, key=lambda n: (n.cpus > 0, n.node_id))

    def _head(self) -> NodeInfo | None:
        return next((n for n in self._view.nodes if n.is_head), None)

    def on_head(self, path: str) -> str | None:
        """``path`` where the head (this process's machine) sees it; ``None``: it does
        not see its root."""
        root = root_of(path, self.roots) if self._tracked else None
        if root is None:
            return path
        head = self._head()
        sight = head.sight(root) if head is not None else None
        if sight is None:  # the head has not reported yet (a restart): look here
            (sight,) = look(((root, self._ids.get(root, "")),), ())
        if not sight.seen:
            return None
        return to_node(path, ((root, sight.path),))

    def mapped(self, node: NodeInfo | None, spec: JobSpec) -> Pairs:
        """``(root, path)`` for the roots of ``spec`` that ``node`` sees somewhere else
        than at their own path."""
        if node is None:
            return ()
        roots = self.roots_of(spec)
        return tuple(
            (s.root, s.path) for s in node.media if s.seen and s.path != s.root and s.root in roots
        )

    async def probe(self, path: str, roots: tuple[Path, ...]) -> MediaInfo:
        """ffprobe of ``path`` where it can be read (a :data:`ProbeFn`)."""
        root = root_of(path, self.roots) if self._tracked else None
        if root is None:
            return await self._probe(path, roots)
        await self._view.await_reports()
        here = self.on_head(path)
        if here is not None:
            head_roots = tuple(Path(self.on_head(r) or r) for r in self.roots)
            media = await self._probe(here, head_roots)
            return media if here == path else replace(media, path=path)
        seers = self.seers((root,))
        if seers:
            return await self._backend.probe_on(seers[0].node_id, path)
        raise InputError(
            f"{path}: no node sees its media root {root} ({self._why_unseen(root)}); mount "
            "the share on a node, or map it there with `framefleet node start --media-map "
            f"{root}=PATH`",
            code=ErrorCode.INPUT_MISSING,
        )

    def _why_unseen(self, root: str) -> str:
        whys = [f"{n.address}: {s.why}" for n in self._view.nodes if (s := n.sight(root))]
        return "; ".join(whys[:3]) or "no node has reported"

    def reach(self, job: Job, media: MediaInfo) -> Reach | None:
        """Which nodes see the job's local media, and whether moving them is worth it;
        ``None`` when the job has none to move (or every node is taken to see them)."""
        roots = self.roots_of(job.spec)
        if not roots:
            return None
        seers = self.seers(roots)
        spec = job.spec
        size = media.size_bytes or 0
        fetched = size if not is_object_url(spec.input) else 0
        back = spec.output is not None and not is_object_url(spec.output)
        moved = fetched + (size if back and spec.kind is JobKind.TRANSCODE else 0)
        learned = self.learned(job) if self.learned is not None else None
        speed = learned or expected_speed(spec, spec.hardware, media, self._costs)
        encode_s = (media.duration_s or 0.0) / speed
        # A task runs only where its media are seen: each would fetch the whole master,
        # and what tasks make for each other is written beside the output.
        worth = moved / self._network_bps < encode_s and job.task is None
        source = seers[0] if seers else None
        return Reach(
            seers=frozenset(n.node_id for n in seers),
            source=source.node_id if source else None,
            source_address=source.address if source else "",
            input_bytes=fetched,
            sends_back=back,
            worth_moving=worth,
        )

    def clear_partials(self, job: Job, *, tasks: bool = False) -> asyncio.Task[None] | None:
        """Remove what a dead attempt of ``job`` left half-written at its destination (with
        ``tasks``: every file its graph's tasks made), where that can be seen: on the head,
        or through a node that sees it (in the background: the task is returned, for a
        caller that must know it is done). An object store holds nothing partial."""
        out = job.spec.output
        if out and is_object_url(out) and tasks:  # what its tasks uploaded beside it
            return self._track(asyncio.create_task(self._clear_objects(out, job.id)))
        if not out or is_object_url(out):
            return None
        folder = out if job.spec.kind is JobKind.THUMBNAIL else str(Path(out).parent)
        here = self.on_head(folder)
        if here is not None:
            remove_stale_partials(Path(here), job.id, tasks=tasks)
            return None
        seers = self.seers(self.roots_of(job.spec))
        if not seers:
            return None
        return self._track(asyncio.create_task(self._clear_on(seers[0].node_id, folder, job.id,
                                                              tasks)))  # fmt: skip

    def _track(self, task: asyncio.Task[None]) -> asyncio.Task[None]:
        self._clearing.add(task)
        task.add_done_callback(self._clearing.discard)
        return task

    async def _clear_objects(self, output: str, job_id: str) -> None:
        """The hidden objects a job graph's tasks uploaded beside its ``s3://`` output
        (``.<name>.<job>-<key>...``: a package's renditions)."""
        target = parse_object_url(output, what="output", prefix=True)
        folder = parse_object_url(posixpath.dirname(str(target)), what="output", prefix=True)
        try:
            await asyncio.to_thread(objects.delete_starting, self.store, folder,
                                    f".{target.name}.{job_id}-")  # fmt: skip
        except FramefleetError as exc:
            log.warning("could not remove the task objects of job %s: %s", job_id, exc)

    async def _clear_on(self, node_id: str, folder: str, job_id: str, tasks: bool) -> None:
        try:
            await self._backend.remove_partials_on(node_id, folder, job_id, tasks)
        except FramefleetError as exc:  # best effort: a retry writes a partial of its own
            log.warning("could not clear partial files of job %s: %s", job_id, exc)

    async def index(self, path: str, media: MediaInfo) -> FrameIndex:
        """Every video frame's time in ``path``, read where it is seen (as :meth:`probe`)."""
        video = media.require_video().index
        audio = media.audio[0].index if media.audio else None
        root = root_of(path, self.roots) if self._tracked else None
        here = self.on_head(path) if root is not None else path
        if here is not None:
            head_roots = tuple(Path(self.on_head(r) or r) for r in self.roots)
            return await self._index(here, head_roots, video, audio)
        seers = self.seers((root,)) if root is not None else []
        if not seers:
            raise InputError(f"{path}: no node sees its media root {root}",
                             code=ErrorCode.INPUT_MISSING)  # fmt: skip
        return await self._backend.index_on(seers[0].node_id, path, video, audio)

    def seen_by(self, spec: JobSpec) -> frozenset[str] | None:
        """The nodes that see ``spec``'s media (``None``: every node does)."""
        roots = self.roots_of(spec)
        return frozenset(n.node_id for n in self.seers(roots)) if roots else None
