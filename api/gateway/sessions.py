"""The status page's signed-out sessions, kept until they would have expired.

A session cookie is checked without a lookup (see :mod:`api.gateway.auth`), so signing
out must leave a trace: a digest of the cookie's value, with its expiry, in
``<data dir>/ui-sessions.sqlite3``. The cookie is then refused by this gateway and by the
next one on the same data dir (a restart), until it would have expired anyway; expired
entries are pruned. Reads come from memory; each sign-out is written through to the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

FILE_NAME = "ui-sessions.sqlite3"


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class SignedOut:
    """The sessions signed out before their expiry (a digest each, never the cookie)."""

    def __init__(self, path: Path, now: Callable[[], float] = time.time) -> None:
        self._path, self._now = path, now
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS signed_out "
                "(digest TEXT PRIMARY KEY, expires INTEGER NOT NULL)"
            )
            db.execute("DELETE FROM signed_out WHERE expires < ?", (int(now()),))
            rows = db.execute("SELECT digest, expires FROM signed_out").fetchall()
        self._expiry: dict[str, int] = dict(rows)

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with contextlib.closing(sqlite3.connect(self._path, timeout=10)) as db, db:
            yield db

    def add(self, value: str, expires: int) -> None:
        """Sign out the session whose cookie is ``value`` (valid until ``expires``)."""
        digest, now = _digest(value), int(self._now())
        with self._lock, self._db() as db:
            db.execute("INSERT OR REPLACE INTO signed_out VALUES (?, ?)", (digest, expires))
            db.execute("DELETE FROM signed_out WHERE expires < ?", (now,))
            kept = {d: e for d, e in self._expiry.items() if e >= now}
            self._expiry = kept | {digest: expires}

    def __contains__(self, value: str) -> bool:
        return _digest(value) in self._expiry

    def __len__(self) -> int:
        return len(self._expiry)
