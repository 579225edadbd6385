"""Where the gateway and the CLI keep their state: the data dir and its token files.

Light on purpose (no pydantic): a one-shot command finds its data dir, and whether a
gateway serves it, before it imports the settings and the engine.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "FRAMEFLEET_DATA_DIR"
TOKEN_FILE_NAME = "api-token"  # noqa: S105 (a file name)
TOKENS_FILE_NAME = "tokens.toml"


def default_data_dir() -> Path:
    """Where the server and the client keep state unless told otherwise: one place, so the
    client finds the API token ``serve`` made (``$XDG_DATA_HOME/framefleet``, else
    ``~/.local/share/framefleet``)."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "framefleet"


DEFAULT_DATA_DIR = default_data_dir()


def data_dir(given: Path | None = None) -> Path:
    """``given``, else ``FRAMEFLEET_DATA_DIR`` (empty is unset), else the default: what
    :class:`api.settings.Settings` reads as ``data_dir``, without importing it."""
    if given is not None:
        return given
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)
