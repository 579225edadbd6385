"""Probing queued jobs: an unchanged file is probed once; a changed one again."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
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


def test_a_probe_made_before_the_start_is_used_only_for_the_file_it_read(tmp_path: Path) -> None:
    """A one-shot command probes its input while the engine starts: the coordinator uses
    that probe (no second ffprobe) unless the file changed in between."""
    source = tmp_path / "clip.mp4"
    source.write_bytes(b"x" * 100)
    probed: list[str] = []

    async def probe(path: str, roots: tuple[Path, ...]) -> MediaInfo:
        probed.append(path)
        return fake_media(path)

    def version() -> str:
        st = os.stat(source)
        return f"{st.st_dev}:{st.st_ino}:{st.st_mtime_ns}"

    async def scenario() -> tuple[bool, bool]:
        prober = Prober((), ObjectStore(), wake=lambda: None, backoff_s=0.01, probe=probe)
        early = replace(fake_media(str(source)), version=version())
        taken = prober.seed(str(source), early)
        assert await prober.probed(str(source)) is early
        source.write_bytes(b"y" * 200)  # replaced after that probe
        os.utime(source, ns=(1, 1))
        stale = prober.seed(str(source), early)
        assert (await prober.probed(str(source))).version != early.version
        return taken, stale

    assert asyncio.run(scenario()) == (True, False)
    assert probed == [str(source)]  # only the changed file was probed again
