"""The farm's measured speeds, kept: ``<data dir>/speeds.sqlite3``.

Every finished run's :class:`~cluster.scheduling.speeds.SpeedSample` is appended (the
newest :data:`KEPT` are kept); the :class:`~cluster.scheduling.speeds.SpeedModel` is
rebuilt from them at start-up, so what the farm learned survives restarts. ``export``
and ``load`` move samples between farms as JSON lines (``framefleet speeds
export|import``): a new farm starts warm.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from cluster.scheduling.speeds import SpeedModel, SpeedSample

FILE_NAME = "speeds.sqlite3"
KEPT = 200_000
"""Samples kept (the oldest go first): about 60 MB at most."""
_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_at ON samples (at);
"""


class SpeedBook:
    """The samples file and the model learned from it."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        """One writer at a time (the coordinator's loop and an import's thread)."""
        self.model = SpeedModel()
        self.model.learn_all(sorted(self.samples(), key=lambda s: s.at))
        self._added = 0

    def samples(self, after: int = 0, limit: int | None = None) -> list[SpeedSample]:
        """Kept samples after ``after`` (a ``seq``), oldest first, at most ``limit`` (a
        sample this framefleet cannot read, from a newer one, is skipped)."""
        return [s for _, s in self.page(after, limit)]

    def page(self, after: int = 0, limit: int | None = None) -> list[tuple[int, SpeedSample]]:
        """(seq, sample) after ``after`` in the order they were kept."""
        sql = "SELECT seq, body FROM samples WHERE seq > ? ORDER BY seq"
        args: tuple[int, ...] = (after,)
        if limit is not None:
            sql, args = sql + " LIMIT ?", (after, limit)
        found = []
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        for seq, body in rows:
            try:
                found.append((seq, SpeedSample.from_dict(json.loads(body))))
            except (ValueError, TypeError, KeyError):
                continue
        return found

    def add(self, sample: SpeedSample) -> None:
        """Learn from ``sample`` and keep it."""
        if not sample.usable():
            return
        self.model.learn(sample)
        with self._lock:
            self._db.execute("INSERT INTO samples (at, body) VALUES (?, ?)",
                             (sample.at, json.dumps(sample.to_dict())))  # fmt: skip
            self._added += 1
            if self._added % 1000 == 0:
                self._prune()

    def load(self, samples: Iterable[SpeedSample]) -> int:
        """Import ``samples`` (another farm's, or an export of this one's): kept, and
        the model learned again from every sample in time order. How many were new."""
        have = {json.dumps(s.to_dict(), sort_keys=True) for s in self.samples()}
        fresh = [s for s in samples
                 if s.usable() and json.dumps(s.to_dict(), sort_keys=True) not in have]  # fmt: skip
        if not fresh:
            return 0
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO samples (at, body) VALUES (?, ?)",
                                 [(s.at, json.dumps(s.to_dict())) for s in fresh])  # fmt: skip
        with self._lock:
            self._prune()
        model = SpeedModel()  # learned aside, in time order, then put in place at once
        model.learn_all(sorted(self.samples(), key=lambda s: s.at))
        self.model = model
        return len(fresh)

    def _prune(self) -> None:
        self._db.execute("DELETE FROM samples WHERE seq NOT IN "
                         "(SELECT seq FROM samples ORDER BY at DESC, seq DESC LIMIT ?)",
                         (KEPT,))  # fmt: skip

    def close(self) -> None:
        self._db.close()
