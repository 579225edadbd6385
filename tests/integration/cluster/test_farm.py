"""A real multi-node Ray cluster: a head with no CPUs and four heterogeneous workers.

Workers declare static GPU inventories the way ``framefleet node start --gpu-inventory``
does (the same registration: Ray resources, labels, and the inventory and ffmpeg
variables in the raylet's environment). One worker runs a different ffmpeg build (a
static 9.x from imageio-ffmpeg, which has ``av1_nvenc``; Debian's 5.1 has not). The
declared GPUs are not real, so NVENC fails to open for real (no driver here, or no such
device where there is one), which is the failure path these tests exercise; placement by
codec, ffmpeg build and memory is decided before.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import imageio_ffmpeg
import pytest
from ray.cluster_utils import Cluster

from api.gateway.app import create_app
from api.settings import Settings
from cluster import CoordinatorConfig, Fleet, Job, JobEvent, RuntimeConfig
from cluster.media.runner import _NVENC_MARKERS as NVENC_MARKERS
from cluster.nodes.register import detect_local
from tests.helpers import (
    count_frames,
    ffmpeg_processes,
    free_port,
    leftovers,
    make_clip,
    nvidia_driver_present,
    serving,
    streams,
    transcode,
    wait_until,
)
from tests.integration.conftest import private_cluster

pytestmark = pytest.mark.multinode

L4 = {
    "uuid": "GPU-farm0000-l4",
    "name": "NVIDIA L4",
    "memory_total_mb": 23034,
    "nvenc_codecs": ["h264", "hevc", "av1"],  # av1: but this node's ffmpeg has no av1_nvenc
}
L40S = {
    "uuid": "GPU-farm0000-l40s",
    "name": "NVIDIA L40S",
    "memory_total_mb": 46068,
    "nvenc_codecs": ["av1"],
}
STATIC_FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
DRIVER = nvidia_driver_present()


def nvenc_why(reason: str) -> bool:
    """The reason names why NVENC did not open: no driver here; elsewhere the declared
    UUIDs match no device, which ffmpeg reports in one of the ways the runner knows."""
    if not DRIVER:
        return "no NVIDIA driver (libcuda.so.1 cannot be loaded)" in reason
    return any(why in reason for _, why in NVENC_MARKERS)


T4 = {
    "uuid": "GPU-farm0000-t4",
    "name": "Tesla T4",
    "memory_total_mb": 15360,
    "nvenc_codecs": ["h264"],
    "max_encoder_sessions": 2,
}


class Farm:
    def __init__(self, cluster: Cluster, fleet: Fleet, nodes: dict[str, Any], clips: Path):
        self.cluster, self.fleet, self.nodes, self.clips = cluster, fleet, nodes, clips

    def node_id(self, name: str) -> str:
        return str(self.nodes[name].node_id)

    @property
    def head_id(self) -> str:
        head = self.cluster.head_node
        assert head is not None
        return str(head.node_id)

    def name_of(self, node_id: str) -> str:
        return next(n for n, node in self.nodes.items() if node.node_id == node_id)


def add_worker(
    cluster: Cluster,
    folder: Path,
    inventory: list[dict[str, Any]] | None,
    ffmpeg: str = "ffmpeg",
) -> Any:
    env = {"FRAMEFLEET_FFMPEG": ffmpeg}
    if inventory is not None:
        path = folder / f"gpus-{len(cluster.list_all_nodes())}.json"
        path.write_text(json.dumps(inventory))
        env["FRAMEFLEET_GPU_INVENTORY"] = str(path)
        reg = detect_local(path, ffmpeg=ffmpeg).registration
        return cluster.add_node(
            num_cpus=2,
            num_gpus=reg.num_gpus,
            resources=reg.resources,
            labels=reg.labels,
            env_vars=env,
        )
    return cluster.add_node(num_cpus=2, num_gpus=0, env_vars=env)


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    with private_cluster("ffm-") as (cluster, _):
        yield from _farm(cluster, tmp_path_factory.mktemp("farm"))


def _farm(cluster: Cluster, folder: Path) -> Iterator[Farm]:
    nodes = {
        "l4": add_worker(cluster, folder, [L4]),
        "t4": add_worker(cluster, folder, [T4]),
        "cpu": add_worker(cluster, folder, None),
        "l40s": add_worker(cluster, folder, [L40S], ffmpeg=STATIC_FFMPEG),
    }
    cluster.wait_for_nodes()
    data = folder / "data"
    fleet = Fleet.connect(
        RuntimeConfig(data_dir=data, address=cluster.address, coordinator_name="farm"),
        CoordinatorConfig(
            data_dir=data,
            max_attempts=2,
            retry_backoff_s=0.2,
            encoder_idle_s=5.0,
            node_refresh_s=1.0,
        ),
    )
    clips = folder / "clips"
    clips.mkdir()
    make_clip(clips / "clip.mp4", seconds=2)
    make_clip(clips / "long.mp4", seconds=30, size="640x360")
    # Agents report their inventories within a refresh or two.
    wait_until(lambda: fleet.ping()["ready"], timeout=60)
    try:
        yield Farm(cluster, fleet, nodes, clips)
    finally:
        fleet.shutdown_coordinator()
        fleet.close()


def test_nodes_show_declared_gpus_their_resources_and_labels(farm: Farm) -> None:
    view = {
        farm.name_of(n.node_id) if n.node_id != farm.head_id else "head": n
        for n in farm.fleet.nodes()
    }
    assert set(view) == {"head", "l4", "t4", "cpu", "l40s"}
    assert view["head"].cpus == 0 and view["cpu"].gpus == ()
    [l4] = view["l4"].gpus
    reading = l4.reading
    assert (reading.uuid, reading.name, reading.memory_total_mb) == (L4["uuid"], "NVIDIA L4", 23034)
    assert l4.nvenc["hevc"].state == "declared" and l4.ray_resources is True
    assert view["l4"].labels["framefleet.io/gpu-model"] == "NVIDIA-L4"
    assert view["l4"].gpu_source == "static"
    [t4] = view["t4"].gpus
    assert t4.reading.max_encoder_sessions == 2 and t4.nvenc["hevc"].state == "unavailable"


def test_gpu_job_goes_to_the_gpu_with_the_codec_and_fails_clearly_when_nvenc_cannot_open(
    farm: Farm, tmp_path: Path
) -> None:
    # Only the L4 declares hevc. NVENC then fails to open for real (no driver here):
    # the GPU's hevc is marked failed, and with no other GPU able, the job fails.
    job = farm.fleet.submit(
        transcode(farm.clips / "clip.mp4", tmp_path / "o.mp4", codec="hevc", hardware="gpu")
    )
    done = farm.fleet.wait(job.id, timeout=90)
    assert done.status == "failed" and done.error_code == "nvenc_unavailable"
    assert done.placement.gpu.uuid == L4["uuid"]
    assert farm.name_of(done.placement.node_id) == "l4"
    reason = done.reason or ""
    assert "NVENC could not encode hevc on GPU 0 (NVIDIA L4)" in reason
    assert nvenc_why(reason) and "--hardware auto or cpu" in reason
    assert list(tmp_path.iterdir()) == [] and ffmpeg_processes(str(tmp_path)) == []
    [l4] = next(
        n for n in farm.fleet.nodes() if n.gpus and n.gpus[0].reading.uuid == L4["uuid"]
    ).gpus
    assert l4.nvenc["hevc"].state == "failed"
    assert nvenc_why(l4.nvenc["hevc"].reason)
    # Now nothing can take a hevc GPU job: it is refused with the reason at once.
    again = farm.fleet.wait(
        farm.fleet.submit(
            transcode(farm.clips / "clip.mp4", tmp_path / "p.mp4", codec="hevc", hardware="gpu")
        ).id,
        timeout=30,
    )
    assert again.status == "failed" and again.error_code == "no_capacity"
    assert "no GPU in the cluster can encode hevc with NVENC" in (again.reason or "")


def test_each_node_runs_its_own_ffmpeg_and_gets_only_jobs_it_can_encode(
    farm: Farm, tmp_path: Path
) -> None:
    view = {farm.name_of(n.node_id): n for n in farm.fleet.nodes() if n.cpus > 0}
    static, debian = view["l40s"].ffmpeg, view["l4"].ffmpeg
    assert static is not None and debian is not None
    assert static.path == os.path.realpath(STATIC_FFMPEG) and static.version.startswith("n9.")
    assert "av1_nvenc" in static.encoders and "av1_nvenc" not in debian.encoders
    [l4] = view["l4"].gpus
    assert l4.nvenc["av1"].to_dict() == {
        "state": "unavailable",
        "reason": "this node's ffmpeg has no av1_nvenc",
    }
    # Both GPUs declare av1, but only the node whose ffmpeg has av1_nvenc may take it.
    job = farm.fleet.submit(
        transcode(farm.clips / "clip.mp4", tmp_path / "o.mp4", codec="av1", hardware="gpu")
    )
    done = farm.fleet.wait(job.id, timeout=90)
    assert farm.name_of(done.placement.node_id) == "l40s"
    assert done.placement.encoder == "av1_nvenc"
    assert done.placement.gpu.uuid == L40S["uuid"]
    assert done.status == "failed" and done.error_code == "nvenc_unavailable"
    assert nvenc_why(done.reason or "")
    assert list(tmp_path.iterdir()) == []


def test_auto_job_tries_the_gpus_then_falls_back_to_cpu_and_succeeds(
    farm: Farm, tmp_path: Path
) -> None:
    events: list[JobEvent] = []
    job = farm.fleet.submit(transcode(farm.clips / "clip.mp4", tmp_path / "o.mp4"))
    done = farm.fleet.wait(job.id, on_event=events.append, timeout=120)
    assert done.status == "succeeded", done.reason
    assert done.placement.hardware == "cpu" and done.placement.gpu is None
    assert done.placement.encoder == "libx264"
    assert farm.name_of(done.placement.node_id) in {"l4", "t4", "cpu", "l40s"}
    tried = [e.reason for e in events if "NVENC could not encode h264" in (e.reason or "")]
    assert tried, "the auto job should have tried a declared GPU first"
    assert [s["codec_name"] for s in streams(tmp_path / "o.mp4", "video")] == ["h264"]
    assert count_frames(tmp_path / "o.mp4") == 50
    assert leftovers(tmp_path) == []


def test_a_node_lost_mid_encode_is_survived_elsewhere(farm: Farm, tmp_path: Path) -> None:
    job = farm.fleet.submit(
        transcode(
            farm.clips / "long.mp4", tmp_path / "o.mkv", codec="hevc", speed="fast", hardware="cpu"
        )
    )

    def running() -> Job | None:
        j = farm.fleet.get(job.id)
        ok = j.status == "running" and bool(j.progress and j.progress.percent)
        return j if ok else None

    first = wait_until(running, timeout=60)
    lost = farm.name_of(first.placement.node_id)
    farm.cluster.remove_node(farm.nodes.pop(lost), allow_graceful=False)

    events: list[JobEvent] = []
    done = farm.fleet.wait(job.id, on_event=events.append, timeout=240)
    assert done.status == "succeeded", done.reason
    assert done.placement.node_id != first.placement.node_id
    reasons = [e.reason or "" for e in events]
    assert any("left the cluster" in r or "was lost" in r for r in reasons), reasons
    assert count_frames(tmp_path / "o.mkv") == 750
    assert leftovers(tmp_path) == []
    wait_until(lambda: ffmpeg_processes(str(tmp_path)) == [], timeout=30)
    gone = first.placement.node_id
    wait_until(lambda: all(n.node_id != gone for n in farm.fleet.nodes()), timeout=60)


# ---- observability: a real Prometheus scraping the gateway over this farm ----------------

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "framefleet.json"
NVML_ONLY = (  # live readings that only NVML gives; declared GPUs have none
    "gpu_utilization_ratio",
    "gpu_encoder_utilization_ratio",
    "gpu_decoder_utilization_ratio",
    "gpu_memory_used_bytes",
    "gpu_memory_free_bytes",
    "gpu_encoder_fps",
)


def panel_queries() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"].replace("$__rate_interval", "1m"))
        for panel in board["panels"]
        for target in panel["targets"]
    ]


def test_prometheus_scrapes_the_gateway_and_every_dashboard_query_works(
    farm: Farm, tmp_path: Path
) -> None:
    settings = Settings(
        api_tokens=["farm"], data_dir=tmp_path / "gw", media_roots=[str(farm.clips), str(tmp_path)]
    )
    with serving(create_app(settings, farm.fleet)) as url:
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: framefleet\n    static_configs: [{{targets: ['{url[7:]}']}}]\n"
        )
        port = free_port()
        prom = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        api = f"http://127.0.0.1:{port}/api/v1"
        try:
            job = farm.fleet.submit(
                transcode(farm.clips / "clip.mp4", tmp_path / "m.mp4", hardware="cpu")
            )
            assert farm.fleet.wait(job.id, timeout=60).status == "succeeded"

            def scraped() -> bool:
                r = httpx.get(f"{api}/query", params={"query": "framefleet_jobs_finished_total"})
                return r.status_code == 200 and bool(r.json()["data"]["result"])

            wait_until(scraped, timeout=60, step=0.5)
            time.sleep(3)  # a few more scrapes, so rates over 1m have two points
            empty = []
            for title, expr in panel_queries():
                r = httpx.get(f"{api}/query", params={"query": expr})
                assert r.status_code == 200 and r.json()["status"] == "success", (
                    title,
                    expr,
                    r.text,
                )
                if not r.json()["data"]["result"]:
                    empty.append(expr)
            # The only empty queries are NVML's live readings: no driver on this machine.
            assert empty and all(any(m in e for m in NVML_ONLY) for e in empty), empty
            up = httpx.get(f"{api}/query", params={"query": "up"}).json()["data"]["result"]
            assert [s["value"][1] for s in up] == ["1"]
        finally:
            prom.terminate()
            prom.wait(timeout=30)
