"""The ffmpeg runner's kill against real ffmpeg: a stop asked before (or while) ffmpeg
starts means it never encodes; asked while it runs, its process group is gone."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

from cluster.media.argv import Command
from cluster.media.runner import FfmpegRun


def long_encode(marker: str) -> Command:
    """An hour of synthetic video to nowhere (``marker`` names it in the process table)."""
    argv = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-progress", "pipe:1",
            "-f", "lavfi", "-i", "testsrc2=duration=3600:size=320x240:rate=25",
            "-metadata", f"title={marker}", "-f", "null", "-"]  # fmt: skip
    return Command(argv=argv, duration_s=3600.0)


def ffmpegs_with(marker: str) -> list[int]:
    """Pids of live processes whose command line holds ``marker``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != "Z":
            found.append(int(pid))
    return found


def test_a_kill_before_ffmpeg_starts_means_it_never_runs() -> None:
    marker = f"m{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        run = FfmpegRun(long_encode(marker))
        await run.kill()
        result = await run.run()
        assert result.killed and result.returncode != 0 and result.ran_s == 0.0
        assert not ffmpegs_with(marker)

    asyncio.run(main())


def test_a_kill_while_ffmpeg_is_being_started_ends_it_at_once() -> None:
    marker = f"m{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        run = FfmpegRun(long_encode(marker))
        task = asyncio.create_task(run.run())
        await asyncio.sleep(0)  # run() is now inside its spawn: no process to signal yet
        await run.kill()
        result = await asyncio.wait_for(task, 20)  # not the minutes it would encode
        assert result.killed and result.returncode != 0
        assert not ffmpegs_with(marker)

    asyncio.run(main())


def test_a_kill_while_ffmpeg_runs_ends_its_process() -> None:
    marker = f"m{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        run = FfmpegRun(long_encode(marker))
        task = asyncio.create_task(run.run())
        for _ in range(500):
            if run.latest is not None:
                break
            await asyncio.sleep(0.02)
        assert ffmpegs_with(marker)  # it is encoding
        await run.kill()
        result = await asyncio.wait_for(task, 20)
        assert result.killed and not ffmpegs_with(marker)

    asyncio.run(main())
