"""A node's settings from its environment, as ``framefleet node start`` (or the embedded
runtime) set them for the raylet: an empty variable means unset, as compose files and
systemd env files write them (``FRAMEFLEET_GPU_INVENTORY=""`` is no inventory, not the
current folder)."""

from __future__ import annotations

import os
from collections.abc import Mapping


def env_setting(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The variable's value; ``None`` when it is unset, empty or blank."""
    value = (os.environ if environ is None else environ).get(name, "")
    return value if value.strip() else None
