"""The command line: ``framefleet`` (local jobs, serve), its client commands and ``node``."""

from __future__ import annotations

import sys


def main() -> None:
    """``framefleet``'s entry point: a job this process will run starts reading this
    machine's ffmpeg at once (:mod:`api.cli.early`); then the CLI is imported and run."""
    from api.cli.early import read_ahead

    read_ahead(sys.argv[1:])
    from api.cli.main import main as run

    run()


__all__ = ["main"]
