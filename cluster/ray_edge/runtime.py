"""Reaching Ray: an embedded local Ray for this process, or an existing cluster."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ray

from cluster.config import RuntimeConfig
from cluster.errors import ClusterUnavailable
from cluster.media.encoders import FFMPEG_ENV
from cluster.nodes.environ import env_setting
from cluster.nodes.gpus import INVENTORY_ENV
from cluster.nodes.register import detect_local
from cluster.ray_edge.token import check_reachable, embedded_token_env
from cluster.storage.scratch import SCRATCH_BYTES_ENV, SCRATCH_ENV

EMBEDDED_OBJECT_STORE_BYTES = 256 * 1024 * 1024
# Ray puts Unix sockets under its temp dir; their paths must stay under ~107 bytes.
MAX_TEMP_DIR_CHARS = 28
LOOPBACK = "127.0.0.1"
"""The embedded node's address: every Ray process of it (GCS, raylet's node and object
managers, workers, agents, the autoscaler's metrics) then binds there, none on ``*``."""
# The autoscaler's metrics server takes a fixed port (44217) unless told otherwise; a
# second embedded Ray on the machine could not have it. Any free port instead.
AUTOSCALER_METRIC_PORT_ENV = "AUTOSCALER_METRIC_PORT"


@dataclass(slots=True)
class Runtime:
    embedded: bool
    """This process started the Ray it uses (and stops it on close)."""
    owned: bool = True
    """This process connected to Ray (and disconnects on close)."""
    temp_dir: Path | None = None

    def close(self) -> None:
        """Stop an embedded Ray (and everything on it); leave a joined cluster running."""
        if self.owned and ray.is_initialized():
            ray.shutdown()
        self._remove()

    def _remove(self) -> None:
        """What is left of an embedded Ray killed, then its folder removed (a process still
        dying would write its logs there again)."""
        if self.temp_dir is None:
            return
        for pid in _pids_under(self.temp_dir):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def kill(self) -> None:
        """Stop an embedded Ray at once without talking to it (it is going down already):
        its processes (GCS, raylet, agents, and the workers with their ffmpeg) killed, its
        folder removed. Ray's own shutdown would wait a minute for a GCS that is gone."""
        if not self.embedded:
            return
        # Ray's exit hook would wait for the GCS again when this process exits.
        atexit.unregister(ray._private.worker.shutdown)
        node = getattr(ray._private.worker, "_global_node", None)
        if node is not None:
            with contextlib.suppress(Exception):
                node.kill_all_processes(check_alive=False, allow_graceful=False, wait=True)
        self._remove()  # the workers, whose raylet is gone


def _pids_under(folder: Path) -> list[int]:
    """This process's descendants, and others of its process group, whose command line
    names ``folder`` (a Ray session's processes and workers name their session directory
    inside it), and no other."""
    parents: dict[int, int] = {}
    group, grouped = os.getpgrp(), set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry)] = int(stat[1])
                if int(stat[2]) == group:  # started by this process's group (a worker
                    grouped.add(int(entry))  # whose raylet died has a new parent)
    mine, todo = grouped - {os.getpid()}, [os.getpid()]
    while todo:
        pid = todo.pop()
        children = [p for p, parent in parents.items() if parent == pid and p not in mine]
        mine.update(children)
        todo += children
    mark, found = os.fsencode(folder) + b"/", []
    for pid in sorted(mine):
        with contextlib.suppress(OSError):
            if mark in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
    return found


def _private_temp_dir(data_dir: Path) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    base = data_dir.resolve()
    parent = base if len(str(base)) < MAX_TEMP_DIR_CHARS else Path(tempfile.gettempdir())
    return Path(tempfile.mkdtemp(prefix="ray-", dir=parent))


@contextlib.contextmanager
def _environ(name: str, value: str | None) -> Iterator[None]:
    """``os.environ[name] = value`` for the block (nothing if ``value`` is None)."""
    if value is None:
        yield
        return
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


@contextlib.contextmanager
def _one_machine() -> Iterator[None]:
    """Ray's one-machine mode (its default on macOS and Windows) for the block.

    On Linux ``ray.init`` swaps a loopback ``_node_ip_address`` for the machine's outward
    address (the route to 8.8.8.8) unless Ray clusters are off; and the node's address
    decides where its processes listen: loopback if it is 127.0.0.1, every interface
    otherwise. Turned off only while the embedded node starts, so that joining a farm
    in this process later still finds the real address.
    """
    from ray._private import ray_constants

    old = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old


def _reset_token_cache() -> None:
    """Ray's token loader caches what it found; make it look again."""
    try:
        from ray._raylet import AuthenticationTokenLoader  # type: ignore[attr-defined]
    except ImportError:  # a Ray without token authentication
        return
    AuthenticationTokenLoader.instance().reset_cache()


def connect(config: RuntimeConfig) -> Runtime:
    """Connect this process to Ray as ``config`` says; a no-op if it already is."""
    if ray.is_initialized():
        return Runtime(embedded=False, owned=False)
    if config.address is None:
        # The embedded node registers what `framefleet node start` would: GPUs and their
        # memory/session resources. Its agent finds a static inventory through the
        # raylet's environment, which Ray's workers inherit.
        local = detect_local(config.gpu_inventory, config.num_cpus, config.ffmpeg)
        reg = local.registration
        temp_dir = _private_temp_dir(config.data_dir)
        inventory = str(Path(config.gpu_inventory).resolve()) if config.gpu_inventory else None
        # A private Ray needs a token too; on a fresh machine it gets one in the data dir
        # (for this process and what it starts), so nothing is needed in the home dir.
        os.environ.update(embedded_token_env(os.environ, config.data_dir))
        _reset_token_cache()
        try:
            scratch = config.scratch or env_setting(SCRATCH_ENV) or config.data_dir / "scratch"
            budget = config.scratch_bytes
            with (
                _environ(INVENTORY_ENV, inventory),
                _environ(FFMPEG_ENV, config.ffmpeg),
                _environ(SCRATCH_ENV, str(Path(scratch).resolve())),
                _environ(SCRATCH_BYTES_ENV, None if budget is None else str(budget)),
                _environ(AUTOSCALER_METRIC_PORT_ENV, "0"),
                _one_machine(),
            ):
                # A one-machine cluster: nothing of it listens beyond loopback. Farm nodes
                # (`framefleet node start --node-ip-address`) keep their address.
                ray.init(
                    address="local",
                    _node_ip_address=LOOPBACK,
                    _temp_dir=str(temp_dir),
                    namespace=config.namespace,
                    num_cpus=reg.num_cpus,
                    num_gpus=reg.num_gpus,
                    resources=reg.resources or None,
                    labels=reg.labels or None,
                    object_store_memory=EMBEDDED_OBJECT_STORE_BYTES,
                    include_dashboard=False,
                    configure_logging=False,
                    log_to_driver=False,
                )
        except Exception as exc:
            shutil.rmtree(temp_dir, ignore_errors=True)
            raise ClusterUnavailable(f"could not start a local Ray: {exc}") from exc
        return Runtime(embedded=True, temp_dir=temp_dir)
    check_reachable(config.address)
    try:
        ray.init(
            address=config.address,
            namespace=config.namespace,
            configure_logging=False,
            log_to_driver=False,
        )
    except Exception as exc:
        with contextlib.suppress(Exception):
            ray.shutdown()
        raise ClusterUnavailable(
            f"cannot reach the Ray cluster at {config.address} ({exc}); "
            "check the address, or leave out --address to run a local one"
        ) from exc
    return Runtime(embedded=False)
