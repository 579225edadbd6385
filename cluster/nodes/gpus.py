"""What GPUs a node has: NVML readings, or a static inventory file, behind one interface.

A :class:`GpuSource` returns :class:`GpuReading` s keyed by UUID (NVML ignores
``CUDA_VISIBLE_DEVICES``, so indexes are only labels). :class:`NvmlSource` reads the
driver through nvidia-ml-py; :class:`StaticSource` reads a JSON file declaring GPUs
for simulation, tests and machines where NVML is unavailable; :class:`NoGpus` is a
CPU-only node. :func:`gpu_source` picks one.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from cluster.errors import InventoryError
from cluster.model.jobs import CODECS
from cluster.nodes.environ import env_setting

log = logging.getLogger("framefleet.gpus")

INVENTORY_ENV = "FRAMEFLEET_GPU_INVENTORY"
CONSUMER_SESSION_CAP = 8
"""NVENC sessions a GeForce/TITAN driver allows at once (8 since driver 550; was 3, then 5).
Data-centre and professional GPUs have no cap."""
_CONSUMER = re.compile(r"geforce|titan", re.IGNORECASE)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One GPU as its node sees it now. Fields NVML cannot report on this GPU are ``None``."""

    uuid: str
    index: int
    name: str
    memory_total_mb: int
    memory_free_mb: int | None = None
    memory_used_mb: int | None = None
    pci_bus_id: str | None = None
    utilization_gpu: float | None = None
    """Percent, 0-100."""
    utilization_encoder: float | None = None
    utilization_decoder: float | None = None
    encoder_sessions: int | None = None
    """NVENC sessions open on this GPU, by any process."""
    encoder_fps: float | None = None
    mig_mode: bool | None = None
    max_encoder_sessions: int = 0
    """0 = no cap."""
    declared_codecs: tuple[str, ...] | None = None
    """Static inventories only: NVENC codecs declared (trusted without a trial encode)."""
    source: str = "nvml"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["declared_codecs"] = (
            list(self.declared_codecs) if self.declared_codecs is not None else None
        )
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GpuReading:
        codecs = data.get("declared_codecs")
        return cls(**{**data, "declared_codecs": tuple(codecs) if codecs is not None else None})


class GpuSource(Protocol):
    kind: str

    def read(self) -> list[GpuReading]: ...
    def close(self) -> None: ...


@dataclass(slots=True)
class NoGpus:
    """A CPU-only node."""

    reason: str = "no GPU source"
    kind: str = "none"

    def read(self) -> list[GpuReading]:
        return []

    def close(self) -> None:
        return None


# ---- static inventory --------------------------------------------------------------------


@dataclass(slots=True)
class StaticSource:
    """GPUs declared in a JSON file: ``[{"uuid", "name", "memory_total_mb", "nvenc_codecs",
    "max_encoder_sessions"}]``. Declared codecs are trusted: no trial encode."""

    path: Path
    gpus: list[GpuReading] = field(default_factory=list)
    kind: str = "static"

    def __post_init__(self) -> None:
        self.gpus = load_inventory(self.path)

    def read(self) -> list[GpuReading]:
        return list(self.gpus)

    def close(self) -> None:
        return None


_FIELDS = {"uuid", "name", "memory_total_mb", "nvenc_codecs", "max_encoder_sessions"}
_UUID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")


