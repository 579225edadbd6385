"""A local multi-node Ray cluster for the benches that compare a farm with one machine:
a head without CPUs and N workers of one core each, a coordinator over one media root,
and every worker's encoder started once before anything is timed (Ray's worker start-up
is not what these benches measure)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from cluster import CoordinatorConfig, Fleet, JobKind, JobSpec, RuntimeConfig, make_sample

OBJECT_STORE = 128 * 2**20


@contextlib.contextmanager
def one_core_workers(work: Path, media: Path, workers: int) -> Iterator[Fleet]:
    """A fleet on a fresh cluster of ``workers`` one-core workers, warmed; shut down after.
    The process's environment must hold a Ray token (``RAY_AUTH_TOKEN``)."""
    from ray.cluster_utils import Cluster

    temp = Path(tempfile.mkdtemp(prefix="ffb-", dir="/tmp"))
    os.environ["RAY_TMPDIR"] = str(temp)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "temp_dir": str(temp / "ray"), "include_dashboard": False,
        "object_store_memory": OBJECT_STORE})  # fmt: skip
    try:
        for _ in range(workers):
            cluster.add_node(num_cpus=1, object_store_memory=OBJECT_STORE)
        cluster.wait_for_nodes()
        data = work / "data"
        fleet = Fleet.connect(
            RuntimeConfig(data_dir=data, address=cluster.address, coordinator_name="bench"),
            CoordinatorConfig(
                data_dir=data, media_roots=(media,), node_refresh_s=1.0, encoder_idle_s=600.0
            ),
        )
        try:
            deadline = time.monotonic() + 60
            while not fleet.ping()["ready"] and time.monotonic() < deadline:
                time.sleep(0.5)
            warm = make_sample(media / "warm.mp4", seconds=2, width=320, height=240)
            for i in range(workers):
                fleet.submit(JobSpec(kind=JobKind.TRANSCODE, input=str(warm),
                                     output=str(media / f"warm{i}.mp4"), split="off"))  # fmt: skip
            while fleet.ping()["running"] or fleet.ping()["queued"]:
                time.sleep(0.2)
            yield fleet
        finally:
            fleet.shutdown_coordinator()
            fleet.close()
    finally:
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
