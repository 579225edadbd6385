"""Confinement at run time: files and folders swapped for symlinks after a job was
submitted (checked then, inside the media root) cannot make it read or write outside."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster import Fleet, Job, JobKind, JobSpec, SpecError, probe
from cluster.media.probe import probe_async
from cluster.ray_edge.runtime import Runtime
from tests.helpers import leftovers, make_clip, transcode, wait_until
from tests.integration.conftest import start_fleet


class Farm:
    def __init__(self, fleet: Fleet, root: Path, outside: Path) -> None:
        self.fleet, self.root, self.outside = fleet, root, outside
        self.node = wait_until(fleet.nodes)[0].node_id

    def paused(self) -> Any:
        """While held, nothing starts on the (only) node: jobs wait, probed, in the queue."""
        farm = self

        class _Paused:
            def __enter__(self) -> None:
                farm.fleet.set_node_cap(farm.node, 0)

            def __exit__(self, *_: object) -> None:
                farm.fleet.set_node_cap(farm.node, None)

        return _Paused()

    def submit_and_wait_probed(self, spec: JobSpec) -> Job:
        job = self.fleet.submit(spec)
        return wait_until(lambda: (j := self.fleet.get(job.id)).input_media and j)


@pytest.fixture(scope="module")
def farm(ray_runtime: Runtime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    base = tmp_path_factory.mktemp("confined")
    root, outside = base / "root", base / "outside"
    for folder in (root / "in", root / "out", outside):
        folder.mkdir(parents=True)
    fleet = start_fleet(base / "data", "coordinator-confinement", media_roots=(root.resolve(),))
    yield Farm(fleet, root.resolve(), outside.resolve())
    fleet.shutdown_coordinator()


def test_an_input_swapped_for_a_link_after_submit_is_not_read(farm: Farm) -> None:
    src = make_clip(farm.root / "in" / "t2.mp4", seconds=1)
    secret = make_clip(farm.outside / "secret.mp4", seconds=2, size="640x360")
    out = farm.root / "out" / "t2.mkv"
    with farm.paused():
        job = farm.submit_and_wait_probed(transcode(src, out, codec="hevc", hardware="cpu"))
        src.unlink()
        src.symlink_to(secret)  # `ln -sf /outside/secret.mp4 root/in/t2.mp4`
    done = farm.fleet.wait(job.id, timeout=60)
    assert done.status == "failed" and done.error_code == "outside_roots"
    assert "became a link since the job was submitted; refused" in (done.reason or "")
    assert not out.exists() and leftovers(out.parent) == []


def test_the_coordinators_probe_opens_no_link_and_nothing_outside(farm: Farm) -> None:
    # What a swap just before probing meets: the coordinator probes with its media roots.
    private = make_clip(farm.outside / "private.mp4", seconds=1)
    link = farm.root / "in" / "swapped.mp4"
    link.symlink_to(private)
    for attempt in (probe, lambda p, r: asyncio.run(probe_async(p, r))):
        with pytest.raises(SpecError, match="became a link since the job was submitted"):
            attempt(link, (farm.root,))
    # A folder on the way swapped for a link: what was opened is outside, and refused.
    (farm.root / "in" / "via").symlink_to(farm.outside)
    with pytest.raises(SpecError, match="now leads outside the media roots") as refused:
        probe(farm.root / "in" / "via" / "private.mp4", (farm.root,))
    assert refused.value.code == "outside_roots"
    assert probe(private).video is not None  # the file itself is fine


def swap_folder_after_probe(farm: Farm, spec: JobSpec, folder: Path, elsewhere: Path) -> None:
    """Submit ``spec`` (writing under ``folder``), then, while it waits, replace ``folder``
    with a link to ``elsewhere``: the job must fail and write nothing there."""
    folder.mkdir()
    elsewhere.mkdir()
    with farm.paused():
        job = farm.submit_and_wait_probed(spec)
        folder.rmdir()
        folder.symlink_to(elsewhere)
    done = farm.fleet.wait(job.id, timeout=60)
    assert done.status == "failed" and done.error_code == "outside_roots"
    assert list(elsewhere.iterdir()) == []


def test_an_output_folder_swapped_for_a_link_is_not_written(farm: Farm) -> None:
    src = make_clip(farm.root / "in" / "a.mp4", seconds=1)
    folder = farm.root / "out" / "swapped"
    spec = transcode(src, folder / "o.mp4", hardware="cpu")
    swap_folder_after_probe(farm, spec, folder, farm.outside / "target")


def test_a_thumbnail_folder_swapped_for_a_link_is_not_written(farm: Farm) -> None:
    src = make_clip(farm.root / "in" / "b.mp4", seconds=1)
    parent = farm.root / "out" / "thumbs"  # the thumbnails' folder would be made in there
    spec = JobSpec(kind=JobKind.THUMBNAIL, input=str(src), output=str(parent / "b"),
                   thumbnail_count=3)  # fmt: skip
    swap_folder_after_probe(farm, spec, parent, farm.outside / "thumbs")
    # The same job with nothing swapped writes its images where it was asked to.
    os.unlink(parent)
    parent.mkdir()
    again = farm.fleet.wait(farm.fleet.submit(spec).id, timeout=60)
    assert again.status == "succeeded", again.reason
    assert sorted(p.name for p in (parent / "b").iterdir()) == [f"b_00{i}.jpg" for i in (1, 2, 3)]
