"""Sample media for demos and benchmarks: a lavfi test pattern with a tone."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from cluster.media.argv import sample_command
from cluster.media.runner import FfmpegRun, commit_outputs, failure_for, remove_partials


def make_sample(
    path: str | os.PathLike[str], *, seconds: float = 20.0, width: int = 1280, height: int = 720
) -> Path:
    """Write a ``seconds``-long H.264/AAC test clip to ``path`` (atomically) and return it."""
    command = sample_command(os.fspath(path), seconds=seconds, width=width, height=height)
    try:
        result = asyncio.run(FfmpegRun(command).run())
        if result.returncode != 0:
            raise failure_for(result, input_name="lavfi test pattern")
        commit_outputs(command, overwrite=True)
    finally:
        remove_partials(command)
    return Path(path)
