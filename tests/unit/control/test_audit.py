"""The audit trail: append-only, kept across reopening, filtered by tenant and action."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from cluster import AuditLog


def test_entries_are_kept_in_order_and_cannot_be_changed_or_deleted(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    log = AuditLog(path)
    log.add("alice", "team-a", "submit", "j1", detail={"kind": "transcode"}, at=10.0)
    log.add("ops", "default", "drain", "10.0.0.5", at=11.0)
    log.close()
    reopened = AuditLog(path)
    entries = reopened.read()
    assert [(e.seq, e.actor, e.action, e.target) for e in entries] == [
        (1, "alice", "submit", "j1"), (2, "ops", "drain", "10.0.0.5")]  # fmt: skip
    assert entries[0].detail == {"kind": "transcode"}
    assert [e.target for e in reopened.read(tenant="team-a")] == ["j1"]
    assert [e.target for e in reopened.read(action="drain", after=0)] == ["10.0.0.5"]
    assert reopened.read(after=2) == []
    db = sqlite3.connect(path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE audit SET actor = 'mallory'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM audit")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
