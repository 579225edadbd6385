"""An empty ``FRAMEFLEET_*`` variable means unset, as compose files and systemd env files
write them: for the gateway's settings, a node's settings and the CLI's options."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from api.settings import Settings
from cluster.media.encoders import FFMPEG_ENV
from cluster.nodes.environ import env_setting
from cluster.nodes.gpus import INVENTORY_ENV, StaticSource, gpu_source
from cluster.ray_edge.actors import node_media, node_scratch
from cluster.storage.roots import MEDIA_MAP_ENV, NO_MEDIA_ENV
from cluster.storage.scratch import DEFAULT_SCRATCH, SCRATCH_BYTES_ENV, SCRATCH_ENV

SETTINGS = sorted(Settings.model_fields)


@pytest.mark.parametrize("name", SETTINGS)
def test_every_gateway_setting_left_empty_is_its_default(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in list(os.environ):
        if key.startswith("FRAMEFLEET_"):
            monkeypatch.delenv(key)
    default = getattr(Settings(), name)
    monkeypatch.setenv(f"FRAMEFLEET_{name.upper()}", "")
    assert getattr(Settings(), name) == default


def test_an_empty_gpu_inventory_is_no_inventory_not_the_current_folder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FRAMEFLEET_GPU_INVENTORY", "")
    assert Settings().gpu_inventory is None
    monkeypatch.setenv(INVENTORY_ENV, "")
    assert not isinstance(gpu_source(), StaticSource)  # NVML, or none: never "."


@pytest.mark.parametrize("name", [SCRATCH_ENV, SCRATCH_BYTES_ENV, MEDIA_MAP_ENV, NO_MEDIA_ENV,
                                  FFMPEG_ENV, INVENTORY_ENV])  # fmt: skip
def test_every_node_setting_left_empty_is_unset(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for blank in ("", "  "):
        monkeypatch.setenv(name, blank)
        assert env_setting(name) is None
        scratch = node_scratch()
        assert scratch.root == Path(DEFAULT_SCRATCH) or name != SCRATCH_ENV
        assert scratch.budget_bytes is None or name != SCRATCH_BYTES_ENV
        media = node_media()
        assert not media.no_media and media.media_map == ()


@pytest.mark.parametrize("name", ["FRAMEFLEET_API", "FRAMEFLEET_DATA_DIR", "FRAMEFLEET_TOKEN"])
def test_the_clients_options_left_empty_take_their_defaults(name: str, tmp_path: Path) -> None:
    env = {**os.environ, name: "", "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", "from api.cli import main; main()", "status"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    said = done.stdout + done.stderr
    assert done.returncode in (2, 3), said  # no gateway here: unreachable, or no token
    assert "Traceback" not in said
    assert "http://127.0.0.1:8000" in said or "token" in said.lower(), said
