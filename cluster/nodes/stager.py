"""The node's half of a :class:`~cluster.storage.stage.StagePlan`: claim scratch, fetch
the input, upload the outputs once they passed, and clean up, whatever the end.

Objects move through the store, in threads (boto3 blocks). Paths under a media root
this node cannot see move through Ray from and to the agent of a node that sees it
(a :class:`Peer`, :class:`~cluster.nodes.serving.MediaServer` there): chunks of at
most :data:`CHUNK` bytes, :data:`WINDOW` in flight, each checked against its CRC-32,
the source checked unchanged from the first chunk to the last.

:meth:`Stager.cancel` stops a transfer from the event loop: an upload stopped half-way
is aborted (an S3 multipart upload, or the peer's partial file), so nothing appears at
its destination. Each upload checks first that it will not replace a file or object it
may not (``overwrite`` off).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from cluster.errors import OutputError, TransferError
from cluster.media.paths import OVERWRITE_HINT
from cluster.storage import objects
from cluster.storage.objects import Transfer, TransferCancelled
from cluster.storage.scratch import Claim, Scratch
from cluster.storage.stage import StagePlan, pushed_target
from cluster.storage.urls import ObjectURL, is_object_url, parse_object_url

log = logging.getLogger("framefleet.encoder")
REPORT_S = 1.0
"""How often bytes moved are reported while a transfer runs (the watchdog sees them)."""


CHUNK = 8 * 1024 * 1024
WINDOW = 4


class StageCancelled(Exception):
    """The job was cancelled while its media were moving."""


class Peer(Protocol):
    """The agent of a node that sees a job's media (its
    :class:`~cluster.nodes.serving.MediaServer`, through Ray)."""

    async def read(self, path: str, offset: int, size: int) -> dict[str, Any]: ...
    async def open_upload(
        self, final: str, tag: str, *, overwrite: bool, make_folder: bool = False
    ) -> str: ...
    async def write(self, upload: str, offset: int, data: bytes, crc: int) -> None: ...
    async def commit(self, upload: str, size: int) -> None: ...
    async def abort(self, upload: str) -> None: ...


class Stager:
    def __init__(
        self,
        plan: StagePlan,
        scratch_budget: int | None = None,
        on_moved: Callable[[int], None] | None = None,
        peer: Peer | None = None,
    ) -> None:
        """``on_moved(bytes)``: called every :data:`REPORT_S` while a transfer runs, with
        the bytes this attempt has moved so far. ``peer``: the agent that serves the
        plan's paths (needed when the plan names a ``peer``)."""
        self._peer = peer
        self.plan = plan
        self._on_moved = on_moved
        self._lock = threading.Lock()
        self.moved_bytes = 0
        self._scratch = Scratch(Path(plan.folder).parent, scratch_budget)
        self._claim: Claim | None = None
        self._transfer: Transfer | None = None
        self._cancelled = False
        self.timings: dict[str, float] = {}
        self.moved: dict[str, int] = {"fetched_bytes": 0, "uploaded_bytes": 0}
        self.pushed: list[str] = []
        """Where each upload of this attempt went, as it completed."""

    async def fetch(self) -> None:
        """Claim the attempt's scratch folder and download the input into it."""
        folder = Path(self.plan.folder)
        self._claim = await asyncio.to_thread(
            self._scratch.claim, folder.name, self.plan.need_bytes
        )
        (folder / "in").mkdir(exist_ok=True)
        (folder / "out").mkdir(exist_ok=True)
        started = time.monotonic()
        for source, local in self.plan.fetch:
            Path(local).parent.mkdir(parents=True, exist_ok=True)  # in/, out/ or ref/
            if is_object_url(source):
                url = parse_object_url(source, what="input")
                await self._move("download", url, Path(local))
            else:
                await self._reporting(self._pull(source, Path(local)))
                log.info("fetched %s from node %s: %s", source, self.plan.peer, local)
            self.moved["fetched_bytes"] += os.path.getsize(local)
        if self.plan.fetch:
            self.timings["fetch_s"] = round(time.monotonic() - started, 4)

    async def push(self, finals: list[str]) -> dict[str, dict[str, Any]]:
        """Upload each output in ``finals`` (local paths) to its URL; what each became
        (``{local: {"url", "size_bytes", "etag", "checksum"}}``)."""
        started = time.monotonic()
        done: dict[str, dict[str, Any]] = {}
        store = self.plan.store
        for local in finals:
            target = pushed_target(self.plan, local)
            if target is None:
                continue
            if not is_object_url(target):
                done[local] = await self._reporting(self._send(local, target))
                self.moved["uploaded_bytes"] += done[local]["size_bytes"]
                self.pushed.append(target)
                continue
            url = parse_object_url(target, what="output")
            there = (
                None if self.plan.overwrite else await asyncio.to_thread(objects.head, store, url)
            )
            if there is not None:
                raise OutputError(f"{url} already exists; {OVERWRITE_HINT}")
            await self._move("upload", url, Path(local))
            self.pushed.append(str(url))
            head = await asyncio.to_thread(objects.head, store, url)
            if head is None:
                raise OutputError(f"{url}: the upload completed but the object is not there")
            self.moved["uploaded_bytes"] += head.size
            done[local] = {"url": str(url), "size_bytes": head.size, "etag": head.etag,
                           "checksum": head.checksum}  # fmt: skip
        if self.plan.push:
            self.timings["upload_s"] = round(time.monotonic() - started, 4)
        return done

    async def _move(self, how: str, url: ObjectURL, local: Path) -> None:
        """``how``: ``download`` (``url`` to ``local``) or ``upload`` (the other way)."""
        if self._cancelled:
            raise StageCancelled
        transfer = self._transfer = Transfer(self.plan.store)
        try:
            if how == "download":
                work = asyncio.to_thread(transfer.download, url, local, self._count)
            else:
                work = asyncio.to_thread(transfer.upload, local, url, self._count)
            task = asyncio.ensure_future(work)
            while not task.done():
                await asyncio.wait({task}, timeout=REPORT_S)
                if self._on_moved is not None:
                    self._on_moved(self.moved_bytes)
            await task
        except TransferCancelled as exc:
            raise StageCancelled from exc
        finally:
            self._transfer = None
            await asyncio.to_thread(transfer.close)
        if self._cancelled and how == "download":
            raise StageCancelled  # an upload that completed stands: the job succeeded
        log.info("%s %s: %s (%d bytes)", how, url, local, local.stat().st_size)

    async def _reporting(self, work: Awaitable[Any]) -> Any:
        """``work``, reporting the bytes moved every :data:`REPORT_S` while it runs."""
        task = asyncio.ensure_future(work)
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=REPORT_S)
                if self._on_moved is not None:
                    self._on_moved(self.moved_bytes)
            return await task
        finally:
            if not task.done():
                task.cancel()

    async def _windowed(self, steps: Sequence[Callable[[], Awaitable[None]]]) -> None:
        """Run ``steps`` in order, at most :data:`WINDOW` at once; the first failure
        stops the rest. A cancel stops it between chunks."""
        pending: set[asyncio.Task[None]] = set()
        try:
            for step in steps:
                if self._cancelled:
                    raise StageCancelled
                if len(pending) >= WINDOW:
                    done, pending = await asyncio.wait(pending, return_when="FIRST_COMPLETED")
                    for task in done:
                        task.result()
                pending.add(asyncio.ensure_future(step()))
            while pending:
                done, pending = await asyncio.wait(pending, return_when="FIRST_COMPLETED")
                for task in done:
                    task.result()
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._cancelled:
            raise StageCancelled

    def _linked(self) -> Peer:
        if self._peer is None:
            raise TransferError("the media are on another node, and no way to reach it")
        return self._peer

    async def _pull(self, source: str, local: Path) -> None:
        """``source`` (a path the peer sees) to ``local``, chunk by chunk."""
        peer = self._linked()
        first = await peer.read(source, 0, CHUNK)
        size, mtime = first["size"], first["mtime_ns"]
        fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)

        async def chunk(offset: int, got: dict[str, Any] | None = None) -> None:
            for _ in range(2):  # a damaged chunk is read once more
                got = got or await peer.read(source, offset, CHUNK)
                if (got["size"], got["mtime_ns"]) != (size, mtime):
                    raise TransferError(f"{source} changed while it was read; try again")
                if zlib.crc32(got["data"]) & 0xFFFFFFFF == got["crc32"]:
                    break
                got = None
            else:
                raise TransferError(f"a chunk of {source} arrived damaged twice (CRC-32)")
            data: bytes = got["data"]
            await asyncio.to_thread(os.pwrite, fd, data, offset)
            self._count(len(data))

        try:
            steps = [partial(chunk, 0, first)]
            steps += [partial(chunk, o) for o in range(len(first["data"]), size, CHUNK)]
            await self._windowed(steps)
            if os.fstat(fd).st_size != size:
                raise TransferError(f"{source}: {os.fstat(fd).st_size} of {size} bytes arrived")
        finally:
            os.close(fd)

    async def _send(self, local: str, target: str) -> dict[str, Any]:
        """``local`` to ``target`` (a path the peer writes), chunk by chunk; renamed into
        place there only when whole."""
        peer = self._linked()
        size = os.path.getsize(local)
        folder_push = any(local != source for _, source in self.plan.push)
        upload = await peer.open_upload(
            target, self.plan.tag, overwrite=self.plan.overwrite, make_folder=folder_push
        )
        fd = os.open(local, os.O_RDONLY | os.O_CLOEXEC)
        whole = 0

        async def send(offset: int, data: bytes) -> None:
            await peer.write(upload, offset, data, zlib.crc32(data) & 0xFFFFFFFF)
            self._count(len(data))

        def chunk(offset: int) -> Awaitable[None]:
            """Read here, as the step starts (steps start in order: the whole file's
            CRC-32 is built in order); sent in the window."""
            nonlocal whole
            data = os.pread(fd, CHUNK, offset)  # a local scratch file: milliseconds
            whole = zlib.crc32(data, whole)
            return send(offset, data)

        try:
            await self._windowed([partial(chunk, o) for o in range(0, size, CHUNK)])
            await peer.commit(upload, size)
        except BaseException:
            await asyncio.shield(peer.abort(upload))
            raise
        finally:
            os.close(fd)
        log.info("sent %s to node %s: %s (%d bytes)", local, self.plan.peer, target, size)
        return {"url": target, "size_bytes": size, "etag": None,
                "checksum": f"crc32:{whole & 0xFFFFFFFF:08x}"}  # fmt: skip

    def _count(self, n: int) -> None:  # in the transfer's threads
        with self._lock:
            self.moved_bytes += n

    def cancel(self) -> None:
        """Stop the transfer under way (an upload is aborted) and any later one."""
        self._cancelled = True
        transfer = self._transfer
        if transfer is not None:
            transfer.cancel()

    def remove(self) -> None:
        """Remove the attempt's scratch folder (fetched input, outputs, partial files)."""
        if self._claim is not None:  # no claim: the folder is not this attempt's to remove
            self._claim.remove()
