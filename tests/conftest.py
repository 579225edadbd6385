"""What every test shares: no usage stats, and this session's own Ray token.

The suite needs nothing from the home directory: it makes its own Ray token (in the
environment, so every Ray it starts, in-process or as a subprocess, uses it), and CI
runs it with an empty HOME (``.ci/run``).
"""

from __future__ import annotations

import os
import secrets

# Before Ray is imported: no usage stats, and this session's own token (token auth is
# chosen by cluster.ray_edge, where ray is imported).
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
from tests.helpers import local_s3_environment

# Set before the session's Ray starts, so its workers (the coordinator, the encoders)
# have it too.
local_s3_environment()

import pytest  # noqa: E402 (after the environment is set)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Multi-node tests first: their Cluster must be gone before the session Ray starts
    (one driver talks to one Ray at a time)."""
    items.sort(key=lambda item: item.get_closest_marker("multinode") is None)
