"""What a one-shot command starts before the command line is even parsed.

``framefleet encode`` with no cluster and no gateway runs the engine in its own process,
and the engine first reads what this machine's ffmpeg can do: four short runs of ffmpeg.
They need nothing from the command line, so they start here, in a thread, while the CLI,
pydantic and the engine are imported (a third of a second of one core), instead of after;
so does the probe of the input named right after the command (ffprobe, and ``idet`` on
a stream that may be interlaced), which the engine takes if the file is unchanged.

Only a hint: the command decides later, as ever, where the job runs. A command that will
not run here (another command, ``--address``, a gateway serving its data dir) reads
nothing ahead; if this guesses wrong, the cost is those runs of ffmpeg, nothing else.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any

from api import paths
from api.cli.discovery import GATEWAY_FILE_NAME

RUN_HERE = frozenset({"encode", "validate", "thumbnail", "quality", "package"})
"""The commands that run a job here when no cluster is named and no gateway serves."""


def _option(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.partition("=")[2]
    return None


def runs_here(args: list[str]) -> bool:
    """Whether ``args`` (the command line, less the program) look like a job this process
    will run itself."""
    words = [a for a in args if not a.startswith("-")]
    if not words or words[0] != next((a for a in args if a != "--debug"), None):
        return False  # no command, or options before it: let the parser say
    if words[0] not in RUN_HERE or "--help" in args:
        return False
    if _option(args, "--address") or os.environ.get("FRAMEFLEET_RAY_ADDRESS"):
        return False
    data_dir = paths.data_dir(Path(given) if (given := _option(args, "--data-dir")) else None)
    return not (data_dir / GATEWAY_FILE_NAME).exists()


class Ahead:
    """What was started ahead: the builds' reading, and the probe of the input named
    right after the command (``framefleet encode INPUT ...``), a local file."""

    def __init__(self) -> None:
        self.source: str | None = None
        self._probe: threading.Thread | None = None
        self._media: Any = None

    def start(self, args: list[str]) -> None:
        def read() -> None:
            from cluster import FFMPEG_ENV  # light: ffmpeg starts at once
            from cluster import read_ahead as read_builds

            read_builds(os.environ.get(FFMPEG_ENV) or "ffmpeg")  # as the settings read it

        threading.Thread(target=read, name="framefleet-read-ahead", daemon=True).start()
        self.source = _named_input(args)
        if self.source is not None:
            self._probe = threading.Thread(target=self._read_input, args=(self.source,),
                                           name="framefleet-probe-ahead", daemon=True)  # fmt: skip
            self._probe.start()

    def _read_input(self, path: str) -> None:
        from cluster import FramefleetError, probe

        with contextlib.suppress(FramefleetError, OSError):
            self._media = probe(path)

    def probed(self, path: str) -> Any:
        """The probe of ``path`` made ahead (waiting for it), or ``None``: not this path,
        or it failed (the engine's own probe says why)."""
        if self._probe is None or path != self.source:
            return None
        self._probe.join()
        return self._media


AHEAD = Ahead()
"""This process's: what :func:`read_ahead` started."""


def _named_input(args: list[str]) -> str | None:
    """The word right after the command, if it names a local regular file."""
    words = [a for a in args if a != "--debug"]
    if len(words) < 2 or words[1].startswith("-") or "://" in words[1]:
        return None
    return str(Path(words[1]).absolute()) if os.path.isfile(words[1]) else None


def read_ahead(args: list[str]) -> None:
    """Start reading this machine's ffmpeg builds (and probing the input) if ``args``
    run a job here. Only a hint: whatever goes wrong here (a data dir it may not read)
    is for the command itself to meet and say."""
    try:
        if runs_here(args):
            AHEAD.start(args)
    except (OSError, ValueError, RuntimeError):
        return
