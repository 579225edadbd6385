"""The pure placement core."""

from __future__ import annotations

from cluster import Hardware, JobKind, Policy
from cluster.placement import Demand, NodeState, place


def node(name: str, cpus: float, used: float = 0, running: int = 0, **kw) -> NodeState:  # type: ignore[no-untyped-def]
    return NodeState(name, f"10.0.0.{len(name)}", cpus, cpus_used=used, running=running, **kw)


def h264(width: int = 640, height: int = 360, hw: Hardware = Hardware.CPU) -> Demand:
    return Demand(JobKind.TRANSCODE, hw, "h264", width, height)


def test_cores_by_codec_and_size_capped_by_the_node() -> None:
    assert h264().cpu_cores() == 1
    assert h264(1920, 1080).cpu_cores() == 2
    assert Demand(JobKind.TRANSCODE, Hardware.CPU, "hevc", 3840, 2160).cpu_cores() == 8
    small = place(Demand(JobKind.TRANSCODE, Hardware.CPU, "hevc", 3840, 2160), [node("a", 2)])
    assert small is not None and small.cpus == 2


def test_pack_fills_the_busiest_node_that_fits_and_spread_the_emptiest() -> None:
    nodes = [node("a", 8, used=6, running=3), node("bb", 8, used=1, running=1)]
    packed = place(h264(), nodes, Policy.PACK)
    spread = place(h264(), nodes, Policy.SPREAD)
    assert packed is not None and packed.node_id == "a"
    assert spread is not None and spread.node_id == "bb"
    assert "1 of 2 free cores" in packed.reason and "pack fit" in packed.reason


def test_nothing_fits_when_cores_or_the_job_cap_run_out() -> None:
    assert place(h264(1920, 1080), [node("a", 4, used=3)]) is None
    assert place(h264(), [node("a", 4, running=2, max_jobs=2)]) is None
    assert place(h264(), [node("a", 4, running=1, max_jobs=2)]) is not None


def test_gpu_jobs_go_only_to_nodes_with_gpus_and_auto_uses_cpu() -> None:
    nodes = [node("cpu", 16), node("gpu", 4, gpus=1.0)]
    gpu = place(h264(hw=Hardware.GPU), nodes)
    assert gpu is not None and gpu.node_id == "gpu" and gpu.gpus > 0
    assert "NVENC" in gpu.reason
    auto = place(h264(hw=Hardware.AUTO), nodes)
    assert auto is not None and auto.hardware is Hardware.CPU and auto.gpus == 0
    assert place(h264(hw=Hardware.GPU), [node("cpu", 16)]) is None
