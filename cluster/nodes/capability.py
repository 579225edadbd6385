"""Which NVENC codecs each GPU can really encode.

``ffmpeg -encoders`` lists ``h264_nvenc`` on any Debian ffmpeg, GPU or not, so it proves
nothing. For GPUs NVML reports, each codec is proven by a one-frame trial encode on that
GPU (``CUDA_VISIBLE_DEVICES=<uuid>`` and ``-gpu 0``, as real encodes run); the answer
is cached for the life of the node agent that asked. Codecs a static inventory declares
are trusted without a trial, so placement can be exercised on machines without GPUs.
"""

from __future__ import annotations

import os
import subprocess

from cluster.media.encoders import CATALOG, ffmpeg_encoders
from cluster.media.runner import nvenc_failure_reason
from cluster.model.capability import Capability, CodecState
from cluster.model.jobs import CODECS
from cluster.nodes.gpus import GpuReading

TRIAL_TIMEOUT_S = 30.0
NO_NVENC_MODELS = ("A100", "H100", "H200", "H20", "H800", "A800", "A30", "B100", "B200", "GB200")
"""Data-centre compute GPUs built without NVENC, named in the reason when a trial fails."""


def nvenc_encoder(codec: str) -> str:
    return next(e.name for e in CATALOG if e.codec == codec and e.is_nvenc)


def trial_argv(codec: str, ffmpeg: str = "ffmpeg") -> list[str]:
    """One 256x144 black frame through ``<codec>_nvenc`` on device 0, to nowhere."""
    return [
        ffmpeg,
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-f",
        "lavfi",
        "-i",
        "color=c=black:s=256x144:r=25:d=0.04",
        "-frames:v",
        "1",
        "-c:v",
        nvenc_encoder(codec),
        "-gpu",
        "0",
        "-f",
        "null",
        "-",
    ]


def trial_encode(codec: str, gpu: GpuReading, ffmpeg: str = "ffmpeg") -> Capability:
    """Prove ``codec`` on ``gpu`` by encoding one frame there with this node's ffmpeg."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu.uuid}
    try:
        done = subprocess.run(
            trial_argv(codec, ffmpeg),
            env=env,
            capture_output=True,
            timeout=TRIAL_TIMEOUT_S,
            check=False,
            text=True,
            errors="replace",
        )
    except subprocess.TimeoutExpired:
        return Capability(CodecState.FAILED, f"trial encode took over {TRIAL_TIMEOUT_S:g} s")
    except FileNotFoundError:
        return Capability(CodecState.UNAVAILABLE, "ffmpeg is not installed on this node")
    if done.returncode == 0:
        return Capability(CodecState.VERIFIED, "one-frame trial encode succeeded")
    why = nvenc_failure_reason(done.stderr)
    if why is None:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        why = lines[-1].strip() if lines else f"ffmpeg exited {done.returncode}"
    model = next((m for m in NO_NVENC_MODELS if m in gpu.name.split()), None)
    if model:
        why = f"the {model} has no NVENC hardware ({why})"
    return Capability(CodecState.FAILED, f"trial encode failed: {why}")


def detect(
    gpus: list[GpuReading], listed: frozenset[str] | None = None, ffmpeg: str = "ffmpeg"
) -> dict[str, dict[str, Capability]]:
    """``{uuid: {codec: Capability}}`` for every GPU and codec.

    A codec needs an NVENC encoder in this node's ffmpeg (``listed``: its encoder names);
    then declared (static) GPUs are trusted, and NVML GPUs get a trial encode.
    """
    listed = ffmpeg_encoders() if listed is None else listed
    result: dict[str, dict[str, Capability]] = {}
    for gpu in gpus:
        caps: dict[str, Capability] = {}
        for codec in CODECS:
            declared = gpu.declared_codecs
            if declared is not None and codec not in declared:
                caps[codec] = Capability(CodecState.UNAVAILABLE, "not declared in the inventory")
            elif nvenc_encoder(codec) not in listed:
                caps[codec] = Capability(
                    CodecState.UNAVAILABLE, f"this node's ffmpeg has no {nvenc_encoder(codec)}"
                )
            elif declared is not None:
                caps[codec] = Capability(
                    CodecState.DECLARED, "declared in the static GPU inventory"
                )
            else:
                caps[codec] = trial_encode(codec, gpu, ffmpeg)
        result[gpu.uuid] = caps
    return result
