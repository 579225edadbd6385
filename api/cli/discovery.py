"""Finding a gateway already running on this machine, so one-shot commands reuse it.

``framefleet serve`` writes ``gateway.json`` (its URL and pid) into its data dir while
it serves and removes it when it stops. ``framefleet encode`` and the other one-shot
commands look there first: a live, healthy gateway takes the job at once, where
starting a private Ray costs seconds (and a second coordinator on the same data dir
would share its job database).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

GATEWAY_FILE_NAME = "gateway.json"
HEALTH_TIMEOUT_S = 1.0


def announce(data_dir: Path, host: str, port: int) -> Path:
    """Record this process as the gateway serving ``data_dir``."""
    reach = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # noqa: S104
    if ":" in reach:
        reach = f"[{reach}]"
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / GATEWAY_FILE_NAME
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps({"url": f"http://{reach}:{port}", "pid": os.getpid()}))
    partial.replace(path)
    return path


def withdraw(data_dir: Path) -> None:
    """Remove the record, if it is still this process's."""
    path = data_dir / GATEWAY_FILE_NAME
    with contextlib.suppress(OSError, ValueError, KeyError):
        if json.loads(path.read_text())["pid"] == os.getpid():
            path.unlink()


def running_gateway(data_dir: Path) -> str | None:
    """The URL of a live, healthy gateway serving ``data_dir``, or ``None``."""
    try:
        record = json.loads((data_dir / GATEWAY_FILE_NAME).read_text())
        url, pid = str(record["url"]), int(record["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # a gateway that was killed left its record behind
    except PermissionError:
        pass  # another user's process: alive
    import httpx  # here: a one-shot command with no gateway running never pays for it

    try:
        # Plain HTTP on this machine: no TLS, so no CA bundle to load (~0.1 s).
        reply = httpx.get(f"{url}/healthz", timeout=HEALTH_TIMEOUT_S, verify=False)  # noqa: S501
        healthy = reply.status_code == 200
    except httpx.HTTPError:
        return None
    return url if healthy else None
