"""After a local cluster was killed outright (its whole process group stopped at once),
what its running encodes were writing is removed: nothing partial is left at a
destination. The coordinator would do it at its next start; a gateway that exits now
does it on its way out, from the job records (this machine sees the local outputs).
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from cluster.control.records.store import JobStore
from cluster.media.runner import remove_stale_partials
from cluster.model.jobs import JobKind
from cluster.storage.urls import is_object_url


def sweep_partials(data_dir: Path) -> int:
    """Remove the partial files of the jobs the records say were running; how many jobs'
    folders were swept."""
    path = data_dir / "jobs.sqlite3"
    if not path.exists():
        return 0
    swept = 0
    with contextlib.suppress(sqlite3.Error, RuntimeError):
        store = JobStore(path)
        try:
            for job in store.running():
                out = job.spec.output
                if not out or is_object_url(out):
                    continue
                folder = Path(out) if job.spec.kind is JobKind.THUMBNAIL else Path(out).parent
                owner = job.task.parent if job.task is not None else job.id
                remove_stale_partials(folder, owner, tasks=job.task is not None)
                if job.task is None:
                    remove_stale_partials(folder, owner, tasks=True)  # its graph's files
                swept += 1
        finally:
            store.close()
    return swept
