"""Command-line options shared by the local commands and the gateway client."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cluster import Hardware, Speed

Codec = Annotated[str, typer.Option(help="h264, hevc or av1.")]
Quality = Annotated[
    int | None, typer.Option(min=0, max=51, help="0 best … 51 smallest (default per codec).")
]
SpeedOpt = Annotated[Speed, typer.Option("--speed", help="Encoder speed preset.")]
HardwareOpt = Annotated[Hardware, typer.Option("--hardware", help="auto, gpu (NVENC) or cpu.")]
Priority = Annotated[int, typer.Option(help="Higher runs first.")]
SplitOpt = Annotated[
    str,
    typer.Option(
        "--split",
        help="auto, off or SECONDS: encode the video in chunks of about SECONDS across "
        "the farm, joined frame-exact (auto: inputs over a minute, when encoders are free).",
    ),
]
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="FRAMEFLEET_DATA_DIR",
        help="Job database, API token and Ray files [$XDG_DATA_HOME/framefleet or "
        "~/.local/share/framefleet]; the same for `serve` and the client.",
        show_default=False,
    ),
]
Address = Annotated[
    str | None,
    typer.Option(
        "--address",
        envvar="FRAMEFLEET_RAY_ADDRESS",
        help="Join this Ray cluster (HOST:PORT) instead of starting a local one.",
    ),
]
