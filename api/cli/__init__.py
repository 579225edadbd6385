"""The command line: ``framefleet`` (local jobs, serve), its client commands and ``node``."""

from api.cli.main import main

__all__ = ["main"]
