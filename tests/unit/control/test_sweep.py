"""A local cluster killed outright: the gateway removes what its running encodes were
writing on its way out (nothing partial is left at a destination)."""

from __future__ import annotations

from pathlib import Path

from cluster import Job, JobKind, JobSpec, JobStatus, sweep_partials
from cluster.control.records.store import JobStore


def test_the_partials_of_running_jobs_are_swept_and_finished_outputs_kept(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    running = Job(id="a" * 16, spec=JobSpec(JobKind.TRANSCODE, input="/m/a.mov",
                                            output=str(out / "a.mp4")),
                  seq=1, status=JobStatus.RUNNING)  # fmt: skip
    done = Job(id="b" * 16, spec=JobSpec(JobKind.TRANSCODE, input="/m/b.mov",
                                         output=str(out / "b.mp4")),
               seq=2, status=JobStatus.SUCCEEDED)  # fmt: skip
    store = JobStore(tmp_path / "jobs.sqlite3")
    store.save_many([running, done])
    store.close()
    partial = out / f".a.mp4.{running.id}.1.partial"
    partial.write_bytes(b"half")
    finished = out / "b.mp4"
    finished.write_bytes(b"whole")
    assert sweep_partials(tmp_path) == 1
    assert not partial.exists() and finished.read_bytes() == b"whole"
    assert sweep_partials(tmp_path / "elsewhere") == 0  # no records: nothing to do
