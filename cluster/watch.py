"""Watch folders: a job for each new video file, once it is completely written.

A file counts as written when its size and modification time have not changed for
``stable_s`` seconds (copies over SMB/NFS and camera offloads write for a long time;
polling also works where inotify does not). Each file (path, size and mtime) is
submitted once: what was submitted is remembered in SQLite, so a restart does not
submit it again, while a file replaced by a new one is new. Hidden files (including
framefleet's own ``.*.partial``) are ignored.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster.errors import ConfigError, FramefleetError, Kind
from cluster.media.encoders import available
from cluster.model.jobs import Job, JobKind, JobSpec
from cluster.scheduling.admission import check_spec

log = logging.getLogger("framefleet.watch")

VIDEO_EXTENSIONS = ("mp4", "mov", "mkv", "webm", "avi", "m4v", "mxf", "ts", "mts", "m2ts")
SCHEMA = """
CREATE TABLE IF NOT EXISTS watched (
    folder TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    job_id TEXT,
    outcome TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (folder, path, size, mtime_ns)
)
"""


@dataclass(frozen=True, slots=True)
class WatchRule:
    folder: Path
    output_dir: Path | None
    """Where outputs go (transcode: ``<stem>.<ext>``; thumbnail: the folder itself)."""
    template: dict[str, Any]
    """JobSpec fields for each file's job (``kind``, ``codec``, ...); input and output are
    filled in per file."""
    output_ext: str = "mp4"
    extensions: tuple[str, ...] = VIDEO_EXTENSIONS
    stable_s: float = 5.0
    recursive: bool = False


OUTPUT_KINDS = (JobKind.TRANSCODE, JobKind.THUMBNAIL, JobKind.PACKAGE)
RETRY_S = 30.0
"""A file the cluster could not take for now (its queue full, or it away) is tried again
after this, not remembered as refused."""
"""Kinds whose rule needs an output folder (a package: a folder per master in it)."""


def rule_kind(rule: WatchRule) -> JobKind:
    return JobKind(rule.template.get("kind", JobKind.TRANSCODE))


@dataclass(slots=True)
class _Pending:
    size: int
    mtime_ns: int
    since: float


@dataclass
class FolderWatcher:
    """Polls one folder; :meth:`scan` submits what became stable since the last call."""

    rule: WatchRule
    db_path: Path
    submit: Callable[[JobSpec], Job]
    say: Callable[[str], None] = log.info
    clock: Callable[[], float] = time.monotonic
    """How long a file has been stable is measured on this clock."""
    _pending: dict[Path, _Pending] = field(default_factory=dict)
    _db: sqlite3.Connection | None = None

    def __post_init__(self) -> None:
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.db_path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(SCHEMA)
        self._db.commit()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _open_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise ConfigError(f"the watcher of {self.rule.folder} is closed")
        return self._db

    def _files(self) -> list[Path]:
        pattern = "**/*" if self.rule.recursive else "*"
        exts = {e.lower().lstrip(".") for e in self.rule.extensions}
        found = []
        for path in self.rule.folder.glob(pattern):
            rel = path.relative_to(self.rule.folder)
            if any(part.startswith(".") for part in rel.parts):
                continue
            if path.suffix.lower().lstrip(".") in exts and path.is_file():
                found.append(path)
        return sorted(found)

    def _known(self, path: Path, size: int, mtime_ns: int) -> bool:
        row = (
            self._open_db()
            .execute(
                "SELECT 1 FROM watched WHERE folder=? AND path=? AND size=? AND mtime_ns=?",
                (str(self.rule.folder), str(path), size, mtime_ns),
            )
            .fetchone()
        )
        return row is not None

    def _remember(self, path: Path, st: _Pending, job_id: str | None, outcome: str) -> None:
        db = self._open_db()
        db.execute(
            "INSERT OR REPLACE INTO watched VALUES (?, ?, ?, ?, ?, ?, ?)",
            (str(self.rule.folder), str(path), st.size, st.mtime_ns, job_id, outcome, time.time()),
        )
        db.commit()

    def spec_for(self, path: Path) -> JobSpec:
        rule = self.rule
        output: str | None = None
        kind = rule_kind(rule)
        if kind in OUTPUT_KINDS and rule.output_dir is None:
            raise ConfigError(f"watch rule for {rule.folder}: a {kind} rule needs an output folder")
        if kind is JobKind.TRANSCODE and rule.output_dir is not None:
            output = str(rule.output_dir / f"{path.stem}.{rule.output_ext}")
        elif kind is JobKind.THUMBNAIL and rule.output_dir is not None:
            output = str(rule.output_dir)
        elif kind is JobKind.PACKAGE and rule.output_dir is not None:
            output = str(rule.output_dir / path.stem)  # a package folder per master
        return JobSpec(**{**rule.template, "kind": kind, "input": str(path), "output": output})

    def scan(self) -> list[Job]:
        """Submit the files that have been stable for ``stable_s``; returns their jobs."""
        now = self.clock()
        submitted = []
        present = set()
        for path in self._files():
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            present.add(path)
            seen = self._pending.get(path)
            if seen is None or (seen.size, seen.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
                if self._known(path, stat.st_size, stat.st_mtime_ns):
                    continue  # submitted before (this run or an earlier one)
                self._pending[path] = _Pending(stat.st_size, stat.st_mtime_ns, now)
                continue
            if stat.st_size == 0 or now - seen.since < self.rule.stable_s:
                continue
            del self._pending[path]
            try:
                job = self.submit(self.spec_for(path))
            except FramefleetError as exc:
                if exc.kind in (Kind.BUSY, Kind.UNAVAILABLE):  # the queue is full, or the
                    # cluster away, for now: the file is tried again in a while
                    self._pending[path] = _Pending(seen.size, seen.mtime_ns, now + RETRY_S)
                    self.say(f"{path}: not submitted yet ({exc}); trying again in "
                             f"{RETRY_S:g} s")  # fmt: skip
                    continue
                self._remember(path, seen, None, f"refused: {exc}")
                self.say(f"{path}: not submitted: {exc}")
                continue
            self._remember(path, seen, job.id, "submitted")
            self.say(f"{path}: written completely; submitted job {job.id}")
            submitted.append(job)
        for gone in set(self._pending) - present:
            del self._pending[gone]
        return submitted

    def run(self, stop: threading.Event, poll_s: float = 1.0) -> None:
        """Scan every ``poll_s`` until ``stop`` is set; a failed scan is logged, not fatal."""
        self.say(
            f"watching {self.rule.folder} for {', '.join(self.rule.extensions)} "
            f"(stable for {self.rule.stable_s:g} s)"
        )
        while not stop.is_set():
            try:
                self.scan()
            except Exception:
                log.exception("scan of %s failed", self.rule.folder)
            stop.wait(poll_s)
        self.close()


def check_rule(rule: WatchRule) -> None:
    """Refuse a rule that cannot work, in one line."""
    if not rule.folder.is_dir():
        raise ConfigError(f"watch folder {rule.folder} is not a folder; create it first")
    needs_out = rule_kind(rule) in OUTPUT_KINDS
    if needs_out and (rule.output_dir is None or not rule.output_dir.is_dir()):
        raise ConfigError(
            f"output folder {rule.output_dir} does not exist; create it or pass --output-dir"
        )
    if rule.output_dir is not None and rule.output_dir.resolve() == rule.folder.resolve():
        raise ConfigError("the output folder is the watch folder; outputs would be re-watched")
    if rule.stable_s < 0:
        raise ConfigError("the stable time must be 0 s or more")
    probe = Path("/watch-rule-check")
    output = f"{probe}.{rule.output_ext}" if rule_kind(rule) is JobKind.TRANSCODE else str(probe)
    spec = JobSpec(**{**rule.template, "kind": rule_kind(rule), "input": f"{probe}.mp4",
                      "output": output if needs_out else None})  # fmt: skip
    check_spec(spec, available())
