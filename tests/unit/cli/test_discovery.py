"""A one-shot command looks for a gateway serving its data dir, and ignores dead ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from api.cli.discovery import GATEWAY_FILE_NAME, announce, running_gateway, withdraw


def test_a_record_is_written_and_withdrawn_by_its_own_process(tmp_path: Path) -> None:
    path = announce(tmp_path, "0.0.0.0", 8123)  # noqa: S104
    assert json.loads(path.read_text())["url"] == "http://127.0.0.1:8123"
    withdraw(tmp_path)
    assert not path.exists()
    assert not list(tmp_path.iterdir())  # no partial file either


def test_a_dead_or_silent_gateway_is_not_used(tmp_path: Path) -> None:
    assert running_gateway(tmp_path) is None  # no record
    (tmp_path / GATEWAY_FILE_NAME).write_text("{not json")
    assert running_gateway(tmp_path) is None
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    record = {"url": "http://127.0.0.1:9", "pid": int(gone.stdout)}
    (tmp_path / GATEWAY_FILE_NAME).write_text(json.dumps(record))
    assert running_gateway(tmp_path) is None  # killed: its record is stale
    announce(tmp_path, "127.0.0.1", 9)  # alive (this process), but nothing answers there
    assert running_gateway(tmp_path) is None
