"""Probing queued jobs: an unchanged file is probed once; a changed one again."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from cluster import JobKind, JobSpec
from cluster.control.fakes import fake_media
from cluster.control.farm.prober import Prober
from cluster.model.jobs import Job
from cluster.model.media import MediaInfo
from cluster.storage.objects import ObjectStore


def test_an_unchanged_input_is_probed_once_and_a_changed_one_again(tmp_path: Path) -> None:
    source = tmp_path / "master.mov"
    source.write_bytes(b"x" * 100)
    probed: list[str] = []

    async def probe(path: str, roots: tuple[Path, ...]) -> MediaInfo:
        probed.append(path)
        return fake_media(path)

    async def scenario() -> list[MediaInfo]:
        done = asyncio.Event()
        seen: list[MediaInfo] = []
        prober = Prober((tmp_path,), ObjectStore(), wake=done.set, backoff_s=0.01,
                        probe=probe)  # fmt: skip
        for i in range(4):  # four renditions of one master, then the master is replaced
            if i == 3:
                source.write_bytes(b"y" * 200)
                os.utime(source, ns=(1, 1))
            spec = JobSpec(kind=JobKind.TRANSCODE, input=str(source),
                           output=str(tmp_path / f"r{i}.mp4"))  # fmt: skip
            done.clear()
            prober.ensure(Job(id=f"j{i}", spec=spec))
            await asyncio.wait_for(done.wait(), 5)
            ((job_id, media),) = prober.take()
            assert job_id == f"j{i}" and isinstance(media, MediaInfo)
            seen.append(media)
        return seen

    seen = asyncio.run(scenario())
    assert len(seen) == 4 and all(m.path == str(source) for m in seen)
    assert probed == [str(source), str(source)]  # the first job, and after the change
