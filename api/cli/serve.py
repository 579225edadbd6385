"""``framefleet serve``: the HTTP gateway, with a local cluster unless ``--address``."""

from __future__ import annotations

import os
import secrets
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

import cluster  # its names are read when `serve` runs (not for every command)
from api.cli.discovery import announce, withdraw
from api.cli.options import Address
from api.paths import TOKEN_FILE_NAME

err = Console(stderr=True, soft_wrap=True)


SHUTDOWN_GRACE_S = 3
"""Seconds a stopping gateway lets open requests finish before it cuts them."""
KEEP_ALIVE_S = 5
"""Seconds an idle connection is kept between requests."""


def register(app: typer.Typer) -> None:
    """Add ``serve`` to ``app``."""

    @app.command()
    def serve(
        host: Annotated[str | None, typer.Option(help="Listen address [127.0.0.1].")] = None,
        port: Annotated[int | None, typer.Option(help="Port [8000].")] = None,
        address: Address = None,
        data_dir: Annotated[
            Path | None, typer.Option("--data-dir", help="Job database and Ray temp files.")
        ] = None,
        media_root: Annotated[
            list[str] | None,
            typer.Option(
                "--media-root",
                help="Jobs read and write only under these folders or s3://bucket/prefix "
                "(repeatable).",
            ),
        ] = None,
        gpu_inventory: Annotated[
            Path | None, typer.Option("--gpu-inventory", help="Declare GPUs (JSON) for this node.")
        ] = None,
        ffmpeg: Annotated[
            str | None, typer.Option("--ffmpeg", help="The local node's ffmpeg [ffmpeg on PATH].")
        ] = None,
    ) -> None:
        """Run the HTTP gateway (and, without --address, a local cluster). Docs at /docs."""
        import uvicorn

        from api.gateway.app import create_app
        from api.settings import Settings

        settings = Settings.load(
            host=host,
            port=port,
            ray_address=address,
            data_dir=data_dir,
            media_roots=media_root or None,
            gpu_inventory=gpu_inventory,
            ffmpeg=ffmpeg,
        )
        if not settings.tokens() and settings.keyring().path is None:
            token_file = settings.data_dir / TOKEN_FILE_NAME
            if not token_file.exists():
                cluster.write_secret(token_file, (secrets.token_urlsafe(32) + "\n").encode())
            settings = settings.model_copy(update={"token_file": token_file})
            err.print(f"no FRAMEFLEET_API_TOKENS set: using the token in {token_file}")
        roots = [*map(str, settings.roots(serving=True)), *settings.object_roots()]
        err.print(f"media roots: {', '.join(roots)}")
        if settings.ray_address is None:
            err.print("[dim]starting a local Ray cluster…[/dim]")
        # Connected here, on the main thread, before the server starts: an embedded Ray's
        # processes live as long as the thread that started them, and uvicorn then owns the
        # signal handlers (SIGTERM stops the server, then this closes the cluster).
        fleet = settings.connect(serving=True)
        # uvicorn handles SIGINT/SIGTERM while it serves, then raises the signal again for
        # whoever handled it before: that is a normal stop here (exit 0 once the cluster is
        # closed), not Ray's driver handler (exit 15) or a KeyboardInterrupt.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _stop_requested)
        try:
            url = f"http://{settings.host}:{settings.port}"
            err.print(f"framefleet gateway on {url}; API docs at {url}/docs")
            announce(settings.data_dir, settings.host, settings.port)  # one-shot CLIs reuse it
            uvicorn.run(
                create_app(settings, fleet),
                host=settings.host,
                port=settings.port,
                log_level="info",
                # Event streams never end by themselves: they are cut after this, and their
                # clients resume with Last-Event-ID from the next gateway.
                timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
                timeout_keep_alive=KEEP_ALIVE_S,
                # Bounds on what clients hold: connections here; each token's streams and
                # each request body's time to arrive in the app (api.gateway.limits).
                limit_concurrency=settings.max_connections,
            )
        finally:
            withdraw(settings.data_dir)
            err.print("stopping: winding down running encodes (they are re-queued)…")
            if not fleet.close():
                # The local Ray went down with this process's group and was killed
                # outright; Ray's exit hooks would wait a minute for it. What its running
                # encodes were writing is removed (their workers had no time to), then exit.
                if settings.ray_address is None:
                    cluster.sweep_partials(settings.data_dir)
                err.print("stopped (the local Ray had been stopped too; its jobs are "
                          "re-queued at the next start)")  # fmt: skip
                sys.stderr.flush()
                os._exit(0)


def _stop_requested(signum: int, frame: object) -> None:
    """A stop signal after the server has stopped: closing goes on."""
