"""The node's half of a :class:`~cluster.storage.stage.StagePlan`: claim scratch, fetch
the input, upload the outputs once they passed, and clean up, whatever the end.

Downloads and uploads run in threads (boto3 blocks); :meth:`Stager.cancel` stops them
from the event loop: an upload stopped half-way is aborted, so nothing appears at its
destination. Each upload checks first that it will not replace an object it may not
(``overwrite`` off).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cluster.errors import OutputError
from cluster.media.paths import OVERWRITE_HINT
from cluster.storage import objects
from cluster.storage.objects import Transfer, TransferCancelled
from cluster.storage.scratch import Claim, Scratch
from cluster.storage.stage import StagePlan, pushed_url
from cluster.storage.urls import ObjectURL, parse_object_url

log = logging.getLogger("framefleet.encoder")
REPORT_S = 1.0
"""How often bytes moved are reported while a transfer runs (the watchdog sees them)."""


class StageCancelled(Exception):
    """The job was cancelled while its media were moving."""


class Stager:
    def __init__(
        self,
        plan: StagePlan,
        scratch_budget: int | None = None,
        on_moved: Callable[[int], None] | None = None,
    ) -> None:
        """``on_moved(bytes)``: called every :data:`REPORT_S` while a transfer runs, with
        the bytes this attempt has moved so far."""
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

    async def fetch(self) -> None:
        """Claim the attempt's scratch folder and download the input into it."""
        folder = Path(self.plan.folder)
        self._claim = await asyncio.to_thread(
            self._scratch.claim, folder.name, self.plan.need_bytes
        )
        (folder / "in").mkdir(exist_ok=True)
        (folder / "out").mkdir(exist_ok=True)
        started = time.monotonic()
        for url, local in self.plan.fetch:
            await self._move("download", parse_object_url(url, what="input"), Path(local))
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
            url = pushed_url(self.plan, local)
            if url is None:
                continue
            there = (
                None if self.plan.overwrite else await asyncio.to_thread(objects.head, store, url)
            )
            if there is not None:
                raise OutputError(f"{url} already exists; {OVERWRITE_HINT}")
            await self._move("upload", url, Path(local))
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
