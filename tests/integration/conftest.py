"""One session-wide local Ray, a coordinator per test module, and generated clips."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster import CoordinatorConfig, Fleet, RuntimeConfig
from cluster.ray_edge.runtime import Runtime, connect
from tests.helpers import ObjectServer, make_clip


@pytest.fixture(scope="session")
def session_data() -> Iterator[Path]:
    """The session Ray's data dir (its scratch is ``scratch/`` in it): private, and short
    (Ray's socket paths), removed after."""
    data = Path(tempfile.mkdtemp(prefix="ff-test-", dir="/tmp"))
    yield data
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_runtime(tmp_path_factory: pytest.TempPathFactory, session_data: Path) -> Iterator[Runtime]:
    """A private local Ray for the whole session: 2 CPUs and no GPU, like CI, also on a
    machine with GPUs (an empty static inventory). GPU placement and NVENC failures run on
    the multi-node farm (tests/integration/cluster/test_farm.py), real GPUs in the
    gpu-marked tests."""
    no_gpus = tmp_path_factory.mktemp("inventory") / "no-gpus.json"
    no_gpus.write_text("[]")
    runtime = connect(RuntimeConfig(data_dir=session_data, num_cpus=2, gpu_inventory=no_gpus))
    yield runtime
    runtime.close()


@contextlib.contextmanager
def private_cluster(
    prefix: str, head_env: dict[str, str] | None = None
) -> Iterator[tuple[Any, Path]]:
    """A multi-node ``ray.cluster_utils.Cluster`` with a head without CPUs or GPUs, in a
    temp dir of its own: short (Ray's socket paths) and private (the Cluster writes its
    address file under ``RAY_TMPDIR``: not /tmp/ray). ``head_env``: the head's node
    settings (``FRAMEFLEET_*``, as ``node start`` sets them). Yields (cluster, temp dir);
    shut down and removed after."""
    from ray.cluster_utils import Cluster

    temp = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    old_tmpdir = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = str(temp)
    (temp / "ray").mkdir()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "num_gpus": 0,
            "temp_dir": str(temp / "ray"),
            "include_dashboard": False,
            "object_store_memory": 128 * 2**20,
            **({"env_vars": head_env} if head_env else {}),
        },
    )
    try:
        yield cluster, temp
    finally:
        cluster.shutdown()
        if old_tmpdir is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = old_tmpdir
        shutil.rmtree(temp, ignore_errors=True)


@contextlib.contextmanager
def one_core_workers(
    prefix: str, root: Path, name: str, workers: int = 3, max_attempts: int = 3
) -> Iterator[tuple[Fleet, Any]]:
    """A :func:`private_cluster` with ``workers`` workers of one core each, and a fleet
    whose media root is ``root`` (its data in ``root/.data``); yields (fleet, cluster)."""
    with private_cluster(prefix) as (cluster, _):
        for _ in range(workers):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        data = root / ".data"
        fleet = Fleet.connect(
            RuntimeConfig(data_dir=data, address=cluster.address, coordinator_name=name),
            CoordinatorConfig(
                data_dir=data,
                media_roots=(root,),
                max_attempts=max_attempts,
                retry_backoff_s=0.2,
                encoder_idle_s=5.0,
                node_refresh_s=1.0,
            ),
        )
        try:
            yield fleet, cluster
        finally:
            fleet.shutdown_coordinator()
            fleet.close()


def start_fleet(data_dir: Path, name: str, **config: object) -> Fleet:
    settings = {"max_attempts": 2, "retry_backoff_s": 0.2, "encoder_idle_s": 5.0} | config
    return Fleet.connect(
        RuntimeConfig(data_dir=data_dir, coordinator_name=name),
        CoordinatorConfig(data_dir=data_dir, **settings),  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def fleet(
    ray_runtime: Runtime, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Fleet]:
    name = "coordinator-" + request.module.__name__.rsplit(".", 1)[-1]
    f = start_fleet(tmp_path_factory.mktemp("coordinator"), name)
    yield f
    f.shutdown_coordinator()


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of small generated clips, made once."""
    folder = tmp_path_factory.mktemp("media")
    make_clip(folder / "clip.mp4", seconds=2)
    return folder


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


@pytest.fixture(scope="session")
def s3() -> Iterator[ObjectServer]:
    """An S3 API on 127.0.0.1 (moto's server mode) with a bucket ``media``."""
    server = ObjectServer().start()
    server.bucket("media")
    yield server
    server.stop()
