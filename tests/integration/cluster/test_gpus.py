"""GPU inventory (static and NVML), NVENC capability detection and node registration.

The ``gpu`` tests read the real driver; they run where NVML finds a GPU (see the
README: on the lent H100/H200 device, ``make test-gpu``) and skip, saying so, without
one. The tests of what happens without a driver skip, saying so, where there is one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from cluster.errors import InventoryError
from cluster.model.capability import CodecState
from cluster.nodes.capability import detect, trial_encode
from cluster.nodes.gpus import NoGpus, NvmlSource, StaticSource, gpu_source
from cluster.nodes.register import detect_local, label_value
from tests.helpers import DRIVER_REASON, NO_DRIVER_REASON, REQUIRE_GPU, nvidia_driver_present

L4: dict[str, Any] = {
    "uuid": "GPU-5f2c0d1e-aaaa-bbbb-cccc-000000000001",
    "name": "NVIDIA L4",
    "memory_total_mb": 23034,
    "nvenc_codecs": ["h264", "hevc", "av1"],
    "max_encoder_sessions": 0,
}
T4: dict[str, Any] = {
    "uuid": "GPU-5f2c0d1e-aaaa-bbbb-cccc-000000000002",
    "name": "Tesla T4",
    "memory_total_mb": 15360,
    "nvenc_codecs": ["h264"],
}


def write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_static_inventory_declares_gpus_and_trusts_their_codecs(tmp_path: Path) -> None:
    source = StaticSource(write(tmp_path / "gpus.json", [L4, T4]))
    gpus = source.read()
    assert [(g.index, g.name, g.memory_total_mb) for g in gpus] == [
        (0, "NVIDIA L4", 23034),
        (1, "Tesla T4", 15360),
    ]
    assert gpus[1].declared_codecs == ("h264",) and gpus[1].max_encoder_sessions == 0
    # No trial encode for declared GPUs (an ffmpeg that cannot run would fail one)...
    caps = detect(gpus, listed=frozenset({"h264_nvenc", "hevc_nvenc"}), ffmpeg="/nonexistent")
    assert caps[T4["uuid"]]["h264"].state is CodecState.DECLARED
    assert caps[T4["uuid"]]["hevc"].state is CodecState.UNAVAILABLE
    assert caps[L4["uuid"]]["hevc"].state is CodecState.DECLARED
    # ...but the node's own ffmpeg must have the NVENC encoder (Debian's has no av1_nvenc).
    assert caps[L4["uuid"]]["av1"].state is CodecState.UNAVAILABLE
    assert caps[L4["uuid"]]["av1"].reason == "this node's ffmpeg has no av1_nvenc"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[{", "not valid JSON (line 1"),
        (json.dumps({"uuid": "x"}), "must be a JSON list of GPUs"),
        (json.dumps([{**L4, "vram": 1}]), "unknown field(s) vram"),
        (json.dumps([{**L4, "uuid": "GPU 0"}]), "uuid must be letters, digits and dashes"),
        (json.dumps([{**L4, "memory_total_mb": "24G"}]), "memory_total_mb must be a positive"),
        (json.dumps([{**L4, "nvenc_codecs": ["vp9"]}]), "nvenc_codecs must be a list drawn"),
        (json.dumps([{**L4, "max_encoder_sessions": -1}]), "max_encoder_sessions must be 0"),
        (json.dumps([L4, L4]), "is listed twice"),
    ],
)
def test_a_bad_inventory_says_what_is_wrong_in_one_line(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "gpus.json"
    path.write_text(content)
    with pytest.raises(InventoryError) as exc:
        StaticSource(path)
    assert message in str(exc.value) and str(path) in str(exc.value)
    assert "\n" not in str(exc.value)


def test_missing_inventory_file(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="no such file; check --gpu-inventory"):
        gpu_source(tmp_path / "nope.json")


def test_the_inventory_variable_names_the_static_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRAMEFLEET_GPU_INVENTORY", str(write(tmp_path / "g.json", [T4])))
    source = gpu_source()
    assert source.kind == "static" and [g.name for g in source.read()] == ["Tesla T4"]


def test_registration_gives_ray_per_gpu_memory_and_sessions_and_labels(tmp_path: Path) -> None:
    consumer = {
        "uuid": "GPU-0000-3090",
        "name": "NVIDIA GeForce RTX 3090",
        "memory_total_mb": 24576,
        "nvenc_codecs": ["h264", "hevc"],
        "max_encoder_sessions": 8,
    }
    node = detect_local(write(tmp_path / "g.json", [L4, consumer]), num_cpus=16)
    reg = node.registration
    assert reg.num_gpus == 2 and reg.num_cpus == 16
    assert reg.resources == {
        f"ff_gpu_mem_{L4['uuid']}": 23034.0,
        f"ff_nvenc_{L4['uuid']}": 256.0,  # no cap: plenty of slots
        "ff_gpu_mem_GPU-0000-3090": 24576.0,
        "ff_nvenc_GPU-0000-3090": 8.0,
    }
    assert reg.labels == {
        "framefleet.io/gpu-model": "mixed",
        "framefleet.io/gpu-count": "2",
        "framefleet.io/nvenc-h264": "true",
        "framefleet.io/nvenc-hevc": "true",
        # The L4 declares av1 too, but this machine's ffmpeg (Debian's 5.1) has no av1_nvenc.
    }
    args = reg.ray_start_args()
    assert "--num-gpus=2" in args and "--num-cpus=16" in args
    assert any(a.startswith("--labels=framefleet.io/gpu-count=2,") for a in args)
    assert label_value("NVIDIA GeForce RTX 4090 (24 GB)") == "NVIDIA-GeForce-RTX-4090-24-GB"


@pytest.mark.skipif(nvidia_driver_present(), reason=NO_DRIVER_REASON)
def test_cpu_only_node_registers_no_gpus_when_nvml_has_no_driver() -> None:
    # Without an NVIDIA driver NVML raises LibraryNotFound, which means CPU-only.
    source = gpu_source()
    assert isinstance(source, NoGpus)
    assert "LibraryNotFound" in source.reason or "DriverNotLoaded" in source.reason
    node = detect_local()
    assert node.gpus == [] and node.registration.num_gpus == 0
    assert node.registration.resources == {} and node.registration.labels == {}


@pytest.mark.skipif(nvidia_driver_present(), reason=NO_DRIVER_REASON)
def test_a_trial_encode_without_a_driver_fails_with_the_reason(tmp_path: Path) -> None:
    # The real trial path: Debian's ffmpeg lists h264_nvenc, but without a driver it
    # cannot load libcuda, and detection must say so instead of trusting the list.
    [gpu] = StaticSource(
        write(tmp_path / "g.json", [{**L4, "name": "NVIDIA H100 80GB HBM3"}])
    ).read()
    cap = trial_encode("h264", gpu)
    assert cap.state is CodecState.FAILED
    assert "no NVIDIA driver (libcuda.so.1 cannot be loaded)" in cap.reason
    assert "the H100 has no NVENC hardware" in cap.reason


needs_gpu = pytest.mark.skipif(
    not nvidia_driver_present() and not os.environ.get(REQUIRE_GPU), reason=DRIVER_REASON
)
"""``make test-gpu`` sets ``REQUIRE_GPU``: there, no GPU is a failure, not a skip."""


@pytest.mark.gpu
@needs_gpu
def test_nvml_reads_every_gpu_keyed_by_uuid() -> None:
    source = NvmlSource()
    try:
        gpus = source.read()
    finally:
        source.close()
    assert gpus, "NVML found no GPU"
    for g in gpus:
        print(json.dumps(g.to_dict()))
        assert g.uuid.startswith(("GPU-", "MIG-")) and g.memory_total_mb > 0
        assert g.memory_free_mb is not None and g.memory_free_mb <= g.memory_total_mb
        assert g.pci_bus_id


@pytest.mark.gpu
@needs_gpu
def test_detection_proves_each_nvenc_codec_by_a_trial_encode() -> None:
    node = detect_local()
    assert node.source == "nvml" and node.gpus
    for g in node.gpus:
        caps = node.codecs[g.uuid]
        print(g.name, {c: (str(v.state), v.reason) for c, v in caps.items()})
        # Every codec ended: proven by a trial, or failed (or absent from this ffmpeg)
        # with the reason; nothing is pending or merely declared.
        for codec, cap in caps.items():
            if cap.state is CodecState.UNAVAILABLE:
                assert cap.reason == f"this node's ffmpeg has no {codec}_nvenc", cap
            else:
                assert cap.state in (CodecState.VERIFIED, CodecState.FAILED), (codec, cap)
                assert cap.reason, (codec, cap)
        if any(m in g.name for m in ("A100", "H100", "H200")):
            # These GPUs have no NVENC: detection must say so, and register no codec.
            assert all(not v.state.usable for v in caps.values())
            assert not any("nvenc" in k for k in node.registration.labels)
