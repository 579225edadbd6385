"""A node's encodes' progress, sent to the head as one batch per interval.

Every encode reports progress about once a second. Sent one by one, 2,500 nodes of 8
encodes would be 20,000 calls a second to the one coordinator, where one async actor
takes a few thousand. So the encoders of a node hand their reports to the node's agent
(a call that stays on the node), which keeps only each encode's newest report and sends
what it holds as one batch every ``interval_s``: the head's calls grow with the nodes,
not the encodes.

At most one batch is in flight per node: while the head is slow to take one, newer
reports replace older ones of the same encode, so a slow head never builds a queue of
stale progress (and a node never holds more than one report per encode it runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from cluster.model.progress import ProgressReport, ProgressSnapshot

log = logging.getLogger("framefleet.progress")

BATCH_INTERVAL_S = 1.0
"""How often a node sends its encodes' progress: the encoders' own pace (they report at
most once a second, or every percent)."""
SEND_TIMEOUT_S = 30.0
"""A batch the head has not taken in this long is given up on (the next one carries the
newest reports anyway)."""

Send = Callable[[list[ProgressReport]], Awaitable[object]]


class ProgressBatcher:
    def __init__(
        self,
        send: Send | None = None,
        *,
        interval_s: float = BATCH_INTERVAL_S,
        timeout_s: float = SEND_TIMEOUT_S,
    ) -> None:
        """``send``: delivers one batch to the head (``None``: not known yet, reports are
        kept, newest per encode, until :attr:`send` is set)."""
        self.send = send
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._pending: dict[tuple[str, int], ProgressReport] = {}
        self._due = asyncio.Event()
        self.sent_batches = 0
        self.sent_reports = 0

    def add(self, job_id: str, attempt: int, snapshot: ProgressSnapshot) -> None:
        """An encode's newest progress (replacing the one not sent yet)."""
        self._pending[(job_id, attempt)] = ProgressReport(job_id, attempt, snapshot)
        if snapshot.done:
            self._due.set()  # its last word goes out now, not an interval later

    def take(self) -> list[ProgressReport]:
        """What is held, oldest encode first; the batcher is empty after."""
        batch, self._pending = list(self._pending.values()), {}
        return batch

    @property
    def held(self) -> int:
        return len(self._pending)

    async def run(self) -> None:
        """Send a batch every ``interval_s`` (sooner for an encode's last report), one at
        a time, until cancelled. The beat is fixed: a send's round trip does not push the
        next one later (encodes reporting once a second would otherwise have some of
        their reports replaced before they went)."""
        loop = asyncio.get_running_loop()
        beat = loop.time() + self.interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._due.wait(), max(beat - loop.time(), 0.0))
            self._due.clear()
            if loop.time() >= beat:  # the beat's batch (not an encode's last report)
                beat += self.interval_s
                if beat <= loop.time():  # behind (a slow head): a full interval from now
                    beat = loop.time() + self.interval_s
            await self.flush()

    async def flush(self) -> None:
        """Send what is held now (nothing without a ``send``, or with nothing held)."""
        if self.send is None or not self._pending:
            return
        batch = self.take()
        try:
            await asyncio.wait_for(self.send(batch), self.timeout_s)
        except Exception as exc:  # the head restarting or gone: the next batch is newer
            # (and an encode's outcome carries its last progress anyway)
            log.warning("could not send %d progress reports to the head: %s: %s", len(batch),
                        type(exc).__name__, exc)  # fmt: skip
            return
        self.sent_batches += 1
        self.sent_reports += len(batch)