def load_inventory(path: str | os.PathLike[str]) -> list[GpuReading]:
    """Parse and check a static inventory file; each problem is one clear line."""
    p = Path(path)
    where = f"GPU inventory {p}"
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError as exc:
        raise InventoryError(f"{where}: no such file; check --gpu-inventory") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(f"{where}: cannot be read ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise InventoryError(f"{where}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    if not isinstance(data, list):
        raise InventoryError(f"{where}: must be a JSON list of GPUs, one object each")
    gpus: list[GpuReading] = []
    for i, item in enumerate(data):
        at = f"{where}, GPU {i}"
        if not isinstance(item, dict):
            raise InventoryError(f"{at}: must be an object with uuid, name, memory_total_mb")
        unknown = set(item) - _FIELDS
        if unknown:
            raise InventoryError(
                f"{at}: unknown field(s) {', '.join(sorted(unknown))}; "
                f"allowed: {', '.join(sorted(_FIELDS))}"
            )
        uuid, name = item.get("uuid"), item.get("name")
        if not isinstance(uuid, str) or not _UUID.match(uuid):
            raise InventoryError(
                f"{at}: uuid must be letters, digits and dashes (like GPU-5f2c...), "
                "at most 63 characters"
            )
        if not isinstance(name, str) or not name.strip():
            raise InventoryError(f"{at}: name must be a non-empty string")
        memory = item.get("memory_total_mb")
        if not isinstance(memory, int) or isinstance(memory, bool) or memory <= 0:
            raise InventoryError(f"{at}: memory_total_mb must be a positive integer (MiB)")
        codecs = item.get("nvenc_codecs", [])
        if not isinstance(codecs, list) or any(c not in CODECS for c in codecs):
            raise InventoryError(f"{at}: nvenc_codecs must be a list drawn from {list(CODECS)}")
        cap = item.get("max_encoder_sessions", 0)
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 0:
            raise InventoryError(f"{at}: max_encoder_sessions must be 0 (no cap) or more")
        if any(g.uuid == uuid for g in gpus):
            raise InventoryError(f"{at}: uuid {uuid} is listed twice")
        gpus.append(
            GpuReading(
                uuid=uuid,
                index=i,
                name=name.strip(),
                memory_total_mb=memory,
                max_encoder_sessions=cap,
                declared_codecs=tuple(dict.fromkeys(codecs)),
                source="static",
            )
        )
    return gpus


# ---- NVML -----------------------------------------------------------------------------------


class NvmlUnavailable(Exception):
    """No NVIDIA driver or library on this node: a CPU-only node."""


def _nvml() -> Any:
    import pynvml  # imported lazily: a CPU-only node never needs it

    return pynvml


def _absent_errors(pynvml: Any) -> tuple[type[BaseException], ...]:
    names = ("NVMLError_LibraryNotFound", "NVMLError_DriverNotLoaded", "NVMLError_NoPermission")
    return tuple(getattr(pynvml, n) for n in names if hasattr(pynvml, n))


def session_cap_for(name: str) -> int:
    """The driver's NVENC session cap for a GPU model (0 = none)."""
    return CONSUMER_SESSION_CAP if _CONSUMER.search(name) else 0


class NvmlSource:
    """Live readings from the NVIDIA driver. Raises :class:`NvmlUnavailable` without one."""

    kind = "nvml"

    def __init__(self) -> None:
        self._pynvml = pynvml = _nvml()
        try:
            pynvml.nvmlInit()
        except _absent_errors(pynvml) as exc:
            raise NvmlUnavailable(f"{type(exc).__name__}: {exc}") from exc
        except pynvml.NVMLError as exc:
            raise NvmlUnavailable(f"NVML failed to start: {exc}") from exc
        self.driver_version = self._opt(pynvml.nvmlSystemGetDriverVersion)

    def _opt(self, fn: Callable[..., T], *args: Any) -> T | None:
        """``fn(*args)``, or ``None`` for a query this GPU does not support."""
        try:
            return fn(*args)
        except self._pynvml.NVMLError_NotSupported:
            return None
        except self._pynvml.NVMLError as exc:
            log.debug("NVML %s failed: %s", getattr(fn, "__name__", fn), exc)
            return None

    def read(self) -> list[GpuReading]:
        nv = self._pynvml
        readings = []
        for index in range(nv.nvmlDeviceGetCount()):
            h = nv.nvmlDeviceGetHandleByIndex(index)
            name = _text(nv.nvmlDeviceGetName(h))
            memory = self._opt(nv.nvmlDeviceGetMemoryInfo, h)
            pci = self._opt(nv.nvmlDeviceGetPciInfo, h)
            util = self._opt(nv.nvmlDeviceGetUtilizationRates, h)
            enc = self._opt(nv.nvmlDeviceGetEncoderUtilization, h)
            dec = self._opt(nv.nvmlDeviceGetDecoderUtilization, h)
            stats = self._opt(nv.nvmlDeviceGetEncoderStats, h)
            mig = self._opt(nv.nvmlDeviceGetMigMode, h)
            mib = 1024 * 1024
            readings.append(
                GpuReading(
                    uuid=_text(nv.nvmlDeviceGetUUID(h)),
                    index=index,
                    name=name,
                    memory_total_mb=int(memory.total // mib) if memory else 0,
                    memory_free_mb=int(memory.free // mib) if memory else None,
                    memory_used_mb=int(memory.used // mib) if memory else None,
                    pci_bus_id=_text(pci.busId) if pci else None,
                    utilization_gpu=float(util.gpu) if util else None,
                    utilization_encoder=float(enc[0]) if enc else None,
                    utilization_decoder=float(dec[0]) if dec else None,
                    encoder_sessions=int(stats[0]) if stats else None,
                    encoder_fps=float(stats[1]) if stats else None,
                    mig_mode=bool(mig[0]) if mig else None,
                    max_encoder_sessions=session_cap_for(name),
                )
            )
        return readings

    def process_memory_mb(self) -> dict[int, int]:
        """GPU memory (MiB) per process id across GPUs, from
        ``nvmlDeviceGetComputeRunningProcesses``: how to measure what an encode costs."""
        nv = self._pynvml
        used: dict[int, int] = {}
        for index in range(nv.nvmlDeviceGetCount()):
            h = nv.nvmlDeviceGetHandleByIndex(index)
            for proc in self._opt(nv.nvmlDeviceGetComputeRunningProcesses, h) or []:
                if proc.usedGpuMemory is not None:
                    used[proc.pid] = used.get(proc.pid, 0) + int(proc.usedGpuMemory // 2**20)
        return used

    def close(self) -> None:
        self._opt(self._pynvml.nvmlShutdown)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def gpu_source(inventory: str | os.PathLike[str] | None = None) -> GpuSource:
    """The node's GPU source: a static inventory (argument, else ``FRAMEFLEET_GPU_INVENTORY``),
    else NVML, else none. A missing driver is logged once and means a CPU-only node."""
    path = inventory or env_setting(INVENTORY_ENV)
    if path:
        return StaticSource(Path(path))
    try:
        return NvmlSource()
    except NvmlUnavailable as exc:
        log.info("no NVIDIA driver on this node (%s): CPU-only", exc)
        return NoGpus(reason=str(exc))
    except ImportError as exc:  # nvidia-ml-py is a dependency; only a broken install
        log.warning("nvidia-ml-py cannot be imported (%s): CPU-only", exc)
        return NoGpus(reason=str(exc))
