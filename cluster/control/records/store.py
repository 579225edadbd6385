"""Job records in SQLite (WAL): every state change is written; progress stays in memory.
Drained nodes, strikes and quarantines, and the webhook outbox are kept beside them.

A job's spec is kept in two parts: its own paths (``input``, ``output``) in its record,
and the rest (kind, codec, labels, ladder...) once per distinct content in ``specs``,
which records name by digest. A batch's thousand jobs share one spec row, so what they
cost on disk does not grow with what that spec holds."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.control.rules.health import Saved
from cluster.model.jobs import Job
from cluster.model.tenancy import DEFAULT_TENANT, tenant_of

SCHEMA_VERSION = 3
"""2: specs stored once by content (``specs``); records of version 1 still read.
3: each job's tenant in its own column (jobs listed per tenant); older records belong to
the default tenant."""
TASK_KIND = "task"
"""The ``kind`` column of a job graph's tasks: kept, restored, never listed."""
MEMO_ROWS = 20_000
"""Task results kept by memo key (a search's probes: a retry or another rendition of the
same input reuses them)."""
HIDDEN_KINDS = (TASK_KIND, "chunk")
"""Never listed: tasks, and the chunks an older framefleet stored."""
OWN_FIELDS = ("input", "output")
"""What of a spec is each job's own (kept in its record); the rest is shared."""
SPEC_REF = "shared"
"""The key in a stored record's spec that names its shared part in ``specs``."""
SPECS_CACHED = 4096
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    status TEXT NOT NULL,
    kind TEXT NOT NULL,
    priority INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    record TEXT NOT NULL,
    tenant TEXT NOT NULL DEFAULT 'default'
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status);
CREATE INDEX IF NOT EXISTS jobs_seq ON jobs (seq);
CREATE TABLE IF NOT EXISTS specs (
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS drains (
    node_id TEXT PRIMARY KEY,
    since REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS health (
    target TEXT PRIMARY KEY,
    quarantines INTEGER NOT NULL,
    until REAL,
    reason TEXT NOT NULL,
    strikes TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS memo (
    key TEXT PRIMARY KEY,
    result TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    url TEXT NOT NULL,
    body BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One webhook waiting in the outbox: written with the job's ending, in the same
    transaction, and deleted once delivered or given up."""

    id: str
    job_id: str
    url: str
    body: bytes
    attempts: int
    next_at: float


class JobStore:
    """One SQLite file in the data dir; only the coordinator writes to it."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"{path} was written by a newer framefleet (schema {version}); upgrade framefleet"
            )
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        if "tenant" not in columns:  # schema 2: every job so far is the default tenant's
            self._db.execute(
                f"ALTER TABLE jobs ADD COLUMN tenant TEXT NOT NULL DEFAULT '{DEFAULT_TENANT}'"
            )
        self._db.execute("CREATE INDEX IF NOT EXISTS jobs_tenant ON jobs (tenant, seq)")
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._specs: dict[str, dict[str, Any]] = {}
        """Shared spec parts known to be stored (id -> fields), the newest few."""

    def save(self, job: Job, *, webhook: Delivery | None = None) -> None:
        """Write ``job``; with ``webhook``, queue its delivery in the same transaction, so
        an ending is never recorded without it."""
        self.save_many((job,), webhook=webhook)

    def save_many(self, jobs: Iterable[Job], *, webhook: Delivery | None = None) -> None:
        new: dict[str, tuple[str, dict[str, Any]]] = {}
        rows = []
        for j in jobs:
            data = j.to_dict()
            data["spec"] = self._split(data["spec"], new)
            kind = TASK_KIND if j.task else str(j.spec.kind)
            rows.append((j.id, j.seq, str(j.status), kind, j.spec.priority, j.created_at,
                         j.updated_at, json.dumps(data), tenant_of(j.tenant)))  # fmt: skip
        with self._db:
            self._db.execute("BEGIN")
            if new:
                self._db.executemany("INSERT OR IGNORE INTO specs VALUES (?, ?)",
                                     [(ref, body) for ref, (body, _) in new.items()])  # fmt: skip
            self._db.executemany(
                "INSERT INTO jobs (id, seq, status, kind, priority, created_at, updated_at, "
                "record, tenant) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                "status=excluded.status, priority=excluded.priority, "
                "updated_at=excluded.updated_at, record=excluded.record",
                rows,
            )
            if webhook is not None:
                self._db.execute(
                    "INSERT INTO outbox VALUES (?, ?, ?, ?, ?, ?)",
                    (webhook.id, webhook.job_id, webhook.url, webhook.body, 0, webhook.next_at),
                )
        for ref, (_, shared) in new.items():  # stored: later saves name them only
            self._remember(ref, shared)

    def recall(self, key: str) -> dict[str, Any] | None:
        """What a task with this memo key found before (``None``: nothing kept)."""
        row = self._db.execute("SELECT result FROM memo WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def remember(self, key: str, result: dict[str, Any], at: float) -> None:
        """Keep what a task found under its memo key (the oldest go past
        :data:`MEMO_ROWS`)."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("INSERT OR REPLACE INTO memo VALUES (?, ?, ?)",
                             (key, json.dumps(result), at))  # fmt: skip
            self._db.execute("DELETE FROM memo WHERE key NOT IN (SELECT key FROM memo "
                             "ORDER BY at DESC LIMIT ?)", (MEMO_ROWS,))  # fmt: skip

    def _split(
        self, spec: dict[str, Any], new: dict[str, tuple[str, dict[str, Any]]]
    ) -> dict[str, Any]:
        """A spec as a record keeps it: its own fields, and the digest of the rest (added
        to ``new`` unless it is known to be stored)."""
        shared = {k: v for k, v in spec.items() if k not in OWN_FIELDS}
        body = json.dumps(shared, sort_keys=True, separators=(",", ":"))
        ref = hashlib.sha256(body.encode()).hexdigest()[:32]
        if ref not in self._specs:
            new[ref] = (body, shared)
        return {k: spec.get(k) for k in OWN_FIELDS} | {SPEC_REF: ref}

    def _remember(self, ref: str, shared: dict[str, Any]) -> None:
        if len(self._specs) >= SPECS_CACHED:
            del self._specs[next(iter(self._specs))]
        self._specs[ref] = shared

    def _job(self, record: str) -> Job:
        data = json.loads(record)
        spec = data["spec"]
        ref = spec.pop(SPEC_REF, None)
        if ref is not None:  # a version 1 record holds its whole spec
            shared = self._specs.get(ref)
            if shared is None:
                row = self._db.execute("SELECT body FROM specs WHERE id = ?", (ref,)).fetchone()
                shared = json.loads(row[0])
                self._remember(ref, shared)
            data["spec"] = {**shared, **spec}
        return Job.from_dict(data)

    def spec_rows(self) -> int:
        """How many distinct shared specs are stored."""
        return int(self._db.execute("SELECT COUNT(*) FROM specs").fetchone()[0])

    def load(self, job_id: str) -> Job | None:
        row = self._db.execute("SELECT record FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._job(row[0]) if row else None

    def query(
        self,
        *,
        after_seq: int,
        status: str | None,
        kind: str | None,
        limit: int,
        tenant: str | None = None,
    ) -> list[Job]:
        """Jobs in submission order after ``after_seq``, filtered (``tenant``: that
        tenant's only), at most ``limit``."""
        sql = "SELECT record FROM jobs WHERE seq > ? AND kind NOT IN (?, ?)"
        args: list[object] = [after_seq, *HIDDEN_KINDS]
        if tenant is not None:
            sql, args = sql + " AND tenant = ?", [*args, tenant]
        if status:
            sql, args = sql + " AND status = ?", [*args, status]
        if kind:
            sql, args = sql + " AND kind = ?", [*args, kind]
        rows = self._db.execute(sql + " ORDER BY seq LIMIT ?", (*args, limit)).fetchall()
        return [self._job(record) for (record,) in rows]

    def running(self) -> list[Job]:
        """The jobs (tasks too) recorded as running."""
        rows = self._db.execute("SELECT record FROM jobs WHERE status = 'running'").fetchall()
        return [self._job(record) for (record,) in rows]

    def load_all(self) -> list[Job]:
        rows = self._db.execute("SELECT record FROM jobs ORDER BY seq").fetchall()
        return [self._job(record) for (record,) in rows]

    def drains(self) -> dict[str, float]:
        """Drained nodes (id -> since when): an operator's drain outlives a restart."""
        return dict(self._db.execute("SELECT node_id, since FROM drains").fetchall())

    def set_drain(self, node_id: str, since: float | None) -> None:
        if since is None:
            self._db.execute("DELETE FROM drains WHERE node_id = ?", (node_id,))
        else:
            self._db.execute("INSERT OR REPLACE INTO drains VALUES (?, ?)", (node_id, since))

    def health(self) -> dict[str, Saved]:
        """Nodes and GPUs with strikes or a quarantine (see :meth:`Health.saved`)."""
        rows = self._db.execute("SELECT target, quarantines, until, reason, strikes FROM health")
        return {t: (n, until, why, json.loads(strikes)) for t, n, until, why, strikes in rows}

    def set_health(self, saved: dict[str, Saved]) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM health")
            self._db.executemany(
                "INSERT INTO health VALUES (?, ?, ?, ?, ?)",
                [(t, n, until, why, json.dumps(strikes))
                 for t, (n, until, why, strikes) in saved.items()],
            )  # fmt: skip

    def setting(self, key: str) -> Any:
        """A value kept with :meth:`set_setting` (``None``: never set)."""
        row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def set_setting(self, key: str, value: Any) -> None:
        self._db.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (key, json.dumps(value)))

    def outbox(self) -> list[Delivery]:
        """Every delivery not yet made or given up, oldest first."""
        rows = self._db.execute(
            "SELECT id, job_id, url, body, attempts, next_at FROM outbox ORDER BY id"
        ).fetchall()
        return [Delivery(*row) for row in rows]

    def delivery_tried(self, delivery_id: str, attempts: int, next_at: float | None) -> None:
        """Record an attempt: the next one at ``next_at``, or (``None``) done with."""
        if next_at is None:
            self._db.execute("DELETE FROM outbox WHERE id = ?", (delivery_id,))
        else:
            self._db.execute(
                "UPDATE outbox SET attempts = ?, next_at = ? WHERE id = ?",
                (attempts, next_at, delivery_id),
            )

    def close(self) -> None:
        self._db.close()
