"""Node-local scratch space: where a node keeps a job's fetched input and its outputs
before they are uploaded, one folder per attempt (``<root>/<job>.<attempt>``).

Each folder records the process that owns it (pid and start time) and how many bytes
it reserved. Before a download, :meth:`Scratch.claim` checks that the disk (and the
configured budget) can hold what this attempt needs beside what the other attempts on
the node still reserve; if not, the attempt fails with a clear, retryable error, and
the job goes to another node. A folder is removed when its attempt ends, whatever the
end; one whose owner died (an encoder killed, a node restarted) is removed by
:meth:`Scratch.sweep`, which each node agent runs at start and then every minute.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cluster.errors import ErrorCode, TransferError

SCRATCH_ENV = "FRAMEFLEET_SCRATCH"
SCRATCH_BYTES_ENV = "FRAMEFLEET_SCRATCH_BYTES"
DEFAULT_SCRATCH = os.path.join(tempfile.gettempdir(), "framefleet-scratch")
OWNER = ".owner"
KEEP_FREE_BYTES = 256 * 1024 * 1024
"""Left free on the disk, whatever the budget says (logs, ffmpeg's own files)."""
NEW_S = 60.0
"""A folder without an owner record this young is being made: not swept."""


def human(n: float) -> str:
    """``n`` bytes in the largest unit that keeps it above 1 (``1.20 GiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (``None``: no such process): a pid reused
    by a later process does not pass for the owner."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _size(folder: Path) -> int:
    total = 0
    for dirpath, _, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _age(folder: Path, now: float) -> float:
    try:
        return now - folder.stat().st_mtime
    except OSError:
        return NEW_S


@dataclass(slots=True)
class Claim:
    """One attempt's folder in scratch; :meth:`remove` it when the attempt ends."""

    path: Path
    reserved: int

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class Scratch:
    def __init__(self, root: Path, budget_bytes: int | None = None) -> None:
        self.root = root
        self.budget_bytes = budget_bytes
        """At most this much in scratch at once (``None``: what the disk has)."""

    def _folders(self) -> list[tuple[Path, dict[str, object] | None]]:
        found = []
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.root):
                if entry.is_dir(follow_symlinks=False):
                    try:
                        owner = json.loads((Path(entry.path) / OWNER).read_text())
                    except (OSError, ValueError):
                        owner = None
                    found.append((Path(entry.path), owner))
        return found

    @staticmethod
    def _alive(owner: dict[str, object] | None) -> bool:
        if owner is None:
            return False
        pid = owner.get("pid")
        return isinstance(pid, int) and _start_time(pid) == owner.get("started")

    def claim(self, name: str, need_bytes: int) -> Claim:
        """Make ``<root>/<name>`` for an attempt that will hold ``need_bytes``, or a
        :class:`TransferError` (``scratch_full``) when the node cannot hold it now."""
        self.root.mkdir(parents=True, exist_ok=True)
        others = 0
        used = 0
        for folder, owner in self._folders():
            if folder.name == name or not self._alive(owner):
                continue
            size = _size(folder)
            reserved = int(owner.get("reserved", 0)) if owner else 0  # type: ignore[call-overload]
            others += max(reserved - size, 0)
            used += max(reserved, size)
        free = shutil.disk_usage(self.root).free - others - KEEP_FREE_BYTES
        if need_bytes > free:
            raise TransferError(
                f"scratch {self.root} has {human(max(free, 0))} free after the other jobs "
                f"here; this job needs {human(need_bytes)}; free space there or point "
                f"{SCRATCH_ENV} at a larger disk",
                code=ErrorCode.SCRATCH_FULL,
            )
        if self.budget_bytes is not None and used + need_bytes > self.budget_bytes:
            raise TransferError(
                f"scratch {self.root}: this job needs {human(need_bytes)} and "
                f"{human(used)} of its {human(self.budget_bytes)} budget is in use; raise "
                f"{SCRATCH_BYTES_ENV} or wait",
                code=ErrorCode.SCRATCH_FULL,
            )
        path = self.root / name
        path.mkdir(exist_ok=True)
        pid = os.getpid()
        owner = {"pid": pid, "started": _start_time(pid), "reserved": need_bytes}
        (path / OWNER).write_text(json.dumps(owner))
        return Claim(path, need_bytes)

    def sweep(self) -> list[str]:
        """Remove the folders whose owner is gone; their names."""
        removed = []
        now = time.time()
        for folder, owner in self._folders():
            if owner is None and _age(folder, now) < NEW_S:
                continue
            if not self._alive(owner):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder.name)
        return removed

    def usage(self) -> dict[str, object]:
        """Where scratch is, its free disk space, what jobs hold there, and its budget."""
        folders = self._folders()
        try:
            free: int | None = shutil.disk_usage(self.root).free
        except OSError:
            free = None
        return {
            "path": str(self.root),
            "free_bytes": free,
            "used_bytes": sum(_size(f) for f, _ in folders),
            "jobs": len(folders),
            "budget_bytes": self.budget_bytes,
        }
