"""What one job is expected to cost: CPU cores, GPU memory per NVENC encode, host memory,
and how fast it should at least run.

The tables are estimates the scheduler reserves against and the watchdog judges by; they
are data, and one JSON file can replace any of them (``CostModel.from_file``; the CLI
reads ``FRAMEFLEET_COST_MODEL``).

GPU memory per NVENC encode. An ffmpeg process that encodes with NVENC (frames decoded
on the CPU and uploaded) holds one CUDA context plus NVENC's surfaces:

* the CUDA context: 150-300 MiB per process on current drivers with lazy module
  loading (NVIDIA's CUDA documentation on CUDA_MODULE_LOADING; the figure
  ``nvidia-smi`` shows for an ffmpeg process that has only opened a context);
* input and reconstruction surfaces: NV12 frames of ``w*h*1.5`` bytes. NVENC keeps
  the input queue (ffmpeg's ``-surfaces``, up to 32 by default with lookahead),
  reference frames and, for HEVC/AV1, larger reference and motion buffers: about
  100 MiB at 1080p and about 400 MiB at 2160p for H.264, a quarter to a half more
  for HEVC and AV1.

The table rounds context + surfaces up to the next 64 MiB, so reserving it keeps a
GPU from being over-committed. Measure your own drivers and GPUs with
``bench/gpu_cost.py`` (it samples ``nvmlDeviceGetComputeRunningProcesses`` for the
ffmpeg process) and put the figures in a cost-model file.

CPU cores per software encode: libx264 at preset medium sustains real time at 1080p on
about two modern cores; x265 and SVT-AV1 need roughly twice that. A job never asks for
more cores than its node has. A GPU encode still demuxes, decodes and scales on the
CPU: one core.

Memory (host RAM) per job: an encoder's lookahead and reference frames grow with the
frame size (x264 medium ~0.5 GiB at 1080p; x265 and SVT-AV1 about twice that, more at
4K); a decode-only job (validate, probe) or a GPU encode holds a few decoded frames. A
thumbnail job that seeks holds one decoder per image (at most 8; more are taken from
one decode), each about 16 frames of the input's size.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster.errors import CostModelError
from cluster.media.argv import SEEK_INPUTS_MAX
from cluster.model.jobs import Hardware, JobKind, JobSpec
from cluster.model.media import MediaInfo

Table = dict[str, list[tuple[int, float]]]
"""codec -> [(pixels up to, amount)], ascending."""

P720, P1080, P1440, P2160 = 1280 * 720, 1920 * 1080, 2560 * 1440, 3840 * 2160
ANY = 1 << 62

GPU_MEMORY_MB: Table = {
    "h264": [(P720, 256), (P1080, 384), (P1440, 512), (P2160, 704), (ANY, 1280)],
    "hevc": [(P720, 320), (P1080, 448), (P1440, 576), (P2160, 896), (ANY, 1536)],
    "av1": [(P720, 320), (P1080, 448), (P1440, 640), (P2160, 960), (ANY, 1664)],
}
CPU_CORES: Table = {
    "h264": [(P720, 1), (P1080, 2), (P1440, 3), (ANY, 4)],
    "hevc": [(P720, 2), (P1080, 4), (ANY, 8)],
    "av1": [(P720, 2), (P1080, 4), (ANY, 8)],
}
NVENC_CPU_CORES = 1.0
LIGHT_JOB_CORES = 1.0
"""validate (decode only) and thumbnail jobs."""
SCORE_CORES: list[tuple[int, float]] = [(P1080, 1), (ANY, 2)]
"""A quality score by the reference's size: two decodes, a scale and libvmaf run nearly
frame by frame (a second core gave 5 % at 720p here), so a long file is scored in
ranges, a core each, rather than with more threads."""
SCORE_SPEED = 1.0
"""How many times real time a score runs at least at 1080p on the cores it is given."""
MEMORY_MB: Table = {
    "h264": [(P720, 384), (P1080, 768), (P1440, 1024), (P2160, 2048), (ANY, 4096)],
    "hevc": [(P720, 512), (P1080, 1024), (P1440, 1536), (P2160, 3072), (ANY, 6144)],
    "av1": [(P720, 768), (P1080, 1536), (P1440, 2048), (P2160, 4096), (ANY, 8192)],
}
LIGHT_JOB_MEMORY_MB = 512
"""validate and GPU encodes (decoding on the CPU), and the base of a thumbnail job."""
DECODER_FRAMES = 16
"""Decoded frames one seeking thumbnail input holds (references and queue)."""
SAFETY_MARGIN_MB = 512
"""GPU memory the scheduler leaves free on every GPU (the driver, other processes' growth)."""
SPEEDS: dict[str, dict[str, float]] = {
    "cpu": {"h264": 1.0, "hevc": 0.3, "av1": 0.3},
    "gpu": {"h264": 4.0, "hevc": 4.0, "av1": 4.0},
}
"""How many times real time an encode runs at least, at 1080p and preset medium, on the
cores (or the GPU) it is given: conservative, so a slower machine still passes the
watchdog's limits with their headroom. Smaller frames are faster (up to 4x)."""
DECODE_SPEED = 4.0
"""validate and thumbnail jobs only decode."""
PRESET_SPEEDS: dict[str, float] = {"fast": 2.0, "medium": 1.0, "slow": 0.33}
"""A preset's speed relative to ``medium``."""
NETWORK_MIB_S = 100.0
"""What moving media between nodes is assumed to reach (about 1 Gb/s Ethernet), to judge
whether a node that cannot see a job's media should fetch them rather than wait."""


@dataclass(frozen=True, slots=True)
class CostModel:
    gpu_memory_mb: Table = field(default_factory=lambda: dict(GPU_MEMORY_MB))
    cpu_cores: Table = field(default_factory=lambda: dict(CPU_CORES))
    nvenc_cpu_cores: float = NVENC_CPU_CORES
    light_job_cores: float = LIGHT_JOB_CORES
    safety_margin_mb: int = SAFETY_MARGIN_MB
    memory_mb: Table = field(default_factory=lambda: dict(MEMORY_MB))
    light_job_memory_mb: int = LIGHT_JOB_MEMORY_MB
    network_mib_s: float = NETWORK_MIB_S
    speeds: dict[str, dict[str, float]] = field(default_factory=lambda: _copy(SPEEDS))
    decode_speed: float = DECODE_SPEED
    preset_speeds: dict[str, float] = field(default_factory=lambda: dict(PRESET_SPEEDS))

    def memory(self, codec: str, width: int, height: int, *, software: bool) -> int:
        """MiB of host memory for a transcode (``software``: on the CPU) or, with
        ``software=False``, a GPU encode or a decode-only job."""
        if not software:
            return self.light_job_memory_mb
        return int(_lookup(self.memory_mb, codec, width * height))

    def thumbnail_memory(self, images: int, width: int, height: int) -> int:
        """MiB for a thumbnail job: one decoder per seeking image, at most 8."""
        frame_mb = width * height * 1.5 * DECODER_FRAMES / 2**20
        return int(self.light_job_memory_mb + min(images, SEEK_INPUTS_MAX) * frame_mb)

    def gpu_memory(self, codec: str, width: int, height: int) -> int:
        return int(_lookup(self.gpu_memory_mb, codec, width * height))

    def cores(self, codec: str, width: int, height: int) -> float:
        return _lookup(self.cpu_cores, codec, width * height)

    def score_cores(self, width: int, height: int) -> float:
        """Cores a quality score is given (a reference ``width`` x ``height``)."""
        return _lookup({"score": SCORE_CORES}, "score", width * height)

    def speed(
        self, *, transcode: bool, codec: str, gpu: bool, preset: str, width: int, height: int
    ) -> float:
        """How many times real time a job should at least run: a transcode of ``codec``
        on a GPU or on the CPU at ``preset``, or (``transcode=False``) a decode, of frames
        ``width`` x ``height`` (0: unknown, taken as 1080p)."""
        pixels = width * height if width and height else P1080
        if not transcode:
            return self.decode_speed * min(1.0, P1080 / pixels)
        base = self.speeds["gpu" if gpu else "cpu"].get(codec, 0.3)
        return base * self.preset_speeds.get(preset, 1.0) * min(4.0, P1080 / pixels)

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpu_memory_mb": {c: [list(r) for r in rows] for c, rows in self.gpu_memory_mb.items()},
            "cpu_cores": {c: [list(r) for r in rows] for c, rows in self.cpu_cores.items()},
            "nvenc_cpu_cores": self.nvenc_cpu_cores,
            "light_job_cores": self.light_job_cores,
            "safety_margin_mb": self.safety_margin_mb,
            "memory_mb": {c: [list(r) for r in rows] for c, rows in self.memory_mb.items()},
            "light_job_memory_mb": self.light_job_memory_mb,
            "network_mib_s": self.network_mib_s,
            "speeds": _copy(self.speeds),
            "decode_speed": self.decode_speed,
            "preset_speeds": dict(self.preset_speeds),
        }

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> CostModel:
        """Defaults overridden by a JSON file with any of :meth:`to_dict`'s keys; a table
        given for a codec replaces that codec's rows."""
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CostModelError(f"cost model {p}: cannot be read as JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise CostModelError(f"cost model {p}: must be a JSON object")
        unknown = set(data) - set(cls().to_dict())
        if unknown:
            raise CostModelError(f"cost model {p}: unknown key(s) {', '.join(sorted(unknown))}")
        base = cls()
        try:
            return cls(
                gpu_memory_mb={**base.gpu_memory_mb, **_table(data.get("gpu_memory_mb", {}))},
                cpu_cores={**base.cpu_cores, **_table(data.get("cpu_cores", {}))},
                nvenc_cpu_cores=float(data.get("nvenc_cpu_cores", base.nvenc_cpu_cores)),
                light_job_cores=float(data.get("light_job_cores", base.light_job_cores)),
                safety_margin_mb=int(data.get("safety_margin_mb", base.safety_margin_mb)),
                memory_mb={**base.memory_mb, **_table(data.get("memory_mb", {}))},
                light_job_memory_mb=int(data.get("light_job_memory_mb", base.light_job_memory_mb)),
                network_mib_s=float(data.get("network_mib_s", base.network_mib_s)),
                speeds=_speeds(base.speeds, data.get("speeds", {})),
                decode_speed=_positive(data.get("decode_speed", base.decode_speed)),
                preset_speeds={
                    **base.preset_speeds,
                    **_rates(data.get("preset_speeds", {}), "preset_speeds"),
                },
            )
        except (TypeError, ValueError) as exc:
            raise CostModelError(f"cost model {p}: {exc}") from exc


def _copy(speeds: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    return {where: dict(codecs) for where, codecs in speeds.items()}


def _positive(raw: Any) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError(f"a speed must be above 0, not {raw!r}")
    return value


def _rates(raw: Any, what: str) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise ValueError(f"{what} must map a name to a speed (times real time)")
    return {str(k): _positive(v) for k, v in raw.items()}


def _speeds(base: dict[str, dict[str, float]], raw: Any) -> dict[str, dict[str, float]]:
    """``base`` with the codecs ``raw`` gives for ``cpu`` and ``gpu`` replaced."""
    if not isinstance(raw, dict) or set(raw) - {"cpu", "gpu"}:
        raise ValueError('speeds must be {"cpu": {codec: speed}, "gpu": {codec: speed}}')
    merged = _copy(base)
    for where, codecs in raw.items():
        merged[where].update(_rates(codecs, f"speeds.{where}"))
    return merged


def _table(raw: Any) -> Table:
    if not isinstance(raw, dict):
        raise ValueError("a table must map codec to [[pixels, amount], ...]")
    table: Table = {}
    for codec, rows in raw.items():
        parsed = sorted((int(px), float(v)) for px, v in rows)
        if not parsed or any(v <= 0 for _, v in parsed):
            raise ValueError(f"{codec}: rows must be [[pixels, positive amount], ...]")
        parsed[-1] = (ANY, parsed[-1][1])  # the last row covers everything larger
        table[codec] = parsed
    return table


def _lookup(table: Table, codec: str, pixels: int) -> float:
    rows = table[codec]
    return next((v for limit, v in rows if pixels <= limit), rows[-1][1])


def expected_speed(spec: JobSpec, hardware: Hardware, media: MediaInfo, costs: CostModel) -> float:
    """How many times real time ``spec`` should at least run on ``hardware`` (the cost
    model's speeds: the watchdog's limits, and whether moving media is worth it)."""
    video = media.video
    width, height = (video.width, video.height) if video else (0, 0)
    scoring = SCORE_SPEED * min(1.0, P1080 / (width * height)) if width and height else SCORE_SPEED
    if spec.kind is JobKind.QUALITY and spec.quality is None:
        return scoring
    probe = spec.kind is JobKind.QUALITY  # a search's probe: a sample encoded, then scored
    speed = costs.speed(
        transcode=spec.kind is JobKind.TRANSCODE or probe,
        codec=spec.codec,
        gpu=hardware is Hardware.GPU,
        preset=str(spec.speed),
        width=width,
        height=height,
    )
    if probe or (spec.kind is JobKind.TRANSCODE and spec.score is not None):  # and scored
        speed = 1.0 / (1.0 / speed + 1.0 / scoring)
    return speed
