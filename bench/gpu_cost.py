"""Measure what one NVENC encode costs in GPU memory, for the cost model.

For each codec and frame size, runs one real ffmpeg NVENC encode of a generated
source (CPU decode and upload, as framefleet's jobs run) on one GPU, and samples
``nvmlDeviceGetComputeRunningProcesses`` every 50 ms for the ffmpeg process's
``usedGpuMemory``. Prints the peak per case and a cost-model JSON to save as a file
and pass with ``--cost-model`` (see cluster/costs.py).

    .venv/bin/python bench/gpu_cost.py [--gpu UUID] [--seconds 5]

Needs an NVIDIA GPU with NVENC and its driver. On a machine without (or on an A100,
H100 or H200, which have no NVENC) it says so and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cluster.nodes.capability import nvenc_encoder, trial_encode
from cluster.nodes.gpus import NvmlSource, NvmlUnavailable
from cluster.scheduling.costs import ANY, P720, P1080, P1440, P2160

SIZES = {P720: (1280, 720), P1080: (1920, 1080), P1440: (2560, 1440), P2160: (3840, 2160)}


def measure(source: NvmlSource, uuid: str, codec: str, w: int, h: int, seconds: float) -> int:
    argv = [
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
        "-f", "lavfi", "-i", f"testsrc2=s={w}x{h}:r=30:d={seconds}",
        "-c:v", nvenc_encoder(codec), "-gpu", "0", "-f", "null", "-",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, env={**os.environ, "CUDA_VISIBLE_DEVICES": uuid})
    peak = 0
    while proc.poll() is None:
        peak = max(peak, source.process_memory_mb().get(proc.pid, 0))
        time.sleep(0.05)
    if proc.returncode != 0:
        raise RuntimeError(f"{codec} {w}x{h}: ffmpeg exited {proc.returncode}")
    return peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpu", help="GPU UUID (default: the first)")
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    try:
        source = NvmlSource()
    except NvmlUnavailable as exc:
        print(f"gpu_cost: no NVIDIA driver here ({exc}); run it on a GPU node", file=sys.stderr)
        sys.exit(2)
    gpus = source.read()
    gpu = next((g for g in gpus if g.uuid == args.gpu), gpus[0] if gpus else None)
    if gpu is None:
        print("gpu_cost: NVML sees no GPU", file=sys.stderr)
        sys.exit(2)
    table: dict[str, list[list[int]]] = {}
    for codec in ("h264", "hevc", "av1"):
        cap = trial_encode(codec, gpu)
        if not cap.state.usable:
            print(f"{gpu.name} {codec}: skipped, {cap.reason}")
            continue
        rows = []
        for limit, (w, h) in SIZES.items():
            mb = measure(source, gpu.uuid, codec, w, h, args.seconds)
            print(f"{gpu.name} {codec} {w}x{h}: peak {mb} MiB")
            rows.append([limit, mb])
        rows.append([ANY, rows[-1][1] * 2])  # beyond 4K: extrapolated, adjust if you encode 8K
        table[codec] = rows
    source.close()
    if not table:
        print(f"gpu_cost: {gpu.name} has no usable NVENC codec", file=sys.stderr)
        sys.exit(2)
    print(json.dumps({"gpu_memory_mb": table}, indent=2))


if __name__ == "__main__":
    main()
