"""The command line: ``framefleet`` (local jobs, serve), its client commands and ``node``."""

from __future__ import annotations

import gc
import sys


def main() -> None:
    """``framefleet``'s entry point: a job this process will run starts reading this
    machine's ffmpeg at once (:mod:`api.cli.early`); then the CLI is imported and run.
    What the imports make lives as long as the process: the cyclic collector does not
    walk it again and again meanwhile (some 140 passes, 40 ms of a one-shot command);
    it is frozen once imported."""
    gc.disable()
    try:
        from api.cli.early import read_ahead

        read_ahead(sys.argv[1:])
        from api.cli.main import main as run
    finally:
        gc.freeze()
        gc.enable()
    run()


__all__ = ["main"]
