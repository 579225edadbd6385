"""A farm whose machines share no mount: a real multi-node Ray cluster in which the head
declares that it sees no media root, one worker sees none either, and one worker
mounts the media root at another path (``--media-map``; here through a symlink, as a
NAS mounted elsewhere would be).

The gateway's part is played by :func:`mark_root` (the identity file) and the
coordinator's config. Jobs are probed through the mapped worker's agent; a job placed
on the worker that sees nothing moves its input and outputs through Ray, from and to
that agent; outputs are checked with ffprobe.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cluster import (
    MEDIA_MAP_ENV,
    NO_MEDIA_ENV,
    SCRATCH_ENV,
    CoordinatorConfig,
    Fleet,
    JobKind,
    JobSpec,
    RuntimeConfig,
    mark_root,
)
from tests.helpers import (
    count_frames,
    ffmpeg_processes,
    leftovers,
    make_clip,
    streams,
    transcode,
    wait_until,
)
from tests.integration.conftest import private_cluster

pytestmark = pytest.mark.multinode


@dataclass
class Unshared:
    fleet: Fleet
    root: Path
    mount: Path
    names: dict[str, str]
    """node id -> head, blind or mapped."""
    scratch: dict[str, Path]

    def node(self, name: str) -> Any:
        return next(n for n in self.fleet.nodes() if self.names[n.node_id] == name)


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Unshared]:
    folder = tmp_path_factory.mktemp("unshared")
    # The share is /…/shares/media; the mapped worker mounts /…/shares at /…/nas.
    root, mount = folder / "shares" / "media", folder / "nas" / "media"
    root.mkdir(parents=True)
    os.symlink(root.parent, mount.parent)
    identity = mark_root(root)
    scratch = {name: folder / f"scratch-{name}" for name in ("blind", "mapped")}
    with private_cluster("ffu-", head_env={NO_MEDIA_ENV: "1"}) as (cluster, _):
        blind = cluster.add_node(
            num_cpus=1, env_vars={NO_MEDIA_ENV: "1", SCRATCH_ENV: str(scratch["blind"])}
        )
        mapped = cluster.add_node(
            num_cpus=1,
            env_vars={MEDIA_MAP_ENV: f"{root}={mount}", SCRATCH_ENV: str(scratch["mapped"])},
        )
        cluster.wait_for_nodes()
        head = cluster.head_node
        assert head is not None
        names = {head.node_id: "head", blind.node_id: "blind", mapped.node_id: "mapped"}
        data = folder / "data"
        fleet = Fleet.connect(
            RuntimeConfig(data_dir=data, address=cluster.address, coordinator_name="unshared"),
            CoordinatorConfig(
                data_dir=data,
                media_roots=(root,),
                root_ids=((str(root), identity),),
                max_attempts=2,
                retry_backoff_s=0.2,
                encoder_idle_s=5.0,
                node_refresh_s=1.0,
            ),
        )
        make_clip(root / "clip.mkv", seconds=2, subtitles=True)
        make_clip(root / "long.mp4", seconds=60, size="640x360")
        wait_until(lambda: fleet.ping()["ready"], timeout=60)
        try:
            yield Unshared(fleet, root, mount, names, scratch)
        finally:
            fleet.shutdown_coordinator()
            fleet.close()


def test_nodes_say_which_roots_they_see_and_where(farm: Unshared) -> None:
    seen = {farm.names[n.node_id]: n.media for n in farm.fleet.nodes()}
    root = str(farm.root)
    [head], [blind], [mapped] = seen["head"], seen["blind"], seen["mapped"]
    assert (head.root, head.seen, head.why) == (
        root,
        False,
        "this node declares it sees no media root",
    )
    assert (blind.seen, blind.path) == (False, root)
    assert (mapped.seen, mapped.path) == (True, str(farm.mount))


def test_a_node_that_mounts_the_root_elsewhere_runs_the_job_on_its_own_paths(
    farm: Unshared,
) -> None:
    out = farm.root / "mapped.mp4"
    job = farm.fleet.wait(farm.fleet.submit(transcode(farm.root / "clip.mkv", out)).id, timeout=120)
    assert job.status == "succeeded", job.reason
    assert farm.names[job.placement.node_id] == "mapped"
    assert f"media through this node's own mount ({farm.root} at {farm.mount})" in (
        job.placement.reason or ""
    )
    assert job.result is not None and job.result["output"] == str(out)  # told in root terms
    assert job.input_media is not None and job.input_media.path == str(farm.root / "clip.mkv")
    assert count_frames(out) == count_frames(farm.root / "clip.mkv") and streams(out, "audio")
    assert leftovers(farm.root) == []


def test_a_node_that_sees_no_root_moves_the_media_through_ray(farm: Unshared) -> None:
    farm.fleet.drain(farm.node("mapped").node_id)  # the one node that sees the root
    try:
        out = farm.root / "blind.mkv"
        spec = transcode(farm.root / "clip.mkv", out, codec="hevc")
        job = farm.fleet.wait(farm.fleet.submit(spec).id, timeout=120)
        assert job.status == "succeeded", job.reason
        assert farm.names[job.placement.node_id] == "blind"
        source = farm.node("mapped").address
        assert f"input read over the network from {source}: " in (job.placement.reason or "")
        assert count_frames(out) == count_frames(farm.root / "clip.mkv")
        assert streams(out, "video")[0]["codec_name"] == "hevc"
        assert streams(out, "audio") and streams(out, "subtitle")
        result = job.result or {}
        assert result["output"] == str(out)
        assert result["fetched_bytes"] == (farm.root / "clip.mkv").stat().st_size
        assert result["uploaded_bytes"] == out.stat().st_size == result["size_bytes"]
        assert result["checksum"] == f"crc32:{zlib.crc32(out.read_bytes()):08x}"
        thumbs = JobSpec(kind=JobKind.THUMBNAIL, input=str(farm.root / "clip.mkv"),
                         output=str(farm.root / "thumbs"), thumbnail_count=3)  # fmt: skip
        shots = farm.fleet.wait(farm.fleet.submit(thumbs).id, timeout=120)
        assert shots.status == "succeeded", shots.reason
        assert farm.names[shots.placement.node_id] == "blind"
        images = sorted(p.name for p in (farm.root / "thumbs").iterdir())
        assert images == ["clip_001.jpg", "clip_002.jpg", "clip_003.jpg"]
        assert (shots.result or {})["images"] == [str(farm.root / "thumbs" / i) for i in images]
        assert list(farm.scratch["blind"].iterdir()) == []
        assert leftovers(farm.root) == [] and leftovers(farm.root / "thumbs") == []
    finally:
        farm.fleet.drain(farm.node("mapped").node_id, on=False)


def test_cancel_on_a_node_that_sees_no_root_leaves_nothing_anywhere(farm: Unshared) -> None:
    farm.fleet.drain(farm.node("mapped").node_id)
    try:
        out = farm.root / "cancelled.mp4"
        spec = transcode(farm.root / "long.mp4", out, speed="slow")
        job = farm.fleet.submit(spec)
        wait_until(
            lambda: (j := farm.fleet.get(job.id)).progress is not None and j.progress.frame,
            timeout=60,
        )
        assert farm.names[farm.fleet.get(job.id).placement.node_id] == "blind"
        assert farm.fleet.cancel(job.id).status == "cancelled"
        assert not out.exists() and leftovers(farm.root) == []
        assert ffmpeg_processes(str(farm.scratch["blind"])) == []
        wait_until(lambda: list(farm.scratch["blind"].iterdir()) == [], timeout=10)
    finally:
        farm.fleet.drain(farm.node("mapped").node_id, on=False)
