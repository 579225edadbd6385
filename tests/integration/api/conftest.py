"""A real gateway (uvicorn on 127.0.0.1) over the module's coordinator, for API tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.gateway.app import create_app
from api.settings import Settings, WatchFolder
from cluster import Fleet
from cluster.ray_edge.runtime import Runtime
from tests.helpers import make_clip, serving, wait_until
from tests.integration.conftest import start_fleet

TOKEN = "test-token-0123456789"  # noqa: S105
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Gateway:
    def __init__(self, url: str, media: Path, out: Path) -> None:
        self.url, self.media, self.out = url, media, out
        self.http = httpx.Client(base_url=url, headers=AUTH, timeout=60)


def finished(gw: Gateway, job_id: str) -> dict[str, Any]:
    """The job once it ended (polled through the gateway)."""

    def done() -> dict[str, Any] | None:
        job: dict[str, Any] = gw.http.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] in ("succeeded", "failed", "cancelled") else None

    result: dict[str, Any] = wait_until(done, timeout=120, step=0.2)
    return result


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The gateway's media roots: its inputs, and where outputs go."""
    return tmp_path_factory.mktemp("gw-media"), tmp_path_factory.mktemp("gw-out")


@pytest.fixture(scope="module")
def fleet(
    ray_runtime: Runtime,
    roots: tuple[Path, Path],
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Fleet]:
    """The module's coordinator, confined to the gateway's roots as ``serve`` would make it
    (the coordinator is what resolves and checks every path)."""
    name = "coordinator-" + request.module.__name__.rsplit(".", 1)[-1]
    resolved = tuple(r.resolve() for r in roots)
    f = start_fleet(tmp_path_factory.mktemp("coordinator"), name, media_roots=resolved)
    yield f
    f.shutdown_coordinator()


@pytest.fixture(scope="module")
def gateway(
    fleet: Fleet, roots: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    media, out = roots
    make_clip(media / "clip.mp4", seconds=2)
    make_clip(media / "long.mp4", seconds=30, size="640x360")
    (media / "inbox").mkdir()
    (out / "watched").mkdir()
    settings = Settings(
        watch_folders=[
            WatchFolder(
                folder=media / "inbox",
                output_dir=out / "watched",
                stable_s=0.5,
                hardware="cpu",
                speed="fast",
                output_ext="mkv",
            )
        ],
        api_tokens=[TOKEN, "another-token"],
        media_roots=[str(media), str(out)],
        data_dir=tmp_path_factory.mktemp("gw-data"),
        max_body_bytes=64 * 1024,
    )
    with serving(create_app(settings, fleet)) as url:
        gw = Gateway(url, media, out)
        yield gw
        gw.http.close()
