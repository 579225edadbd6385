"""The audit trail: who did what to the farm, and when; append-only, in SQLite.

One file in the data dir (``audit.sqlite3``, beside the jobs' file). The coordinator
appends every change a caller makes (submit, cancel, retry, drain, undrain, release);
``framefleet token`` appends token changes to the same file. Rows cannot be changed or
deleted through SQLite: triggers refuse it. A token never appears in it, only its name.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

FILE_NAME = "audit.sqlite3"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    tenant TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_tenant ON audit (tenant, seq);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
"""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change: ``actor`` (a token's name, or ``local`` for a client without one) of
    ``tenant`` did ``action`` to ``target`` (a job id, a node, a token's name)."""

    seq: int
    at: float
    actor: str
    tenant: str
    action: str
    target: str
    outcome: str
    """``ok``, or the error code the change was refused with."""
    detail: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["detail"] = dict(self.detail)
        return data


class AuditLog:
    """The audit file; a writer and a reader (any process on the machine may append)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not path.exists()
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                   timeout=10)  # fmt: skip
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        if fresh:
            os.chmod(path, 0o600)

    @classmethod
    def of(cls, data_dir: Path) -> AuditLog:
        """The audit trail kept in ``data_dir`` (the coordinator's, and ``framefleet
        token``'s for the same data dir)."""
        return cls(data_dir / FILE_NAME)

    def add(
        self,
        actor: str,
        tenant: str,
        action: str,
        target: str,
        *,
        outcome: str = "ok",
        detail: Mapping[str, Any] | None = None,
        at: float | None = None,
    ) -> None:
        self._db.execute(
            "INSERT INTO audit (at, actor, tenant, action, target, outcome, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (time.time() if at is None else at, actor, tenant, action, target, outcome,
             json.dumps(dict(detail or {}), sort_keys=True)),
        )  # fmt: skip

    def read(
        self,
        *,
        after: int = 0,
        limit: int = 100,
        tenant: str | None = None,
        action: str | None = None,
    ) -> list[AuditEntry]:
        """Entries after ``after`` (a ``seq``), oldest first, filtered."""
        sql = "SELECT seq, at, actor, tenant, action, target, outcome, detail FROM audit " \
              "WHERE seq > ?"  # fmt: skip
        args: list[object] = [after]
        if tenant is not None:
            sql, args = sql + " AND tenant = ?", [*args, tenant]
        if action is not None:
            sql, args = sql + " AND action = ?", [*args, action]
        rows = self._db.execute(sql + " ORDER BY seq LIMIT ?", (*args, limit)).fetchall()
        return [
            AuditEntry(seq=seq, at=at, actor=actor, tenant=tenant, action=act, target=target,
                       outcome=outcome, detail=json.loads(detail))
            for seq, at, actor, tenant, act, target, outcome, detail in rows
        ]  # fmt: skip

    def close(self) -> None:
        self._db.close()
