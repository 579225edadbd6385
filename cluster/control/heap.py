"""The head's garbage collector, kept from stalling the loop.

A head holding 100,000 queued jobs and 20,000 running encodes has millions of objects
that live for minutes. CPython's full collection walks every one of them (half a second
and more at that size), and it runs whenever a quarter as many again have survived two
young collections: progress reports, events and job records do that in seconds, so the
loop (and with it every start, event and progress report) stood still that long every few
seconds.

So the long-lived objects are frozen (:func:`gc.freeze`): a full collection then walks
only what came since. Every :data:`FREEZE_S` what survived is frozen too (after a young
collection, so recent cyclic garbage is not). Objects frozen and then dropped are freed as
ever when nothing refers to them; only garbage in reference cycles among frozen objects
waits, until every :data:`THAW_S` everything is thawed and collected once (one pause per
``THAW_S``, not one every few seconds).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger("framefleet.heap")

FREEZE_S = 5.0
"""What survived this long is frozen (a full collection walks at most this long's worth:
20,000 encodes reporting once a second leave some 100,000 objects a second in the
oldest generation, each freed within a second or two; a frozen one that is dropped is
freed all the same)."""
THAW_S = 900.0
"""Everything is thawed and collected once this often."""


class Heap:
    """Freezes and thaws on :meth:`tick` (call it every few seconds, between work)."""

    def __init__(
        self, now: Callable[[], float] = time.monotonic, freeze_s: float = FREEZE_S,
        thaw_s: float = THAW_S,
    ) -> None:  # fmt: skip
        self._now = now
        self.freeze_s, self.thaw_s = freeze_s, thaw_s
        self._frozen_at = self._thawed_at = now()
        self.thaws = 0
        self.last_thaw_s = 0.0

    def tick(self) -> None:
        now = self._now()
        if now - self._thawed_at >= self.thaw_s:
            started = time.perf_counter()
            gc.unfreeze()
            found = gc.collect()
            gc.freeze()
            self.last_thaw_s = time.perf_counter() - started
            self.thaws += 1
            self._thawed_at = self._frozen_at = now
            log.info("heap thawed and collected: %d unreachable, %.2f s", found, self.last_thaw_s)
        elif now - self._frozen_at >= self.freeze_s:
            gc.collect(1)
            gc.freeze()
            self._frozen_at = now
